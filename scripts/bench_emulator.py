"""Emulator throughput on loopback, measured with curl: upload and download of one file.

Usage: .venv/bin/python scripts/bench_emulator.py [--size-mib 256] [--runs 3]
Prints the best and median MB/s (1 MB = 10^6 bytes) of each direction.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path


def _curl(*args: str) -> str:
    return subprocess.run(
        ["curl", "-sS", "--fail", *args], check=True, capture_output=True, text=True
    ).stdout


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "containerfs", "emulator", "--port", "0",
         "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, line.removeprefix("listening on ").strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        source = Path(tmp) / "payload.bin"
        with source.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        proc, base = _start(Path(tmp) / "data")
        try:
            request = urllib.request.Request(
                f"{base}/containers",
                data=json.dumps({"name": "bench"}).encode(),
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request) as response:
                cid = json.load(response)["id"]
            up, down = [], []
            for _ in range(args.runs):
                out = _curl("-o", Path(tmp, "upload.json").as_posix(), "-w", "%{speed_upload}",
                            "-F", f"file=@{source}", f"{base}/containers/{cid}/files")  # fmt: skip
                up.append(float(out) / 1e6)
                fid = json.loads(Path(tmp, "upload.json").read_text())["id"]
                out = _curl("-o", "/dev/null", "-w", "%{speed_download}",
                            f"{base}/containers/{cid}/files/{fid}/content")  # fmt: skip
                down.append(float(out) / 1e6)
                _curl("-X", "DELETE", "-o", "/dev/null", f"{base}/containers/{cid}/files/{fid}")
        finally:
            proc.terminate()
            proc.wait()
    size = args.size_mib
    print(f"upload   {size} MiB: best {max(up):7.1f} MB/s  median {statistics.median(up):7.1f}")
    print(f"download {size} MiB: best {max(down):7.1f} MB/s  median {statistics.median(down):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
