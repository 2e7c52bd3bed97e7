"""The disk cache's index keeps its usage and LRU order without walking every entry: after
any sequence of adds, completions, uses, removals and evictions, ``used`` is the sum of the
entries' charges and eviction takes the least recently used complete, idle entries first."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from containerfs.models import FileId
from containerfs.read.diskcache import CacheEntry, DiskCache

IDS = [FileId(f"cfile_{i}") for i in range(6)]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(IDS), st.none() | st.integers(0, 50)),
        st.tuples(st.just("add_complete"), st.sampled_from(IDS), st.integers(0, 50)),
        st.tuples(st.just("grow"), st.sampled_from(IDS), st.integers(0, 60)),
        st.tuples(st.just("completed"), st.sampled_from(IDS), st.integers(0, 50)),
        st.tuples(st.just("touch"), st.sampled_from(IDS), st.none()),
        st.tuples(st.just("remove"), st.sampled_from(IDS), st.none()),
        st.tuples(st.just("evict"), st.sampled_from(IDS), st.integers(0, 120)),
        st.tuples(st.just("evict_bytes"), st.sampled_from(IDS), st.none() | st.integers(0, 80)),
    ),
    max_size=40,
)


Step = tuple[str, FileId, int | None]


@settings(max_examples=300, deadline=None)
@given(ops)
def test_usage_and_lru_order_follow_every_change(steps: list[Step]) -> None:
    cache = DiskCache(Path("/nonexistent"), max_size=100)
    known: dict[FileId, CacheEntry] = {}  # the last entry made per id, indexed or not
    order: list[FileId] = []  # the model: indexed ids, least recently used first

    def used_now(fid: FileId) -> None:
        if fid in order:
            order.remove(fid)
        order.append(fid)

    for op, fid, n in steps:
        entry = cache.get(fid)
        if op == "add":
            known[fid] = cache.add(fid, n)
            used_now(fid)
        elif op == "add_complete":
            assert n is not None
            known[fid] = cache.add_complete(fid, n)
            used_now(fid)
        elif op == "grow" and entry is not None and not entry.complete:
            assert n is not None
            entry.stored = n  # a download's flusher writes more
        elif op == "completed" and fid in known and not known[fid].complete:
            assert n is not None
            cache.completed(known[fid], n)  # may be a detached entry: charged nowhere
            if entry is known[fid]:
                used_now(fid)
        elif op == "touch" and fid in known:
            cache.touch(known[fid])
            if entry is known[fid]:
                used_now(fid)
        elif op == "remove" and fid in known:
            assert cache.remove(known[fid]) == (entry is known[fid])
            if entry is known[fid]:
                order.remove(fid)
        elif op in ("evict", "evict_bytes"):
            busy = fid  # one id is open
            before = [cache.get(f) for f in order]
            idle = [e for e in before if e is not None and e.complete and e.file_id != busy]
            if op == "evict":
                assert n is not None
                cache.max_size = n
                victims = cache.evict(lambda e, b=busy: e.file_id == b)  # type: ignore[misc]
                assert victims == idle[: len(victims)]
                left = sum(e.charge for e in cache)
                assert left == sum(e.charge for e in before if e is not None) - sum(
                    e.charge for e in victims
                )
                assert left <= n or len(victims) == len(idle)
                if victims:  # no more than needed: one fewer would not have fitted
                    assert left + victims[-1].charge > n
            else:
                victims = cache.evict_bytes(lambda e, b=busy: e.file_id == b, n)  # type: ignore[misc]
                assert victims == idle[: len(victims)]
            for victim in victims:
                order.remove(victim.file_id)
        assert cache.used == sum(e.charge for e in cache)
        assert [e.file_id for e in cache] == order
