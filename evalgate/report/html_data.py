"""The case drill-down's data, embedded in the page as JSON and rendered lazily by its script.

Compact on purpose (10,000 cases x 6 configs must stay well under 25 MB): per suite, the
config ids, the case ids, and a cases x configs grid whose cells hold one array per
repeat; each case's expected value and prompts are stored once, prompts
deduplicated by content hash exactly as evalgate.json stores them.

A result row is an array whose positions are named by :data:`ROW_FIELDS` (the page's
script reads the same names from the embedded ``fields`` list, so the two cannot drift).
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Any

ROW_FIELDS = (
    "score",
    "passed",
    "error",
    "error_message",
    "output",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "ttft_ms",
    "cached",
    "attempts",
    "finish_reason",
    "repeat",
    "saved_usd",
    "grades",
)
GRADE_FIELDS = ("grader", "score", "passed", "reason", "error", "flags")


def _scalar(value: Any) -> Any:
    """A JSON scalar the page can show; anything else (NaN, lists, dicts) becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return None


def _row(row: Mapping[str, Any]) -> list[Any]:
    grades = [
        [_grade_value(g, f) for f in GRADE_FIELDS]
        for g in _seq(row.get("grades"))
        if isinstance(g, Mapping)
    ]
    values = [_scalar(row.get(f)) for f in ROW_FIELDS[:-1]]
    return [*values, grades]


def _grade_value(grade: Mapping[str, Any], field: str) -> Any:
    if field == "flags":  # marks for a reviewer, e.g. "addresses-grader"
        return [str(f) for f in _seq(grade.get(field)) if isinstance(f, str)]
    return _scalar(grade.get(field))


def _seq(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _rows(suite: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The suite's case rows, read as a stream: the writer's rows are made as iterated
    (report.tables.CaseRows), so listing them first would hold a dict per item."""
    cases = suite.get("cases")
    if isinstance(cases, list | tuple):
        for row in cases:
            if isinstance(row, Mapping):
                yield row


def _messages(value: Any) -> list[dict[str, str]] | None:
    if not isinstance(value, list | tuple):
        return None
    return [
        {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
        for m in value
        if isinstance(m, Mapping)
    ]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _repeat(row: list[Any]) -> float:
    value = row[ROW_FIELDS.index("repeat")]
    return float(value) if isinstance(value, int | float) else 0.0


def _suite_data(
    name: str, suite: Mapping[str, Any], seal: Callable[[list[str]], str] | None = None
) -> dict[str, Any]:
    """One suite's drill-down data. With ``seal``, each row is JSON text as soon as it is
    read and each cell (a case's rows under a config, by repeat) is what ``seal`` makes
    of its rows' texts (see :func:`drilldown_json`)."""
    listed = suite.get("configs")
    configs = [str(c) for c in listed] if isinstance(listed, Mapping) else []
    column = {c: j for j, c in enumerate(configs)}
    case_index: dict[str, int] = {}
    expected: list[str] = []
    grid: list[list[list[list[Any]] | None]] = []
    # One pass (the rows are read back from the run's file for each): a config the
    # document does not list gets the next column, and shorter grid rows are padded.
    for row in _rows(suite):
        config = str(row.get("config_id"))
        j = column.get(config)
        if j is None:
            j = column[config] = len(configs)
            configs.append(config)
        case = str(row.get("case_id"))
        i = case_index.get(case)
        if i is None:
            i = case_index[case] = len(grid)
            grid.append([None] * len(configs))
            expected.append(str(row.get("expected") or ""))
        cells = grid[i]
        if j >= len(cells):
            cells.extend([None] * (j + 1 - len(cells)))
        cell = cells[j]
        if cell is None:
            cell = cells[j] = []
        compact = _row(row)
        cell.append(compact if seal is None else (_repeat(compact), _dumps(compact)))
    for cells in grid:
        cells.extend([None] * (len(configs) - len(cells)))
        for k, cell in enumerate(cells):
            if not cell:
                continue
            if seal is None:
                cell.sort(key=_repeat)
            else:
                cell.sort(key=lambda entry: entry[0])
                cells[k] = seal([text for _, text in cell])
    # Cases in id order (results arrive in run order); the grid follows.
    order = sorted(case_index)
    grid = [grid[case_index[c]] for c in order]
    expected = [expected[case_index[c]] for c in order]
    cases = order
    inputs = _mapping(suite.get("inputs"))
    prompt_of = _mapping(inputs.get("prompt"))
    # Only the prompts the page can show; a config missing from the map has no prompt.
    prompts = [
        [_text(_mapping(prompt_of.get(case)).get(config)) for config in configs] for case in cases
    ]
    used = {h for per_case in prompts for h in per_case if h}
    messages = {}
    for key, stored in _mapping(inputs.get("messages")).items():
        shown = _messages(stored) if key in used else None
        if shown is not None:
            messages[str(key)] = shown
    baseline = suite.get("baseline")
    return {
        "name": name,
        "configs": configs,
        "baseline": column.get(str(baseline), 0) if configs else None,
        "cases": cases,
        "expected": expected,
        "prompts": prompts,
        "messages": messages,
        "grid": grid,
    }


def _dumps(value: Any) -> str:
    """JSON text as :func:`evalgate.report.html.embed_json` writes it (before escaping)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def drilldown_json(document: Mapping[str, Any]) -> str:
    """``embed_json(drilldown_data(document))``, the same text, without the rows as objects.

    A big run's drill-down holds every case row: as lists of values they were the
    largest part of the report's peak memory. Here each row becomes JSON text as it is
    read; a cell's place in the document is held by a marker (a random nonce no data
    can guess), replaced by the cell's text once the rest is encoded.
    """
    from evalgate.report.html import _SCRIPT_SAFE, embed_json

    nonce = secrets.token_hex(8)
    cells: list[str] = []

    def seal(texts: list[str]) -> str:
        cells.append("[" + ",".join(texts) + "]")
        return f"{nonce}:{len(cells) - 1}"

    suites = _mapping(document.get("suites"))
    data = {
        "fields": list(ROW_FIELDS),
        "grade_fields": list(GRADE_FIELDS),
        "suites": [
            _suite_data(str(n), s, seal) for n, s in suites.items() if isinstance(s, Mapping)
        ],
    }
    parts = re.split(f'"{nonce}:([0-9]+)"', embed_json(data))
    del data
    # Escaping is per character: each cell escaped alone reads as the whole escaped.
    parts[1::2] = [cells[int(i)].translate(_SCRIPT_SAFE) for i in parts[1::2]]
    return "".join(parts)


def drilldown_data(document: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object the page's script reads (``fields`` names each row position)."""
    suites = _mapping(document.get("suites"))
    return {
        "fields": list(ROW_FIELDS),
        "grade_fields": list(GRADE_FIELDS),
        "suites": [_suite_data(str(n), s) for n, s in suites.items() if isinstance(s, Mapping)],
    }
