"""A live emulator in a subprocess, for every test that talks to a real server.

``start_emulator(tmp_path, *extra_args)`` runs ``python -m containerfs emulator --port 0``,
waits for its ``listening on`` line and returns an :class:`EmulatorProcess` with the base
URL and synchronous helpers for the ``/_emulator`` test controls.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT = 20.0
_PREFIX = "listening on "


class EmulatorError(RuntimeError):
    """The emulator failed to start or an admin call failed."""


class EmulatorProcess:
    """A running emulator; ``base_url`` ends in ``/v1``, ``root_url`` is the server root."""

    def __init__(
        self, proc: subprocess.Popen[str], *, base_url: str, data_dir: Path, stderr_path: Path
    ) -> None:
        self.proc = proc
        self.base_url = base_url
        self.root_url = base_url.removesuffix("/v1")
        self.data_dir = data_dir
        self.stderr_path = stderr_path

    # -- admin calls ----------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``/_emulator{path}``; returns the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.root_url}/_emulator{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            raise EmulatorError(f"{method} /_emulator{path}: {exc.code} {detail}") from None

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "/stats")
        return result

    def requests(self) -> dict[str, int]:
        """Request counts by route name (``list_containers``, ``upload_file``, ...)."""
        counts: dict[str, int] = self.stats()["requests"]
        return counts

    def reset_stats(self) -> None:
        self.admin("POST", "/reset-stats")

    def faults(self, rules: list[dict[str, Any]]) -> None:
        self.admin("POST", "/faults", rules)

    def clear_faults(self) -> None:
        self.admin("DELETE", "/faults")

    def config(self, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("POST", "/config", settings)
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "/state")
        return result

    def expire(self, container_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("POST", f"/containers/{container_id}/expire")
        return result

    def advance_clock(self, seconds: float) -> None:
        self.admin("POST", "/clock", {"advance_seconds": seconds})

    def add_file(
        self,
        container_id: str,
        path: str,
        content: bytes | str = b"",
        *,
        source: str = "assistant",
        report_bytes: bool = True,
    ) -> dict[str, Any]:
        """A file appearing as if the code interpreter wrote it."""
        data = content.encode() if isinstance(content, str) else content
        body = {"path": path, "source": source, "report_bytes": report_bytes}
        try:
            body["content"] = data.decode()
        except UnicodeDecodeError:
            import base64

            body["content_base64"] = base64.b64encode(data).decode()
        result: dict[str, Any] = self.admin("POST", f"/containers/{container_id}/files", body)
        return result

    # -- the public API, as a client sees it ----------------------------------------------

    def http(self, *, timeout: float = 60) -> httpx.Client:
        """A client of the emulator's API (``with emu.http() as http: ...``)."""
        return httpx.Client(
            base_url=self.base_url + "/",
            headers={"Authorization": "Bearer sk-test"},
            timeout=timeout,
        )

    def server_files(self, container_id: str) -> list[tuple[str, bytes]]:
        """(basename, content) of every file of a container, duplicates included, sorted; a
        name the server prefixed with 32 hex digits and a dash is shown without them."""
        out: list[tuple[str, bytes]] = []
        with self.http() as http:
            listing = http.get(f"containers/{container_id}/files", params={"limit": 100})
            listing.raise_for_status()
            for f in listing.json()["data"]:
                body = http.get(f"containers/{container_id}/files/{f['id']}/content")
                body.raise_for_status()
                base = os.path.basename(f["path"])
                out.append(
                    (base[33:] if len(base) > 33 and base[32] == "-" else base, body.content)
                )
        return sorted(out)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, *, timeout: float = 10.0) -> int:
        """SIGTERM, wait, then SIGKILL; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_first_line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


API_KEY_ENV = "CONTAINERFS_EMULATOR_API_KEY"


def start_emulator(
    tmp_path: Path, *extra_args: str, env: dict[str, str] | None = None
) -> EmulatorProcess:
    """Start an emulator with its data (unless ``--data-dir`` is given) under ``tmp_path``.

    ``env`` adds to the inherited environment, from which the emulator's key variable is
    removed: a key set in the developer's shell must not make every test's emulator strict.
    """
    environment = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    environment.update(env or {})
    tmp_path.mkdir(parents=True, exist_ok=True)
    args = list(extra_args)
    if "--data-dir" in args:
        data_dir = Path(args[args.index("--data-dir") + 1])
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="emulator-", dir=tmp_path))
        args += ["--data-dir", str(data_dir)]
    fd, stderr_name = tempfile.mkstemp(prefix="emulator-", suffix=".stderr", dir=tmp_path)
    stderr_path = Path(stderr_name)
    with os.fdopen(fd, "w") as stderr_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "containerfs", "emulator", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
            env=environment,
        )
    line = _read_first_line(proc, STARTUP_TIMEOUT)
    if not line or not line.startswith(_PREFIX):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        stderr = stderr_path.read_text(errors="replace")
        raise EmulatorError(
            f"emulator did not start (exit {proc.returncode}, stdout {line!r}):\n{stderr}"
        )
    return EmulatorProcess(
        proc, base_url=line[len(_PREFIX) :].strip(), data_dir=data_dir, stderr_path=stderr_path
    )
