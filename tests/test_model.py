"""A reference-model test of the whole filesystem, as mountpoint-s3's reference tests do.

A hypothesis ``RuleBasedStateMachine`` drives a mount with random creates, writes, appends,
writes at an offset with ``fsync``, truncates, renames (across directories and containers),
unlinks, mkdirs and rmdirs; changes the server behind the mount's back; remounts; and injects
the emulator's faults (500s, 429s, mid-body resets, answers lost after the server acted, and
stretches where every upload fails). Every observation (a read, a size, a listing) is
compared with a reference model: a dict of display path -> bytes per container, plus the
directories made with ``mkdir``. At the end the mount is drained and unmounted and the
server's state, read through the API, must equal the model: no file lost, duplicated or
corrupted.

The semantics modelled are SEMANTICS.md's: close-to-open; a failed upload fails ``close()``
(``EIO``) but the written content stays on the mount and is uploaded once uploads work
again, also after a remount; out-of-band changes show within the metadata TTL (the handler
driver forgets the listing instead; the mount runs with 0.1 s TTLs and is polled within the
kernel's cache time). Generated names avoid the local-only and deferred patterns.

Each run draws the emulator's upload-path policy: ``keep`` (the server path is the display
path, compared exactly) or ``prefix`` (the real service's ``<32 hex>-<basename>``: the server
is compared by name and content, the mount's view by path).

Two drivers run one machine (``model_drivers``): the pyfuse3 handlers called directly, and a
short run on a real kernel mount (where every upload failure would cost the mount's whole
retry schedule at close, so stretches of failing uploads are left to the handler driver).
``CONTAINERFS_SOAK=1`` runs both much longer (``make soak``); ``CONTAINERFS_SOAK_REPORT``
names a file that gets the totals as JSON lines; ``CONTAINERFS_MODEL_NO_SHRINK=1`` skips
shrinking. A failing step prints every call made so far, a reproduction by itself.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from emulator_proc import EmulatorProcess, start_emulator
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from model_drivers import ROOT, Driver, HandlerDriver, MountDriver

from containerfs.emulator import EmulatorConfig, create_app

SOAK = os.environ.get("CONTAINERFS_SOAK", "") not in ("", "0")
CONTAINERS = ("c0", "c1")
FILE_NAMES = ("a", "b", "f.txt")
DIR_NAMES = ("d", "e")
MAX_DEPTH = 2  # directories within a container

Key = tuple[str, str]  # (container name, display path inside it)

# byte strings: mostly short, sometimes large enough for several reads and uploads chunks
CONTENT = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, 40_000)).map(
        lambda t: (t[0] * t[1])[:200_000]
    ),
)

# Faults the client must absorb by retrying: each fires once, on the next matching request.
TRANSIENT_FAULTS: list[dict[str, Any]] = (
    [
        {"route": route, "action": "error", "status": 500}
        for route in ("list_files", "upload_file", "delete_file", "file_content")
    ]
    + [
        {"route": route, "action": "throttle", "retry_after": 0, "retry_after_ms": 20}
        for route in ("list_files", "upload_file", "delete_file", "file_content")
    ]
    + [
        # the server did it, but answered an error: a retry must neither fail nor duplicate
        {"route": "delete_file", "action": "error", "status": 500, "after_body": True},
        {"route": "upload_file", "action": "error", "status": 500, "after_body": True},
    ]
)
# mid-body resets need a real connection (in-process, the emulator's exception reaches the
# caller instead of a broken stream)
DROP_FAULTS: list[dict[str, Any]] = [
    {"route": "file_content", "action": "drop", "drop_after_bytes": 10},
    {"route": "list_files", "action": "drop"},
    {"route": "upload_file", "action": "drop"},
    {"route": "upload_file", "action": "drop", "after_body": True},
]
_PREFIXED = re.compile(r"[0-9a-f]{32}-(.+)")
FAIL_UPLOADS = [{"route": "upload_file", "action": "error", "status": 500, "count": None}]


@dataclass(frozen=True)
class Outcome:
    """One run's figures: what was done to the mount, and what the server held at the end."""

    operations: int = 0
    faults_injected: int = 0
    remounts: int = 0
    out_of_band: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupted: int = 0
    unexpected: int = 0

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


