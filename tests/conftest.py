"""Shared fixtures. Append new fixtures below; keep each one small."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from emulator_proc import EmulatorProcess, start_emulator
from fs_harness import Fs, build_fs, close_fs
from mount_proc import MountProcess, start_mount

from containerfs.emulator import EmulatorConfig, create_app


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One live emulator for the whole session; tests must not rely on it being empty."""
    proc = start_emulator(tmp_path_factory.mktemp("emulator"))
    yield proc
    proc.stop()


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    """``emulator_factory(*args)`` starts a fresh emulator, stopped at teardown."""
    started: list[EmulatorProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> EmulatorProcess:
        proc = start_emulator(tmp_path, *args, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[Callable[..., MountProcess]]:
    """``mount_factory(emulator, *args, **kw)`` mounts containerfs; always unmounted after."""
    started: list[MountProcess] = []

    def start(emu: EmulatorProcess, *args: str, **kwargs: Any) -> MountProcess:
        mp = start_mount(emu, tmp_path, *args, **kwargs)
        started.append(mp)
        return mp

    yield start
    for mp in reversed(started):
        mp.unmount()


@pytest.fixture
def app(tmp_path: Path) -> Any:
    app = create_app(EmulatorConfig(data_dir=tmp_path / "emulator"))
    yield app
    app.state.emulator.close()


@pytest.fixture
async def fs(tmp_path: Path, app: Any) -> AsyncIterator[Fs]:
    async with trio.open_nursery() as nursery:
        made = await build_fs(tmp_path, nursery, app)
        yield made
        nursery.cancel_scope.cancel()  # background downloads and retries first
    await close_fs(made)
