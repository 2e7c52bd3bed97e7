"""Read scenarios: containerfs against rclone mount and curl, on loopback and over a WAN-like link.

Benchmark tooling, not part of containerfs. The peer is ``rclone mount`` of its ``:http:``
remote over nginx serving the same bytes; each mount is compared with curl against its own
server, in the same pass, so the ratios cancel what the two servers cost.

- ``cold-read``: a cold sequential read of ``--size-mib`` on loopback (fresh mount, empty cache).
- ``cpu-read``: the daemon's CPU-seconds per GiB of such a read (``/proc/PID/stat``).
- ``wan-read``: ``--wan-mib`` through the pacing proxy (``--wan-delay-ms``, ``--wan-mbps``),
  one stream, and again with the emulator answering ``Range`` (its ``range`` setting).
- ``first-byte``: ``head -c 100`` of a cold file against curl's time to first byte, same link.
- ``small-read``: ``cp -r`` of ``--small-files`` x 16 KiB at ``--small-delay-ms`` per request,
  against rclone mount and a sequential download loop with the official ``openai`` SDK (and
  the mount with ``--no-prefetch``, when the build has that option).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path

from bench_procs import (
    KEY,
    MIB,
    BenchError,
    Emulator,
    Mount,
    Nginx,
    Proxy,
    RcloneMount,
    cpu_seconds,
    curl_get,
    curl_upload,
    first_bytes,
    help_text,
    read_file,
    timed,
)
from bench_run import Record, Run, mbps, stopping

RCLONE_READ = ("--read-only", "--vfs-cache-mode", "off")


class ReadSetup:
    """An emulator with container ``box`` holding ``name``, and nginx serving the same file."""

    def __init__(self, run: Run, name: str, src: Path, *, tag: str) -> None:
        self.run = run
        self.tag = tag
        self.www = run.fresh_dir(f"{tag}-www")
        try:
            os.link(src, self.www / name)  # the same inode: no copy of a large file
        except OSError:
            shutil.copy(src, self.www / name)
        seed = run.work / f"{tag}-seed.json"
        seed.write_text(json.dumps({"containers": [{"name": "box", "files": []}]}))
        self.emulator = Emulator(run.work, seed, name=f"{tag}-emulator")
        self.nginx: Nginx | None = None
        try:
            box = self.emulator.container_ids()["box"]
            self.files_url = f"{self.emulator.base_url}/containers/{box}/files"
            self.upload(src, name)
            self.nginx = Nginx(run.work, self.www)
        except BaseException:
            self.stop()
            raise

    def upload(self, src: Path, name: str) -> str:
        _, fid = curl_upload(self.files_url, src, name, self.run.work / "up.json")
        return f"{self.files_url}/{fid}/content"

    def mount(self, base_url: str, *extra: str) -> Mount:
        work, tag = self.run.work, self.tag
        return Mount(base_url, work / f"{tag}-mnt", work / f"{tag}-state",
                     self.run.fresh_dir(f"{tag}-cache"), *extra)  # fmt: skip

    def rclone(self, url: str) -> RcloneMount:
        return RcloneMount(self.run.work, self.run.work / f"{self.tag}-rclone", ":http:",
                           "--http-url", url + "/", *RCLONE_READ)  # fmt: skip

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        self.emulator.stop()


def _timed_read(mount: Mount | RcloneMount, rel: str, size: int) -> float:
    target = mount.path(*rel.split("/"))
    if os.stat(target).st_size != size:  # lookup (and listing) before the clock
        raise BenchError(f"{target} has the wrong size")
    return read_file(target, size)


def cold_read(run: Run) -> None:
    name, mib = "cold-read", run.args.size_mib
    size = mib * MIB
    setup = ReadSetup(run, "big.bin", run.random_file(mib), tag="cold")
    with stopping(setup):
        assert setup.nginx is not None
        em_url = setup.upload(run.random_file(mib), "big2.bin")
        nginx_root = setup.nginx.root_url
        nginx_url = f"{nginx_root}/big.bin"

        def one_pass(rep: int, record: Record) -> None:
            record("curl_emulator_s", curl_get(em_url)[1])
            m = setup.mount(setup.emulator.base_url)
            with stopping(m):
                cpu = m.cpu()
                record("containerfs_s", _timed_read(m, "box/big2.bin", size))
                record("daemon_cpu_s", m.cpu() - cpu)
            record("curl_nginx_s", curl_get(nginx_url, key=False)[1])
            r = setup.rclone(nginx_root)
            with stopping(r):
                cpu = r.cpu()
                record("rclone_s", _timed_read(r, "big.bin", size))
                record("rclone_cpu_s", r.cpu() - cpu)

        runs = run.passes(name, one_pass)
    cfs = runs.ratio("curl_emulator_s", "containerfs_s")
    rcl = runs.ratio("curl_nginx_s", "rclone_s")
    per_pass = [(a / b) / (c / d) for a, b, c, d in zip(
        runs["curl_emulator_s"], runs["containerfs_s"], runs["curl_nginx_s"], runs["rclone_s"],
        strict=True)]  # fmt: skip
    lead = sorted(per_pass)[len(per_pass) // 2]
    run.result(name, size_mib=mib, runs=runs, containerfs_vs_curl=cfs, rclone_vs_curl=rcl,
               containerfs_over_rclone=lead)  # fmt: skip
    run.row(
        name,
        f"containerfs, cold {mib} MiB on loopback",
        f"{mbps(size, runs.median('containerfs_s')):.0f} MB/s",
        f"x{cfs:.2f} curl ({mbps(size, runs.median('curl_emulator_s')):.0f} MB/s from the emulator)",  # noqa: E501
    )
    run.row(
        name,
        f"rclone mount, cold {mib} MiB on loopback",
        f"{mbps(size, runs.median('rclone_s')):.0f} MB/s",
        f"x{rcl:.2f} curl ({mbps(size, runs.median('curl_nginx_s')):.0f} MB/s from nginx)",
    )
    run.row(name, "containerfs ratio / rclone ratio", f"x{lead:.2f}", "goal >= 2 (issue 9)")
    gib = size / (1 << 30)
    run.row(
        name,
        "CPU-s per GiB: containerfs / rclone daemon",
        f"{runs.median('daemon_cpu_s') / gib:.2f} / {runs.median('rclone_cpu_s') / gib:.2f}",
    )


def cpu_read(run: Run) -> None:
    name, mib = "cpu-read", run.args.size_mib
    size = mib * MIB
    seed = run.work / "cpu-seed.json"
    seed.write_text(json.dumps({"containers": [{"name": "box", "files": []}]}))
    em = Emulator(run.work, seed, name="cpu-emulator")
    with stopping(em):
        box = em.container_ids()["box"]
        curl_upload(f"{em.base_url}/containers/{box}/files", run.random_file(mib), "big.bin",
                    run.work / "up.json")  # fmt: skip

        def one_pass(rep: int, record: Record) -> None:
            m = Mount(em.base_url, run.work / "cpu-mnt", run.work / "cpu-state",
                      run.fresh_dir("cpu-cache"))  # fmt: skip
            with stopping(m):
                cpu, em_cpu = m.cpu(), cpu_seconds(em.proc.pid)
                record("read_s", _timed_read(m, "box/big.bin", size))
                record("daemon_cpu_s", m.cpu() - cpu)
                record("emulator_cpu_s", cpu_seconds(em.proc.pid) - em_cpu)

        runs = run.passes(name, one_pass)
    gib = size / (1 << 30)
    per_gib = runs.median("daemon_cpu_s") / gib
    run.result(name, size_mib=mib, runs=runs, daemon_cpu_s_per_gib=per_gib)
    run.row(name, "daemon CPU-seconds per GiB, cold read", f"{per_gib:.2f} s",
            f"{runs.span('daemon_cpu_s', 1 / gib)}; emulator "
            f"{runs.median('emulator_cpu_s') / gib:.2f} s/GiB; read at "
            f"{mbps(size, runs.median('read_s')):.0f} MB/s")  # fmt: skip


def _wan(run: Run, setup: ReadSetup, *, delay_ms: float) -> tuple[Proxy, Proxy]:
    assert setup.nginx is not None
    mbps_cap = run.args.wan_mbps
    em_proxy = Proxy(run.work, setup.emulator.port, delay_ms=delay_ms, mbps=mbps_cap)
    try:
        nginx_proxy = Proxy(run.work, setup.nginx.port, delay_ms=delay_ms, mbps=mbps_cap)
    except BaseException:
        em_proxy.stop()
        raise
    return em_proxy, nginx_proxy


def wan_read(run: Run) -> None:
    name, mib = "wan-read", run.args.wan_mib
    size = mib * MIB
    setup = ReadSetup(run, "big.bin", run.random_file(mib), tag="wan")
    with stopping(setup):
        em_proxy, nginx_proxy = _wan(run, setup, delay_ms=run.args.wan_delay_ms)
        with stopping(em_proxy, nginx_proxy):
            fid_url = setup.upload(run.random_file(mib), "big2.bin")
            em_url = em_proxy.root_url + fid_url.removeprefix(setup.emulator.root_url)
            base = em_proxy.root_url + "/v1"

            def one_pass(rep: int, record: Record) -> None:
                record("curl_emulator_s", curl_get(em_url)[1])
                m = setup.mount(base)
                with stopping(m):
                    record("containerfs_s", _timed_read(m, "box/big2.bin", size))
                setup.emulator.admin("POST", "/config", {"range": True})
                try:
                    m = setup.mount(base)
                    with stopping(m):
                        record("containerfs_range_s", _timed_read(m, "box/big2.bin", size))
                finally:
                    setup.emulator.admin("POST", "/config", {"range": False})
                record("curl_nginx_s", curl_get(f"{nginx_proxy.root_url}/big.bin", key=False)[1])
                r = setup.rclone(nginx_proxy.root_url)
                with stopping(r):
                    record("rclone_s", _timed_read(r, "big.bin", size))

            runs = run.passes(name, one_pass)
    one = runs.ratio("curl_emulator_s", "containerfs_s")
    ranged = runs.ratio("curl_emulator_s", "containerfs_range_s")
    rcl = runs.ratio("curl_nginx_s", "rclone_s")
    run.result(name, size_mib=mib, runs=runs, containerfs_vs_curl=one,
               containerfs_range_vs_curl=ranged, rclone_vs_curl=rcl)  # fmt: skip
    link = f"{run.args.wan_delay_ms:g} ms + {run.args.wan_mbps:g} MB/s per response"
    run.row(
        name,
        f"curl through the link ({link})",
        f"{mbps(size, runs.median('curl_emulator_s')):.0f} MB/s",
        f"{mib} MiB, baseline",
    )
    run.row(
        name,
        "containerfs, one stream",
        f"{mbps(size, runs.median('containerfs_s')):.0f} MB/s",
        f"x{one:.2f} curl (goal >= 1.0)",
    )
    run.row(
        name,
        "containerfs, server honours Range",
        f"{mbps(size, runs.median('containerfs_range_s')):.0f} MB/s",
        f"x{ranged:.2f} curl (goal >= 1.5)",
    )
    run.row(
        name,
        "rclone mount",
        f"{mbps(size, runs.median('rclone_s')):.0f} MB/s",
        f"x{rcl:.2f} curl against nginx through the same link",
    )


def first_byte(run: Run) -> None:
    name = "first-byte"
    src = run.random_file(min(64, run.args.wan_mib))
    setup = ReadSetup(run, "head.bin", src, tag="fb")
    with stopping(setup):
        em_proxy, nginx_proxy = _wan(run, setup, delay_ms=run.args.wan_delay_ms)
        with stopping(em_proxy, nginx_proxy):
            em_url = em_proxy.root_url + setup.upload(src, "head2.bin").removeprefix(
                setup.emulator.root_url
            )

            def one_pass(rep: int, record: Record) -> None:
                record("curl_ttfb_s", curl_get(em_url)[0])
                m = setup.mount(em_proxy.root_url + "/v1")
                with stopping(m):
                    os.stat(m.path("box", "head2.bin"))
                    setup.emulator.admin("POST", "/reset-stats")
                    record("containerfs_head_s", first_bytes(m.path("box", "head2.bin")))
                    record("containerfs_head_calls", setup.emulator.calls())
                record("curl_nginx_ttfb_s", curl_get(f"{nginx_proxy.root_url}/head.bin",
                                                     key=False)[0])  # fmt: skip
                r = setup.rclone(nginx_proxy.root_url)
                with stopping(r):
                    os.stat(r.path("head.bin"))
                    record("rclone_head_s", first_bytes(r.path("head.bin")))
                record("local_head_s", first_bytes(src))

            runs = run.passes(name, one_pass)
    cfs = runs.ratio("containerfs_head_s", "curl_ttfb_s")
    rcl = runs.ratio("rclone_head_s", "curl_nginx_ttfb_s")
    run.result(name, runs=runs, containerfs_vs_curl=cfs, rclone_vs_curl=rcl)
    run.row(
        name,
        "head -c 100 of a cold file, containerfs",
        f"{runs.median('containerfs_head_s') * 1e3:.1f} ms",
        f"x{cfs:.2f} curl's first byte ({runs.median('curl_ttfb_s') * 1e3:.1f} ms; goal <= 1.2)",
    )
    run.row(
        name,
        "  API calls from open to head's exit",
        f"{runs.median('containerfs_head_calls'):.0f}",
        "goal 1 (issue 9)",
    )
    run.row(
        name,
        "head -c 100 of a cold file, rclone mount",
        f"{runs.median('rclone_head_s') * 1e3:.1f} ms",
        f"x{rcl:.2f} curl's first byte from nginx "
        f"({runs.median('curl_nginx_ttfb_s') * 1e3:.1f} ms)",
    )
    run.row(
        name,
        "  head -c 100 of a local file",
        f"{runs.median('local_head_s') * 1e3:.1f} ms",
        "process start",
    )


def _sdk_download(base_url: str, container: str, dst: Path) -> int:
    """List the container and download every file in turn, as a script with the SDK would."""
    import openai

    got = 0
    with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as client:
        for f in client.containers.files.list(container, limit=100):
            data = client.containers.files.content.retrieve(f.id, container_id=container).read()
            (dst / os.path.basename(f.path)).write_bytes(data)
            got += 1
    return got


def small_read(run: Run) -> None:
    import openai  # noqa: F401  (imported before any clock: a script pays it once)

    name, count = "small-read", run.args.small_files
    no_prefetch = "--no-prefetch" in help_text("mount")  # builds that prefetch across files
    run.note(f"{name}: {count} x 16 KiB files")
    contents = [os.urandom(16 * 1024) for _ in range(count)]
    seed = run.work / "small-read-seed.json"
    seed.write_text(json.dumps({"containers": [{"name": "small", "files": [
        {"path": f"/mnt/data/walk/f{i:04d}.bin", "content_base64": base64.b64encode(c).decode()}
        for i, c in enumerate(contents)]}]}))  # fmt: skip
    www = run.fresh_dir("small-www")
    (www / "walk").mkdir()
    for i, c in enumerate(contents):
        (www / "walk" / f"f{i:04d}.bin").write_bytes(c)
    em = Emulator(run.work, seed, name="small-read-emulator")
    with stopping(em):
        nginx = Nginx(run.work, www)
        delay = run.args.small_delay_ms
        em_proxy = Proxy(run.work, em.port, delay_ms=delay, mbps=run.args.wan_mbps)
        nginx_proxy = Proxy(run.work, nginx.port, delay_ms=delay, mbps=run.args.wan_mbps)
        with stopping(nginx, em_proxy, nginx_proxy):
            container = em.container_ids()["small"]

            def check(dst: Path) -> None:
                got = sorted(p.name for p in dst.iterdir())
                if len(got) != count or (dst / "f0000.bin").read_bytes() != contents[0]:
                    raise BenchError(f"{name}: copied {len(got)} files, expected {count}")

            def one_pass(rep: int, record: Record) -> None:
                dst = run.fresh_dir("small-out")
                m = Mount(em_proxy.root_url + "/v1", run.work / "small-mnt",
                          run.work / "small-state", run.fresh_dir("small-cache"))  # fmt: skip
                with stopping(m):
                    em.admin("POST", "/reset-stats")
                    record("containerfs_s", timed("cp", "-r", str(m.path("small", "walk")),
                                                  str(dst / "walk")))  # fmt: skip
                    record("containerfs_calls", em.calls())
                check(dst / "walk")
                if no_prefetch:
                    m = Mount(em_proxy.root_url + "/v1", run.work / "small-mnt",
                              run.work / "small-state", run.fresh_dir("small-cache"),
                              "--no-prefetch")  # fmt: skip
                    with stopping(m):
                        record("no_prefetch_s", timed("cp", "-r", str(m.path("small", "walk")),
                                                      str(dst / "nwalk")))  # fmt: skip
                    check(dst / "nwalk")
                r = RcloneMount(run.work, run.work / "small-rclone", ":http:", "--http-url",
                                nginx_proxy.root_url + "/", *RCLONE_READ)  # fmt: skip
                with stopping(r):
                    record("rclone_s", timed("cp", "-r", str(r.path("walk")), str(dst / "rwalk")))
                check(dst / "rwalk")
                (dst / "sdk").mkdir()
                began = time.perf_counter()
                _sdk_download(em_proxy.root_url + "/v1", container, dst / "sdk")
                record("sdk_s", time.perf_counter() - began)
                check(dst / "sdk")
                shutil.rmtree(dst)

            runs = run.passes(name, one_pass)
    vs_rclone = runs.ratio("rclone_s", "containerfs_s")
    vs_sdk = runs.ratio("sdk_s", "containerfs_s")
    run.result(name, files=count, runs=runs, speedup_vs_rclone=vs_rclone, speedup_vs_sdk=vs_sdk)
    run.row(
        name,
        f"cp -r of {count} x 16 KiB at {delay:g} ms/request, containerfs",
        f"{runs.median('containerfs_s'):.2f} s",
        f"x{vs_rclone:.2f} rclone's speed, x{vs_sdk:.2f} the SDK loop's (goal >= 3)",
    )
    run.row(name, "  API calls of that cp -r", f"{runs.median('containerfs_calls'):.0f}")
    if no_prefetch:
        run.row(name, "  containerfs --no-prefetch", f"{runs.median('no_prefetch_s'):.2f} s",
                runs.span("no_prefetch_s"))  # fmt: skip
    else:
        run.na(name, "  containerfs --no-prefetch", "not supported by this build")
    run.row(name, "  rclone mount", f"{runs.median('rclone_s'):.2f} s", runs.span("rclone_s"))
    run.row(
        name,
        "  sequential openai SDK download loop",
        f"{runs.median('sdk_s'):.2f} s",
        runs.span("sdk_s"),
    )
