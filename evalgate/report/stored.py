"""A run's current results as line offsets in results.jsonl, read back one suite at a time.

The report of a big run must not hold a result object per item: its peak memory is
the end of the run, above everything pytest keeps. :func:`index_current` reads the
file once and keeps, per item the current suites define, the offset of its latest
line (8 bytes an item, in arrays); :class:`StoredRows` reads a suite's results back
from those offsets each time it is iterated (the statistics' columns, the per-config
figures, evalgate.json's case rows, the HTML page), one result at a time.

Which results count is :func:`evalgate.resume.current_results`' rule (the latest line
of each item; only items the current suites define, made under the current suite
hash), and in the same order (an item's first appearance in the file).
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, overload

from evalgate.results import CaseResult, ItemKey, ReadStats, read_at, read_lines
from evalgate.suite.model import Suite

Source = Path | IO[bytes]


class StoredRows(Sequence[CaseResult]):
    """One suite's results as lines of files (results.jsonl, a spool of composed
    results), read back in order each time they are iterated; only offsets are held."""

    def __init__(self, segments: Sequence[tuple[Source, array[int]]]) -> None:
        self._segments = [(source, offsets) for source, offsets in segments if len(offsets)]

    def __len__(self) -> int:
        return sum(len(offsets) for _, offsets in self._segments)

    def __iter__(self) -> Iterator[CaseResult]:
        shared: dict[str, str] = {}
        for source, offsets in self._segments:
            with _opened(source) as fh:
                for offset in offsets:
                    yield read_at(fh, offset, shared)

    @overload
    def __getitem__(self, index: int) -> CaseResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[CaseResult]: ...
    def __getitem__(self, index: int | slice) -> CaseResult | list[CaseResult]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        for source, offsets in self._segments:
            if 0 <= index < len(offsets):
                with _opened(source) as fh:
                    return read_at(fh, offsets[index], {})
            index -= len(offsets)
        raise IndexError("result index out of range")

    def __repr__(self) -> str:
        return f"StoredRows({len(self)} results)"


class _opened:
    """A path opened for the loop (closed after), or an open spool used as it is."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if isinstance(self._source, Path):
            self._fh = self._source.open("rb")
            return self._fh
        return self._source

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


def spool(results: Iterable[CaseResult]) -> tuple[IO[bytes], array[int]]:
    """Results made after the run (derived configs) written to a temporary file, so they
    are read back like the stored ones instead of being held as objects."""
    # Outlives this call: the rows read it until they are dropped (then it is deleted).
    fh = tempfile.TemporaryFile()  # noqa: SIM115
    offsets = array("q")
    for result in results:
        offsets.append(fh.tell())
        fh.write(result.to_line())
    fh.flush()
    return fh, offsets


@dataclass(slots=True)
class CurrentIndex:
    """Per suite (that has any), the offsets of its current results, in order."""

    suites: dict[str, array[int]]
    ignored_note: str | None


def index_current(
    path: Path, suites: Mapping[str, Suite], stats: ReadStats | None = None
) -> CurrentIndex:
    """Reads ``path`` once: the current results' offsets per suite, and the note on the
    stored results left out (:func:`evalgate.resume.ignored_note`)."""
    from evalgate.resume import DefinedItems, ignored_note

    items = DefinedItems(suites)
    latest = array("q", [-1]) * items.size  # offset of the item's latest line
    first = array("q", [0]) * items.size  # when the item first appeared (its order)
    current = bytearray(items.size)  # 1: the latest line has the current suite hash
    hashes = {name: suite.suite_hash for name, suite in suites.items()}
    gone: set[ItemKey] = set()
    seen = 0
    for offset, result in read_lines(path, stats):
        key = result.key
        position = items.position(key)
        if position is None:
            gone.add(key)
            continue
        if latest[position] < 0:
            first[position] = seen
            seen += 1
        latest[position] = offset
        current[position] = result.suite_hash == hashes[key.suite]
    stale = 0
    order = array("q", [-1]) * seen  # first appearance -> position (kept items only)
    for position in range(items.size):
        if latest[position] < 0:
            continue
        if current[position]:
            order[first[position]] = position
        else:
            stale += 1
    by_suite: dict[str, array[int]] = {}
    for position in order:
        if position >= 0:
            name = items.suite_of(position)
            by_suite.setdefault(name, array("q")).append(latest[position])
    return CurrentIndex(by_suite, ignored_note(len(gone), stale, stats))


def suite_rows(path: Path, index: CurrentIndex) -> dict[str, StoredRows]:
    """Each suite's current results, read back from ``path`` when iterated."""
    return {name: StoredRows([(path, offsets)]) for name, offsets in index.suites.items()}


def composed_rows(rows: StoredRows, composed: Sequence[CaseResult]) -> StoredRows:
    """A suite's stored results followed by results composed from them (spooled)."""
    if not composed:
        return rows
    fh, offsets = spool(composed)
    return StoredRows([*rows._segments, (fh, offsets)])
