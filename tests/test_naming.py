"""The naming rules (``containerfs.paths``) and the namespace's name memory: names are stable
and ids win (issue 12).

Property tests of the pure rules over hostile listings (every item shown exactly once, names
unique and valid per directory, ids resolve, adding items never renames an item already
shown), then the same rules through the namespace over the emulator app in-process.
"""

from __future__ import annotations

import errno
import posixpath
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
from fs_harness import CTX, Fs, build_fs, close_fs, errno_of
from hypothesis import given, settings
from hypothesis import strategies as st

from containerfs import paths as names
from containerfs.emulator.app import create_app
from containerfs.emulator.config import UPLOAD_PATH_POLICIES, EmulatorConfig, UploadPaths
from containerfs.models import Container, ContainerFile, ContainerId, FileId
from containerfs.ns.inodes import ROOT_INODE

CID = ContainerId("cntr_1")
_HEX = "0123456789abcdef" * 2
# hostile components: dot segments, empties, NUL, clipped names, NFC/NFD twins, names made
# like disambiguated forms and ids, and a server prefix of their own
_COMPONENTS = [
    "a",
    "b",
    "dup.txt",
    ".",
    "..",
    "",
    "\0",
    "~",
    "é" * 130,
    "\u00e9",
    "e\u0301",
    "cfile_0",
    "a~cfile_0",
    "a~cfile_1",
    "dup.txt~cfile_1",
    "dup.txt~cfile_0~cfile_1",
    "a~cfile_0~2",
    f"{_HEX}-a",
    f"{_HEX}-dup.txt",
]
_ROOTS = ["/mnt/data/", "/mnt/data/", "/mnt/data/", "/tmp/", "/", "/mnt/"]


@st.composite
def server_paths(draw: st.DrawFn, extra: tuple[str, ...] = ()) -> str:
    parts = draw(st.lists(st.sampled_from(_COMPONENTS + list(extra)), min_size=1, max_size=3))
    if draw(st.booleans()):
        parts[-1] = f"{_HEX}-{parts[-1]}"  # a server-added upload prefix
    return draw(st.sampled_from(_ROOTS)) + "/".join(parts)


def cfile(n: int, path: str, created_at: int = 0) -> ContainerFile:
    return ContainerFile(FileId(f"cfile_{n}"), CID, path, 1, created_at, "user")


@st.composite
def listings(
    draw: st.DrawFn, *, first: int = 0, extra: tuple[str, ...] = ()
) -> list[ContainerFile]:
    paths = draw(st.lists(server_paths(extra), min_size=1, max_size=10))
    return [cfile(first + i, p, draw(st.integers(0, 3))) for i, p in enumerate(paths)]


def aliases_for(files: list[ContainerFile]) -> st.SearchStrategy[dict[FileId, str]]:
    """Paths recorded for files written through the mount, some of them hostile too."""
    wanted = st.sampled_from(["a", "a/b", "dup.txt", "a~cfile_1", "b/a", "dup.txt~cfile_0"])
    return st.dictionaries(st.sampled_from([f.id for f in files]), wanted, max_size=2)


def valid(path: str) -> bool:
    return all(
        p not in ("", ".", "..") and "\0" not in p and len(p.encode()) <= names.NAME_MAX
        for p in path.split("/")
    )


def memory(placed: dict[str, ContainerFile]) -> dict[FileId, str]:
    return {f.id: path for path, f in placed.items()}


def assert_well_placed(files: list[ContainerFile], placed: dict[str, ContainerFile]) -> None:
    """Every file exactly once, at a valid path, no path both a file and a directory."""
    assert sorted(f.id for f in placed.values()) == sorted(f.id for f in files)
    assert all(valid(p) for p in placed), sorted(placed)
    dirs = {d for p in placed for d in names.ancestors(p)}
    assert not dirs & set(placed), "a file and a directory at the same path"


