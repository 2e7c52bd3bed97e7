"""A first end-to-end check: the demo seed is visible through a real mount."""

from __future__ import annotations

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
