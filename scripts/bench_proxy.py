#!/usr/bin/env python3
"""A pacing TCP proxy that makes a loopback server look like one across a WAN link.

    python scripts/bench_proxy.py --upstream HOST:PORT [--port 0] [--delay-ms 30] [--mbps 50]

Benchmark tooling, not part of containerfs. It speaks no HTTP: each client connection gets
its own upstream connection, and the proxy only watches which side is talking. When the
client starts sending after the server has answered (or at the connection's start), a new
request begins: its first bytes are held back ``--delay-ms`` (the round trip of a distant
server). When the server starts answering, a new response begins: its bytes are paced to
``--mbps`` MB/s (10^6 bytes/s) from its first byte on, so every response — and so every
concurrent range of a file — gets its own cap, as on a real link whose bottleneck is the
server's per-connection rate. Request bodies are not paced.

Prints ``listening on PORT`` once ready; SIGTERM or SIGINT ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

CHUNK = 256 * 1024


class Link:
    """The shaping of one client connection: who spoke last, and the current response's pace."""

    def __init__(self, *, delay: float, rate: float) -> None:
        self.delay = delay
        self.rate = rate  # bytes per second; 0 means no cap
        self.talking = ""  # "client" or "server": the side that sent the last bytes
        self.started = 0.0
        self.sent = 0

    async def client_sends(self) -> None:
        if self.talking != "client":
            self.talking = "client"
            if self.delay:
                await asyncio.sleep(self.delay)

    async def server_sends(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        if self.talking != "server":
            self.talking = "server"
            self.started = loop.time()
            self.sent = 0
        self.sent += n
        if self.rate:
            ahead = self.started + self.sent / self.rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)


async def _pump_up(src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: Link) -> None:
    while data := await src.read(CHUNK):
        await link.client_sends()
        dst.write(data)
        await dst.drain()
    with contextlib.suppress(OSError):
        dst.write_eof()


async def _pump_down(src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: Link) -> None:
    while data := await src.read(CHUNK):
        dst.write(data)
        await dst.drain()
        await link.server_sends(len(data))
    with contextlib.suppress(OSError):
        dst.write_eof()


async def _serve_one(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    *,
    upstream: tuple[str, int],
    delay: float,
    rate: float,
) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(*upstream)
    except OSError:
        client_w.close()
        return
    link = Link(delay=delay, rate=rate)
    try:
        await asyncio.gather(_pump_up(client_r, up_w, link), _pump_down(up_r, client_w, link))
    except (OSError, asyncio.IncompleteReadError):
        pass  # either side hung up: close both
    finally:
        for writer in (up_w, client_w):
            writer.close()


async def serve(
    *, host: str, port: int, upstream: tuple[str, int], delay: float, rate: float
) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _serve_one(r, w, upstream=upstream, delay=delay, rate=rate)

    server = await asyncio.start_server(handler, host, port, limit=CHUNK)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free one")
    parser.add_argument("--delay-ms", type=float, default=30.0, help="added to every request")
    parser.add_argument("--mbps", type=float, default=50.0, help="cap per response, 0: none")
    args = parser.parse_args()
    if args.delay_ms < 0 or args.mbps < 0:
        print("bench_proxy: --delay-ms and --mbps must not be negative", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(host=args.host, port=args.port, upstream=args.upstream,
                          delay=args.delay_ms / 1e3, rate=args.mbps * 1e6))  # fmt: skip
    except OSError as exc:
        print(f"bench_proxy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
