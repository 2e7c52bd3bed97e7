"""Bookkeeping that grows with what the mount lists stays bounded: the walk snapshots of the
latest directories only, and the duplicate rule's sightings with one stamp per answer."""

from __future__ import annotations

from containerfs.api.adoption import Sightings
from containerfs.fs.walks import WALK_DIRS, Walks
from containerfs.models import ContainerId
from containerfs.ns.inodes import Kind, Node


def _files(first_inode: int, n: int) -> list[tuple[str, Node]]:
    return [
        (f"f{i}", Node(first_inode + i, Kind.FILE, ContainerId("cntr_1"), f"d/f{i}"))
        for i in range(n)
    ]


def test_walks_follow_the_latest_directories_and_forget_older_ones() -> None:
    walks = Walks(ahead=2)
    dirs = [_files(1000 * (d + 1), 5) for d in range(WALK_DIRS + 1)]
    for d, entries in enumerate(dirs):
        walks.listed(d + 1, entries)
    oldest, newest = [n for _, n in dirs[0]], [n for _, n in dirs[-1]]
    # the first directory's snapshot was dropped: opening its files in order is no walk
    assert [walks.opened(n) for n in oldest[:3]] == [[], [], []]
    # the latest one's is kept: the second open in order names the next files
    assert walks.opened(newest[0]) == []
    assert walks.opened(newest[1]) == newest[2:4]
    # listing the oldest again brings it back
    walks.listed(1, dirs[0])
    walks.opened(oldest[0])
    assert walks.opened(oldest[1]) == oldest[2:4]


def test_ids_of_one_answer_share_a_stamp_and_only_later_ids_are_adoptable() -> None:
    seen = Sightings()
    seen.note("a", "b")
    mark = seen.mark()
    seen.note("c")
    assert not seen.adoptable("a", mark)
    assert not seen.adoptable("b", mark)
    assert seen.adoptable("c", mark)  # first seen after the create began
    assert seen.adoptable("never-seen", mark)
    seen.claim("c")
    assert not seen.adoptable("c", mark)


def test_sightings_past_capacity_keep_the_newer_half() -> None:
    seen = Sightings(capacity=10)
    for i in range(11):
        seen.note(f"id{i}")
    mark = seen.mark()
    # the oldest ids were forgotten (they are adoptable again), the newest remembered
    assert seen.adoptable("id0", mark)
    assert not seen.adoptable("id10", mark)
    assert not seen.adoptable("id6", mark)
    for i in range(30):
        seen.claim(f"new{i}")
    assert not seen.adoptable("new29", mark)
    assert seen.adoptable("new0", mark)
