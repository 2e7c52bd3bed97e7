"""``containerfs emulator``: serve the emulator with uvicorn on a socket bound here.

The socket is bound before uvicorn starts (so ``--port 0`` can report the port it got), and
exactly one line goes to stdout: ``listening on http://HOST:PORT/v1``, once uvicorn accepts
connections. Logs go to stderr. SIGINT and SIGTERM stop the server cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from containerfs.emulator.app import create_app
from containerfs.emulator.config import UPLOAD_PATH_POLICIES, EmulatorConfig
from containerfs.emulator.faults import DroppedLogFilter
from containerfs.emulator.seed import SeedError, apply_seed, load_seed
from containerfs.emulator.state import Emulator

log = logging.getLogger(__name__)

_PROG = "containerfs emulator"
API_KEY_ENV = "CONTAINERFS_EMULATOR_API_KEY"


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where state is kept across restarts (default: a temporary directory, removed)",
    )
    parser.add_argument(
        "--seed", metavar="demo|FILE", help="initial containers: the demo set or a JSON file"
    )
    parser.add_argument(
        "--api-key",
        help=f"accept only this bearer key (default: ${API_KEY_ENV} if set, else any key); "
        f"prefer ${API_KEY_ENV}, which does not show in ps",
    )
    parser.add_argument("--latency-ms", type=_non_negative, default=0.0, metavar="N")
    parser.add_argument(
        "--fail-rate", type=_rate, default=0.0, metavar="P", help="probability of a random 500"
    )
    parser.add_argument(
        "--throttle-rate", type=_rate, default=0.0, metavar="P", help="probability of a random 429"
    )
    parser.add_argument(
        "--upload-paths",
        choices=UPLOAD_PATH_POLICIES,
        default="prefix",
        help="prefix: /mnt/data/<hex>-<basename> like the service; keep: the requested path",
    )
    parser.add_argument(
        "--range", action="store_true", help="answer Range requests with 206 (default: ignore)"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )


class _Server(uvicorn.Server):
    """uvicorn, reporting when it accepts connections and exiting quietly on signals."""

    def __init__(self, config: uvicorn.Config, *, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the caught signal after shutdown; a stopped emulator exits 0.
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets whose proto says TCP; with proto 0, Nagle delays every keep-alive answer ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    logging.getLogger("uvicorn.error").addFilter(DroppedLogFilter())


def _error(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 2


class _Refused(Exception):
    """A setting the emulator cannot start with: its one-line message."""


def _data_dir(args: argparse.Namespace, stack: contextlib.ExitStack) -> Path:
    """``--data-dir``, or a temporary directory removed when the emulator stops."""
    if args.data_dir is not None:
        return Path(args.data_dir)
    data_dir = Path(tempfile.mkdtemp(prefix="containerfs-emulator-"))
    stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
    return data_dir


def _open_app(args: argparse.Namespace, stack: contextlib.ExitStack) -> Starlette:
    """The application over its data directory, closed when ``stack`` ends."""
    data_dir = _data_dir(args, stack)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        config = EmulatorConfig(
            data_dir=data_dir,
            # An empty variable means no key, as if unset.
            api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
            latency_ms=args.latency_ms,
            fail_rate=args.fail_rate,
            throttle_rate=args.throttle_rate,
            upload_paths=args.upload_paths,
            range_requests=args.range,
        )
        app = create_app(config)
    except (OSError, sqlite3.Error) as exc:
        raise _Refused(f"cannot use data directory {data_dir}: {exc}") from exc
    emu: Emulator = app.state.emulator
    stack.callback(emu.close)
    return app


def _serve(app: Starlette, sock: socket.socket, *, log_level: str) -> None:
    """Answer on ``sock`` until a signal stops the server; the URL is printed once it is up."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/v1"

    def announce() -> None:
        print(f"listening on {url}", flush=True)

    server = _Server(
        uvicorn.Config(
            app,
            log_config=None,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            # Stalled requests (fault rules) must not hold up a stop for long.
            timeout_graceful_shutdown=1,
        ),
        on_started=announce,
    )
    asyncio.run(server.serve(sockets=[sock]))


def run(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    with contextlib.ExitStack() as stack:
        try:
            seed = load_seed(args.seed) if args.seed else None
            app = _open_app(args, stack)
        except (SeedError, _Refused) as exc:
            return _error(str(exc))
        if seed is not None:
            apply_seed(app.state.emulator.store, seed)
        try:
            sock = _bind(args.host, args.port)
        except OSError as exc:
            return _error(f"cannot listen on {args.host}:{args.port}: {exc}")
        stack.callback(sock.close)
        _serve(app, sock, log_level=args.log_level)
    return 0