# ---- files ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_file_is_shown_once_whatever_the_mount_remembers(data: st.DataObject) -> None:
    files = data.draw(listings())
    aliases = data.draw(aliases_for(files))
    seen_before = data.draw(st.lists(st.sampled_from(files), unique_by=lambda f: f.id))
    shown = memory(names.place_files(seen_before))
    # and memories that disagree with each other (a claim by this mount's own write)
    claimed = st.sampled_from(["a", "a/b", "dup.txt", "a~cfile_0", "b/a/c"])
    shown |= data.draw(st.dictionaries(st.sampled_from([f.id for f in files]), claimed))

    placed = names.place_files(files, aliases=aliases, shown=shown)

    assert_well_placed(files, placed)
    shuffled = data.draw(st.permutations(files))
    assert names.place_files(shuffled, aliases=aliases, shown=shown) == placed


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_adding_files_never_renames_a_file_already_shown(data: st.DataObject) -> None:
    before = data.draw(listings())
    aliases = data.draw(aliases_for(before))
    shown = names.place_files(before, aliases=aliases)
    # newcomers: newer duplicates of shown names, files literally named like the shown
    # (disambiguated) names, and anything else
    literal = tuple(p.rsplit("/", 1)[-1] for p in shown)
    added = data.draw(listings(first=len(before), extra=literal))
    added = [cfile(int(f.id[6:]), f.path, f.created_at + 4) for f in added]

    after = names.place_files(before + added, aliases=aliases, shown=memory(shown))

    assert_well_placed(before + added, after)
    assert memory(after).items() >= memory(shown).items()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_displayed_path_never_passes_to_another_file_while_both_exist(
    data: st.DataObject,
) -> None:
    universe = data.draw(listings(extra=("dup.txt~cfile_2", "a~cfile_3")))
    remembered: dict[FileId, str] = {}
    for _ in range(4):
        listed = data.draw(st.lists(st.sampled_from(universe), unique_by=lambda f: f.id))
        placed = names.place_files(listed, shown=remembered)

        assert_well_placed(listed, placed)
        for path, f in placed.items():
            assert remembered.get(f.id, path) == path, f"{f.id} moved"
        remembered = memory(placed)


def test_a_file_named_like_a_disambiguated_name_gets_its_own_suffix() -> None:
    older = cfile(0, "/mnt/data/dup.txt", 1)
    newer = cfile(1, "/mnt/data/dup.txt", 2)
    shown = names.place_files([older, newer])
    assert memory(shown) == {older.id: "dup.txt~cfile_0", newer.id: "dup.txt"}
    literal = cfile(2, "/mnt/data/dup.txt~cfile_0", 3)

    again = names.place_files([older, newer, literal], shown=memory(shown))
    fresh = names.place_files([older, newer, literal])

    assert memory(again)[literal.id] == "dup.txt~cfile_0~cfile_2"
    assert again == fresh  # the same names as a mount that sees all three at once


def test_a_newer_duplicate_does_not_take_the_name_of_the_file_shown() -> None:
    shown = names.place_files([cfile(0, "/mnt/data/a.txt", 1)])
    newer = cfile(1, "/mnt/data/a.txt", 2)

    again = names.place_files([cfile(0, "/mnt/data/a.txt", 1), newer], shown=memory(shown))

    assert memory(again) == {FileId("cfile_0"): "a.txt", newer.id: "a.txt~cfile_1"}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_while_a_name_is_expected_only_newcomers_of_that_name_are_held_back(
    data: st.DataObject,
) -> None:
    files = data.draw(listings())
    aliases = data.draw(aliases_for(files))
    seen_before = data.draw(st.lists(st.sampled_from(files), unique_by=lambda f: f.id))
    shown = memory(names.place_files(seen_before))
    expected = data.draw(st.sets(st.sampled_from(["a", "b", "dup.txt", "c"]), min_size=1))

    placed = names.place_files(files, aliases=aliases, shown=shown, withhold=expected)

    assert_well_placed([f for f in files if f in placed.values()], placed)
    wish = names.natural_paths(files, aliases=aliases)
    for f in files:
        base = posixpath.basename(wish[f.id])
        held = f.id not in shown and (base in expected or names.strip_prefix(base) in expected)
        assert (f in placed.values()) is not held, f"{f.id} wishes for {wish[f.id]}"
    assert all(memory(placed)[fid] == path for fid, path in shown.items() if fid in memory(placed))


