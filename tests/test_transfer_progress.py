"""Transfers in flight, as the API client reports them: an upload's progress follows the
request body as the server consumes it, a download's follows its chunks, a retry starts the
count again, and the rate falls to 0 when a transfer stalls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from containerfs.api.client import ApiClient, ApiConfig
from containerfs.api.progress import RATE_WINDOW, Transfer, Transfers
from containerfs.errors import ApiError
from containerfs.models import ContainerId, FileId
from containerfs.snapshots import TransferStats

CID = ContainerId("cntr_" + "b" * 48)
CHUNK = 64 * 1024  # httpx's read size for a file body


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _file_answer(size: int) -> httpx.Response:
    body = {"id": "cfile_1", "path": "/mnt/data/big.bin", "bytes": size, "created_at": 1}
    return httpx.Response(200, json=body)


@dataclass(frozen=True)
class Seen:
    """What the client reported after the server consumed one more chunk of a body."""

    attempt: int
    in_flight: tuple[TransferStats, ...]
    bytes_up: int


class WatchingSink(httpx.AsyncBaseTransport):
    """Consumes an upload body chunk by chunk, as a socket would, and records what
    ``client`` reports after each chunk; with ``fail_after``, the first attempt is answered
    500 once that many bytes of it were read (the client then lists the container, to adopt
    what a stored attempt made, before sending again: it finds nothing)."""

    def __init__(self, fail_after: int = 0) -> None:
        self.client: ApiClient | None = None
        self.fail_after = fail_after
        self.attempts = 0
        self.seen: list[Seen] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self.client is not None
        if request.method == "GET":
            empty = {"object": "list", "data": [], "has_more": False}
            return httpx.Response(200, json=empty)
        self.attempts += 1
        received = 0
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async with aclosing(aiter(request.stream)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                received += len(chunk)
                sent = self.client.statistics().bytes_up
                self.seen.append(Seen(self.attempts, self.client.transfers(), sent))
                if self.attempts == 1 and self.fail_after and received >= self.fail_after:
                    return httpx.Response(500, json={"error": {"message": "try again"}})
        return _file_answer(received)


def _client(transport: httpx.AsyncBaseTransport, clock: Clock | None = None) -> ApiClient:
    config = ApiConfig(base_url="https://api.test/v1", api_key="sk-test", backoff_base=0.0)
    return ApiClient(config, transport=transport, clock=clock or Clock())


async def test_an_upload_shows_the_bytes_the_server_consumed_so_far(tmp_path: Path) -> None:
    size = 20 * CHUNK
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * size)
    sink = WatchingSink()
    async with _client(sink) as client:
        sink.client = client
        await client.upload_file(CID, src, filename="d/big.bin")
        assert client.transfers() == ()  # done: no longer in flight
        assert client.statistics().bytes_up > size
    uploads = [t for seen in sink.seen for t in seen.in_flight]
    assert {(t.direction, t.container_id, t.name, t.total) for t in uploads} == {
        ("upload", CID, "d/big.bin", size)
    }
    done = [t.done for t in uploads]
    assert done == sorted(done), "progress never goes back within one attempt"
    partial = [d for d in done if 0 < d < size]
    assert done[0] == 0 and partial[0] == CHUNK  # counted read by read...
    assert len(partial) == size // CHUNK - 1 and done[-1] == size  # ...to the whole file


async def test_the_bytes_sent_grow_with_the_body_not_at_its_start(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (20 * CHUNK))
    sink = WatchingSink()
    async with _client(sink) as client:
        sink.client = client
        await client.upload_file(CID, src, filename="big.bin")
    sent = [seen.bytes_up for seen in sink.seen]
    assert sent[0] < 2 * CHUNK and sent == sorted(sent)


async def test_a_retried_upload_counts_its_progress_from_the_start_again(tmp_path: Path) -> None:
    size = 10 * CHUNK
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * size)
    sink = WatchingSink(fail_after=6 * CHUNK)
    async with _client(sink) as client:
        sink.client = client
        await client.upload_file(CID, src, filename="big.bin")
    first = [t.done for seen in sink.seen if seen.attempt == 1 for t in seen.in_flight]
    second = [t.done for seen in sink.seen if seen.attempt == 2 for t in seen.in_flight]
    assert first[-1] >= 5 * CHUNK
    assert second[0] <= 2 * CHUNK and second[-1] == size


class Paced(httpx.AsyncByteStream):
    """A download body whose chunks come one by one; ``between`` runs before each."""

    def __init__(self, parts: list[bytes], between: Callable[[], None]) -> None:
        self.parts = parts
        self.between = between

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            self.between()
            yield part


async def test_a_download_shows_its_bytes_as_they_arrive_from_its_offset() -> None:
    clock = Clock()
    client: ApiClient
    seen: list[tuple[TransferStats, ...]] = []

    def tick() -> None:
        clock.now += 1.0
        seen.append(client.transfers())

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(client.transfers())  # asked, not answered yet
        headers = {"content-range": "bytes 100-129/130", "content-length": "30"}
        return httpx.Response(206, headers=headers, stream=Paced([b"a" * 10] * 3, tick))

    async with _client(httpx.MockTransport(handler), clock) as client:
        async with client.download(CID, FileId("cfile_9"), offset=100) as dl:
            assert b"".join([c async for c in dl.chunks()]) == b"a" * 30
        assert client.transfers() == ()
    asked, *arriving = [flight[0] for flight in seen]
    assert (asked.direction, asked.name, asked.done, asked.total) == (
        "download",
        "cfile_9",
        100,
        None,
    )
    assert [(t.done, t.total) for t in arriving] == [(100, 130), (110, 130), (120, 130)]
    assert arriving[-1].rate == pytest.approx(20 / 3)  # 20 bytes in the 3 s since the answer


async def test_a_failed_transfer_leaves_nothing_in_flight(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"y" * 100)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "no"}})

    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(ApiError):
            await client.upload_file(CID, src, filename="f")
        assert client.transfers() == ()


def test_the_rate_is_recent_and_falls_to_zero_when_a_transfer_stalls() -> None:
    clock = Clock()
    transfer = Transfer("upload", CID, "f", total=1000, done=0, clock=clock)
    for _ in range(20):  # 100 bytes a second for 10 s
        clock.now += 0.5
        transfer.add(50)
    assert transfer.rate(clock.now) == pytest.approx(100.0, rel=0.1)
    clock.now += RATE_WINDOW / 2  # half a window without a byte: the rate halves
    assert transfer.rate(clock.now) == pytest.approx(50.0, rel=0.15)
    clock.now += RATE_WINDOW
    assert transfer.rate(clock.now) == 0.0
    transfer.restart(0)
    assert transfer.done == 0 and transfer.rate(clock.now) == 0.0


def test_transfers_are_listed_oldest_first_while_they_run() -> None:
    transfers = Transfers(clock=Clock())
    with transfers.track("upload", CID, "a"), transfers.track("download", CID, "b", done=5):
        assert [(t.name, t.done) for t in transfers.snapshot()] == [("a", 0), ("b", 5)]
    assert transfers.snapshot() == ()
