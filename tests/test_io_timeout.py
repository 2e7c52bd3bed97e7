"""Nothing waits forever (issue 12): the progress deadlines of the API client and the read path.

``ApiClient`` over ``httpx.MockTransport`` and the ``Reader`` over that client, on trio's
virtual clock (``autojump_clock``): a server that never answers, or trickles, is cut after one
io-timeout and a call gives up after two, retries included, while a transfer that makes
progress goes on however long it takes. Times asserted here are virtual, hence exact.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from containerfs.api.client import ApiClient, ApiConfig
from containerfs.config import DOWNLOAD_BACKOFF, progress_policy
from containerfs.errors import ApiAborted, ApiError, ApiTimeout, RateLimited
from containerfs.models import ContainerId, FileId
from containerfs.read.reader import Reader
from containerfs.read.settings import DownloadSettings, ReaderSettings

HANG = 100.0  # virtual seconds: a call still waiting then would have waited for ever
IO = 2.0  # the io-timeout of these tests: a call gives up after 2 x IO without progress
CID = ContainerId("cntr_" + "a" * 48)
FID = FileId("cfile_" + "b" * 32)

Handler = Callable[[httpx.Request], Any]


def make_client(handler: Handler, *, io_timeout: float = IO, **cfg: Any) -> ApiClient:
    config = ApiConfig(
        base_url="https://api.test/v1",
        api_key="sk-test",
        io_timeout=io_timeout,
        backoff_base=0.5,
        backoff_max=2.0,
        **cfg,
    )
    return ApiClient(config, transport=httpx.MockTransport(handler))


class Paced(httpx.AsyncByteStream):
    """``total`` bytes in ``chunk``-sized pieces, one every ``every`` seconds (then EOF)."""

    def __init__(self, *, total: int, chunk: int, every: float) -> None:
        self.total, self.chunk, self.every = total, chunk, every

    async def __aiter__(self) -> AsyncIterator[bytes]:
        piece = b"x" * self.chunk
        sent = 0
        while sent < self.total:
            await trio.sleep(self.every)
            part = piece[: self.total - sent]
            sent += len(part)
            yield part


def file_json(size: int) -> dict[str, Any]:
    return {
        "id": FID,
        "object": "container.file",
        "container_id": CID,
        "path": "/mnt/data/up.bin",
        "bytes": size,
        "created_at": 1_700_000_000,
        "source": "user",
    }


def empty_page() -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})


# -- a server that never answers ---------------------------------------------------------------


async def test_an_answer_that_never_comes_fails_after_two_io_timeouts_retries_included(
    autojump_clock: trio.abc.Clock,
) -> None:
    attempts = 0

    async def never(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with make_client(never, max_retries=5) as client:
        start = trio.current_time()
        with pytest.raises(ApiTimeout) as info, trio.fail_after(HANG):
            await client.retrieve_container(CID)
        elapsed = trio.current_time() - start
    # cut after one io-timeout, retried once, and given up at the budget: not 6 x IO + delays
    assert elapsed == pytest.approx(2 * IO)
    assert attempts == 2
    assert info.value.errno == errno.ETIMEDOUT


async def test_a_listing_whose_next_page_never_comes_fails_after_two_io_timeouts(
    autojump_clock: trio.abc.Clock,
) -> None:
    pages = 0

    async def second_page_stalls(request: httpx.Request) -> httpx.Response:
        nonlocal pages
        pages += 1
        if "after" in request.url.params:
            await trio.sleep_forever()
        item = file_json(3)
        return httpx.Response(200, json={"data": [item], "has_more": True, "last_id": FID})

    async with make_client(second_page_stalls) as client:
        start = trio.current_time()
        with pytest.raises(ApiTimeout), trio.fail_after(HANG):
            [f async for f in client.list_files(CID)]
        assert trio.current_time() - start == pytest.approx(2 * IO)


async def test_an_upload_whose_answer_never_comes_fails_within_the_budget_recovery_included(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    seen: list[str] = []

    async def stores_then_stalls(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if request.method == "GET":  # the recovery listing: the lost upload is not there
            return empty_page()
        await request.aread()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    source = tmp_path / "up.bin"
    source.write_bytes(b"u" * 5000)
    async with make_client(stores_then_stalls) as client:
        start = trio.current_time()
        with pytest.raises(ApiError) as info, trio.fail_after(HANG):
            await client.upload_file(CID, source, filename="up.bin")
        elapsed = trio.current_time() - start
    assert elapsed <= 2 * IO + 1e-6
    assert seen[:2] == ["POST", "GET"]  # sent, then looked for what it left
    assert info.value.errno in (errno.ETIMEDOUT, errno.EIO)


async def test_a_retry_after_longer_than_the_budget_is_not_waited_for(
    autojump_clock: trio.abc.Clock,
) -> None:
    def throttled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"message": "slow down"}}, headers={"retry-after": "30"}
        )

    async with make_client(throttled) as client:
        start = trio.current_time()
        with pytest.raises(RateLimited):
            await client.retrieve_container(CID)
        assert trio.current_time() == start  # 30 s is past the 4 s budget: no wait, no retry


# -- a server that trickles, and transfers that are slow but steady ------------------------------


@pytest.mark.parametrize(
    ("io_timeout", "every"), [(IO, 1.5), (30.0, 20.0)], ids=["short", "default"]
)
async def test_a_body_that_trickles_is_cut_after_one_io_timeout(
    autojump_clock: trio.abc.Clock, io_timeout: float, every: float
) -> None:
    # one byte every `every` seconds: each read gets something before the io-timeout, so only
    # the minimum rate over a window ends it (30 s, 1 byte every 20 s: the trickle)
    def trickle(request: httpx.Request) -> httpx.Response:
        stream = Paced(total=64, chunk=1, every=every)
        return httpx.Response(200, headers={"content-length": "64"}, stream=stream)

    got = b""
    async with make_client(trickle, io_timeout=io_timeout) as client:
        start = trio.current_time()
        with pytest.raises(ApiTimeout), trio.fail_after(HANG * io_timeout):
            async with client.download(CID, FID) as dl:
                async for chunk in dl.chunks():
                    got += chunk
        assert trio.current_time() - start == pytest.approx(io_timeout)
    assert got == b"x"  # it did make some progress; not enough to count


@pytest.mark.parametrize(
    ("total", "chunk", "every"),
    [(2 << 30, 1 << 20, 0.5), (300 << 10, 3 << 10, 1.9)],
    ids=["2GiB-at-2MiB/s", "300KiB-just-above-1KiB/s"],
)
async def test_a_download_that_keeps_making_progress_is_never_cut(
    autojump_clock: trio.abc.Clock, total: int, chunk: int, every: float
) -> None:
    def steady(request: httpx.Request) -> httpx.Response:
        stream = Paced(total=total, chunk=chunk, every=every)
        return httpx.Response(200, headers={"content-length": str(total)}, stream=stream)

    received = 0
    async with make_client(steady) as client:
        start = trio.current_time()
        async with client.download(CID, FID) as dl:
            async for part in dl.chunks():
                received += len(part)
        elapsed = trio.current_time() - start
    assert received == total
    assert elapsed > 50 * IO  # far past any deadline of a stalled call


async def test_a_reader_that_holds_the_stream_is_not_counted_against_the_server(
    autojump_clock: trio.abc.Clock,
) -> None:
    def quick(request: httpx.Request) -> httpx.Response:
        stream = Paced(total=8 << 10, chunk=1 << 10, every=0.0)
        return httpx.Response(200, headers={"content-length": str(8 << 10)}, stream=stream)

    received = 0
    async with make_client(quick) as client, client.download(CID, FID) as dl:
        async for part in dl.chunks():
            received += len(part)
            await trio.sleep(3 * IO)  # a full disk queue, say: not the server's time
    assert received == 8 << 10


class SlowReader(httpx.AsyncBaseTransport):
    """A server that reads an upload's body one chunk every ``every`` seconds, then answers.

    (``httpx.MockTransport`` reads the whole body before its handler runs.)"""

    def __init__(self, every: float) -> None:
        self.every = every
        self.got = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return empty_page()
        async for part in request.stream:  # type: ignore[union-attr]
            self.got += len(part)
            await trio.sleep(self.every)
        return httpx.Response(200, json=file_json(self.got))


async def test_an_upload_the_server_reads_slowly_but_steadily_is_never_cut(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    size = 4 << 20
    source = tmp_path / "up.bin"
    source.write_bytes(b"u" * size)
    server = SlowReader(every=0.5)  # 64 KiB every 0.5 s
    config = ApiConfig(base_url="https://api.test/v1", api_key="sk-test", io_timeout=IO)
    async with ApiClient(config, transport=server) as client:
        start = trio.current_time()
        await client.upload_file(CID, source, filename="up.bin")
        elapsed = trio.current_time() - start
    assert server.got > size and client.statistics().retries == 0
    assert elapsed > 10 * IO


# -- the mount ends ----------------------------------------------------------------------------


async def test_abort_ends_requests_in_flight_with_eio_and_refuses_new_ones(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    ended: list[tuple[float, ApiError]] = []
    async with make_client(never) as client:

        async def call() -> None:
            try:
                await client.retrieve_container(CID)
            except ApiError as err:
                ended.append((trio.current_time(), err))

        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await trio.sleep(1.0)
                aborted_at = trio.current_time()
                client.abort()
        with pytest.raises(ApiAborted):
            [f async for f in client.list_files(CID)]
    [(when, err)] = ended
    assert when == aborted_at and isinstance(err, ApiAborted) and err.errno == errno.EIO


# -- the read path ------------------------------------------------------------------------------


def stalled_content(*, headers: bool) -> Handler:
    """Content answers whose headers come (``headers``) or not, and then no byte."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if not headers:
            await trio.sleep_forever()
        stream = Paced(total=100, chunk=100, every=10 * IO)
        return httpx.Response(200, headers={"content-length": "100"}, stream=stream)

    return handler


