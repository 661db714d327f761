"""Built-in graders: equals, contains, regex, numeric, json-valid."""

from __future__ import annotations

import json
import re
from typing import Any

from evalgate.graders.registry import Grade, grader

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)\n?```", re.DOTALL)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


@grader(
    "equals",
    params={"value": (str, int, float), "ignore_case": bool, "strip": bool},
    required=("value",),
)
def equals(
    output: str, case: Any, value: Any, ignore_case: bool = False, strip: bool = True
) -> Grade:
    got, want = output, str(value)
    if strip:
        got, want = got.strip(), want.strip()
    if ignore_case:
        got, want = got.casefold(), want.casefold()
    ok = got == want
    return Grade(float(ok), ok, f"expected {_short(str(value))}, got {_short(output)}")


@grader(
    "contains",
    params={"value": (str, int, float, list), "mode": str, "ignore_case": bool},
    required=("value",),
)
def contains(
    output: str, case: Any, value: Any, mode: str = "any", ignore_case: bool = True
) -> Grade:
    """``mode: any`` passes if one of the values occurs; ``all`` needs every one.

    The score is the fraction of values found for ``all`` (partial credit), 0/1 for ``any``.
    """
    if mode not in ("any", "all"):
        raise ValueError(f"contains.mode must be 'any' or 'all', got {mode!r}")
    wanted = _as_list(value)
    haystack = output.casefold() if ignore_case else output
    found = [w for w in wanted if (w.casefold() if ignore_case else w) in haystack]
    if mode == "any":
        ok = bool(found)
        score = float(ok)
    else:
        ok = len(found) == len(wanted)
        score = len(found) / len(wanted) if wanted else 1.0
    missing = [w for w in wanted if w not in found]
    reason = (
        f"found {found[0]!r}"
        if ok and mode == "any"
        else "found all"
        if ok
        else f"expected {mode} of {wanted!r} in {_short(output)}; missing {missing!r}"
    )
    return Grade(score, ok, reason)


@grader("regex", params={"pattern": str, "ignore_case": bool}, required=("pattern",))
def regex(output: str, case: Any, pattern: str, ignore_case: bool = False) -> Grade:
    match = re.search(pattern, output, re.IGNORECASE if ignore_case else 0)
    ok = match is not None
    return Grade(
        float(ok),
        ok,
        f"matched {match.group(0)!r}" if match else f"no match for /{pattern}/ in {_short(output)}",
    )


def final_number(text: str) -> float | None:
    """The last number in the text ("The answer is 1,234." -> 1234.0)."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", ""))
    except ValueError:
        return None


@grader(
    "numeric",
    params={"value": (str, int, float), "tolerance": (int, float), "relative": bool},
    required=("value",),
)
def numeric(
    output: str, case: Any, value: Any, tolerance: float = 0.0, relative: bool = False
) -> Grade:
    """Extracts the final number of the output and compares it within a tolerance.

    ``tolerance`` is absolute by default; with ``relative: true`` it is a fraction of the
    expected value.
    """
    want = float(str(value).replace(",", ""))
    got = final_number(output)
    if got is None:
        return Grade(0.0, False, f"expected {want:g}, found no number in {_short(output)}")
    allowed = tolerance * abs(want) if relative else tolerance
    ok = abs(got - want) <= allowed + 1e-12
    return Grade(float(ok), ok, f"expected {want:g} (±{allowed:g}), got {got:g}")


def extract_json(output: str) -> Any:
    """Parses the output as JSON, also when it is wrapped in a ``` code fence."""
    text = output.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    return json.loads(text)


@grader("json-valid")
def json_valid(output: str, case: Any) -> Grade:
    try:
        extract_json(output)
    except ValueError as exc:
        return Grade(0.0, False, f"not valid JSON ({exc.args[0] if exc.args else exc})")
    return Grade(1.0, True, "valid JSON")


# The other graders register when the registry loads the built-ins (their heavy imports,
# numpy, jsonschema and the embedding model, happen inside the graders).
from evalgate.graders import budget, custom, judge, semantic, structured  # noqa: E402, F401