def test_a_file_shown_where_newcomers_need_a_directory_keeps_its_path() -> None:
    shown = names.place_files([cfile(0, "/mnt/data/out")])
    inside = cfile(1, "/mnt/data/out/x", 1)

    again = names.place_files([cfile(0, "/mnt/data/out"), inside], shown=memory(shown))

    assert memory(again) == {FileId("cfile_0"): "out", inside.id: "out~cfile_1/x"}


def test_a_stripped_prefix_stays_stripped_when_the_plain_name_appears() -> None:
    prefixed = cfile(0, f"/mnt/data/{_HEX}-report.txt")
    shown = names.place_files([prefixed])
    assert list(shown) == ["report.txt"]
    plain = cfile(1, "/mnt/data/report.txt", 1)

    again = names.place_files([prefixed, plain], shown=memory(shown))

    assert memory(again) == {prefixed.id: "report.txt", plain.id: "report.txt~cfile_1"}


def test_an_alias_given_by_the_user_is_kept_even_when_it_looks_disambiguated() -> None:
    mine = cfile(0, f"/mnt/data/{_HEX}-a~cfile_9")

    placed = names.place_files([mine], aliases={mine.id: "a~cfile_9"})

    assert memory(placed) == {mine.id: "a~cfile_9"}


# ---- containers ------------------------------------------------------------------------------

_CONTAINER_NAMES = ["a", "a~cntr_1", "cntr_1", "cntr_2", "cntr_x", "", ".", "/", "é" * 130]


def resolve(
    shown: dict[str, Container], by_id: dict[ContainerId, Container], name: str
) -> Container | None:
    """A root lookup as the namespace does it: a directory name, else an id."""
    found = shown.get(name)
    if found is None and names.looks_like_container_id(name):
        found = by_id.get(ContainerId(name))
    return found


@st.composite
def container_lists(draw: st.DrawFn, first: int = 0) -> list[Container]:
    pool = _CONTAINER_NAMES + [f"cntr_{i}" for i in range(6)] + [f"a~cntr_{i}" for i in range(6)]
    listed = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=8))
    return [
        Container(id=ContainerId(f"cntr_{first + i}"), name=n, created_at=i, status="running")
        for i, n in enumerate(listed)
    ]


@settings(max_examples=300, deadline=None)
@given(container_lists(), st.randoms(use_true_random=False))
def test_every_container_is_shown_once_and_its_id_resolves_to_it(
    containers: list[Container], rnd: Any
) -> None:
    shown = names.container_dir_names(containers)

    assert sorted(c.id for c in shown.values()) == sorted(c.id for c in containers)
    assert all(valid(n) and "/" not in n for n in shown)
    by_id = {c.id: c for c in containers}
    for c in containers:
        assert resolve(shown, by_id, c.id) is c
    shuffled = list(containers)
    rnd.shuffle(shuffled)
    assert names.container_dir_names(shuffled) == shown


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_adding_containers_never_gives_a_shown_name_to_another(data: st.DataObject) -> None:
    before = data.draw(container_lists())
    added = data.draw(container_lists(first=len(before)))
    shown = names.container_dir_names(before)

    after = names.container_dir_names(before + added)

    for name, c in after.items():
        assert name not in shown or shown[name].id == c.id, name


def test_a_container_named_like_another_id_is_shown_with_its_own_id() -> None:
    real = Container(ContainerId("cntr_real"), "data", 1, "running")
    impostor = Container(ContainerId("cntr_imp"), "cntr_real", 2, "running")
    own = Container(ContainerId("cntr_own"), "", 3, "running")

    shown = names.container_dir_names([real, impostor, own])

    assert shown == {"data": real, "cntr_real~cntr_imp": impostor, "cntr_own": own}


# ---- through the namespace -------------------------------------------------------------------


