"""A suite's results as tables: the statistics' frame and evalgate.json's case rows.

One place builds a suite's results table (:func:`suite_table`): the statistics
(``report.gate.analyze_run``) and the per-config figures of evalgate.json
(``report.summary.build_report``) both call it, one suite at a time, with only the
columns they read. Outputs, grades and reasons never enter a frame.

evalgate.json's per-item rows (a suite's ``cases``) are the largest part of a big run's
report. :class:`CaseRows` makes them one at a time from the results when the writer (or
the HTML page) iterates, so the report never holds a dict per item, nor a second,
JSON-safe copy of every dict.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from evalgate.results import CaseResult, _row

# Integer columns of a case row: where any row holds None (or a float) in a column, the
# report's table has always shown that column's numbers as floats (a pandas frame's
# float64 column); kept, so a row reads the same as in earlier reports.
_INT_COLUMNS = ("repeat", "input_tokens", "output_tokens", "attempts", "grading_calls")
_ROW_DROPPED = ("suite", "feature")  # the same for every row of a suite: said once


def suite_table(results: Iterable[CaseResult], columns: Collection[str]) -> Any:
    """One suite's results as a pandas frame of ``columns`` (one row per item).

    Built column by column: a list of per-item dicts first (pandas' other way in) would
    cost more than the frame itself, at the peak of a big run's report.
    """
    return read_suite(results, columns).frame


@dataclass(slots=True)
class SuiteTable:
    """What one pass over a suite's results gives the report.

    Attributes:
        frame: the ``columns`` asked for, one row per item.
        float_columns: the integer columns holding a None or a float in some row (see
            :func:`float_columns`).
        feature, suite_hash: the suite's, from its last result (as the report says them).
    """

    frame: Any
    float_columns: frozenset[str]
    feature: str | None
    suite_hash: str | None


def read_suite(results: Iterable[CaseResult], columns: Collection[str]) -> SuiteTable:
    """:func:`suite_table` and :func:`float_columns` in one pass (a big run's results are
    read back from its file for each pass)."""
    import pandas as pd

    names = list(columns)
    values: dict[str, list[Any]] = {name: [] for name in names}
    found: set[str] = set()
    last: CaseResult | None = None
    for result in results:
        row = _row(result)
        for name in names:
            values[name].append(row[name])
        if len(found) < len(_INT_COLUMNS):
            found.update(_floats(result))
        last = result
    frame = pd.DataFrame(values, columns=names)
    feature = last.feature if last is not None else None
    return SuiteTable(frame, frozenset(found), feature, last.suite_hash if last else None)


def float_columns(results: Iterable[CaseResult]) -> frozenset[str]:
    """The integer columns that hold a None or a float in some row (see _INT_COLUMNS)."""
    found: set[str] = set()
    for result in results:
        found.update(_floats(result))
        if len(found) == len(_INT_COLUMNS):
            break
    return frozenset(found)


def _floats(result: CaseResult) -> Iterator[str]:
    for name, value in zip(_INT_COLUMNS, _int_values(result), strict=True):
        if value is None or isinstance(value, float):
            yield name


def _int_values(r: CaseResult) -> tuple[Any, ...]:
    return (
        r.repeat,
        r.call.input_tokens,
        r.call.output_tokens,
        r.call.attempts,
        sum(g.calls for g in r.grades),
    )


def case_row(result: CaseResult, as_float: Collection[str] = ()) -> dict[str, Any]:
    """One item's row in evalgate.json: JSON-safe builtins, without suite and feature."""
    row = _row(result)
    for name in _ROW_DROPPED:
        del row[name]
    for name in as_float:
        value = row[name]
        row[name] = None if value is None else float(value)
    out = _plain(row)
    assert isinstance(out, dict)
    return out


def _plain(value: Any) -> Any:
    """:func:`evalgate.stats._common.json_safe` of a row, with a fast path for the JSON
    types a row holds (made for every row each time the rows are written or shown)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {str(k): _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    from evalgate.stats._common import json_safe

    return json_safe(value)


class CaseRows(list):  # type: ignore[type-arg]
    """A suite's case rows, made from its results each time they are iterated.

    A list to the report's readers (``isinstance(..., list)``, ``len``, iteration,
    indexing) and to ``json.dump`` with ``indent`` (its Python encoder iterates), while
    holding only the results it reads from. Not for ``json.dumps`` without ``indent``:
    the C encoder reads a list's storage, which is empty here; :meth:`materialize`
    gives a plain list.
    """

    def __init__(self, results: Sequence[CaseResult], as_float: Collection[str] = ()) -> None:
        super().__init__()
        self._results = results
        self._as_float = tuple(as_float)

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        for result in self._results:
            yield case_row(result, self._as_float)

    @property
    def results(self) -> Sequence[CaseResult]:
        """The results the rows are made from (read, never copied)."""
        return self._results

    def __len__(self) -> int:
        return len(self._results)

    def __bool__(self) -> bool:
        return bool(self._results)

    def __getitem__(self, index: Any) -> Any:  # type: ignore[override]
        if isinstance(index, slice):
            return [case_row(r, self._as_float) for r in self._results[index]]
        return case_row(self._results[index], self._as_float)

    def __eq__(self, other: object) -> bool:
        return list(self) == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CaseRows({len(self)} rows)"

    def __reduce__(self) -> Any:  # a copy or a pickle is a plain list of the rows
        return (list, (list(self),))

    def materialize(self) -> list[dict[str, Any]]:
        return list(self)
