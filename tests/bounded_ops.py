"""Filesystem operations on a mount, each in a child process with a hard time bound.

A request to a server that never answers can leave a process in uninterruptible sleep
inside the kernel; a test must never wait on that. ``BoundedOps.run(op, *args, timeout=)``
runs ``python bounded_ops.py op args`` (the ``__main__`` part below), gives up after
``timeout`` seconds and returns an :class:`Outcome`; ``close()`` kills and reaps what is
left (after the mount's daemon is gone, a stuck child wakes with ``ENOTCONN``).

Operations print one JSON line: ``{"errno": N or null, "stage": ..., ...}``:
``read PATH`` (size and sha256 of everything read), ``list PATH`` (names),
``write PATH NBYTES`` (open with O_TRUNC, write 1 MiB chunks, close: the stage that failed),
``append PATH TEXT``, ``unlink PATH``, ``rmdir PATH``, ``stat PATH`` (size), ``mkdir PATH``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """How one bounded operation ended: ``timed_out``, or its JSON report."""

    op: str
    elapsed: float
    timed_out: bool
    report: dict[str, Any]

    @property
    def errno(self) -> int | None:
        value = self.report.get("errno")
        return None if value is None else int(value)

    def __str__(self) -> str:
        if self.timed_out:
            return f"{self.op}: no answer after {self.elapsed:.1f} s"
        return f"{self.op}: {self.report} after {self.elapsed:.1f} s"


class Running:
    def __init__(self, op: str, proc: subprocess.Popen[bytes], started: float) -> None:
        self.op = op  # the operation and its arguments, for messages
        self.proc = proc
        self.started = started


class BoundedOps:
    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, op: str, *args: str | Path) -> Running:
        proc = subprocess.Popen(
            [sys.executable, __file__, op, *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._procs.append(proc)
        return Running(" ".join([op, *map(str, args)]), proc, time.monotonic())

    def wait(self, running: Running, *, deadline: float) -> Outcome:
        """Wait until ``deadline`` (monotonic clock) at most; never waits on a stuck child."""
        name = running.op
        try:
            running.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return Outcome(name, time.monotonic() - running.started, True, {})
        elapsed = time.monotonic() - running.started
        assert running.proc.stdout is not None
        out = running.proc.stdout.read().decode(errors="replace").strip()
        try:
            report = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            report = {"errno": -1, "output": out, "exit": running.proc.returncode}
        return Outcome(name, elapsed, False, report)

    def run(self, op: str, *args: str | Path, timeout: float) -> Outcome:
        return self.wait(self.start(op, *args), deadline=time.monotonic() + timeout)

    def kill(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()

    def stuck(self) -> bool:
        """Whether a child is still running (after ``kill``: waiting in the kernel)."""
        return any(proc.poll() is None for proc in self._procs)

    def close(self, *, timeout: float = 5.0) -> None:
        self.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
            if proc.stdout is not None:
                proc.stdout.close()


# -- the child side ---------------------------------------------------------------------


def _read(path: str) -> dict[str, Any]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _write(path: str, nbytes: str) -> dict[str, Any]:
    stage = "open"
    report: dict[str, Any] = {}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        stage, left = "write", int(nbytes)
        while left:
            left -= os.write(fd, b"n" * min(left, 1 << 20))
    except OSError as exc:
        report = {"errno": exc.errno, "stage": stage}
    try:
        os.close(fd)
    except OSError as exc:
        report = report or {"errno": exc.errno, "stage": "close"}
    return report or {"stage": "done"}


def _append(path: str, text: str) -> dict[str, Any]:
    with open(path, "a") as f:
        f.write(text)
    return {}


def main(argv: list[str]) -> None:
    op, args = argv[0], argv[1:]
    try:
        if op == "read":
            report = _read(args[0])
        elif op == "list":
            report = {"names": sorted(os.listdir(args[0]))}
        elif op == "write":
            report = _write(args[0], args[1])
        elif op == "append":
            report = _append(args[0], args[1])
        elif op == "unlink":
            os.unlink(args[0])
            report = {}
        elif op == "stat":
            report = {"size": os.stat(args[0]).st_size}
        elif op == "mkdir":
            os.mkdir(args[0])
            report = {}
        elif op == "rmdir":
            os.rmdir(args[0])
            report = {}
        else:
            raise SystemExit(f"unknown operation {op}")
    except OSError as exc:
        report = {"errno": exc.errno, "error": str(exc)}
    print(json.dumps({"errno": None, **report}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
