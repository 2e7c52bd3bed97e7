"""Per-directory listing indexes: a listing patched by changes shows what a fresh placement of
the same files shows, and a change re-settles only the directory it touches."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_namespace import CID, FakeClient, cfile, open_box

from containerfs import paths
from containerfs.models import ContainerFile, FileId
from containerfs.ns.listings import Listing
from containerfs.ns.memory import NameMemory
from containerfs.ns.namespace import Namespace
from containerfs.ns.overlay import DirTree
from containerfs.state import State

_HEX = "0123456789abcdef" * 2

# few names, so that collisions (duplicates, prefixes, a file named like a directory) are common
_names = st.sampled_from(["a", "b", f"{_HEX}-a", f"{_HEX}-b", "a~cfile_1", "c"])
_dirs = st.sampled_from(["", "a/", "b/", "a/b/", "c/a/"])
_server_paths = st.builds(lambda d, n: f"/mnt/data/{d}{n}", _dirs, _names) | st.sampled_from(
    ["/etc/a", "/mnt/data/../a", "/mnt/a"]
)
_aliases = st.sampled_from(["a", "a/b", "b/a", "c", "a/c~x"])
# display paths an upload through the mount writes
_paths = st.builds(lambda d, n: f"{d}{n}", _dirs, _names)

# one change to a listing: an upload through the mount (id, display path it claims, created),
# a delete (id), or an alias (id, path)
_change = st.one_of(
    st.tuples(st.just("upload"), st.integers(0, 9), _paths, st.integers(0, 2)),
    st.tuples(st.just("remove"), st.integers(0, 9)),
    st.tuples(st.just("alias"), st.integers(0, 9), _aliases),
)


def _fid(n: int) -> FileId:
    return FileId(f"cfile_{n}")


def _shown(listing: Listing, dirs: set[str]) -> dict[str, ContainerFile]:
    """Display path -> file, read back directory by directory through the index."""
    out: dict[str, ContainerFile] = {}
    for d in dirs:
        for path, f in listing.placed(d).items():
            assert posixpath.dirname(path) == d
            out[path] = f
    return out


@settings(max_examples=500, deadline=None)
@given(st.lists(_server_paths, max_size=8), st.lists(_change, max_size=25))
@example([], [("upload", 1, "a", 0), ("upload", 2, "a/b", 0)])  # a file, then a dir of its name
@example(["/mnt/data/a/b", "/mnt/data/a"], [("remove", 0), ("upload", 3, "a/b", 0)])
def test_a_patched_listing_shows_what_placing_its_files_afresh_shows(
    listed: list[str], changes: list[Any]
) -> None:
    files = {
        f.id: f
        for f in (ContainerFile(_fid(n), CID, p, 1, n, "user") for n, p in enumerate(listed))
    }
    aliases: dict[FileId, str] = {}
    memory = NameMemory()
    listing = Listing(CID, files.values(), root=paths.DATA_ROOT, aliases=aliases, memory=memory)
    for change in changes:
        for d in ("", "a", "b", "c", "a/b", "c/a", "_outside/etc"):
            listing.placed(d)  # settle between changes, as lookups do
        if change[0] == "upload":
            _, n, path, created = change
            f = ContainerFile(_fid(n), CID, f"/mnt/data/{path}", 1, created, "user")
            files[f.id] = f
            memory.claim(CID, f.id, path)  # as the namespace does for an upload
            listing.add(f)
        elif change[0] == "remove":
            files.pop(_fid(change[1]), None)
            listing.remove(_fid(change[1]))
            memory.forget(CID, _fid(change[1]))
        elif _fid(change[1]) in files:
            aliases[_fid(change[1])] = change[2]
            memory.claim(CID, _fid(change[1]), change[2])
            listing.refile(_fid(change[1]))

    listing.placed("")
    remembered = dict(memory.shown(CID))
    expected = paths.place_files(files.values(), aliases=aliases, shown=remembered)
    dirs = {d for p in expected for d in paths.ancestors(p)}
    assert _shown(listing, dirs | {""}) == expected
    assert remembered == {f.id: p for p, f in expected.items()}
    assert all(listing.is_dir(d) for d in dirs)
    assert not any(listing.is_dir(p) for p in expected)
    for d in dirs:
        below = {posixpath.basename(x) for x in dirs if x and posixpath.dirname(x) == d}
        assert listing.subdirs(d) == below
    assert sorted(f.id for f in listing.files()) == sorted(files)
    assert len(listing) == len(files)


def test_a_directory_goes_when_its_last_file_goes() -> None:
    tree = DirTree()
    tree.add("a/b")
    tree.add("a")

    assert tree.remove("a/b") == ["a/b"]
    assert "a" in tree and "a/b" not in tree
    assert tree.subdirs("a") == set()
    assert tree.remove("a") == ["a"]
    assert tree.subdirs("") == set()
    assert "" in tree


@pytest.fixture
def placements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many files each placement of a whole listing looked at."""
    seen: list[int] = []
    original = paths.place_files

    def counting(files: Any, **kwargs: Any) -> dict[str, ContainerFile]:
        files = list(files)
        seen.append(len(files))
        return original(files, **kwargs)

    monkeypatch.setattr(paths, "place_files", counting)
    return seen


