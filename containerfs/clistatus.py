"""How the command line shows a daemon's status: ``containerfs status`` as text, and what
``containerfs unmount`` prints while it waits for uploads. Pure functions of a ``Status``
snapshot (and, for the unmount report, of what was already printed). Layer: command line.
"""

from __future__ import annotations

from collections.abc import Sequence

from containerfs.daemon.status import InFlight, Pending, Status

#: While an unmount waits, the progress of an upload under way is printed at most this often.
PROGRESS_EVERY = 2.0


def human(n: float) -> str:
    """A byte count in binary units: ``512 B``, ``4.0 KiB``, ``1.5 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress(item: InFlight) -> str:
    """``612.0 MiB of 1.5 GiB (40%), 48.2 MiB/s, 19 s left``; ``of ?`` when the total is
    not known yet."""
    if item.total is None:
        text = f"{human(item.done)} of ?"
    else:
        share = 100 * item.done // item.total if item.total else 100
        text = f"{human(item.done)} of {human(item.total)} ({share}%)"
    text += f", {human(item.rate)}/s"
    if item.rate > 0 and item.total is not None and item.total > item.done:
        text += f", {_duration((item.total - item.done) / item.rate)} left"
    return text


def _pending_line(item: Pending) -> str:
    error = f"  ({item.error})" if item.error else ""
    return f"  {item.path}  {human(item.bytes)}  {item.state}{error}"


def status_text(status: Status) -> str:
    api = status.api
    lines = [
        f"mountpoint   {status.mountpoint}  (pid {status.pid})",
        f"endpoint     {status.endpoint}",
        f"api calls    {api.total_requests}  "
        + " ".join(f"{k}={v}" for k, v in sorted(api.requests.items())),
        f"transferred  up {human(api.bytes_up)}, down {human(api.bytes_down)},"
        f" retries {api.retries}",
    ]
    if api.errors:
        lines.append("api errors   " + " ".join(f"{k}={v}" for k, v in sorted(api.errors.items())))
    cache = status.cache
    if cache is not None:
        lines.append(
            f"cache        {human(cache.cache_bytes_used)} of {human(cache.cache_max_size)}"
            f" in {cache.entries} entries, hits {cache.hits}, misses {cache.misses}"
            + (f", {cache.past_cache} read past the cache" if cache.past_cache else "")
        )
        if cache.prefetches:
            lines.append(
                f"prefetch     {cache.prefetches} files ahead of a walk,"
                f" {cache.prefetches_used} used, {cache.prefetches_failed} failed"
            )
    writer = status.writer
    if writer is not None:
        lines.append(f"uploads      {writer.uploads} done, {writer.upload_failures} failed")
    lines.append(f"in flight    {len(status.in_flight)}")
    lines += [f"  {t.direction:<8}  {t.path}  {progress(t)}" for t in status.in_flight]
    lines.append(f"pending      {len(status.pending)}")
    lines += [_pending_line(item) for item in status.pending]
    return "\n".join(lines)


def _waiting_line(item: Pending | InFlight) -> str:
    if isinstance(item, InFlight):
        return f"  {item.path}  uploading {progress(item)}"
    error = f": {item.error}" if item.error else ""
    return f"  {item.path}  {human(item.bytes)}, {item.state}{error}"


class WaitReport:
    """What an unmount prints while the daemon finishes its uploads: every item by its path
    when the set changes, then the progress of those under way, every PROGRESS_EVERY s."""

    def __init__(self) -> None:
        self._items: list[tuple[str, str]] = []
        self._shown: dict[str, int] = {}  # path of an upload under way -> bytes last shown
        self._when = 0.0

    def lines(self, status: Status | None, now: float) -> list[str]:
        """The lines to print now (none if nothing changed worth saying)."""
        waiting: Sequence[Pending | InFlight] = status.waiting_for() if status else ()
        items = [(w.path, type(w).__name__) for w in waiting]
        if items != self._items:
            self._items, self._when = items, now
            self._shown = {w.path: w.done for w in waiting if isinstance(w, InFlight)}
            if not waiting:
                return []
            head = f"waiting for {len(waiting)} pending upload(s):"
            return [head, *(_waiting_line(w) for w in waiting)]
        if now - self._when < PROGRESS_EVERY:
            return []
        moved = [
            w for w in waiting if isinstance(w, InFlight) and self._shown.get(w.path) != w.done
        ]
        if moved:
            self._when = now
            self._shown.update({w.path: w.done for w in moved})
        return [_waiting_line(w) for w in moved]
