"""A server that lies or stalls (issue 12): one test per row, through a real mount.

The mount talks to the emulator through :mod:`lying_proxy`, which rewrites the answers a
row needs. Every test asserts the behaviour the issue asks for; while a row is not fixed
its test is an expected failure (``strict``: a fix makes it pass, and the mark must go).
Operations that may hang run in child processes with a hard bound (:mod:`bounded_ops`), so
a hang costs the bound, never the suite. Teardown stops the proxy first (releasing stalled
requests), then unmounts.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import posixpath
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bounded_ops import BoundedOps, Outcome
from emulator_proc import EmulatorProcess
from lying_proxy import Answer, Drop, LyingProxy, Reply, Rewrite, Rule, ShortBody, Stall, Trickle
from mount_proc import MountProcess, mount_env, start_mount

pytestmark = pytest.mark.mount

BOUND = 10.0  # hard limit for one operation that the issue says must not hang
IO_TIMEOUT = "2"  # seconds, given to the mount once it has --io-timeout
NETWORK_ERRNOS = {errno.EIO, errno.ETIMEDOUT, errno.ENOTCONN}


@functools.cache
def io_timeout_args() -> tuple[str, ...]:
    """``--io-timeout`` when the mount has it; until then the bound ends the operation."""
    usage = subprocess.run(
        [sys.executable, "-m", "containerfs", "mount", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return ("--io-timeout", IO_TIMEOUT) if "--io-timeout" in usage else ()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Hostile:
    """A lying proxy in front of the session emulator, mounts through it, bounded ops."""

    def __init__(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        self.emu = emu
        self.tmp_path = tmp_path
        self.proxy = LyingProxy(emu.root_url)
        self.ops = BoundedOps()
        self.mounts: list[MountProcess] = []
        self.api = httpx.Client(
            base_url=emu.base_url + "/", headers={"Authorization": "Bearer sk-test"}, timeout=30
        )

    # -- the server as it really is ----------------------------------------------------------
    def container(self, prefix: str, files: dict[str, bytes], **seed: Any) -> str:
        """A new container with ``files`` (name -> content) under the root; its id."""
        response = self.api.post("containers", json={"name": f"{prefix}-{uuid.uuid4().hex[:8]}"})
        response.raise_for_status()
        cid: str = response.json()["id"]
        for name, content in files.items():
            self.emu.add_file(cid, f"/mnt/data/{name}", content, **seed)
        return cid

    def name_of(self, cid: str) -> str:
        response = self.api.get(f"containers/{cid}")
        response.raise_for_status()
        name: str = response.json()["name"]
        return name

    def exists(self, cid: str) -> bool:
        status = self.api.get(f"containers/{cid}").status_code
        assert status in (200, 404), status
        return status == 200

    def files(self, cid: str) -> dict[str, str]:
        """Basename -> file id, read directly from the emulator."""
        response = self.api.get(f"containers/{cid}/files", params={"limit": 100})
        response.raise_for_status()
        return {posixpath.basename(f["path"]): f["id"] for f in response.json()["data"]}

    def content(self, cid: str, fid: str) -> bytes:
        response = self.api.get(f"containers/{cid}/files/{fid}/content")
        response.raise_for_status()
        return response.content

    # -- mounts through the proxy ------------------------------------------------------------
    def mount(self, *args: str, name: str = "mnt") -> MountProcess:
        env = mount_env(self.emu, OPENAI_BASE_URL=self.proxy.base_url)
        mp = start_mount(
            self.emu,
            self.tmp_path,
            "--drain-timeout",
            "2",
            *io_timeout_args(),
            *args,
            env=env,
            name=name,
        )
        self.mounts.append(mp)
        return mp

    def dir_of(self, mp: MountProcess, cid: str) -> Path:
        return mp.path(self.name_of(cid))

    def run(self, op: str, *args: str | Path, timeout: float = BOUND) -> Outcome:
        return self.ops.run(op, *args, timeout=timeout)

    def close(self) -> None:
        self.proxy.stop()  # stalled requests end: the daemon can answer the kernel again
        self.ops.kill()
        for mp in self.mounts:
            # a daemon still retrying a server that has gone away may take long to stop;
            # killing it ends the FUSE connection, and with it every wait in the kernel
            if mp.proc.poll() is None:
                mp.proc.terminate()
                try:
                    mp.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    mp.proc.kill()
        for mp in reversed(self.mounts):
            mp.unmount(timeout=5)
        self.ops.close()
        self.api.close()


@pytest.fixture
def hostile(emulator: EmulatorProcess, tmp_path: Path) -> Iterator[Hostile]:
    made = Hostile(emulator, tmp_path)
    yield made
    made.close()


def files_path(cid: str) -> str:
    return rf"^/v1/containers/{cid}/files$"


def content_path(cid: str, fid: str) -> str:
    return rf"^/v1/containers/{cid}/files/{fid}/content$"


def edit_items(edit: Callable[[dict[str, Any]], None]) -> Callable[[Any], Any]:
    def apply(page: Any) -> Any:
        for item in page["data"]:
            edit(item)
        return page

    return apply


def assert_failed_in_time(outcome: Outcome, allowed: set[int] = NETWORK_ERRNOS) -> None:
    assert not outcome.timed_out, str(outcome)
    assert outcome.errno in allowed, str(outcome)


# -- the server lies ------------------------------------------------------------------------


def test_a_file_listed_with_id_dotdot_never_deletes_its_container(hostile: Hostile) -> None:
    cid = hostile.container("dotdot", {"keep.txt": b"keep\n", "victim.txt": b"victim\n"})

    def dotdot(item: dict[str, Any]) -> None:
        if item["path"].endswith("/victim.txt"):
            item["id"] = ".."

    hostile.proxy.add(Rule(files_path(cid), Rewrite(edit_items(dotdot)), method="GET"))
    mp = hostile.mount()
    victim = hostile.dir_of(mp, cid) / "victim.txt"
    replaced = hostile.run("write", victim, "4")
    removed = hostile.run("unlink", victim)

    deletes = [p for m, p in hostile.proxy.requests if m == "DELETE"]
    assert hostile.exists(cid), f"container deleted; {replaced}; {removed}; DELETEs {deletes}"
    assert f"/v1/containers/{cid}" not in {p.rstrip("/") for p in deletes}
    assert "keep.txt" in hostile.files(cid)


def test_a_listing_without_a_list_is_eio_and_rmdir_deletes_nothing(hostile: Hostile) -> None:
    cid = hostile.container("nolist", {f"f{i}.txt": f"{i}\n".encode() for i in range(8)})
    envelope = {"error": {"message": "internal", "type": "server_error", "code": None}}
    hostile.proxy.add(Rule(files_path(cid), Rewrite(lambda _: envelope), method="GET"))
    mp = hostile.mount()
    directory = hostile.dir_of(mp, cid)
    listed = hostile.run("list", directory)
    removed = hostile.run("rmdir", directory)

    assert hostile.exists(cid), f"a container of 8 files was deleted; {listed}; {removed}"
    assert len(hostile.files(cid)) == 8
    assert removed.errno is not None, str(removed)
    assert listed.errno == errno.EIO, str(listed)


def test_an_html_page_answered_for_content_is_not_kept_across_a_remount(
    hostile: Hostile,
) -> None:
    real = b"the real notes\n"
    cid = hostile.container("html", {"notes.txt": real}, report_bytes=False)
    fid = hostile.files(cid)["notes.txt"]
    page = b"<html><body>502 Bad Gateway</body></html>\n"
    hostile.proxy.add(Rule(content_path(cid, fid), Answer(200, page, "text/html"), count=1))
    mp = hostile.mount()
    notes = hostile.dir_of(mp, cid) / "notes.txt"
    first = hostile.run("read", notes)  # may be the page: nothing tells it from a file
    mp.unmount(timeout=10)

    again = hostile.mount()  # same state and cache directories
    notes = hostile.dir_of(again, cid) / "notes.txt"
    reread = hostile.run("read", notes)
    appended = hostile.run("append", notes, "one more line\n")

    after = hostile.files(cid)
    contents = {name: hostile.content(cid, i) for name, i in after.items()}
    assert reread.report.get("sha256") == sha(real), f"{first}; after remount {reread}"
    assert appended.errno is None, str(appended)
    # the server may store a replacement under a prefixed name (`<hex>-notes.txt`); the mount
    # still shows it as notes.txt
    assert list(contents.values()) == [real + b"one more line\n"], contents
    shown = hostile.run("read", notes)
    assert shown.report.get("sha256") == sha(real + b"one more line\n"), str(shown)


def test_endless_pagination_ends_ls_with_eio(hostile: Hostile) -> None:
    cid = hostile.container("endless", {"a.txt": b"a\n"})
    real = hostile.api.get(f"containers/{cid}/files").json()
    cursors = iter(["cfile_aaaa", "cfile_bbbb"] * 1_000_000)

    def forever() -> Any:
        # answered by the proxy: the emulator would refuse the made-up cursors
        return {**real, "has_more": True, "last_id": next(cursors)}

    hostile.proxy.add(Rule(files_path(cid), Reply(forever), method="GET"))
    mp = hostile.mount()
    listed = hostile.run("list", hostile.dir_of(mp, cid))
    assert_failed_in_time(listed, {errno.EIO})


def test_a_listed_size_smaller_than_the_content_never_gives_a_short_read(
    hostile: Hostile,
) -> None:
    real = b"0123456789"
    cid = hostile.container("small", {"ten.txt": real})

    def four(item: dict[str, Any]) -> None:
        item["bytes"] = 4

    hostile.proxy.add(Rule(files_path(cid), Rewrite(edit_items(four)), method="GET"))
    mp = hostile.mount()
    read = hostile.run("read", hostile.dir_of(mp, cid) / "ten.txt")
    assert not read.timed_out, str(read)
    if read.errno is None:
        assert read.report["sha256"] == sha(real), f"short read with exit 0: {read}"
    else:
        assert read.errno == errno.EIO, str(read)


def test_a_content_length_shorter_than_the_listed_size_never_gives_a_short_read(
    hostile: Hostile,
) -> None:
    real = b"twenty bytes of text"
    cid = hostile.container("framing", {"twenty.txt": real})
    fid = hostile.files(cid)["twenty.txt"]
    hostile.proxy.add(Rule(content_path(cid, fid), ShortBody(keep=12)))
    mp = hostile.mount()
    read = hostile.run("read", hostile.dir_of(mp, cid) / "twenty.txt", timeout=40)
    assert not read.timed_out, str(read)
    if read.errno is None:
        assert read.report["sha256"] == sha(real), f"short read with exit 0: {read}"
    else:
        assert read.errno == errno.EIO, str(read)


def test_an_absurd_listed_size_spoils_only_its_own_file(hostile: Hostile) -> None:
    cid = hostile.container("absurd", {"good.txt": b"good\n", "bad.bin": b"bad\n"})

    def huge(item: dict[str, Any]) -> None:
        if item["path"].endswith("/bad.bin"):
            item["bytes"] = 1e30

    hostile.proxy.add(Rule(files_path(cid), Rewrite(edit_items(huge)), method="GET"))
    mp = hostile.mount()
    directory = hostile.dir_of(mp, cid)
    listed = hostile.run("list", directory)
    read = hostile.run("read", directory / "good.txt")
    assert "good.txt" in listed.report.get("names", []), str(listed)
    assert read.report.get("sha256") == sha(b"good\n"), str(read)


def test_a_connection_dropped_on_every_try_fails_with_eio_not_a_routing_errno(
    hostile: Hostile,
) -> None:
    cid = hostile.container("drop", {"gone.txt": b"never arrives\n"})
    fid = hostile.files(cid)["gone.txt"]
    hostile.proxy.add(Rule(content_path(cid, fid), Drop()))
    mp = hostile.mount()
    read = hostile.run("read", hostile.dir_of(mp, cid) / "gone.txt", timeout=60)
    assert_failed_in_time(read)


# -- the server stalls ----------------------------------------------------------------------


def test_a_stalled_server_fails_each_waiting_call_in_time_and_spares_the_others(
    hostile: Hostile,
) -> None:
    slow = hostile.container("stalled", {"a.txt": b"a\n", "b.txt": b"b\n"})
    unlisted = hostile.container("unlisted", {"c.txt": b"c\n"})
    other = hostile.container("unrelated", {"u.txt": b"unrelated\n"})
    mp = hostile.mount("--metadata-ttl", "300")
    slow_dir, other_dir = hostile.dir_of(mp, slow), hostile.dir_of(mp, other)
    for warm in (slow_dir, other_dir):  # listings cached: only the stalled calls remain
        assert hostile.run("list", warm).errno is None
    hostile.proxy.add(Rule(rf"^/v1/containers/({slow}|{unlisted})/", Stall()))

    deadline = time.monotonic() + BOUND
    running = [
        hostile.ops.start("read", slow_dir / "a.txt"),
        hostile.ops.start("list", hostile.dir_of(mp, unlisted)),
        hostile.ops.start("write", slow_dir / "new.txt", "1000"),
    ]
    unrelated = hostile.ops.wait(hostile.ops.start("read", other_dir / "u.txt"), deadline=deadline)
    stalled = [hostile.ops.wait(r, deadline=deadline) for r in running]

    assert unrelated.report.get("sha256") == sha(b"unrelated\n"), str(unrelated)
    late = [o for o in stalled if o.timed_out or o.errno not in NETWORK_ERRNOS]
    assert not late, "; ".join(map(str, stalled))
    # SIGTERM ends the daemon even while a request hangs
    hostile.ops.start("read", slow_dir / "b.txt")
    time.sleep(0.5)
    mp.proc.send_signal(signal.SIGTERM)
    try:
        mp.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM ignored while a request hangs")


def test_a_download_that_trickles_fails_with_eio_in_time(hostile: Hostile) -> None:
    cid = hostile.container("trickle", {"slow.txt": b"x" * 64})
    fid = hostile.files(cid)["slow.txt"]
    hostile.proxy.add(Rule(content_path(cid, fid), Trickle(interval=6.0)))
    mp = hostile.mount()
    read = hostile.run("read", hostile.dir_of(mp, cid) / "slow.txt")
    assert_failed_in_time(read)


# -- names ----------------------------------------------------------------------------------


def test_a_container_id_resolves_to_that_container_even_when_another_is_named_it(
    hostile: Hostile,
) -> None:
    real = hostile.container("real", {"real.txt": b"real\n"})
    response = hostile.api.post("containers", json={"name": real})
    response.raise_for_status()
    impostor = response.json()["id"]
    hostile.emu.add_file(impostor, "/mnt/data/impostor.txt", b"impostor\n")
    mp = hostile.mount()
    listed = hostile.run("list", mp.path(real))
    assert listed.report.get("names") == ["real.txt"], str(listed)


def test_a_file_keeps_its_displayed_name_when_a_file_named_like_it_appears(
    hostile: Hostile,
) -> None:
    cid = hostile.container("dup", {})
    hostile.emu.add_file(cid, "/mnt/data/dup.txt", b"first\n")
    hostile.emu.add_file(cid, "/mnt/data/dup.txt", b"second\n")
    mp = hostile.mount("--metadata-ttl", "0.5")
    directory = hostile.dir_of(mp, cid)
    names = hostile.run("list", directory).report["names"]
    shown = {n: hostile.run("read", directory / n).report.get("sha256") for n in names}
    suffixed = [n for n in names if "~" in n]
    assert len(names) == 2 and len(suffixed) == 1, names
    moved = suffixed[0]

    hostile.emu.add_file(cid, f"/mnt/data/{moved}", b"literal\n")
    deadline = time.monotonic() + 15
    while len(names) < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
        names = hostile.run("list", directory).report.get("names", names)
    assert len(names) == 3, names
    now = hostile.run("read", directory / moved).report.get("sha256")
    assert now == shown[moved], f"{moved} now shows another file; names {names}"
