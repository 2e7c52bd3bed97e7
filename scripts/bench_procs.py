"""The processes a benchmark run starts, and the probes it reads them with.

Benchmark tooling, not part of containerfs: the emulator, a containerfs mount, nginx, rclone
(a mount of its ``:http:`` or ``:webdav:`` remote, and ``rclone serve webdav``) and the
pacing proxy of ``bench_proxy.py``, each a subprocess in its own session (so Ctrl-C reaches
only the benchmark) that its ``stop()`` ends by PID; mounts are also unmounted with
``fusermount3 -u``, then ``-uz``. Helpers time curl transfers and read ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

KEY = "sk-bench"
MIB = 1 << 20
STARTUP_TIMEOUT = 30.0
# Every timed command ends within this many seconds, or the scenario fails (set by --step-timeout)
STEP_TIMEOUT = [600.0]
SCRIPTS = Path(__file__).resolve().parent


class BenchError(RuntimeError):
    pass


def _first_line(proc: subprocess.Popen[str], timeout: float = STARTUP_TIMEOUT) -> str:
    """The first stdout line of a child, or "" if none comes within ``timeout``."""
    assert proc.stdout is not None
    out: list[str] = []
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: out.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0] if out else ""


def _end(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL: this child only, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def free_port() -> int:
    """A loopback port free right now (for servers that cannot report the one they chose)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            _end(proc)
            raise BenchError(f"server on port {port} did not start:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


class Emulator:
    """``containerfs emulator`` with extra options (``--range``, ``--latency-ms``, ...)."""

    def __init__(
        self,
        work: Path,
        seed: Path | None,
        *extra: str,
        name: str = "emulator",
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.log = work / f"{name}.log"
        self.data_dir = work / f"{name}-data"
        seeding = ["--seed", str(seed)] if seed is not None else []
        # the benchmark's key, not one from the caller's environment (builds that read it)
        env = {**os.environ, "CONTAINERFS_EMULATOR_API_KEY": KEY}
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "containerfs", "emulator", "--port", "0",
                 "--data-dir", str(self.data_dir), *seeding, "--log-level", "warning", *extra],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, text=True,
            )  # fmt: skip
        line = _first_line(self.proc, startup_timeout)
        if not line.startswith("listening on "):
            self.stop()
            raise BenchError(f"emulator did not start: {line!r}\n{_tail(self.log)}")
        self.base_url = line.removeprefix("listening on ").strip()
        self.root_url = self.base_url.removesuffix("/v1")
        self.port = int(self.root_url.rsplit(":", 1)[1])

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.root_url}/_emulator{path}", data=data, method=method,
            headers={"content-type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}{path}", method=method, headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def container_ids(self) -> dict[str, str]:
        return {c["name"]: c["id"] for c in self.api("GET", "/containers?limit=100")["data"]}

    def calls(self) -> int:
        return int(self.admin("GET", "/stats")["total"])

    def stop(self) -> None:
        _end(self.proc)


class Proxy:
    """``bench_proxy.py`` in front of a loopback port: ``url(path)`` goes through it."""

    def __init__(self, work: Path, upstream: int, *, delay_ms: float, mbps: float) -> None:
        self.log = work / f"proxy-{upstream}.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPTS / "bench_proxy.py"), "--upstream",
                 f"127.0.0.1:{upstream}", "--delay-ms", str(delay_ms), "--mbps", str(mbps)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, text=True,
            )  # fmt: skip
        line = _first_line(self.proc)
        if not line.startswith("listening on "):
            self.stop()
            raise BenchError(f"proxy did not start: {line!r}\n{_tail(self.log)}")
        self.port = int(line.split()[-1])
        self.root_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _end(self.proc)


class Nginx:
    """nginx serving ``root`` on a loopback port (autoindex for rclone's ``:http:``; PUT)."""

    def __init__(self, work: Path, root: Path) -> None:
        self.port = free_port()
        prefix = work / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.log = prefix / "error.log"
        # as root, nginx's workers would run as nobody, who cannot enter a private temp dir
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        tmp = prefix / "tmp"
        conf = prefix / "nginx.conf"
        conf.write_text(f"""{user}
daemon off; master_process on; worker_processes 1; pid {prefix}/nginx.pid;
error_log {self.log} warn;
events {{ worker_connections 512; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  types {{ application/octet-stream bin; }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{self.port};
    root {root};
    location / {{ autoindex on; dav_methods PUT DELETE; create_full_put_path on;
                 client_max_body_size 0; }}
  }}
}}
""")
        with open(prefix / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(self.log)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )  # fmt: skip
        wait_port(self.port, self.proc, self.log)
        self.root_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _end(self.proc)


class RcloneWebdav:
    """``rclone serve webdav`` of ``root`` on loopback (nginx-light's dav lacks PROPFIND)."""

    def __init__(self, work: Path, root: Path) -> None:
        self.port = free_port()
        self.log = work / "rclone-webdav.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                ["rclone", "serve", "webdav", str(root), "--addr", f"127.0.0.1:{self.port}",
                 "--config", str(_rclone_conf(work))],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )  # fmt: skip
        wait_port(self.port, self.proc, self.log)
        self.root_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _end(self.proc)


def _rclone_conf(work: Path) -> Path:
    conf = work / "rclone.conf"  # empty: only on-the-fly remotes (":http:", ":webdav:")
    conf.touch()
    return conf