@pytest.fixture
def patient_clock(mock_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    """Virtual time for the reader, which works in threads too (its cache files): the clock
    jumps only after 0.3 s with nothing to do, never while a thread is at work,
    which would make every deadline come at once."""
    mock_clock.autojump_threshold = 0.3
    return mock_clock


async def make_reader(client: ApiClient, tmp_path: Path, nursery: trio.Nursery) -> Reader:
    return await Reader.create(
        client,
        cache_dir=tmp_path / "cache",
        max_size=1 << 30,
        nursery=nursery,
        settings=ReaderSettings(
            download=DownloadSettings(backoff=DOWNLOAD_BACKOFF, progress=progress_policy(IO))
        ),
    )


async def test_a_read_waiting_on_a_stalled_download_fails_within_two_io_timeouts(
    patient_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    async with make_client(stalled_content(headers=True)) as client, trio.open_nursery() as n:
        reader = await make_reader(client, tmp_path, n)
        handle = await reader.open(CID, FID, 100)
        start = trio.current_time()
        with pytest.raises(ApiTimeout) as info, trio.fail_after(HANG):
            await reader.read(handle, 0, 100)
        # the download resumed once within its budget, and no more: not 3 resumes x 2 x IO
        assert trio.current_time() - start <= 2 * IO + 1e-6
        assert info.value.errno == errno.ETIMEDOUT
        await reader.release(handle)
        n.cancel_scope.cancel()


async def test_learning_a_size_from_a_server_that_never_answers_fails_within_two_io_timeouts(
    patient_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    async with make_client(stalled_content(headers=False)) as client, trio.open_nursery() as n:
        reader = await make_reader(client, tmp_path, n)
        start = trio.current_time()
        with pytest.raises(ApiTimeout), trio.fail_after(HANG):
            await reader.learn_size(CID, FID)
        assert trio.current_time() - start <= 2 * IO + 1e-6
        n.cancel_scope.cancel()
