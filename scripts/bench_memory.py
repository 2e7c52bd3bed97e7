"""Memory per listed file: the namespace of a large container, measured with tracemalloc.

Benchmark tooling, not part of containerfs. No mount and no server: the namespace lists
``--files`` files in ``--dirs`` directories from an in-memory source (the files are parsed
from the API's JSON, as the client does), then every directory is read as ``ls -lR`` would.
Reports the bytes per file held by the listing alone (files and indexes), and by the listing
plus one inode per file (what the daemon holds after ``ls -lR``).

    .venv/bin/python scripts/bench_memory.py --files 100000 --dirs 50
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from containerfs.models import Container, ContainerFile, ContainerId
from containerfs.ns.namespace import Namespace
from containerfs.state import State

CID = ContainerId("cntr_" + "5" * 48)


class Source:
    """One container whose files come from API JSON (parsed here, as the client does)."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    async def list_containers(self) -> AsyncIterator[Container]:
        yield Container(CID, "scale", 1, "running")

    async def list_files(self, container_id: ContainerId) -> AsyncIterator[ContainerFile]:
        for item in json.loads(self._raw):
            yield ContainerFile.from_json(item)

    async def retrieve_container(self, container_id: ContainerId) -> Container:
        return Container(CID, "scale", 1, "running")


def api_json(files: int, dirs: int) -> bytes:
    return json.dumps(
        [
            {
                "id": f"cfile_{i:032x}{i:016x}",
                "object": "container.file",
                "container_id": CID,
                "path": f"/mnt/data/d{i % dirs:03d}/f{i:06d}.txt",
                "bytes": len(f"{i}\n"),
                "created_at": 1_700_000_000 + i,
                "source": "user",
            }
            for i in range(files)
        ]
    ).encode()


def _held() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def measure(files: int, dirs: int, state_dir: Path) -> dict[str, float]:
    source = Source(api_json(files, dirs))
    # a TTL longer than the run, as the scale benchmark mounts with: one listing, never two
    ns = Namespace(source, State(state_dir, endpoint="bench"), ttl=3600)  # type: ignore[arg-type]
    box = await ns.lookup(ns.root_node, "scale")
    assert box is not None
    tracemalloc.start()
    base = _held()
    subdirs = await ns.list_dir(box)  # one listing: the files and the directory index
    listed = _held()
    shown = 0
    for _, d in subdirs:
        entries = await ns.list_dir(d)  # every file gets its inode, as readdirplus does
        shown += len(entries)
        for _, node in entries:
            ns.remember(node)
        del entries
    held = _held()
    tracemalloc.stop()
    if shown != files:
        raise SystemExit(f"bench_memory: listed {shown} files, expected {files}")
    return {
        "listing_bytes_per_file": (listed - base) / files,
        "with_inodes_bytes_per_file": (held - base) / files,
        "total_mib": (held - base) / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--dirs", type=int, default=50)
    args = parser.parse_args()
    if args.files < 1 or args.dirs < 1:
        print("bench_memory: --files and --dirs must be positive", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        got = trio.run(measure, args.files, args.dirs, Path(tmp))
    print(
        f"{args.files} files in {args.dirs} dirs: listing {got['listing_bytes_per_file']:.0f}"
        f" B/file, with inodes {got['with_inodes_bytes_per_file']:.0f} B/file"
        f" ({got['total_mib']:.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