def is_mount(path: Path) -> bool:
    """From /proc/self/mountinfo: never stat a possibly dead FUSE mount."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


class _MountProcess:
    """A FUSE daemon in the foreground; ``pid`` is the daemon's."""

    mountpoint: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def _start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip
        self.pid = self.proc.pid
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not is_mount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"mount did not come up:\n{_tail(self.log)}")
            time.sleep(0.02)

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)

    def proc_status(self, key: str) -> int | None:
        """A ``/proc/PID/status`` memory field of the daemon, in bytes."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        """SIGTERM (finishes uploads, unmounts), then ``fusermount3 -u``, ``-uz``, SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        for flags in ("-u", "-uz"):
            if not is_mount(self.mountpoint):
                break
            subprocess.run(["fusermount3", flags, str(self.mountpoint)], capture_output=True)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Mount(_MountProcess):
    """``containerfs mount --foreground`` against ``base_url`` (the emulator or a proxy)."""

    def __init__(
        self, base_url: str, mountpoint: Path, state: Path, cache: Path, *extra: str
    ) -> None:
        self.mountpoint = mountpoint
        self.log = state.parent / f"{mountpoint.name}.log"
        env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": KEY}
        self._start(
            [sys.executable, "-m", "containerfs", "mount", str(mountpoint), "--foreground",
             "--state-dir", str(state), "--cache-dir", str(cache),
             "--drain-timeout", "10", "--log-level", "warning", *extra],
            env,
        )  # fmt: skip


class RcloneMount(_MountProcess):
    """``rclone mount`` of an on-the-fly remote (``:http:`` read-only, or ``:webdav:``)."""

    def __init__(self, work: Path, mountpoint: Path, remote: str, *extra: str) -> None:
        self.mountpoint = mountpoint
        self.log = work / f"{mountpoint.name}.log"
        self._start(
            ["rclone", "mount", remote, str(mountpoint), "--config", str(_rclone_conf(work)),
             "--cache-dir", str(work / f"{mountpoint.name}-cache"), *extra]
        )  # fmt: skip


# ---- probes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_ahead_kb(mountpoint: Path) -> int | None:
    """The kernel read-ahead of the mount's bdi (what limits the FUSE read size)."""
    real = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == real:
                try:
                    return int(Path(f"/sys/class/bdi/{parts[2]}/read_ahead_kb").read_text())
                except OSError:
                    return None
    return None


def curl(*args: str, key: bool = True) -> list[float]:
    """Run curl (with the API key unless ``key`` is false); the numbers of its ``-w`` format."""
    auth = ["-H", f"Authorization: Bearer {KEY}"] if key else []
    out = subprocess.run(
        ["curl", "-sS", "--fail", *auth, *args],
        check=True, capture_output=True, text=True, timeout=STEP_TIMEOUT[0],
    ).stdout  # fmt: skip
    return [float(x) for x in out.split()]


def curl_get(url: str, *, key: bool = True) -> tuple[float, float]:
    """(time to first byte, total time) of a direct GET to /dev/null."""
    ttfb, total = curl("-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total}", url, key=key)
    return ttfb, total


def curl_upload(url: str, src: Path, name: str, out: Path) -> tuple[float, str]:
    """Seconds of a direct multipart upload, and the new file's id."""
    form = f"file=@{src};filename={name}"
    (total,) = curl("-o", str(out), "-w", "%{time_total}", "-F", form, url)
    return total, json.loads(out.read_text())["id"]


def curl_put(url: str, src: Path) -> float:
    """Seconds of a direct PUT of a file (webdav)."""
    (total,) = curl("-o", "/dev/null", "-w", "%{time_total}", "-T", str(src), url, key=False)
    return total


def make_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(8 * MIB, left)
            f.write(os.urandom(n))
            left -= n


def read_file(path: Path, size: int, read_size: int = MIB) -> float:
    """Sequential reads of the whole file; seconds from open to EOF."""
    view = memoryview(bytearray(read_size))
    began = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = 0
        while n := os.readv(fd, [view]):
            got += n
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - began
    if got != size:
        raise BenchError(f"read {got} bytes from {path}, expected {size}")
    return elapsed


def first_bytes(path: Path) -> float:
    """``head -c 100``: seconds from the command's start to its exit (process start included)."""
    began = time.perf_counter()
    out = subprocess.run(["head", "-c", "100", str(path)], check=True, capture_output=True).stdout
    elapsed = time.perf_counter() - began
    if len(out) != 100:
        raise BenchError(f"head -c 100 gave {len(out)} bytes")
    return elapsed


def timed(*command: str) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=STEP_TIMEOUT[0])
    return time.perf_counter() - began


def api_calls(emulator: Emulator, command: list[str]) -> tuple[int, dict[str, int], float, str]:
    """API calls (total, by route), wall seconds and output of a command."""
    emulator.admin("POST", "/reset-stats")
    began = time.perf_counter()
    out = subprocess.run(
        command, check=True, stdout=subprocess.PIPE, text=True, timeout=STEP_TIMEOUT[0]
    ).stdout
    elapsed = time.perf_counter() - began
    stats = emulator.admin("GET", "/stats")
    requests = {k: v for k, v in stats["requests"].items() if v}
    return stats["total"], requests, elapsed, out


def help_text(*command: str) -> str:
    """A command's ``--help``, to probe what this build of containerfs supports."""
    done = subprocess.run(
        [sys.executable, "-m", "containerfs", *command, "--help"], capture_output=True, text=True
    )
    return done.stdout + done.stderr
