"""A writer outrunning its streamed upload waits for the body (which then sends from memory,
never reading back), unless the body stalls: then the writer goes on without it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import trio
import trio.testing

from containerfs.write.job import SpoolFeed

MiB = 1 << 20
AHEAD = 4 * MiB


class NoDisk:
    """A source that must never be asked: everything is sent from memory."""

    async def read_run(self, offset: int, size: int) -> bytes:
        raise AssertionError(f"read back {size} bytes at {offset}")


def _write(feed: SpoolFeed, at: int, data: bytes) -> None:
    assert feed.writing(at, at)
    feed.written(at + len(data), at, data)


async def test_a_writer_ahead_of_the_body_waits_until_it_catches_up() -> None:
    feed = SpoolFeed()
    feed.attach(NoDisk())
    body = feed.chunks()
    assert isinstance(body, AsyncGenerator)
    at = 0
    for _ in range(6):
        _write(feed, at, b"x" * MiB)
        at += MiB
    waited = False
    async with aclosing(body), trio.open_nursery() as nursery:

        async def writer() -> None:
            nonlocal waited
            await feed.keep_up(ahead=AHEAD, patience=60)
            waited = True

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert not waited  # 6 MiB written, none sent: more than 4 MiB ahead
        sent = 0
        while not waited:
            sent += len(await anext(body))  # the body sends a chunk from memory
            await trio.testing.wait_all_tasks_blocked()
    assert at - sent <= AHEAD
    assert sent <= 2 * MiB + MiB  # released as soon as it was within reach, not later


async def test_a_stalled_body_stops_holding_its_writer_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = SpoolFeed()
    feed.attach(NoDisk())
    at = 0
    for _ in range(6):
        _write(feed, at, b"y" * MiB)
        at += MiB
    began = trio.current_time()
    await feed.keep_up(ahead=AHEAD, patience=2.0)  # nobody reads the body
    assert trio.current_time() - began >= 2.0
    later = trio.current_time()
    _write(feed, at, b"y" * MiB)
    await feed.keep_up(ahead=AHEAD, patience=2.0)  # not waited for again
    assert trio.current_time() == later


async def test_an_aborted_body_holds_nobody_back() -> None:
    feed = SpoolFeed()
    feed.attach(NoDisk())
    for i in range(6):
        _write(feed, i * MiB, b"z" * MiB)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: feed.keep_up(ahead=AHEAD, patience=60))
        await trio.testing.wait_all_tasks_blocked()
        feed.abort()  # a seek back, a truncate, a failed request
    # the nursery ended: the writer was released
