"""One benchmark run: its options, work directory, passes, results and table.

Benchmark tooling, not part of containerfs. Scenarios (``bench_core``, ``bench_read``,
``bench_write``, ``bench_meta``) get a :class:`Run`, measure through :meth:`Run.passes`
(warm-up passes first, uncounted, then interleaved counted ones), and report with
:meth:`Run.row` (the printed table) and :meth:`Run.result` (the ``--json`` file).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench_procs import MIB, make_random_file

Record = Callable[[str, float], None]


def med(values: list[float]) -> float:
    return statistics.median(values)


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


class Runs(dict[str, list[float]]):
    """Named series of per-pass values."""

    def median(self, key: str) -> float:
        return med(self[key])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median of the per-pass ratios (each pass against its own baseline)."""
        pairs = zip(self[numerator], self[denominator], strict=True)
        return med([a / b for a, b in pairs])

    def span(self, key: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
        """``median (min..max)`` of a series."""
        values = [v * scale for v in self[key]]
        if len(values) == 1:
            return fmt.format(values[0])
        return f"{fmt.format(med(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


class Run:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rows: list[tuple[str, str, str, str]] = []
        self.results: dict[str, Any] = {}
        self._random: dict[int, Path] = {}
        self._counter = 0

    def note(self, text: str) -> None:
        if not self.args.quiet:
            print(f"  .. {text}", file=sys.stderr, flush=True)

    def fresh_dir(self, name: str) -> Path:
        """A new empty directory under the work directory."""
        self._counter += 1
        path = self.work / f"{name}-{self._counter}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def random_file(self, mib: int) -> Path:
        """A file of ``mib`` MiB of random bytes, made once per run."""
        if mib not in self._random:
            path = self.work / f"random-{mib}.bin"
            self.note(f"writing a {mib} MiB random file")
            if mib > 256:
                # repeat one random 64 MiB block: fast to make, and no layer compresses
                block = self.random_file(64).read_bytes()
                with open(path, "wb") as f:
                    for _ in range(mib // 64):
                        f.write(block)
                    f.write(block[: (mib % 64) * MIB])
            else:
                make_random_file(path, mib * MIB)
            self._random[mib] = path
        return self._random[mib]

    def passes(
        self,
        name: str,
        one_pass: Callable[[int, Record], None],
        *,
        repeat: int | None = None,
        warmup: int | None = None,
    ) -> Runs:
        """``warmup`` uncounted passes, then ``repeat`` counted ones; the counted series."""
        repeat = self.args.repeat if repeat is None else repeat
        warmup = self.args.warmup if warmup is None else warmup
        runs = Runs()

        def discard(key: str, value: float) -> None:
            pass

        def record(key: str, value: float) -> None:
            runs.setdefault(key, []).append(value)

        for rep in range(warmup):
            self.note(f"{name}: warm-up pass {rep + 1}/{warmup}")
            one_pass(-1 - rep, discard)
        for rep in range(repeat):
            self.note(f"{name}: pass {rep + 1}/{repeat}")
            one_pass(rep, record)
        return runs

    def row(self, scenario: str, label: str, value: str, comment: str = "") -> None:
        self.rows.append((scenario, label, value, comment))

    def na(self, scenario: str, label: str, why: str) -> None:
        self.row(scenario, label, "n/a", why)
        self.results.setdefault(scenario, {}).setdefault("n/a", []).append(f"{label}: {why}")

    def result(self, scenario: str, **values: Any) -> None:
        self.results.setdefault(scenario, {}).update(values)


@contextlib.contextmanager
def stopping(*things: Any) -> Iterator[None]:
    """Stop each started process (anything with ``stop()``) on the way out, last first."""
    try:
        yield
    finally:
        for thing in reversed(things):
            if thing is not None:
                thing.stop()


def print_table(run: Run) -> None:
    if not run.rows:
        return
    width = max(len(row[1]) for row in run.rows)
    vwidth = max(len(row[2]) for row in run.rows)
    scenario = ""
    for name, label, value, comment in run.rows:
        if name != scenario:
            scenario = name
            print(f"\n[{name}]")
        print(f"  {label:<{width}}  {value:>{vwidth}}  {comment}".rstrip())
    print(
        "\n  MB/s = 10^6 bytes/s; medians (min..max) of interleaved passes; ratios are medians of"
        "\n  per-pass ratios against the baseline measured in the same pass. For speed ratios"
        "\n  > 1 means faster than the baseline; shared machines make these numbers noisy."
    )
