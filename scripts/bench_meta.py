"""Metadata scenarios: ``ls -l`` of unknown-size files, and a 100,000-file container.

Benchmark tooling, not part of containerfs.

- ``unknown-size-ls``: ``ls -l`` of a directory of ``--unknown-files`` files the API lists
  with ``bytes: null`` (a few bytes to several MiB), at ``--unknown-latency-ms`` of emulator
  latency, on a fresh mount: API calls, wall time, and how many sizes ``ls`` got right.
- ``scale``: a container of ``--scale-files`` files in ``--scale-dirs`` directories on
  loopback (seeded through the emulator's seed file, not uploads): the first ``ls -lR``
  (wall time, API calls), a repeat within the TTL, and the daemon's peak RSS. One pass.
"""

from __future__ import annotations

import base64
import json
import os
import time

from bench_procs import MIB, BenchError, Emulator, Mount, api_calls
from bench_run import Record, Run, stopping


def _ls_sizes(out: str) -> dict[str, int]:
    """Name -> size column of ``ls -l`` output (regular files)."""
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split(None, 8)
        if len(parts) == 9 and line.startswith("-"):
            sizes[parts[8]] = int(parts[4])
    return sizes


def unknown_size_ls(run: Run) -> None:
    name, count, latency = "unknown-size-ls", run.args.unknown_files, run.args.unknown_latency_ms
    # sizes from 7 bytes to 4 MiB, spread over the range
    sizes = [min(4 * MIB, int(7 * (4 * MIB / 7) ** (i / max(1, count - 1)))) for i in range(count)]
    contents = {f"out{i:03d}.bin": os.urandom(n) for i, n in enumerate(sizes)}
    seed = run.work / "unknown-seed.json"
    seed.write_text(json.dumps({"containers": [{"name": "outputs", "files": [
        {"path": f"/mnt/data/{fname}", "content_base64": base64.b64encode(data).decode(),
         "source": "assistant", "report_bytes": False}
        for fname, data in contents.items()]}]}))  # fmt: skip
    em = Emulator(run.work, seed, "--latency-ms", str(latency), name="unknown-emulator")
    right: list[int] = []
    with stopping(em):

        def one_pass(rep: int, record: Record) -> None:
            m = Mount(em.base_url, run.work / "unknown-mnt", run.work / "unknown-state",
                      run.fresh_dir("unknown-cache"))  # fmt: skip
            with stopping(m):
                calls, routes, took, out = api_calls(em, ["ls", "-l", str(m.path("outputs"))])
            shown = _ls_sizes(out)
            if len(shown) != count:
                raise BenchError(f"ls -l showed {len(shown)} files, expected {count}")
            record("calls", calls)
            record("ls_s", took)
            if rep >= 0:
                right.append(sum(shown.get(k) == len(v) for k, v in contents.items()))
                run.result(name, by_route=routes)

        runs = run.passes(name, one_pass)
    run.result(name, files=count, latency_ms=latency, runs=runs, sizes_right=right)
    run.row(name, f"ls -l of {count} bytes:null files at {latency:g} ms, fresh mount",
            f"{runs.median('ls_s') * 1e3:.0f} ms",
            f"{runs.median('calls'):.0f} API calls ({run.results[name]['by_route']})")  # fmt: skip
    run.row(
        name, "  sizes shown right on that first listing", f"{min(right)}/{count}", "worst pass"
    )


def scale(run: Run) -> None:
    name, total, dirs = "scale", run.args.scale_files, run.args.scale_dirs
    seed = run.work / "scale-seed.json"
    seed.write_text(json.dumps({"containers": [{"name": "scale", "files": [
        {"path": f"/mnt/data/d{i % dirs:03d}/f{i:06d}.txt", "content": f"{i}\n"}
        for i in range(total)]}]}))  # fmt: skip
    run.note(f"{name}: seeding {total} files")
    began = time.perf_counter()
    # seeding 100,000 files takes 20-30 s, longer on a loaded machine
    em = Emulator(run.work, seed, name="scale-emulator", startup_timeout=180)
    seeded = time.perf_counter() - began
    with stopping(em):
        m = Mount(em.base_url, run.work / "scale-mnt", run.work / "scale-state",
                  run.fresh_dir("scale-cache"), "--metadata-ttl", "3600")  # fmt: skip
        with stopping(m):
            command = ["ls", "-lR", str(m.path("scale"))]
            run.note(f"{name}: first ls -lR")
            first, first_routes, first_s, out = api_calls(em, command)
            listed = sum(1 for line in out.splitlines() if line.startswith("-"))
            run.note(f"{name}: repeated ls -lR")
            again, _, again_s, _ = api_calls(em, command)
            hwm = (m.proc_status("VmHWM") or 0) / MIB
    if listed != total:
        raise BenchError(f"ls -lR listed {listed} files, expected {total}")
    run.result(name, files=total, dirs=dirs, seed_s=seeded, first_s=first_s, first_calls=first,
               first_by_route=first_routes, repeat_s=again_s, repeat_calls=again,
               vmhwm_mib=hwm)  # fmt: skip
    run.row(
        name,
        f"first ls -lR of {total} files in {dirs} dirs",
        f"{first_s:.1f} s",
        f"{first} API calls; goal <= 30 s (seeded in {seeded:.0f} s)",
    )
    run.row(
        name, "  repeat within the TTL", f"{again_s:.1f} s", f"{again} API calls; goal <= 3 s, 0"
    )
    run.row(name, "  daemon peak RSS (VmHWM)", f"{hwm:.0f} MiB", "goal <= 150 MiB")
