"""End-to-end, a real kernel mount: what a program writes at unaligned sizes and offsets
(a run written behind with ``O_DIRECT``, its tail, a seek back, a hole, a truncate) reaches
the server byte for byte, streamed while written or uploaded whole at close."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest
from emulator_proc import EmulatorProcess
from mount_proc import MountProcess

pytestmark = pytest.mark.mount
MountFactory = Callable[..., MountProcess]
MiB = 1 << 20


def _container(emu: EmulatorProcess) -> tuple[str, str]:
    with emu.http() as http:
        response = http.post("containers", json={"name": f"sp-{uuid.uuid4().hex[:8]}"})
        response.raise_for_status()
        return str(response.json()["name"]), str(response.json()["id"])


def _server_content(emu: EmulatorProcess, cid: str) -> dict[str, bytes]:
    """basename -> content; a name held twice fails the test."""
    files = emu.server_files(cid)
    names = [name for name, _ in files]
    assert len(set(names)) == len(names), f"a name is on the server twice: {names}"
    return dict(files)


def _pwrite(fd: int, model: bytearray, at: int, data: bytes) -> None:
    assert os.pwrite(fd, data, at) == len(data)
    if len(model) < at:
        model.extend(bytes(at - len(model)))
    model[at : at + len(data)] = data


def test_unaligned_writes_through_the_mount_arrive_byte_exact(
    emulator: EmulatorProcess, mount_factory: MountFactory
) -> None:
    name, cid = _container(emulator)
    mp = mount_factory(emulator)

    # a run from 0 of odd sizes: held, written behind, its tail settled at close
    straight = bytearray()
    fd = os.open(mp.path(name, "straight.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (MiB + 100, 4097, 65537, 3 * MiB - 1, 1, 777_777, 12_345):
            _pwrite(fd, straight, len(straight), os.urandom(size))
    finally:
        os.close(fd)

    # a seek back, a hole, a truncate and an append after it
    edited = bytearray()
    fd = os.open(mp.path(name, "edited.bin"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _pwrite(fd, edited, 0, os.urandom(2 * MiB + 333))
        _pwrite(fd, edited, 5000, b"written over, back in the file")
        _pwrite(fd, edited, 3 * MiB, os.urandom(MiB + 1))  # past a hole
        os.ftruncate(fd, 3 * MiB + 4242)
        del edited[3 * MiB + 4242 :]
        _pwrite(fd, edited, len(edited), os.urandom(200_001))
        assert os.pread(fd, 64, 4990) == bytes(edited[4990:5054])
    finally:
        os.close(fd)

    held = _server_content(emulator, cid)
    assert held.keys() == {"straight.bin", "edited.bin"}
    assert held["straight.bin"] == bytes(straight)
    assert held["edited.bin"] == bytes(edited)
    # and the mount reads back what it wrote
    assert mp.path(name, "edited.bin").read_bytes() == bytes(edited)
