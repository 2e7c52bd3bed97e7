"""A node's local content: the namespace sees only its size (``LocalContent``), the write path
gets back the ``Spool`` it attached (``spool_of``), and content of any other type is refused
as the bug it is rather than misread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from containerfs.models import ContainerId
from containerfs.ns.attributes import known_size
from containerfs.ns.inodes import Kind, Node
from containerfs.state import State
from containerfs.write.spool import Spool, SpoolFiles, spool_of

CID = ContainerId("cntr_1")


@pytest.fixture
async def spools(tmp_path: Path) -> AsyncIterator[SpoolFiles]:
    state = State(tmp_path, endpoint="e")
    try:
        yield SpoolFiles(state)
    finally:
        state.close()


async def _spool_holding(spools: SpoolFiles, data: bytes) -> Spool:
    spool = await spools.create(None)
    await spools.write(spool, 0, data)
    return spool


async def test_the_namespace_shows_the_size_of_the_spool_a_node_holds(spools: SpoolFiles) -> None:
    node = Node(7, Kind.FILE, CID, "f")
    spool = await _spool_holding(spools, b"twelve bytes")
    node.spool = spool
    try:
        assert known_size(node) == 12
        await spools.write(spool, 12, b"+3!")
        assert known_size(node) == 15
    finally:
        await spools.discard(spool)


async def test_the_write_path_gets_back_the_spool_it_attached(spools: SpoolFiles) -> None:
    node = Node(7, Kind.FILE, CID, "f")
    assert spool_of(node) is None
    spool = await _spool_holding(spools, b"x")
    node.spool = spool
    try:
        assert spool_of(node) is spool
    finally:
        await spools.discard(spool)


@dataclass
class _Sized:
    size: int


def test_content_that_is_not_a_spool_is_refused_naming_the_node() -> None:
    node = Node(7, Kind.FILE, CID, "f")
    node.spool = _Sized(3)  # a LocalContent, as the namespace's type allows
    assert known_size(node) == 3
    with pytest.raises(TypeError, match=r"inode 7: local content is a _Sized, not a Spool"):
        spool_of(node)
