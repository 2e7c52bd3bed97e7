"""A first end-to-end check: the demo seed is visible through a real mount."""

from __future__ import annotations

import os
from collections.abc import Callable

from emulator_proc import EmulatorProcess
from mount_proc import MountProcess


def test_demo_seed_visible_through_mount(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu)
    assert sorted(p.name for p in mp.mountpoint.iterdir()) == ["analysis", "scratch"]
    assert mp.path("analysis", "data.csv").read_text().startswith("city,")
    assert mp.path("analysis", "out", "summary.md").read_text().startswith("# Summary")


def test_reading_back_a_written_file_costs_no_download(
    emulator_factory: Callable[..., EmulatorProcess],
    mount_factory: Callable[..., MountProcess],
) -> None:
    emu = emulator_factory("--seed", "demo")
    mp = mount_factory(emu)
    data = os.urandom(300_000)
    mp.path("scratch", "written.bin").write_bytes(data)
    emu.reset_stats()
    assert mp.path("scratch", "written.bin").read_bytes() == data
    assert emu.requests().get("file_content", 0) == 0
