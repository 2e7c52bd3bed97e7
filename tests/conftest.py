"""Shared fixtures. Append new fixtures below; keep each one small."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from emulator_proc import EmulatorProcess, start_emulator


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

    def start(*args: str) -> EmulatorProcess:
        proc = start_emulator(tmp_path, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