async def test_a_container_id_resolves_to_it_when_another_is_named_that_id(fs: Fs) -> None:
    real = await fs.container("real")
    await fs.add_file(real.id, "/mnt/data/real.txt", b"real\n")
    impostor = await fs.container(real.id)
    await fs.add_file(impostor.id, "/mnt/data/impostor.txt", b"impostor\n")

    by_id = await fs.inode(real.id)

    assert await fs.listing(by_id) == ["real.txt"]
    root = await fs.listing(ROOT_INODE)
    assert f"{real.id}~{impostor.id}" in root and real.id not in root
    assert await fs.listing(await fs.inode(f"{real.id}~{impostor.id}")) == ["impostor.txt"]


async def test_a_container_keeps_its_name_when_its_twin_expires_and_hides(fs: Fs) -> None:
    one, two = await fs.container("twin"), await fs.container("twin")
    assert await fs.listing(ROOT_INODE) == sorted([f"twin~{one.id}", f"twin~{two.id}"])

    (await fs.admin.post(f"/_emulator/containers/{one.id}/expire")).raise_for_status()
    fs.ns.invalidate_containers()

    # the name "twin" would pass from the expired container to the other: it stays unused
    assert await fs.listing(ROOT_INODE) == [f"twin~{two.id}"]


async def test_a_file_keeps_its_name_when_a_file_named_like_it_appears(fs: Fs) -> None:
    box = await fs.container("box")
    await fs.add_file(box.id, "/mnt/data/dup.txt", b"first\n")
    await fs.add_file(box.id, "/mnt/data/dup.txt", b"second\n")
    box_inode = await fs.inode("box")
    names_before = await fs.listing(box_inode)
    [moved] = [n for n in names_before if "~" in n]
    content = await fs.read_file(await fs.inode("box", moved))

    await fs.add_file(box.id, f"/mnt/data/{moved}", b"literal\n")
    fs.ns.invalidate_listing(box.id)

    names_after = await fs.listing(box_inode)
    assert len(names_after) == 3 and set(names_before) < set(names_after)
    assert await fs.read_file(await fs.inode("box", moved)) == content


async def test_an_overwrite_through_the_mount_keeps_the_name_for_the_new_content(fs: Fs) -> None:
    box = await fs.container("box")
    await fs.add_file(box.id, "/mnt/data/notes.txt", b"old\n")
    box_inode = await fs.inode("box")
    assert await fs.listing(box_inode) == ["notes.txt"]

    await fs.write_file(box_inode, "notes.txt", b"new\n")
    fs.ns.invalidate_listing(box.id)

    assert await fs.listing(box_inode) == ["notes.txt"]
    assert await fs.read_file(await fs.inode("box", "notes.txt")) == b"new\n"


async def test_mkdir_of_a_container_named_like_an_id_is_refused_with_einval(fs: Fs) -> None:
    for name in ("cntr_abc", "box~cntr_abc"):
        with pytest.raises(pyfuse3.FUSEError) as failed:
            await fs.ops.mkdir(ROOT_INODE, name.encode(), 0o755, CTX)
        assert errno_of(failed) == errno.EINVAL
    assert await fs.listing(ROOT_INODE) == []


@pytest.mark.parametrize("policy", UPLOAD_PATH_POLICIES)
async def test_a_name_chosen_through_the_mount_that_looks_disambiguated_survives_a_remount(
    tmp_path: Path, policy: UploadPaths
) -> None:
    app = create_app(EmulatorConfig(data_dir=tmp_path / "emulator", upload_paths=policy))
    try:
        async with trio.open_nursery() as nursery:
            first = await build_fs(tmp_path, nursery, app)
            await first.container("box")
            await first.write_file(await first.inode("box"), "x~cfile_abc", b"mine\n")
            nursery.cancel_scope.cancel()
        await close_fs(first)
        async with trio.open_nursery() as nursery:
            again = await build_fs(tmp_path, nursery, app)
            assert await again.listing(await again.inode("box")) == ["x~cfile_abc"]
            nursery.cancel_scope.cancel()
        await close_fs(again)
    finally:
        app.state.emulator.close()


async def test_a_root_name_that_is_not_a_plain_id_is_simply_not_found(fs: Fs) -> None:
    for name in ("cntr_a b", "cntr_..", "cntr_x~cntr_y"):
        entry = await fs.lookup(ROOT_INODE, name)  # no request is made: no EIO either
        assert entry.st_ino == 0, name  # a negative entry: ENOENT
