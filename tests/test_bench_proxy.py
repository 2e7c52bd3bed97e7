"""The benchmark's pacing proxy (``scripts/bench_proxy.py``) in front of a live emulator.

The benchmark trusts this proxy to shape a link without changing what crosses it, so these
tests check what it forwards and how it fails; how fast it paces is what the benchmark
measures, never asserted here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from emulator_proc import EmulatorProcess

PROXY = Path(__file__).resolve().parents[1] / "scripts" / "bench_proxy.py"


class ProxyProcess:
    def __init__(self, upstream: int, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PROXY), "--upstream", f"127.0.0.1:{upstream}", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(20)
        if not line or not line[0].startswith("listening on "):
            self.stop()
            pytest.fail(f"proxy did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line[0].split()[-1])}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then closed: refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port(emulator: EmulatorProcess) -> int:
    return int(emulator.root_url.rsplit(":", 1)[1])


@pytest.fixture
def paced(emulator: EmulatorProcess) -> Iterator[ProxyProcess]:
    # a small delay and a cap far above loopback needs: both shaping paths run, quickly
    proxy = ProxyProcess(_port(emulator), "--delay-ms", "2", "--mbps", "400")
    yield proxy
    proxy.stop()


def test_uploads_and_downloads_cross_the_proxy_byte_exact_on_one_connection(
    emulator: EmulatorProcess, paced: ProxyProcess
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    headers = {"Authorization": "Bearer sk-test"}
    with httpx.Client(base_url=paced.url + "/v1", headers=headers, timeout=30) as client:
        box = client.post("/containers", json={"name": "proxy-test"}).json()["id"]
        uploaded = client.post(f"/containers/{box}/files", files={"file": ("p.bin", data)})
        assert uploaded.status_code == 200, uploaded.text
        fid = uploaded.json()["id"]
        # several requests in turn on the same kept-alive connection: each answer whole
        for _ in range(3):
            got = client.get(f"/containers/{box}/files/{fid}/content")
            assert got.status_code == 200
            assert got.content == data
        listing = client.get(f"/containers/{box}/files").json()
        assert [f["id"] for f in listing["data"]] == [fid]


def test_a_dead_upstream_closes_the_client_connection_and_the_proxy_stays_up() -> None:
    proxy = ProxyProcess(_closed_port())
    try:
        with pytest.raises(httpx.TransportError):
            httpx.get(proxy.url + "/anything", timeout=10)
        assert proxy.proc.poll() is None
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upstream", "no-port-here"], "expected HOST:PORT"),
        (["--upstream", "127.0.0.1:1", "--mbps", "-1"], "must not be negative"),
    ],
)
def test_bad_options_exit_non_zero_with_a_one_line_message(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(PROXY), *args], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
