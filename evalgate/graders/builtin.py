"""Built-in graders: equals, contains, regex, numeric, json-valid."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from evalgate.graders.registry import Grade, grader

# A number as written in prose: an optional sign (ASCII or Unicode minus) that starts a
# word (so "10-12" is a range, not -12), digits with thousands separators only in valid
# groups of three ("1,234,567"; "4,2" is two numbers), an optional fraction and exponent.
_NUMBER = re.compile(
    r"(?:(?<![\w.])(?P<sign>[-+\u2212])|(?<![\d.]))"
    r"(?P<digits>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d+)?(?!\d)"
)
NUMBER_CHOICES = ("last", "first", "only")
# A Markdown code fence: ``` or ~~~, any language tag (```json, ```JSON), its body.
_FENCE = re.compile(r"(`{3,}|~{3,})[ \t]*([\w+.-]*)[ \t]*\n?(.*?)\n?[ \t]*\1", re.DOTALL)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def nfc(text: str) -> str:
    """Unicode NFC: "café" typed with a combining accent equals the precomposed one."""
    return unicodedata.normalize("NFC", text)


def _empty_values(value: Any) -> str | None:
    """An error message when an expected value is empty (it would match every output)."""
    values = value if isinstance(value, list) else [value]
    if not values:
        return "value: expected a non-empty list of values, found []"
    for index, item in enumerate(values):
        if isinstance(item, str) and not item.strip():
            where = f"value[{index}]" if isinstance(value, list) else "value"
            return (
                f"{where}: expected a non-empty value, found {item!r} (it would match any output)"
            )
    return None


def _check_values(params: Mapping[str, Any], suite_dir: str) -> str | None:
    return _empty_values(params.get("value"))


@grader(
    "equals",
    params={"value": (str, int, float), "ignore_case": bool, "strip": bool},
    required=("value",),
)
def equals(
    output: str, case: Any, value: Any, ignore_case: bool = False, strip: bool = True
) -> Grade:
    """Passes when the output equals ``value`` (NFC-normalised; stripped by default)."""
    got, want = nfc(output), nfc(str(value))
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
    validate=_check_values,
)
def contains(
    output: str, case: Any, value: Any, mode: str = "any", ignore_case: bool = True
) -> Grade:
    """``mode: any`` passes if one of the values occurs; ``all`` needs every one.

    The score is the fraction of values found for ``all`` (partial credit), 0/1 for ``any``.
    Texts are compared NFC-normalised. An empty value (also one a template renders empty
    for this case) is an error: it would be found in every output.
    """
    if mode not in ("any", "all"):
        raise ValueError(f"contains.mode must be 'any' or 'all', got {mode!r}")
    problem = _empty_values(value)
    if problem:
        raise ValueError(f"{problem} for this case")
    wanted = _as_list(value)
    fold = (lambda t: nfc(t).casefold()) if ignore_case else nfc
    haystack = fold(output)
    found = [w for w in wanted if fold(w) in haystack]
    if mode == "any":
        ok = bool(found)
        score = float(ok)
    else:
        ok = len(found) == len(wanted)
        score = len(found) / len(wanted)
    missing = [w for w in wanted if w not in found]
    reason = (
        f"found {found[0]!r}"
        if ok and mode == "any"
        else "found all"
        if ok
        else f"expected {mode} of {wanted!r} in {_short(output)}; missing {missing!r}"
    )
    return Grade(score, ok, reason)


def _check_pattern(params: Mapping[str, Any], suite_dir: str) -> str | None:
    pattern = params.get("pattern", "")
    if not str(pattern).strip():
        return "pattern: expected a non-empty pattern (an empty one matches any output)"
    if "{" in str(pattern) and ("{{" in str(pattern) or "{%" in str(pattern)):
        return None  # checked once rendered for a case
    import regex as regex_module

    try:
        regex_module.compile(str(pattern))
    except regex_module.error as exc:
        return f"pattern: invalid regular expression: {exc}"
    return None


def escape_pattern_value(value: str) -> str:
    """A case value inserted into a ``regex`` pattern matches itself literally."""
    import regex as regex_module

    return regex_module.escape(value)


@grader(
    "regex",
    params={"pattern": str, "ignore_case": bool, "pattern_vars": bool},
    required=("pattern",),
    validate=_check_pattern,
    escaped={"pattern": escape_pattern_value},
)
def regex(
    output: str, case: Any, pattern: str, ignore_case: bool = False, pattern_vars: bool = False
) -> Grade:
    """Passes when ``pattern`` matches somewhere in the output (NFC-normalised).

    Case values inserted with ``{{ var }}`` are escaped, so "3.14" matches only "3.14";
    ``pattern_vars: true`` inserts them as patterns. The match runs on the ``regex``
    engine, bounded by the grade's time limit: a pattern that backtracks catastrophically
    on an output is a grader error, not a hung run.
    """
    from evalgate.graders import deadline

    if not pattern.strip():
        raise ValueError("pattern: the pattern is empty for this case (it would match anything)")
    flags = re.IGNORECASE if ignore_case else 0
    match = deadline.search(nfc(pattern), nfc(output), flags)
    ok = match is not None
    return Grade(
        float(ok),
        ok,
        f"matched {match.group(0)!r}" if match else f"no match for /{pattern}/ in {_short(output)}",
    )


def numbers(text: str) -> list[float]:
    """Every number in the text, in order ("−42" is negative, "1,234.5" is 1234.5, "4,2" is
    4 and 2, "10-12" is 10 and 12)."""
    found = []
    for match in _NUMBER.finditer(text):
        digits = match.group("digits").replace(",", "") + (match.group("exp") or "")
        try:
            value = float(digits)
        except ValueError:
            continue
        found.append(-value if match.group("sign") in ("-", "\u2212") else value)
    return found


def final_number(text: str) -> float | None:
    """The last number in the text ("The answer is 1,234." -> 1234.0)."""
    found = numbers(text)
    return found[-1] if found else None


def _expected_number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    found = numbers(str(value))
    if len(found) != 1 or not str(value).strip():
        raise ValueError(f"value: expected one number, found {str(value)!r}")
    return found[0]


def _check_numeric(params: Mapping[str, Any], suite_dir: str) -> str | None:
    which = params.get("which", "last")
    if which not in NUMBER_CHOICES:
        return f"which: expected one of {', '.join(NUMBER_CHOICES)}, found {which!r}"
    value = params.get("value")
    if isinstance(value, str) and "{{" not in value and "{%" not in value:
        try:
            _expected_number(value)
        except ValueError as exc:
            return str(exc)
    tolerance = params.get("tolerance", 0)
    if not tolerance >= 0:
        return f"tolerance: expected a number >= 0, found {tolerance!r}"
    return None


@grader(
    "numeric",
    params={"value": (str, int, float), "tolerance": (int, float), "relative": bool, "which": str},
    required=("value",),
    validate=_check_numeric,
)
def numeric(
    output: str,
    case: Any,
    value: Any,
    tolerance: float = 0.0,
    relative: bool = False,
    which: str = "last",
) -> Grade:
    """Reads a number of the output and compares it within a tolerance.

    ``which`` picks the number when the output holds several: ``last`` (default, the
    conclusion of a worked answer), ``first``, or ``only`` (an output with more than one
    number misses). Numbers keep their sign (``-`` or ``−`` at the start of a word; the
    hyphen of "10-12" is a range), and commas count as thousands separators only in
    groups of three. ``tolerance`` is absolute by default; with ``relative: true`` a
    fraction of the expected value.
    """
    if which not in NUMBER_CHOICES:
        raise ValueError(f"which: expected one of {', '.join(NUMBER_CHOICES)}, found {which!r}")
    want = _expected_number(value)
    found = numbers(output)
    if not found:
        return Grade(0.0, False, f"expected {want:g}, found no number in {_short(output)}")
    if which == "only" and len(found) > 1:
        shown = ", ".join(f"{n:g}" for n in found[:5])
        return Grade(0.0, False, f"expected only {want:g}, found several numbers ({shown})")
    got = found[0] if which == "first" else found[-1]
    allowed = tolerance * abs(want) if relative else tolerance
    ok = abs(got - want) <= allowed + 1e-12
    return Grade(float(ok), ok, f"expected {want:g} (±{allowed:g}), got {got:g}")


class NotJSON(ValueError):
    """The output holds no JSON answer (a miss, never a grader error)."""


def extract_json(output: str) -> Any:
    """The output's JSON answer.

    The answer is the whole output when it parses as JSON (a string may contain
    ```` ``` ````). Otherwise it is the body of the output's **last** code fence (```` ``` ````
    or ``~~~``, any language tag such as ``json`` or ``JSON``), so a fenced draft followed
    by a fenced final answer grades the final one; text may precede the fence, but only
    whitespace may follow it (a retraction after the JSON is not a JSON answer).

    Raises:
        NotJSON: no JSON answer, or one nested too deeply to parse.
    """
    text = output.strip()
    try:
        return _loads(text)
    except NotJSON as whole:
        fences = list(_FENCE.finditer(text))
        if not fences:
            raise whole from None
        last = fences[-1]
        if text[last.end() :].strip():
            raise NotJSON(
                "text follows the last code fence; the JSON answer must end the output"
            ) from None
        return _loads(last.group(3).strip())


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise NotJSON("nested too deeply to parse") from None
    except ValueError as exc:
        raise NotJSON(str(exc.args[0] if exc.args else exc)) from None


@grader("json-valid")
def json_valid(output: str, case: Any) -> Grade:
    """Passes when the output's JSON answer (see :func:`extract_json`) parses."""
    try:
        extract_json(output)
    except NotJSON as exc:
        return Grade(0.0, False, f"not valid JSON ({exc})")
    return Grade(1.0, True, "valid JSON")


# The other graders register when the registry loads the built-ins (their heavy imports,
# numpy, jsonschema and the embedding model, happen inside the graders).
from evalgate.graders import budget, custom, judge, semantic, structured  # noqa: E402, F401
