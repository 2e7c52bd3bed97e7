"""Write scenarios, and the daemon's peak memory with a 2 GiB file.

Benchmark tooling, not part of containerfs.

- ``big-write``: ``cp`` of ``--size-mib`` into the mount against a direct multipart upload
  with curl; the peer is rclone mount of its ``:webdav:`` remote (``--vfs-cache-mode
  writes``, ``--vfs-write-back 0s``) over ``rclone serve webdav`` (nginx-light's dav module has
  no PROPFIND, which rclone needs), timed until the file is whole on the server, against a
  curl PUT to the same server.
- ``small-write``: ``cp -r`` of ``--small-write-files`` x 16 KiB at ``--small-delay-ms`` per
  request — with ``--write-back`` and then ``containerfs sync`` when this build has them —
  against a sequential upload loop with the official ``openai`` SDK; checks that the server
  holds each file once, byte-exact.
- ``rss-2g``: the daemon's peak RSS (VmHWM) reading a ``--rss-mib`` file, and writing one.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from bench_procs import (
    KEY,
    MIB,
    BenchError,
    Emulator,
    Mount,
    Proxy,
    RcloneMount,
    RcloneWebdav,
    curl_put,
    curl_upload,
    help_text,
    read_file,
    timed,
)
from bench_run import Record, Run, mbps, stopping


def features() -> dict[str, bool]:
    """What this build of containerfs supports, probed from its help texts."""
    top, mount = help_text(), help_text("mount")
    return {"write_back": "--write-back" in mount, "sync": " sync " in top or "\n    sync" in top}


def _box_emulator(run: Run, tag: str, *extra: str) -> tuple[Emulator, str]:
    seed = run.work / f"{tag}-seed.json"
    seed.write_text(json.dumps({"containers": [{"name": "box", "files": []}]}))
    em = Emulator(run.work, seed, *extra, name=f"{tag}-emulator")
    try:
        return em, em.container_ids()["box"]
    except BaseException:
        em.stop()
        raise


def _wait_size(path: Path, size: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size == size):
        if time.monotonic() > deadline:
            raise BenchError(f"{path.name} did not reach the server within {timeout:.0f} s")
        time.sleep(0.01)


def big_write(run: Run) -> None:
    name, mib = "big-write", run.args.size_mib
    size, src = mib * MIB, run.random_file(mib)
    em, box = _box_emulator(run, "bw")
    dav_root = run.fresh_dir("bw-dav")
    with stopping(em):
        dav = RcloneWebdav(run.work, dav_root)
        with stopping(dav):
            files_url = f"{em.base_url}/containers/{box}/files"

            def one_pass(rep: int, record: Record) -> None:
                took, fid = curl_upload(files_url, src, f"curl-{rep}.bin", run.work / "up.json")
                record("curl_upload_s", took)
                em.api("DELETE", f"/containers/{box}/files/{fid}")
                m = Mount(em.base_url, run.work / "bw-mnt", run.work / "bw-state",
                          run.fresh_dir("bw-cache"))  # fmt: skip
                with stopping(m):
                    target = m.path("box", f"cp-{rep}.bin")
                    record("containerfs_s", timed("cp", str(src), str(target)))
                    if os.stat(target).st_size != size:
                        raise BenchError("the copy through the mount has the wrong size")
                    os.unlink(target)
                record("curl_put_s", curl_put(f"{dav.root_url}/put-{rep}.bin", src))
                (dav_root / f"put-{rep}.bin").unlink()
                r = RcloneMount(run.work, run.work / "bw-rclone", ":webdav:", "--webdav-url",
                                dav.root_url + "/", "--vfs-cache-mode", "writes",
                                "--vfs-write-back", "0s")  # fmt: skip
                with stopping(r):
                    began = time.perf_counter()
                    record("rclone_cp_s", timed("cp", str(src), str(r.path(f"rc-{rep}.bin"))))
                    _wait_size(dav_root / f"rc-{rep}.bin", size)
                    record("rclone_s", time.perf_counter() - began)
                (dav_root / f"rc-{rep}.bin").unlink()

            runs = run.passes(name, one_pass)
    cfs = runs.ratio("curl_upload_s", "containerfs_s")
    rcl = runs.ratio("curl_put_s", "rclone_s")
    run.result(name, size_mib=mib, runs=runs, containerfs_vs_curl=cfs, rclone_vs_curl=rcl)
    cfs_rate, curl_rate = (mbps(size, runs.median(k)) for k in ("containerfs_s", "curl_upload_s"))
    run.row(name, f"cp of {mib} MiB into containerfs", f"{cfs_rate:.0f} MB/s",
            f"x{cfs:.2f} curl multipart upload ({curl_rate:.0f} MB/s; goal >= 0.85)")  # fmt: skip
    run.row(name, "cp into rclone mount, until on the server",
            f"{mbps(size, runs.median('rclone_s')):.0f} MB/s",
            f"x{rcl:.2f} curl PUT to its webdav server ({mbps(size, runs.median('curl_put_s')):.0f}"
            f" MB/s); cp alone {runs.median('rclone_cp_s'):.2f} s")  # fmt: skip


def _sdk_upload(base_url: str, container: str, files: dict[str, bytes], prefix: str) -> None:
    import openai

    with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as client:
        for fname, data in files.items():
            client.containers.files.create(container, file=(f"{prefix}{fname}", io.BytesIO(data)))


def _server_files(em: Emulator, box: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    after = ""
    while True:
        page = em.api(
            "GET", f"/containers/{box}/files?limit=100" + (f"&after={after}" if after else "")
        )
        out.extend(page["data"])
        if not page.get("has_more"):
            return out
        after = page["data"][-1]["id"]


def _check_once(em: Emulator, box: str, files: dict[str, bytes], prefix: str) -> None:
    """Each file on the server exactly once (by its basename, after any upload prefix), exact."""
    seen: dict[str, int] = {}
    for f in _server_files(em, box):
        base = os.path.basename(str(f["path"]))
        for fname in files:
            if base == f"{prefix}{fname}" or base.endswith(f"-{prefix}{fname}"):
                seen[fname] = seen.get(fname, 0) + 1
                request = f"/containers/{box}/files/{f['id']}/content"
                req = urllib.request.Request(
                    em.base_url + request, headers={"Authorization": f"Bearer {KEY}"}
                )
                with urllib.request.urlopen(req, timeout=60) as response:
                    if response.read() != files[fname]:
                        raise BenchError(f"{fname}: the server's bytes differ")
    wrong = {k: seen.get(k, 0) for k in files if seen.get(k, 0) != 1}
    if wrong:
        raise BenchError(f"files not on the server exactly once: {dict(list(wrong.items())[:5])}")


def small_write(run: Run) -> None:
    import openai  # noqa: F401  (imported before any clock: a script pays it once)

    name, count, delay = "small-write", run.args.small_write_files, run.args.small_delay_ms
    has = features()
    files = {f"f{i:04d}.bin": os.urandom(16 * 1024) for i in range(count)}
    em, box = _box_emulator(run, "sw")
    with stopping(em):
        proxy = Proxy(run.work, em.port, delay_ms=delay, mbps=run.args.wan_mbps)
        with stopping(proxy):
            base = proxy.root_url + "/v1"
            mode = ["--write-back"] if has["write_back"] else []

            def one_pass(rep: int, record: Record) -> None:
                src = run.fresh_dir("sw-src") / f"w{rep}"
                src.mkdir()
                for fname, data in files.items():
                    (src / f"w{rep}-{fname}").write_bytes(data)
                began = time.perf_counter()
                _sdk_upload(base, box, files, f"s{rep}-")
                record("sdk_s", time.perf_counter() - began)
                m = Mount(base, run.work / "sw-mnt", run.work / "sw-state",
                          run.fresh_dir("sw-cache"), *mode)  # fmt: skip
                with stopping(m):
                    os.listdir(m.path("box"))  # the container's listing before the clock
                    began = time.perf_counter()
                    record("cp_s", timed("cp", "-r", str(src), str(m.path("box"))))
                    if has["sync"]:
                        timed(sys.executable, "-m", "containerfs", "sync", str(m.mountpoint))
                    record("containerfs_s", time.perf_counter() - began)
                if rep >= 0:
                    _check_once(em, box, files, f"w{rep}-")
                    _check_once(em, box, files, f"s{rep}-")

            runs = run.passes(name, one_pass)
    vs_sdk = runs.ratio("sdk_s", "containerfs_s")
    run.result(name, files=count, runs=runs, speedup_vs_sdk=vs_sdk, features=has)
    how = "--write-back, cp -r + containerfs sync" if has["write_back"] and has["sync"] else "cp -r"
    run.row(name, f"{count} x 16 KiB at {delay:g} ms/request, containerfs ({how})",
            f"{runs.median('containerfs_s'):.2f} s",
            f"x{vs_sdk:.2f} the SDK loop's speed (goal >= 3 with --write-back); each file once,"
            " byte-exact")  # fmt: skip
    run.row(
        name,
        "  sequential openai SDK upload loop",
        f"{runs.median('sdk_s'):.2f} s",
        runs.span("sdk_s"),
    )
    if not has["write_back"]:
        run.na(name, "  mount --write-back", "not supported by this build (ran synchronous cp -r)")
    if not has["sync"]:
        run.na(name, "  containerfs sync", "not supported by this build")


def rss_2g(run: Run) -> None:
    name, mib = "rss-2g", run.args.rss_mib
    size, src = mib * MIB, run.random_file(mib)
    em, box = _box_emulator(run, "rss")
    with stopping(em):
        run.note(f"{name}: uploading {mib} MiB")
        curl_upload(f"{em.base_url}/containers/{box}/files", src, "big.bin", run.work / "up.json")

        def mount() -> Mount:
            return Mount(em.base_url, run.work / "rss-mnt", run.work / "rss-state",
                         run.fresh_dir("rss-cache"))  # fmt: skip

        m = mount()
        with stopping(m):
            target = m.path("box", "big.bin")
            os.stat(target)
            took = read_file(target, size)
            read_hwm = (m.proc_status("VmHWM") or 0) / MIB
        m = mount()
        with stopping(m):
            began = time.perf_counter()
            timed("cp", str(src), str(m.path("box", "copy.bin")))
            if features()["sync"]:
                timed(sys.executable, "-m", "containerfs", "sync", str(m.mountpoint))
            wrote = time.perf_counter() - began
            write_hwm = (m.proc_status("VmHWM") or 0) / MIB
    run.result(name, size_mib=mib, read_vmhwm_mib=read_hwm, write_vmhwm_mib=write_hwm,
               read_s=took, write_s=wrote)  # fmt: skip
    run.row(
        name,
        f"daemon peak RSS reading {mib} MiB",
        f"{read_hwm:.1f} MiB",
        f"goal <= 100 MiB; read at {mbps(size, took):.0f} MB/s",
    )
    run.row(
        name,
        f"daemon peak RSS writing {mib} MiB",
        f"{write_hwm:.1f} MiB",
        f"goal <= 100 MiB; cp (upload at close) at {mbps(size, wrote):.0f} MB/s",
    )