@dataclass
class Model:
    """What the mount must show: files by (container, path), and directories made by mkdir."""

    files: dict[Key, bytes] = field(default_factory=dict)
    dirs: set[Key] = field(default_factory=set)
    outside: set[Key] = field(default_factory=set)  # added through the API, untouched since

    def is_dir(self, c: str, path: str) -> bool:
        if path == "" or (c, path) in self.dirs:
            return True
        prefix = path + "/"
        return any(k[0] == c and k[1].startswith(prefix) for k in [*self.files, *self.dirs])

    def all_dirs(self) -> list[Key]:
        found = {(c, "") for c in CONTAINERS} | set(self.dirs)
        for c, path in self.files:
            parts = path.split("/")[:-1]
            found |= {(c, "/".join(parts[: i + 1])) for i in range(len(parts))}
        return sorted(found)

    def children(self, c: str, path: str) -> set[str]:
        prefix = path + "/" if path else ""
        return {
            k[1][len(prefix) :].split("/")[0]
            for k in [*self.files, *self.dirs]
            if k[0] == c and k[1].startswith(prefix) and k[1] != path
        }

    def under(self, c: str, path: str) -> Iterator[Key]:
        yield from (
            k for k in [*self.files, *self.dirs] if k[0] == c and k[1].startswith(path + "/")
        )

    def free(self, c: str, path: str) -> bool:
        """Nothing is at ``path`` and no file sits where one of its directories would be."""
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        return (
            (c, path) not in self.files
            and not self.is_dir(c, path)
            and not any((c, p) in self.files for p in parents)
        )


def changed_file(old: bytes, data: bytes, offset: int) -> bytes:
    padded = old.ljust(offset, b"\0")
    return padded[:offset] + data + padded[offset + len(data) :]


F = TypeVar("F", bound=Callable[..., Any])


def step(fn: F) -> F:
    """Count a rule as an operation, and remember a failure so that teardown skips its checks."""

    @functools.wraps(fn)
    def wrapper(self: FsMachine, *args: Any, **kwargs: Any) -> Any:
        self.operations += 1
        shown = {k: v if not isinstance(v, bytes) else _show(v) for k, v in kwargs.items()}
        self.trace.append(f"{fn.__name__}({shown})" if shown else fn.__name__)
        try:
            return fn(self, *args, **kwargs)
        except BaseException:
            self.failed = True
            print("steps:\n  " + "\n  ".join(self.trace))
            raise

    return wrapper  # type: ignore[return-value]


def expect_errno(code: int, call: Callable[[], object]) -> None:
    with pytest.raises(OSError) as exc:
        call()
    assert exc.value.errno == code, f"expected {errno.errorcode[code]}, got {exc.value!r}"


