"""The pyfuse3 handlers called directly (no kernel) over the emulator app in-process.

The layers are built as the daemon builds them (``Daemon.serve``); the API is the emulator's
Starlette app behind ``httpx.ASGITransport``. ``readdir`` needs a kernel token, so directory
contents are checked through ``Namespace.list_dir``, which ``opendir`` snapshots. Also: a
property test of the naming rules in ``containerfs.paths``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
from fs_harness import (
    CTX,
    NEGATIVE_TTL,
    Fs,
    build_fs,
    close_fs,
    errno_of,
    setattr_fields,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from containerfs import paths as names
from containerfs.models import Container, ContainerFile, ContainerId, FileId
from containerfs.ns.inodes import ROOT_INODE, Node


async def test_lookup_finds_containers_files_and_nested_directories(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/out/chart.txt", b"chart")

    box = await fs.lookup(ROOT_INODE, "box")
    out = await fs.lookup(box.st_ino, "out")
    chart = await fs.lookup(out.st_ino, "chart.txt")

    assert stat.S_ISDIR(box.st_mode) and stat.S_ISDIR(out.st_mode)
    assert stat.S_ISREG(chart.st_mode) and chart.st_size == 5
    assert chart.entry_timeout > 0 and chart.attr_timeout > 0
    assert (await fs.lookup(out.st_ino, "..")).st_ino == box.st_ino
    assert (await fs.lookup(box.st_ino, "..")).st_ino == ROOT_INODE
    assert (await fs.lookup(box.st_ino, "out")).st_ino == out.st_ino  # stable inode


async def test_lookup_of_a_missing_name_is_a_cacheable_negative_entry(fs: Fs) -> None:
    await fs.container("box")
    box = await fs.inode("box")

    for parent, name in [(ROOT_INODE, "nothing"), (box, "absent.txt")]:
        entry = await fs.lookup(parent, name)
        assert entry.st_ino == 0
        assert entry.entry_timeout == NEGATIVE_TTL


async def test_names_over_255_bytes_are_enametoolong(fs: Fs) -> None:
    await fs.container("box")
    box = await fs.inode("box")
    long = b"x" * 256

    for call in (
        fs.ops.lookup(box, long, CTX),
        fs.ops.create(box, long, 0o644, os.O_WRONLY | os.O_CREAT, CTX),
        fs.ops.mkdir(ROOT_INODE, long, 0o755, CTX),
    ):
        with pytest.raises(pyfuse3.FUSEError) as exc:
            await call
        assert errno_of(exc) == errno.ENAMETOOLONG


async def test_a_container_id_resolves_by_lookup_but_is_not_listed(fs: Fs) -> None:
    c = await fs.container("named")

    entry = await fs.lookup(ROOT_INODE, c.id)

    assert entry.st_ino == await fs.inode("named")
    assert await fs.listing(ROOT_INODE) == ["named"]


async def test_getattr_reports_the_listed_size_and_an_unknown_inode_is_enoent(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/a.txt", b"12345")
    inode = await fs.inode("box", "a.txt")

    attrs = await fs.ops.getattr(inode, CTX)

    assert attrs.st_size == 5 and attrs.st_ino == inode
    assert attrs.st_uid == os.getuid() and attrs.st_gid == os.getgid()
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.getattr(999_999, CTX)
    assert errno_of(exc) == errno.ENOENT


async def test_list_dir_shows_containers_and_nested_paths_with_prefixes_stripped(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.container("other")
    await fs.client.upload_file(c.id, _spool(fs, b"csv"), filename="data.csv")
    await fs.add_file(c.id, "/mnt/data/out/deep/x.txt", b"x")
    await fs.add_file(c.id, "/elsewhere/y.txt", b"y")

    assert await fs.listing(ROOT_INODE) == ["box", "other"]
    box = await fs.inode("box")
    assert await fs.listing(box) == [names.OUTSIDE_DIR, "data.csv", "out"]
    assert await fs.listing(await fs.inode("box", "out")) == ["deep"]
    assert await fs.listing(await fs.inode("box", "out", "deep")) == ["x.txt"]
    outside = await fs.inode("box", names.OUTSIDE_DIR, "elsewhere", "y.txt")
    assert await fs.read_file(outside) == b"y"


def _spool(fs: Fs, data: bytes) -> Path:
    path = fs.ns.state.new_spool_path()
    path.write_bytes(data)
    return path


# ---- reading ---------------------------------------------------------------------------


async def test_open_and_read_return_the_server_content(fs: Fs) -> None:
    c = await fs.container("box")
    data = os.urandom(200_000)
    await fs.client.upload_file(c.id, _spool(fs, data), filename="blob.bin")
    inode = await fs.inode("box", "blob.bin")

    assert await fs.read_file(inode) == data
    info = await fs.ops.open(inode, os.O_RDONLY, CTX)
    assert await fs.ops.read(info.fh, 100_000, 10) == data[100_000:100_010]
    await fs.ops.release(info.fh)


async def test_a_file_without_a_size_reports_its_size_before_it_is_read(fs: Fs) -> None:
    c = await fs.container("box")
    content = b"assistant output " * 10_000
    await fs.add_file(c.id, "/mnt/data/out.txt", content, report_bytes=False)
    inode = await fs.inode("box", "out.txt")

    assert (await fs.ops.getattr(inode, CTX)).st_size == len(content)
    info = await fs.ops.open(inode, os.O_RDONLY, CTX)
    assert not info.direct_io  # the size is known: page cache and mmap as for any file
    await fs.ops.release(info.fh)
    assert await fs.read_file(inode) == content


# ---- writing ---------------------------------------------------------------------------


async def test_create_write_flush_release_uploads_the_file(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")

    inode = await fs.write_file(box, "new.txt", b"hello server")

    assert await fs.server_files(c.id) == {"new.txt": b"hello server"}
    assert (await fs.lookup(box, "new.txt")).st_ino == inode
    assert (await fs.ops.getattr(inode, CTX)).st_size == 12
    assert await fs.read_file(inode) == b"hello server"
    assert fs.writer.pending() == []


async def test_overwriting_a_file_replaces_its_server_copy(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    inode = await fs.write_file(box, "f.txt", b"old content")

    info = await fs.ops.open(inode, os.O_WRONLY | os.O_TRUNC, CTX)
    await fs.ops.write(info.fh, 0, b"new")
    await fs.ops.flush(info.fh)
    await fs.ops.release(info.fh)

    assert await fs.server_files(c.id) == {"f.txt": b"new"}


async def test_unlink_deletes_the_server_file(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/gone.txt", b"bye")
    await fs.add_file(c.id, "/mnt/data/kept.txt", b"stay")
    box = await fs.inode("box")

    await fs.ops.unlink(box, b"gone.txt", CTX)

    assert await fs.server_files(c.id) == {"kept.txt": b"stay"}
    assert (await fs.lookup(box, "gone.txt")).st_ino == 0
    assert await fs.listing(box) == ["kept.txt"]


async def test_mkdir_and_rmdir_at_the_root_create_and_delete_containers(fs: Fs) -> None:
    entry = await fs.ops.mkdir(ROOT_INODE, b"fresh", 0o755, CTX)
    assert stat.S_ISDIR(entry.st_mode)
    made = [c async for c in fs.client.list_containers() if c.name == "fresh"]
    assert len(made) == 1
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.mkdir(ROOT_INODE, b"fresh", 0o755, CTX)
    assert errno_of(exc) == errno.EEXIST

    await fs.write_file(entry.st_ino, "inside.txt", b"x")
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.rmdir(ROOT_INODE, b"fresh", CTX)
    assert errno_of(exc) == errno.ENOTEMPTY

    await fs.ops.unlink(entry.st_ino, b"inside.txt", CTX)
    await fs.ops.rmdir(ROOT_INODE, b"fresh", CTX)
    assert [c async for c in fs.client.list_containers()] == []
    assert (await fs.lookup(ROOT_INODE, "fresh")).st_ino == 0


async def test_rmdir_of_a_container_looks_again_before_deleting_it(fs: Fs) -> None:
    c = await fs.container("busy")
    busy = await fs.inode("busy")
    assert await fs.listing(busy) == []  # cached empty
    await fs.add_file(c.id, "/mnt/data/late.txt", b"written by the assistant meanwhile")

    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.rmdir(ROOT_INODE, b"busy", CTX)

    assert errno_of(exc) == errno.ENOTEMPTY
    assert [x.id async for x in fs.client.list_containers()] == [c.id]


async def test_mkdir_inside_a_container_makes_a_local_directory_until_removed(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")

    sub = await fs.ops.mkdir(box, b"sub", 0o755, CTX)
    await fs.write_file(sub.st_ino, "in-sub.txt", b"nested")

    assert await fs.listing(box) == ["sub"]
    assert await fs.listing(sub.st_ino) == ["in-sub.txt"]
    assert await fs.server_files(c.id) == {"in-sub.txt": b"nested"}
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.rmdir(box, b"sub", CTX)
    assert errno_of(exc) == errno.ENOTEMPTY
    await fs.ops.unlink(sub.st_ino, b"in-sub.txt", CTX)
    await fs.ops.rmdir(box, b"sub", CTX)
    assert await fs.listing(box) == []


async def test_rename_uploads_under_the_new_name_and_deletes_the_old(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/before.txt", b"moving")
    box = await fs.inode("box")
    inode = await fs.inode("box", "before.txt")

    await fs.ops.rename(box, b"before.txt", box, b"after.txt", 0, CTX)

    assert await fs.server_files(c.id) == {"after.txt": b"moving"}
    assert (await fs.lookup(box, "after.txt")).st_ino == inode
    assert (await fs.lookup(box, "before.txt")).st_ino == 0
    assert await fs.read_file(inode) == b"moving"


async def test_setattr_keeps_mode_and_times_and_refuses_chown(fs: Fs) -> None:
    await fs.container("box")
    inode = await fs.write_file(await fs.inode("box"), "f.txt", b"data")
    attr = pyfuse3.EntryAttributes()
    attr.st_mode = stat.S_IFREG | 0o600
    attr.st_mtime_ns = 1_600_000_000_123_456_789
    attr.st_atime_ns = 1_500_000_000_000_000_000

    await fs.ops.setattr(inode, attr, setattr_fields("mode", "mtime", "atime"), None, CTX)

    got = await fs.ops.getattr(inode, CTX)
    assert stat.S_IMODE(got.st_mode) == 0o600
    assert got.st_mtime_ns == attr.st_mtime_ns and got.st_atime_ns == attr.st_atime_ns
    other = pyfuse3.EntryAttributes()
    other.st_uid = os.getuid() + 1
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.setattr(inode, other, setattr_fields("uid"), None, CTX)
    assert errno_of(exc) == errno.EPERM


async def test_setattr_size_truncates_the_server_copy(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/t.txt", b"0123456789")
    inode = await fs.inode("box", "t.txt")
    attr = pyfuse3.EntryAttributes()
    attr.st_size = 4

    got = await fs.ops.setattr(inode, attr, setattr_fields("size"), None, CTX)

    assert got.st_size == 4
    assert await fs.server_files(c.id) == {"t.txt": b"0123"}


async def test_links_and_special_files_are_eperm(fs: Fs) -> None:
    await fs.container("box")
    box = await fs.inode("box")
    inode = await fs.write_file(box, "f.txt", b"x")

    for call in (
        fs.ops.symlink(box, b"ln", b"f.txt", CTX),
        fs.ops.link(inode, box, b"hard", CTX),
        fs.ops.mknod(box, b"fifo", stat.S_IFIFO | 0o644, 0, CTX),
    ):
        with pytest.raises(pyfuse3.FUSEError) as exc:
            await call
        assert errno_of(exc) == errno.EPERM


# ---- metadata --------------------------------------------------------------------------


async def test_xattrs_describe_files_and_containers(fs: Fs) -> None:
    c = await fs.container("box", expires_after_minutes=33, memory_limit="4g")
    f = await fs.add_file(c.id, "/mnt/data/doc.txt", b"words")
    box = await fs.inode("box")
    doc = await fs.inode("box", "doc.txt")

    expected_file = {
        "id": f["id"],
        "path": "/mnt/data/doc.txt",
        "source": f["source"],
        "created_at": str(f["created_at"]),
    }
    expected_container = {
        "id": c.id,
        "status": "running",
        "memory_limit": "4g",
        "expires_after_minutes": "33",
    }
    for inode, expected in [(doc, expected_file), (box, expected_container)]:
        listed = {n.decode() for n in await fs.ops.listxattr(inode, CTX)}
        assert {f"user.containerfs.{k}" for k in expected} <= listed
        for key, value in expected.items():
            got = await fs.ops.getxattr(inode, f"user.containerfs.{key}".encode(), CTX)
            assert got.decode() == value
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.getxattr(doc, b"user.containerfs.nope", CTX)
    assert errno_of(exc) == pyfuse3.ENOATTR


@pytest.mark.parametrize("name", [b"security.selinux", b"system.posix_acl_access", b"trusted.x"])
async def test_labels_and_acls_are_not_supported_so_ls_asks_only_once(fs: Fs, name: bytes) -> None:
    # ls -l stops asking a filesystem for labels and ACLs after one "not supported"; an
    # "absent" would make it ask twice per file listed, each a FUSE round trip
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/doc.txt", b"words")
    for inode in (await fs.inode("box"), await fs.inode("box", "doc.txt")):
        with pytest.raises(pyfuse3.FUSEError) as exc:
            await fs.ops.getxattr(inode, name, CTX)
        assert errno_of(exc) == errno.EOPNOTSUPP


async def test_statfs_answers_with_room_and_the_name_limit(fs: Fs) -> None:
    s = await fs.ops.statfs(CTX)

    assert s.f_namemax == 255
    assert s.f_bsize > 0 and s.f_blocks > 0 and s.f_bavail > 0 and s.f_files > 0


async def test_flush_fsync_and_xattr_writes_never_answer_enosys(fs: Fs) -> None:
    c = await fs.container("box")
    await fs.add_file(c.id, "/mnt/data/r.txt", b"r")
    inode = await fs.inode("box", "r.txt")

    info = await fs.ops.open(inode, os.O_RDONLY, CTX)
    await fs.ops.flush(info.fh)
    await fs.ops.fsync(info.fh, False)
    await fs.ops.release(info.fh)
    for call in (
        fs.ops.setxattr(inode, b"user.x", b"1", CTX),
        fs.ops.removexattr(inode, b"user.x", CTX),
    ):
        with pytest.raises(pyfuse3.FUSEError) as exc:
            await call
        assert errno_of(exc) not in (errno.ENOSYS, 0)


# ---- errors ----------------------------------------------------------------------------


async def test_a_failed_upload_is_eio_at_flush_and_stays_pending_until_retried(fs: Fs) -> None:
    c = await fs.container("box")
    box = await fs.inode("box")
    await fs.faults([{"route": "upload_file", "action": "error", "status": 500, "count": 100}])

    info, entry = await fs.ops.create(box, b"p.txt", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
    await fs.ops.write(info.fh, 0, b"precious")
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.ops.flush(info.fh)
    assert errno_of(exc) == errno.EIO
    await fs.ops.release(info.fh)

    assert [p.path for p in fs.writer.pending()] == ["p.txt"]
    assert await fs.listing(box) == ["p.txt"]  # still shown, from its spool
    assert await fs.read_file(entry.st_ino) == b"precious"
    assert await fs.server_files(c.id) == {}

    await fs.faults([])
    await fs.writer.retry_now()
    assert await fs.server_files(c.id) == {"p.txt": b"precious"}
    assert fs.writer.pending() == []


async def test_a_file_deleted_elsewhere_reads_as_enoent(fs: Fs) -> None:
    c = await fs.container("box")
    f = await fs.add_file(c.id, "/mnt/data/v.txt", b"vanishing")
    inode = await fs.inode("box", "v.txt")
    await fs.client.delete_file(c.id, FileId(f["id"]))

    with pytest.raises(pyfuse3.FUSEError) as exc:
        info = await fs.ops.open(inode, os.O_RDONLY, CTX)
        await fs.ops.read(info.fh, 0, 100)
    assert errno_of(exc) == errno.ENOENT


async def test_an_expired_container_is_hidden_even_by_id(fs: Fs) -> None:
    c = await fs.container("old")
    await fs.add_file(c.id, "/mnt/data/x.txt", b"x")
    (await fs.admin.post(f"/_emulator/containers/{c.id}/expire")).raise_for_status()

    assert await fs.listing(ROOT_INODE) == []
    assert (await fs.lookup(ROOT_INODE, c.id)).st_ino == 0


async def test_an_unexpected_exception_becomes_eio_and_the_handlers_keep_working(
    fs: Fs, caplog: pytest.LogCaptureFixture
) -> None:
    await fs.container("box")

    class Broken(Exception):
        pass

    async def explode(parent: Node, name: str) -> Node | None:
        raise Broken("a bug")

    real = fs.ns.lookup
    fs.ns.lookup = explode  # type: ignore[method-assign]
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await fs.lookup(ROOT_INODE, "box")
    assert errno_of(exc) == errno.EIO
    assert "unexpected error in lookup" in caplog.text

    fs.ns.lookup = real  # type: ignore[method-assign]
    assert (await fs.lookup(ROOT_INODE, "box")).st_ino > 0


async def test_a_read_only_mount_answers_every_change_with_erofs(tmp_path: Path, app: Any) -> None:
    async with trio.open_nursery() as nursery:
        ro = await build_fs(tmp_path, nursery, app, read_only=True)
        c = await ro.container("box")
        await ro.add_file(c.id, "/mnt/data/f.txt", b"data")
        box = await ro.inode("box")
        inode = await ro.inode("box", "f.txt")
        attr = pyfuse3.EntryAttributes()
        attr.st_mode = stat.S_IFREG | 0o600

        for call in (
            ro.ops.create(box, b"n.txt", 0o644, os.O_WRONLY | os.O_CREAT, CTX),
            ro.ops.open(inode, os.O_WRONLY, CTX),
            ro.ops.unlink(box, b"f.txt", CTX),
            ro.ops.mkdir(ROOT_INODE, b"new", 0o755, CTX),
            ro.ops.mkdir(box, b"sub", 0o755, CTX),
            ro.ops.rmdir(ROOT_INODE, b"box", CTX),
            ro.ops.rename(box, b"f.txt", box, b"g.txt", 0, CTX),
            ro.ops.setattr(inode, attr, setattr_fields("mode"), None, CTX),
        ):
            with pytest.raises(pyfuse3.FUSEError) as exc:
                await call
            assert errno_of(exc) == errno.EROFS
        assert await ro.read_file(inode) == b"data"
        assert await ro.server_files(c.id) == {"f.txt": b"data"}
        nursery.cancel_scope.cancel()
    await close_fs(ro)


# ---- naming rules (property tests) -----------------------------------------------------

_COMPONENTS = st.sampled_from(
    ["a", "b", "out", "x.txt", "a~cfile_1", "a~cfile_2", ".", "..", "", "é" * 130, "~"]
)
_HEX = "0123456789abcdef" * 2


@st.composite
def _server_paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_COMPONENTS, min_size=1, max_size=4))
    if draw(st.booleans()):
        parts[-1] = f"{_HEX}-{parts[-1]}"  # a server-added upload prefix
    root = draw(st.sampled_from(["/mnt/data/", "/mnt/data/", "/tmp/", "/", "/mnt/"]))
    return root + "/".join(parts)


@st.composite
def _listings(draw: st.DrawFn) -> tuple[list[ContainerFile], dict[FileId, str]]:
    paths = draw(st.lists(_server_paths(), min_size=1, max_size=12))
    files = [
        ContainerFile(
            id=FileId(f"cfile_{i}"),
            container_id=ContainerId("cntr_1"),
            path=p,
            bytes=1,
            created_at=draw(st.integers(0, 3)),
            source="user",
        )
        for i, p in enumerate(paths)
    ]
    aliased = draw(st.lists(st.sampled_from(files), unique_by=lambda f: f.id, max_size=3))
    aliases = {
        f.id: draw(st.sampled_from(["a", "a/b", "out/x.txt", "a~cfile_1", "b/a"])) for f in aliased
    }
    return files, aliases


def _file(fid: str, path: str, created_at: int = 0) -> ContainerFile:
    return ContainerFile(FileId(fid), ContainerId("cntr_1"), path, 1, created_at, "user")


def test_a_prefix_is_kept_when_the_stripped_name_is_a_directory() -> None:
    prefixed = f"{_HEX}-out"
    files = [_file("cfile_a", f"/mnt/data/{prefixed}"), _file("cfile_b", "/mnt/data/out/x")]

    assert sorted(names.place_files(files)) == [prefixed, "out/x"]


def test_a_duplicate_never_takes_the_name_of_another_file() -> None:
    files = [
        _file("cfile_new", "/mnt/data/a", created_at=2),
        _file("cfile_old", "/mnt/data/a", created_at=1),
        _file("cfile_lit", "/mnt/data/a~cfile_old"),
    ]

    placed = {p: f.id for p, f in names.place_files(files).items()}

    # the literal name looks like a disambiguated one: it gets its own ~ID, never old's name
    assert placed == {
        "a": "cfile_new",
        "a~cfile_old": "cfile_old",
        "a~cfile_old~cfile_lit": "cfile_lit",
    }


def _valid_display_path(path: str) -> bool:
    parts = path.split("/")
    return all(
        p not in ("", ".", "..") and "\0" not in p and len(p.encode()) <= names.NAME_MAX
        for p in parts
    )


@settings(max_examples=400, deadline=None)
@given(_listings(), st.randoms(use_true_random=False))
def test_place_files_shows_every_file_once_at_a_unique_valid_path(
    listing: tuple[list[ContainerFile], dict[FileId, str]], rnd: Any
) -> None:
    files, aliases = listing

    placed = names.place_files(files, aliases=aliases)

    assert sorted(f.id for f in placed.values()) == sorted(f.id for f in files)
    assert all(_valid_display_path(p) for p in placed)
    dirs = {d for p in placed for d in names.ancestors(p)}
    assert not dirs & set(placed), "a file and a directory at the same path"
    shuffled = list(files)
    rnd.shuffle(shuffled)
    assert names.place_files(shuffled, aliases=aliases) == placed


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "a~cntr_1", "/", ".", "", "b/c", "é" * 130]), min_size=1, max_size=8
    ),
    st.randoms(use_true_random=False),
)
def test_container_dir_names_are_unique_valid_and_order_independent(
    container_names: list[str], rnd: Any
) -> None:
    containers = [
        Container(id=ContainerId(f"cntr_{i}"), name=name, created_at=i, status="running")
        for i, name in enumerate(container_names)
    ]

    shown = names.container_dir_names(containers)

    assert sorted(c.id for c in shown.values()) == sorted(c.id for c in containers)
    assert all(_valid_display_path(n) and "/" not in n for n in shown)
    shuffled = list(containers)
    rnd.shuffle(shuffled)
    assert names.container_dir_names(shuffled) == shown
