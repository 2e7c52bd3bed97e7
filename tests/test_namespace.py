"""Namespace unit tests with a fake client: listings, caching and the mount's own changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import trio

from containerfs.errors import ApiTimeout
from containerfs.models import Container, ContainerFile, ContainerId, FileId
from containerfs.ns.namespace import Namespace, Node
from containerfs.state import State

CID = ContainerId("cntr_" + "1" * 48)


def cfile(n: int, path: str) -> ContainerFile:
    return ContainerFile(FileId(f"cfile_{n:032x}"), CID, path, 3, 1_700_000_000 + n, "user")


async def open_box(client: FakeClient, tmp_path: Path) -> tuple[Namespace, Node]:
    """A namespace over ``client`` and its container ``box``, looked up from the root."""
    ns = Namespace(client, State(tmp_path, endpoint="e"))  # type: ignore[arg-type]
    box = await ns.lookup(ns.root_node, "box")
    assert box is not None
    return ns, box


class FakeClient:
    def __init__(self, files: list[ContainerFile]) -> None:
        self.files = files
        self.listed = 0
        self.gate: trio.Event | None = None
        self.failure: Exception | None = None  # raised once the gate opens

    async def list_containers(self) -> AsyncIterator[Container]:
        yield Container(CID, "box", 1, "running")

    async def list_files(self, container_id: ContainerId) -> AsyncIterator[ContainerFile]:
        self.listed += 1
        snapshot = list(self.files)  # the server's answer is taken before the gate opens
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        for f in snapshot:
            yield f

    async def retrieve_container(self, container_id: ContainerId) -> Container:
        return Container(CID, "box", 1, "running")


async def test_own_changes_during_a_listing_fetch_are_not_lost(tmp_path: Path) -> None:
    old = cfile(1, "/mnt/data/a.txt")
    client = FakeClient([old])
    ns, box = await open_box(client, tmp_path)
    client.gate = trio.Event()
    new = cfile(2, "/mnt/data/a.txt")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ns.list_dir, box)
        while client.listed == 0:  # the server has answered; its answer is still on the way
            await trio.sleep(0.001)
        # an overwrite finishes while the (stale) listing is in flight
        node = ns.new_file(box, "a.txt")
        await ns.file_uploaded(node, new)
        await ns.file_deleted(CID, old.id)
        client.gate.set()
    found = await ns.lookup(box, "a.txt")
    assert found is not None and found.remote == new
    assert [name for name, _ in await ns.list_dir(box)] == ["a.txt"]
    assert client.listed == 1


async def test_listing_is_cached_and_one_listing_serves_every_lookup(tmp_path: Path) -> None:
    client = FakeClient([cfile(i, f"/mnt/data/d/f{i}") for i in range(5)])
    ns, box = await open_box(client, tmp_path)
    d = await ns.lookup(box, "d")
    assert d is not None
    for i in range(5):
        assert await ns.lookup(d, f"f{i}") is not None
    assert await ns.lookup(d, "missing") is None
    assert client.listed == 1


async def test_lookups_queued_behind_a_failed_listing_fail_with_it_without_listing_again(
    tmp_path: Path,
) -> None:
    client = FakeClient([cfile(1, "/mnt/data/a.txt")])
    ns, box = await open_box(client, tmp_path)
    client.gate, client.failure = trio.Event(), ApiTimeout("no progress")
    failed: list[BaseException] = []

    async def look(name: str) -> None:
        try:
            await ns.lookup(box, name)
        except ApiTimeout as err:
            failed.append(err)

    async with trio.open_nursery() as nursery:
        for name in ("a.txt", "b.txt", "c.txt"):
            nursery.start_soon(look, name)
        while client.listed == 0:
            await trio.sleep(0.001)
        await trio.sleep(0.01)  # the other two are queued behind the listing in flight
        client.gate.set()
    # one stalled listing costs every queued lookup one wait, not one wait each in turn
    assert len(failed) == 3 and client.listed == 1
    assert len({id(err) for err in failed}) == 3  # each task raised its own exception
    client.failure = None
    assert await ns.lookup(box, "a.txt") is not None  # a later lookup lists afresh
    assert client.listed == 2


async def test_an_upload_over_a_shown_file_takes_its_name_before_the_old_one_is_deleted(
    tmp_path: Path,
) -> None:
    old = cfile(1, "/mnt/data/a.txt")
    client = FakeClient([old])
    ns, box = await open_box(client, tmp_path)
    assert [name for name, _ in await ns.list_dir(box)] == ["a.txt"]
    # an overwrite: the new content is uploaded; the old id is still listed until deleted
    new = cfile(2, "/mnt/data/a.txt")
    await ns.file_uploaded(ns.new_file(box, "a.txt"), new)
    client.files = [old, new]
    ns.invalidate_listing(CID)

    found = await ns.lookup(box, "a.txt")

    assert found is not None and found.remote == new
    assert [name for name, _ in await ns.list_dir(box)] == ["a.txt", f"a.txt~{old.id}"]


async def test_a_file_keeps_its_name_when_a_newer_one_of_that_name_appears_elsewhere(
    tmp_path: Path,
) -> None:
    old = cfile(1, "/mnt/data/a.txt")
    client = FakeClient([old])
    ns, box = await open_box(client, tmp_path)
    assert [name for name, _ in await ns.list_dir(box)] == ["a.txt"]
    newer = cfile(2, "/mnt/data/a.txt")  # uploaded by another client
    client.files = [old, newer]
    ns.invalidate_listing(CID)

    found = await ns.lookup(box, "a.txt")

    assert found is not None and found.remote == old
    assert [name for name, _ in await ns.list_dir(box)] == ["a.txt", f"a.txt~{newer.id}"]


async def test_status_names_files_by_where_they_show_without_listing_again(
    tmp_path: Path,
) -> None:
    listed = cfile(1, "/mnt/data/d/out.csv")
    client = FakeClient([listed])
    ns = Namespace(client, State(tmp_path, endpoint="e"))  # type: ignore[arg-type]
    other = ContainerId("cntr_" + "2" * 48)
    # nothing listed yet: a container shows under its id, a file id is not known
    assert ns.shown_path(CID, "a.txt") == f"{CID}/a.txt"
    assert ns.file_path(CID, listed.id) is None
    box = await ns.lookup(ns.root_node, "box")
    assert box is not None
    await ns.list_dir(box)
    assert client.listed == 1
    assert ns.shown_path(CID, "d/out.csv") == "box/d/out.csv"
    assert ns.shown_path(CID, "") == "box"
    assert ns.file_path(CID, listed.id) == "d/out.csv"
    assert ns.file_path(CID, FileId("cfile_unknown")) is None
    assert ns.shown_path(other, "x") == f"{other}/x"
    assert client.listed == 1  # answered from what was cached
