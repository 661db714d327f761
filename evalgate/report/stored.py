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
import zlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, overload

from evalgate.results import CaseResult, ItemKey, ReadStats, parse_line, read_at, scan_lines
from evalgate.suite.model import Suite


class ResultsChanged(Exception):
    """results.jsonl was rewritten in place after it was indexed: a line read back is not
    the one indexed (appending is fine; a file renamed over it is never read)."""


class _File:
    """An open file shared by the rows that read it, closed when the last is dropped
    (the rows of a document returned to a caller outlive the writer)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def __del__(self) -> None:
        self.fh.close()


@dataclass(slots=True)
class _Lines:
    """Lines of an open file at ``offsets``; with ``crcs``, each checked to be the line
    indexed there (results.jsonl), without them read as written (the report's own spool)."""

    file: _File
    offsets: array[int]
    crcs: array[int] | None = None
    label: str = ""

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self) -> Iterator[CaseResult]:
        shared: dict[str, str] = {}
        for i in range(len(self.offsets)):
            yield self.at(i, shared)

    def at(self, i: int, shared: dict[str, str]) -> CaseResult:
        offset = self.offsets[i]
        fh = self.file.fh
        if self.crcs is None:
            return read_at(fh, offset, shared)
        fh.seek(offset)
        raw = fh.readline()
        if zlib.crc32(raw) != self.crcs[i]:
            raise ResultsChanged(
                f"{self.label}: rewritten while the report read it (the line at byte "
                f"{offset} is not the one indexed); only appending is safe during a report"
            )
        return parse_line(raw, offset, shared)


Segment = _Lines | Sequence[CaseResult]


class StoredRows(Sequence[CaseResult]):
    """One suite's results as lines of files (results.jsonl, a spool of composed
    results), read back in order each time they are iterated; only offsets are held."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self._segments = [segment for segment in segments if len(segment)]

    def __len__(self) -> int:
        return sum(len(segment) for segment in self._segments)

    def __iter__(self) -> Iterator[CaseResult]:
        for segment in self._segments:
            yield from segment

    @overload
    def __getitem__(self, index: int) -> CaseResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[CaseResult]: ...
    def __getitem__(self, index: int | slice) -> CaseResult | list[CaseResult]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        for segment in self._segments:
            if 0 <= index < len(segment):
                if isinstance(segment, _Lines):
                    return segment.at(index, {})
                return segment[index]
            index -= len(segment)
        raise IndexError("result index out of range")

    def __repr__(self) -> str:
        return f"StoredRows({len(self)} results)"


def spool(results: Sequence[CaseResult], directory: Path | None = None) -> Segment:
    """Results made after the run (derived configs) written to a temporary file in
    ``directory``, so they are read back like the stored ones instead of being held as
    objects; held as they are when no such file can be written (a full disk)."""
    try:
        # Outlives this call: the rows read it until they are dropped (then it closes).
        # In the run's directory rather than /tmp (often a RAM-backed tmpfs); unlinked
        # from the start (O_TMPFILE where there is one), so a crash leaves nothing.
        fh = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
    except OSError:
        return results
    offsets = array("q")
    try:
        for result in results:
            offsets.append(fh.tell())
            fh.write(result.to_line())
        fh.flush()
    except OSError:
        fh.close()
        return results
    return _Lines(_File(fh), offsets)


@dataclass(slots=True)
class CurrentIndex:
    """Per suite (that has any), the offsets of its current results, in order, and the
    CRC-32 of each line; the file they are in, held open for the read-back."""

    suites: dict[str, array[int]]
    crcs: dict[str, array[int]]
    ignored_note: str | None
    path: Path
    file: _File | None

    def close(self) -> None:
        if self.file is not None:
            self.file.fh.close()


def index_current(
    path: Path, suites: Mapping[str, Suite], stats: ReadStats | None = None
) -> CurrentIndex:
    """Reads ``path`` once: the current results' offsets per suite, and the note on the
    stored results left out (:func:`evalgate.resume.ignored_note`).

    The file stays open for :func:`suite_rows` until :meth:`CurrentIndex.close`: a file
    renamed over ``path`` meanwhile (an editor's save, a tool's rewrite) is not the one
    the offsets point into, and is not read.
    """
    from evalgate.resume import DefinedItems, ignored_note

    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return CurrentIndex({}, {}, ignored_note(0, 0, stats), path, None)
    items = DefinedItems(suites)
    latest = array("q", [-1]) * items.size  # offset of the item's latest line
    crcs = array("I", [0]) * items.size  # its CRC-32 (4 bytes an item)
    first = array("q", [0]) * items.size  # when the item first appeared (its order)
    current = bytearray(items.size)  # 1: the latest line has the current suite hash
    hashes = {name: suite.suite_hash for name, suite in suites.items()}
    gone: set[ItemKey] = set()
    seen = 0
    try:
        for offset, raw, result in scan_lines(fh, stats):
            key = result.key
            position = items.position(key)
            if position is None:
                gone.add(key)
                continue
            if latest[position] < 0:
                first[position] = seen
                seen += 1
            latest[position] = offset
            crcs[position] = zlib.crc32(raw)
            current[position] = result.suite_hash == hashes[key.suite]
    except BaseException:
        fh.close()
        raise
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
    crcs_by_suite: dict[str, array[int]] = {}
    for position in order:
        if position >= 0:
            name = items.suite_of(position)
            by_suite.setdefault(name, array("q")).append(latest[position])
            crcs_by_suite.setdefault(name, array("I")).append(crcs[position])
    note = ignored_note(len(gone), stale, stats)
    return CurrentIndex(by_suite, crcs_by_suite, note, path, _File(fh))


def suite_rows(path: Path, index: CurrentIndex) -> dict[str, StoredRows]:
    """Each suite's current results, read back from the file indexed when iterated; a
    line rewritten in place since raises :class:`ResultsChanged`."""
    if index.file is None:
        return {}
    file = index.file
    return {
        name: StoredRows([_Lines(file, offsets, index.crcs[name], str(path))])
        for name, offsets in index.suites.items()
    }


def composed_rows(
    rows: StoredRows, composed: Sequence[CaseResult], directory: Path | None = None
) -> StoredRows:
    """A suite's stored results followed by results composed from them (spooled in
    ``directory``)."""
    if not composed:
        return rows
    return StoredRows([*rows._segments, spool(composed, directory)])