async def test_one_placement_serves_every_lookup_and_readdir(
    tmp_path: Path, placements: list[int]
) -> None:
    client = FakeClient([cfile(i, f"/mnt/data/d{i % 4}/f{i}") for i in range(40)])
    ns, box = await open_box(client, tmp_path)

    for _ in range(3):
        for _, d in await ns.list_dir(box):
            for name, _ in await ns.list_dir(d):
                assert await ns.lookup(d, name) is not None

    assert placements == [40]
    assert client.listed == 1


async def test_an_upload_and_a_delete_patch_the_listing_without_placing_it_again(
    tmp_path: Path, placements: list[int]
) -> None:
    client = FakeClient([cfile(i, f"/mnt/data/d{i % 4}/f{i}") for i in range(40)])
    ns, box = await open_box(client, tmp_path)
    dirs = [d for _, d in await ns.list_dir(box)]
    for d in dirs:
        await ns.list_dir(d)
    placements.clear()

    node = ns.new_file(dirs[1], "new.txt")
    await ns.file_uploaded(node, cfile(99, "/mnt/data/d1/new.txt"))
    await ns.file_deleted(CID, cfile(5, "").id)  # /mnt/data/d1/f5
    for d in dirs:
        await ns.list_dir(d)

    assert placements == []
    names = [name for name, _ in await ns.list_dir(dirs[1])]
    assert "new.txt" in names and "f5" not in names
    assert client.listed == 1


async def test_a_directory_made_here_shows_beside_the_listed_ones(tmp_path: Path) -> None:
    client = FakeClient([cfile(1, "/mnt/data/d/f")])
    ns, box = await open_box(client, tmp_path)

    made = await ns.add_dir(box, "m")
    deep = await ns.add_dir(made, "n")
    local = ns.new_file(deep, "x.txt")

    assert [name for name, _ in await ns.list_dir(box)] == ["d", "m"]
    assert [name for name, _ in await ns.list_dir(made)] == ["n"]
    assert [(n, c) for n, c in await ns.list_dir(deep)] == [("x.txt", local)]
    await ns.drop_dir(deep)
    ns.release_local(local)
    assert await ns.lookup(made, "n") is None
    assert [name for name, _ in await ns.list_dir(box)] == ["d", "m"]


async def test_a_listing_is_reused_within_its_ttl_and_fetched_again_after(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    client = FakeClient([cfile(1, "/mnt/data/d/f")])
    ns = Namespace(
        client,  # type: ignore[arg-type]
        State(tmp_path, endpoint="e"),
        ttl=10.0,
        clock=trio.current_time,
    )
    box = await ns.lookup(ns.root_node, "box")
    assert box is not None
    assert await ns.lookup(box, "d") is not None

    await trio.sleep(9.5)
    client.files.append(cfile(2, "/mnt/data/e/g"))
    assert await ns.lookup(box, "e") is None  # the cached listing, without the new file
    await trio.sleep(1.0)
    assert await ns.lookup(box, "e") is not None
    assert client.listed == 2


async def test_files_copied_into_a_large_directory_do_not_resettle_it(
    tmp_path: Path, placements: list[int]
) -> None:
    client = FakeClient([cfile(i, f"/mnt/data/big/f{i}") for i in range(50)])
    ns, box = await open_box(client, tmp_path)
    big = await ns.lookup(box, "big")
    assert big is not None
    await ns.list_dir(big)
    placements.clear()

    for i in range(100, 120):  # cp -r: each new file uploaded, then looked up
        node = ns.new_file(big, f"new{i}")
        await ns.file_uploaded(node, cfile(i, f"/mnt/data/big/new{i}"))
        ns.release_local(node)
        assert await ns.lookup(big, f"new{i}") is node

    assert placements == []
    assert len(await ns.list_dir(big)) == 70