class FsMachine(RuleBasedStateMachine):
    """The machine; a subclass supplies ``make_driver`` and the faults it can inject."""

    faults: list[dict[str, Any]] = TRANSIENT_FAULTS
    can_fail_uploads = True
    totals = Outcome()

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.operations = 0
        self.remounts = 0
        self.remounted_at = 0
        self.out_of_band = 0
        self.failed = False
        self.trace: list[str] = []  # the steps, printed when one fails
        self.failing = False  # every upload fails until turned off
        self.serial = 0
        self.policy = "keep"
        self.driver: Driver = _Traced(self.make_driver(), self.trace)
        self.cids: dict[str, str] = {}
        self.faults_before = self._faults_applied()

    def make_driver(self) -> Driver:
        raise NotImplementedError

    # -- setup -------------------------------------------------------------------------------
    @initialize(policy=st.sampled_from(["keep", "prefix"]))
    def containers(self, policy: str) -> None:
        # where the server stores an upload: at the path asked for, or as the real service
        # does, at /mnt/data/<32 hex>-<basename> (the mount then shows it by its alias)
        self.driver.admin("POST", "/config", {"upload_paths": policy})
        self.policy = policy
        self.trace.append(f"upload paths: {policy}")
        for c in CONTAINERS:
            status, body = self.driver.request("POST", "/v1/containers", {"name": c})
            assert status == 200, body
            self.cids[c] = json.loads(body)["id"]
        self._wait_for(self._containers_shown, "the containers shown")

    # -- choices over the model's current state ----------------------------------------------
    def _a_file(self, data: st.DataObject) -> Key:
        return data.draw(st.sampled_from(sorted(self.model.files)), label="file")

    def _a_new_path(self, data: st.DataObject, *, names: tuple[str, ...]) -> Key:
        """A free path in an existing directory (one may be replaced: rename over a file)."""
        dirs = [k for k in self.model.all_dirs() if k[1].count("/") < MAX_DEPTH]
        c, parent = data.draw(st.sampled_from(dirs), label="directory")
        name = data.draw(st.sampled_from(names), label="name")
        return c, posixpath.join(parent, name)

    # -- the filesystem ------------------------------------------------------------------------
    @rule(data=st.data(), content=CONTENT)
    @step
    def create_or_replace(self, data: st.DataObject, content: bytes) -> None:
        c, path = self._a_new_path(data, names=FILE_NAMES)
        if self.model.is_dir(c, path):
            expect_errno(errno.EISDIR, lambda: self.driver.write(c, path, content, how="trunc"))
            return
        self._write(c, path, content, lambda: self.driver.write(c, path, content, how="trunc"))

    @precondition(lambda self: self.model.files)
    @rule(data=st.data(), content=CONTENT)
    @step
    def append(self, data: st.DataObject, content: bytes) -> None:
        c, path = self._a_file(data)
        new = self.model.files[(c, path)] + content
        self._write(c, path, new, lambda: self.driver.write(c, path, content, how="append"))

    @precondition(lambda self: self.model.files)
    @rule(data=st.data(), content=st.binary(min_size=1, max_size=32), slack=st.integers(0, 8))
    @step
    def write_at_offset_and_fsync(self, data: st.DataObject, content: bytes, slack: int) -> None:
        c, path = self._a_file(data)
        old = self.model.files[(c, path)]
        offset = data.draw(st.integers(0, len(old) + slack), label="offset")
        new = changed_file(old, content, offset)
        self._write(
            c, path, new, lambda: self.driver.write(c, path, content, how="at", offset=offset)
        )

    def _write(self, c: str, path: str, new: bytes, call: Callable[[], None]) -> None:
        """A save: it works, or, while uploads fail, close() says EIO and the content stays."""
        if self.failing:
            expect_errno(errno.EIO, call)
        else:
            call()
        self.model.files[(c, path)] = new
        self.model.outside.discard((c, path))
        self._check_file(c, path)

    @precondition(lambda self: self.model.files)
    @rule(data=st.data())
    @step
    def truncate(self, data: st.DataObject) -> None:
        c, path = self._a_file(data)
        old = self.model.files[(c, path)]
        size = data.draw(st.sampled_from(sorted({0, len(old) // 2, len(old) + 3})), label="size")
        new = changed_file(old, b"", size)[:size]
        self._may_fail(lambda: self.driver.truncate(c, path, size))
        self._settle_either({(c, path): [new, old] if self.failing else [new]})

    @precondition(lambda self: self.model.files)
    @rule(data=st.data())
    @step
    def rename_file(self, data: st.DataObject) -> None:
        src = self._a_file(data)
        dst = self._a_new_path(data, names=FILE_NAMES)
        if src == dst:
            return
        if self.model.is_dir(*dst):
            expect_errno(errno.EISDIR, lambda: self.driver.rename(*src, *dst))
            return
        try:
            self.driver.rename(*src, *dst)
        except OSError as exc:
            if not (self.failing and exc.errno == errno.EIO):
                raise
            if self.driver.exists(*src):  # the upload under the new name failed: no change
                self._check_path(*src)
                self._check_path(*dst)
                return
        self.model.files[dst] = self.model.files.pop(src)
        self.model.outside -= {src, dst}
        for key in (src, dst):
            self._check_path(*key)

    @precondition(lambda self: any(k[1] for k in self.model.all_dirs()))
    @rule(data=st.data())
    @step
    def rename_directory(self, data: st.DataObject) -> None:
        c, path = data.draw(st.sampled_from([k for k in self.model.all_dirs() if k[1]]))
        c2, path2 = self._a_new_path(data, names=DIR_NAMES)
        if (c2, path2) == (c, path) or (c2 == c and path2.startswith(path + "/")):
            return
        if not self.model.free(c2, path2) or self.failing:
            return  # over existing names, or with failing uploads: outcomes not modelled
        moved = {k[1][len(path) :] for k in self.model.under(c, path)}
        self.driver.rename(c, path, c2, path2)
        for suffix in moved:
            if (c, path + suffix) in self.model.files:
                self.model.files[(c2, path2 + suffix)] = self.model.files.pop((c, path + suffix))
            else:
                self.model.dirs.discard((c, path + suffix))
                self.model.dirs.add((c2, path2 + suffix))
            self.model.outside.discard((c, path + suffix))
        if (c, path) in self.model.dirs:  # made by mkdir: it stays a directory of its own
            self.model.dirs.discard((c, path))
            self.model.dirs.add((c2, path2))
        self._check_dir(c, posixpath.dirname(path))
        self._check_dir(c2, path2)

    @precondition(lambda self: self.model.files)
    @rule(data=st.data())
    @step
    def unlink(self, data: st.DataObject) -> None:
        c, path = self._a_file(data)
        self.driver.unlink(c, path)
        del self.model.files[(c, path)]
        self.model.outside.discard((c, path))
        self._check_path(c, path)

    @rule(data=st.data())
    @step
    def mkdir(self, data: st.DataObject) -> None:
        c, path = self._a_new_path(data, names=DIR_NAMES)
        if not self.model.free(c, path):
            expect_errno(errno.EEXIST, lambda: self.driver.mkdir(c, path))
            return
        self.driver.mkdir(c, path)
        self.model.dirs.add((c, path))
        self._check_dir(c, path)

    @precondition(lambda self: any(k[1] for k in self.model.all_dirs()))
    @rule(data=st.data())
    @step
    def rmdir(self, data: st.DataObject) -> None:
        c, path = data.draw(st.sampled_from([k for k in self.model.all_dirs() if k[1]]))
        if self.model.children(c, path):
            expect_errno(errno.ENOTEMPTY, lambda: self.driver.rmdir(c, path))
            return
        self.driver.rmdir(c, path)
        self.model.dirs.discard((c, path))
        self._check_path(c, path)

    @precondition(lambda self: self.model.files)
    @rule(data=st.data())
    @step
    def read(self, data: st.DataObject) -> None:
        self._check_file(*self._a_file(data))

    @rule(data=st.data())
    @step
    def list_directory(self, data: st.DataObject) -> None:
        self._check_dir(*data.draw(st.sampled_from(self.model.all_dirs())))

    # -- the server, behind the mount's back -------------------------------------------------
    @rule(data=st.data(), content=CONTENT)
    @step
    def added_through_the_api(self, data: st.DataObject, content: bytes) -> None:
        self.serial += 1
        c, path = self._a_new_path(data, names=(f"s{self.serial}",))
        if not self.model.free(c, path):
            return
        body = {"path": f"{ROOT}/{path}", "content_base64": _b64(content)}
        self.driver.admin("POST", f"/containers/{self.cids[c]}/files", body)
        self.trace.append(f"    API: add {c}/{path} {_show(content)}")
        self.out_of_band += 1
        self.model.files[(c, path)] = content
        self.model.outside.add((c, path))
        self._wait_for(lambda: self._shown(c, path), f"{c}/{path} added elsewhere")

    @precondition(lambda self: self.model.outside)
    @rule(data=st.data())
    @step
    def deleted_through_the_api(self, data: st.DataObject) -> None:
        c, path = data.draw(st.sampled_from(sorted(self.model.outside)))
        [fid] = [f["id"] for f in self._server_files(c) if f["path"] == f"{ROOT}/{path}"]
        for _ in range(10):  # the call may meet an injected fault itself
            status, _body = self.driver.request(
                "DELETE", f"/v1/containers/{self.cids[c]}/files/{fid}"
            )
            if status in (200, 404):
                break
        self.out_of_band += 1
        self.trace.append(f"    API: delete {c}/{path}")
        del self.model.files[(c, path)]
        self.model.outside.discard((c, path))
        self._wait_for(lambda: not self.driver.exists(c, path), f"{c}/{path} deleted elsewhere")
        self._check_dir(c, posixpath.dirname(path))

    def _shown(self, c: str, path: str) -> bool:
        return (
            self.driver.exists(c, path) and self.driver.read(c, path) == self.model.files[(c, path)]
        )

    # -- faults and remounts -------------------------------------------------------------------
    @rule(fault=st.data())
    @step
    def inject_a_fault(self, fault: st.DataObject) -> None:
        rule_ = fault.draw(st.sampled_from(self.faults), label="fault")
        rules = [rule_, *(FAIL_UPLOADS if self.failing else [])]
        self.trace.append(f"    faults: {rules}")
        self.driver.admin("POST", "/faults", rules)

    @precondition(lambda self: self.can_fail_uploads)
    @rule()
    @step
    def uploads_start_failing(self) -> None:
        self.driver.admin("POST", "/faults", FAIL_UPLOADS)
        self.failing = True

    @precondition(lambda self: self.failing)
    @rule()
    @step
    def uploads_work_again(self) -> None:
        self.driver.admin("DELETE", "/faults")
        self.failing = False

    # a remount after a few steps: otherwise the simplest examples are remounts only
    @precondition(lambda self: self.operations - self.remounted_at >= 5)
    @rule()
    @step
    def remount(self) -> None:
        self.driver.remount()
        self.remounts += 1
        self.remounted_at = self.operations
        self._wait_for(self._containers_shown, "the containers shown after a remount")

    def _containers_shown(self) -> bool:
        return all(self.driver.exists(c, "") for c in CONTAINERS)

    # -- observations ------------------------------------------------------------------------
    def _check_file(self, c: str, path: str) -> None:
        want = self.model.files[(c, path)]
        got = self.driver.read(c, path)
        assert got == want, f"{c}/{path}: read {_show(got)}, model {_show(want)}"
        assert self.driver.size(c, path) == len(want), f"{c}/{path}: size"

    def _check_dir(self, c: str, path: str) -> None:
        if not self.model.is_dir(c, path):
            assert not self.driver.exists(c, path), f"{c}/{path} should be gone"
            return
        assert self.driver.listdir(c, path) == self.model.children(c, path), f"{c}/{path}/"

    def _check_path(self, c: str, path: str) -> None:
        if (c, path) in self.model.files:
            self._check_file(c, path)
        elif self.model.is_dir(c, path):
            self._check_dir(c, path)
        else:
            assert not self.driver.exists(c, path), f"{c}/{path} should not exist"
            self._check_dir(c, posixpath.dirname(path))

    def _may_fail(self, call: Callable[[], None]) -> None:
        """Any change that uploads fails with EIO while uploads fail, or works anyway."""
        try:
            call()
        except OSError as exc:
            if not self.failing or exc.errno != errno.EIO:
                raise

    def _settle_either(self, choices: dict[Key, list[bytes]]) -> None:
        for key, allowed in choices.items():
            got = self.driver.read(*key)
            assert got in allowed, f"{key}: read {_show(got)}, expected one of the versions"
            self.model.files[key] = got
            self.model.outside.discard(key)
            self._check_file(*key)

    def _wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """An out-of-band change shows within the TTL (plus the kernel's cache time)."""
        deadline = time.monotonic() + (MountDriver.SETTLE if self.driver.kernel else 0)
        for c in CONTAINERS:
            self.driver.settle(c)
        while not ready():
            assert time.monotonic() < deadline, f"{what}: not shown in time"
            time.sleep(0.1)

    # -- the end: everything shown, then drained to the server --------------------------------
    def _server_files(self, c: str) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = []
        after = ""
        while True:
            url = f"/v1/containers/{self.cids[c]}/files?limit=100&order=asc{after}"
            for _ in range(10):  # the call may meet an injected fault itself
                status, body = self.driver.request("GET", url)
                if status == 200:
                    break
            assert status == 200, body
            page = json.loads(body)
            files += page["data"]
            if not page["has_more"]:
                return files
            after = f"&after={page['last_id']}"

    def _server_key(self, server_path: str) -> str:
        """What a server file is compared by: its path, or (random prefixes) its name."""
        path = server_path.removeprefix(ROOT + "/")
        if self.policy == "keep":
            return path
        name = posixpath.basename(path)
        m = _PREFIXED.match(name)
        return m.group(1) if m else name

    def _model_key(self, path: str) -> str:
        return path if self.policy == "keep" else posixpath.basename(path)

    def _faults_applied(self) -> int:
        return int(self.driver.admin("GET", "/stats")["faults_applied"])

    def teardown(self) -> None:
        try:
            if not self.failed:
                try:
                    self._final_check()
                except BaseException:
                    print("steps (failed at the final check):\n  " + "\n  ".join(self.trace))
                    raise
        finally:
            self.driver.close()
            # the next example makes containers of the same names on the same server
            self.driver.admin("DELETE", "/faults")
            for cid in self.cids.values():
                self.driver.request("DELETE", f"/v1/containers/{cid}")
            self.driver.dispose()

    def _final_check(self) -> None:
        self.driver.admin("DELETE", "/faults")
        self.failing = False
        for key in sorted(self.model.files):
            self._check_file(*key)
        for key in self.model.all_dirs():
            self._check_dir(*key)
        faults = self._faults_applied() - self.faults_before
        drained = self.driver.finish()
        lost = duplicated = corrupted = unexpected = 0
        for c in CONTAINERS:
            server: dict[str, list[bytes]] = {}
            for f in self._server_files(c):
                status, content = self.driver.request(
                    "GET", f"/v1/containers/{self.cids[c]}/files/{f['id']}/content"
                )
                assert status == 200, content
                server.setdefault(self._server_key(f["path"]), []).append(content)
            model: dict[str, list[bytes]] = {}
            for (c_, path), content in self.model.files.items():
                if c_ == c:
                    model.setdefault(self._model_key(path), []).append(content)
            for name in server.keys() | model.keys():
                got, want = server.get(name, []), model.get(name, [])
                for content in list(got):
                    if content in want:
                        got.remove(content)
                        want.remove(content)
                corrupted += min(len(got), len(want))
                lost += max(0, len(want) - len(got))
                extra = max(0, len(got) - len(want))
                if name in model:
                    duplicated += extra
                else:
                    unexpected += extra
        outcome = Outcome(
            operations=self.operations,
            faults_injected=faults,
            remounts=self.remounts,
            out_of_band=self.out_of_band,
            lost=lost,
            duplicated=duplicated,
            corrupted=corrupted,
            unexpected=unexpected,
        )
        type(self).totals = type(self).totals + outcome
        assert drained, "the mount did not drain its uploads"
        assert (lost, duplicated, corrupted, unexpected) == (0, 0, 0, 0), outcome


class _Traced:
    """A driver whose calls are written down, so that a failure shows how it came about."""

    _QUIET = frozenset({"admin", "request", "settle", "kernel"})

    def __init__(self, driver: Driver, trace: list[str]) -> None:
        self._driver = driver
        self._trace = trace

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._driver, name)
        if name in self._QUIET or not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            shown = [_show(a) if isinstance(a, bytes) else repr(a) for a in args]
            shown += [f"{k}={v!r}" for k, v in kwargs.items()]
            line = f"    {name}({', '.join(shown)})"
            try:
                result = target(*args, **kwargs)
            except OSError as exc:
                self._trace.append(f"{line} -> {errno.errorcode.get(exc.errno or 0)}")
                raise
            shown_result = _show(result) if isinstance(result, bytes) else repr(result)
            self._trace.append(f"{line} -> {shown_result}")
            return result

        return call


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _show(data: bytes) -> str:
    return f"{len(data)} bytes {data[:24]!r}{'…' if len(data) > 24 else ''}"


def _settings(*, examples: int, steps: int, soak_examples: int, soak_steps: int) -> settings:
    return settings(
        max_examples=soak_examples if SOAK else examples,
        stateful_step_count=soak_steps if SOAK else steps,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate]
        if os.environ.get("CONTAINERFS_MODEL_NO_SHRINK")
        else list(Phase),
    )


def _report(name: str, outcome: Outcome) -> None:
    print(f"\n{name}: {json.dumps(asdict(outcome))}")
    report = os.environ.get("CONTAINERFS_SOAK_REPORT")
    if report:
        with open(report, "a") as out:
            out.write(json.dumps({"driver": name, **asdict(outcome)}) + "\n")


def test_the_handlers_agree_with_the_model(tmp_path: Path) -> None:
    class HandlerMachine(FsMachine):
        def make_driver(self) -> Driver:
            where = Path(tempfile.mkdtemp(dir=tmp_path))
            app = create_app(EmulatorConfig(data_dir=where / "emulator", upload_paths="keep"))
            self._app = app
            return HandlerDriver(where, app)

        def teardown(self) -> None:
            try:
                super().teardown()
            finally:
                self._app.state.emulator.close()

    try:
        run_state_machine_as_test(
            HandlerMachine,
            settings=_settings(examples=12, steps=30, soak_examples=300, soak_steps=80),
        )
    finally:
        _report("handlers", HandlerMachine.totals)


@pytest.fixture
def keep_emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    proc = start_emulator(tmp_path / "emulator", "--upload-paths", "keep")
    yield proc
    proc.stop()


def test_a_kernel_mount_agrees_with_the_model(
    tmp_path: Path, keep_emulator: EmulatorProcess
) -> None:
    class MountMachine(FsMachine):
        faults = TRANSIENT_FAULTS + DROP_FAULTS
        # every failed upload costs the mount's whole retry schedule (about 15 s) at close
        can_fail_uploads = False

        def make_driver(self) -> Driver:
            return MountDriver(Path(tempfile.mkdtemp(dir=tmp_path)), keep_emulator)

    try:
        run_state_machine_as_test(
            MountMachine,
            settings=_settings(examples=5, steps=25, soak_examples=40, soak_steps=60),
        )
    finally:
        _report("kernel mount", MountMachine.totals)


# -- what the machine found, kept as minimal examples ------------------------------------------


@pytest.fixture
def handlers(tmp_path: Path) -> Iterator[HandlerDriver]:
    app = create_app(EmulatorConfig(data_dir=tmp_path / "emulator", upload_paths="keep"))
    driver = HandlerDriver(tmp_path, app)
    try:
        yield driver
    finally:
        driver.close()
        driver.dispose()
        app.state.emulator.close()


def _container(driver: Driver, name: str) -> str:
    status, body = driver.request("POST", "/v1/containers", {"name": name})
    assert status == 200, body
    cid: str = json.loads(body)["id"]
    return cid


def test_an_upload_answered_500_after_it_was_stored_leaves_no_second_copy(
    handlers: HandlerDriver,
) -> None:
    cid = _container(handlers, "c0")
    handlers.admin(
        "POST",
        "/faults",
        [{"route": "upload_file", "action": "error", "status": 500, "after_body": True}],
    )
    handlers.write("c0", "f.txt", b"once", how="trunc")
    handlers.unlink("c0", "f.txt")
    handlers.settle("c0")

    status, body = handlers.request("GET", f"/v1/containers/{cid}/files")
    assert status == 200
    assert json.loads(body)["data"] == []
    assert not handlers.exists("c0", "f.txt")


def test_a_pending_file_renamed_over_an_uploaded_one_replaces_it_after_a_remount(
    handlers: HandlerDriver,
) -> None:
    cid = _container(handlers, "c1")
    handlers.write("c1", "b", b"old", how="trunc")
    handlers.admin("POST", "/faults", FAIL_UPLOADS)
    with pytest.raises(OSError):
        handlers.write("c1", "x", b"new", how="trunc")
    handlers.rename("c1", "x", "c1", "b")
    handlers.remount()
    handlers.admin("DELETE", "/faults")

    assert handlers.finish()
    status, body = handlers.request("GET", f"/v1/containers/{cid}/files")
    assert status == 200
    assert [f["path"] for f in json.loads(body)["data"]] == [f"{ROOT}/b"]
