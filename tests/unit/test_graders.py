"""Every grader on edge cases, negation, weights and the pass threshold."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import evalgate
from evalgate.graders import grading
from evalgate.graders.budget import uncached_cost
from evalgate.graders.custom import resolve
from evalgate.graders.registry import known_names, lookup
from evalgate.results import CallResult, GradeResult
from evalgate.suite.model import Case, GraderSpec

BUILTIN_NAMES = {
    "equals",
    "contains",
    "regex",
    "numeric",
    "json-valid",
    "json-schema",
    "similar",
    "cost",
    "latency",
    "python",
    "llm-judge",
}
LONG = "lorem ipsum dolor sit amet " * 40_000  # ~1 MB


def run(
    type_name: str,
    output: str,
    *,
    call: CallResult | None = None,
    vars: dict[str, Any] | None = None,
    weight: float = 1.0,
    **params: Any,
) -> GradeResult:
    spec = GraderSpec(type_name, params, weight)
    return grading.run_sync(spec, output, Case("case-1", vars or {}), call)


def validate(type_name: str, params: dict[str, Any], suite_dir: str | Path = ".") -> str | None:
    found = lookup(type_name)
    assert found is not None
    check = found[0].validate
    return None if check is None else check(params, str(suite_dir))


# ------------------------------------------------------------------------------ built-ins


@pytest.mark.parametrize(
    ("output", "params", "passed"),
    [
        ("", {"value": ""}, True),
        ("", {"value": "x"}, False),
        ("  Paris \n", {"value": "Paris"}, True),
        ("  Paris \n", {"value": "Paris", "strip": False}, False),
        ("STRASSE", {"value": "straße", "ignore_case": True}, True),
        ("Zürich", {"value": "Zürich"}, True),
        ("Zurich", {"value": "Zürich"}, False),
        ("42", {"value": 42}, True),
        (LONG, {"value": LONG.strip()}, True),
    ],
)
def test_equals(output: str, params: dict[str, Any], passed: bool) -> None:
    grade = run("equals", output, **params)
    assert grade.passed is passed and grade.error is None
    assert grade.score == float(passed)
    assert len(grade.reason) < 300  # long outputs are shortened in reasons


@pytest.mark.parametrize(
    ("output", "params", "score", "passed"),
    [
        ("", {"value": "Paris"}, 0.0, False),
        ("The answer is PARIS.", {"value": "paris"}, 1.0, True),
        ("The answer is PARIS.", {"value": "paris", "ignore_case": False}, 0.0, False),
        ("東京は日本の首都です", {"value": "東京"}, 1.0, True),
        ("naïve café", {"value": ["CAFÉ", "tea"]}, 1.0, True),
        ("red and blue", {"value": ["red", "green", "blue", "pink"], "mode": "all"}, 0.5, False),
        ("red green", {"value": ["red", "green"], "mode": "all"}, 1.0, True),
        (LONG + "needle", {"value": "needle"}, 1.0, True),
    ],
)
def test_contains(output: str, params: dict[str, Any], score: float, passed: bool) -> None:
    grade = run("contains", output, **params)
    assert (grade.score, grade.passed, grade.error) == (score, passed, None)


def test_contains_bad_mode_is_an_error_naming_the_case() -> None:
    grade = run("contains", "x", value="x", mode="most")
    assert grade.error is not None and not grade.passed and grade.score == 0
    assert "case 'case-1'" in grade.reason and "'any' or 'all'" in grade.reason


def test_templated_values_are_rendered_with_the_case_variables() -> None:
    grade = run("contains", "It is 391.", value="{{ answer }}", vars={"answer": 391})
    assert grade.passed


@pytest.mark.parametrize(
    ("output", "params", "passed"),
    [
        ("", {"pattern": "^$"}, True),
        ("", {"pattern": "."}, False),
        ("Order #A-1234 shipped", {"pattern": r"#[A-Z]-\d{4}"}, True),
        ("ÉTÉ", {"pattern": "été", "ignore_case": True}, True),
        (LONG + "END", {"pattern": "END$"}, True),
    ],
)
def test_regex(output: str, params: dict[str, Any], passed: bool) -> None:
    assert run("regex", output, **params).passed is passed


def test_regex_invalid_pattern_is_a_grader_error() -> None:
    grade = run("regex", "x", pattern="(unclosed")
    assert grade.error is not None and "case 'case-1'" in grade.reason


@pytest.mark.parametrize(
    ("output", "params", "passed"),
    [
        ("The total is 1,234.50 dollars.", {"value": 1234.5}, True),
        ("-3", {"value": -3}, True),
        ("first 10, then 12", {"value": 12}, True),
        ("about 101", {"value": 100, "tolerance": 0.02, "relative": True}, True),
        ("about 103", {"value": 100, "tolerance": 0.02, "relative": True}, False),
        ("1e3", {"value": "1000"}, True),
        ("", {"value": 0}, False),
        ("no digits here, ни одной", {"value": 1}, False),
    ],
)
def test_numeric(output: str, params: dict[str, Any], passed: bool) -> None:
    grade = run("numeric", output, **params)
    assert grade.passed is passed and grade.error is None


@pytest.mark.parametrize(
    ("output", "passed"),
    [
        ('{"a": 1}', True),
        ('```json\n{"a": [1, 2]}\n```', True),
        ('Here you go:\n```\n{"ok": true}\n```', True),
        # Text after the JSON may take it back: the JSON answer must end the output.
        ('Here you go:\n```\n{"ok": true}\n```\nAnything else?', False),
        ('{"name": "Zoë", "city": "東京"}', True),
        ("[" + ",".join(["1"] * 100_000) + "]", True),
        ("", False),
        ("{'a': 1}", False),
        ('{"a": 1,}', False),
        ('```json\n{"a": \n```', False),
        ("not json", False),
    ],
)
def test_json_valid(output: str, passed: bool) -> None:
    grade = run("json-valid", output)
    assert grade.passed is passed and grade.error is None
    if not passed:
        assert grade.reason.startswith("not valid JSON")


# ------------------------------------------------------------------------------ similar


def test_similar_paraphrase_passes_and_unrelated_fails() -> None:
    good = run("similar", "Paris is France's capital city.", value="The capital is Paris.")
    bad = run("similar", "Bananas are rich in potassium.", value="The capital is Paris.")
    assert good.passed and good.score >= 0.55 and good.reason.startswith("cosine 0.")
    assert not bad.passed and bad.score < 0.3
    assert 0 <= bad.score <= 1


def test_similar_takes_the_closest_of_several_references() -> None:
    grade = run(
        "similar",
        "You can send it back within thirty days.",
        value=["Shipping is free.", "Returns are accepted within 30 days."],
    )
    assert grade.passed and "Returns are accepted" in grade.reason


def test_similar_edge_cases() -> None:
    assert run("similar", "", value="Paris").score == 0
    assert run("similar", "   \n", value="Paris").reason == "empty output"
    unicode = run("similar", "Le chat est sur le tapis. 🐈", value="Le chat est sur le tapis.")
    assert unicode.passed
    long = run("similar", "The capital of France is Paris. " * 2000, value="Paris is the capital")
    assert long.error is None and long.passed  # truncated to the model's 256 word pieces
    strict = run("similar", "Paris is France's capital city.", value="Paris", threshold=0.99)
    assert not strict.passed
    negated = run("not-similar", "Bananas are yellow.", value="The capital is Paris.")
    assert negated.passed


def test_similar_validation() -> None:
    assert validate("similar", {"value": "x"}) is None
    assert validate("similar", {"value": []}) == (
        "value: expected a text or a non-empty list of texts"
    )
    assert "threshold: expected a cosine in [-1, 1]" in str(
        validate("similar", {"value": "x", "threshold": 1.5})
    )


# ------------------------------------------------------------------------------ json-schema

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "age": {"type": "integer", "minimum": 0},
    },
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("output", "passed", "reason"),
    [
        ('{"name": "Zoë", "tags": ["東京"]}', True, "valid JSON matching the schema"),
        ('```json\n{"name": "a", "age": 3}\n```', True, "valid JSON matching the schema"),
        ('{"name": "a", "age": -1}', False, "schema violation at $.age: -1 is less than"),
        ('{"name": "a", "tags": [1]}', False, "schema violation at $.tags[0]: 1 is not of type"),
        ('{"tags": []}', False, "schema violation at $: 'name' is a required property"),
        ('{"name": "a", "extra": 1}', False, "Additional properties are not allowed"),
        ("[]", False, "is not of type 'object'"),
        ('{"name": "a",}', False, "not valid JSON"),
        ("", False, "not valid JSON"),
    ],
)
def test_json_schema_inline(output: str, passed: bool, reason: str) -> None:
    grade = run("json-schema", output, schema=SCHEMA)
    assert grade.passed is passed and grade.error is None
    assert reason in grade.reason


def test_json_schema_checks_formats() -> None:
    schema = {"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}}
    assert run("json-schema", '{"mail": "a@b.org"}', schema=schema).passed
    assert not run("json-schema", '{"mail": "nope"}', schema=schema).passed


def test_json_schema_file_is_resolved_against_the_suite_folder(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "person.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "schemas" / "person.yaml").write_text("type: object\nrequired: [name]\n")
    for name in ("person.json", "person.yaml"):
        params: dict[str, Any] = {"schema_file": f"schemas/{name}"}
        assert validate("json-schema", params, tmp_path) is None
        assert Path(params["schema_file"]).is_absolute()  # written back for the graders
        assert run("json-schema", '{"name": "x"}', **params).passed
        assert not run("json-schema", "{}", **params).passed


def test_json_schema_validation_messages(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text('{"type": "objekt"}')
    assert "found no file at" in str(
        validate("json-schema", {"schema_file": "nope.json"}, tmp_path)
    )
    assert "is not valid JSON" in str(
        validate("json-schema", {"schema_file": "bad.json"}, tmp_path)
    )
    assert "invalid JSON Schema at type" in str(
        validate("json-schema", {"schema_file": "wrong.json"}, tmp_path)
    )
    assert "invalid JSON Schema at properties/a/minLength" in str(
        validate("json-schema", {"schema": {"properties": {"a": {"minLength": "3"}}}})
    )
    assert "exactly one of `schema`" in str(validate("json-schema", {}))
    assert "exactly one of `schema`" in str(
        validate("json-schema", {"schema": {}, "schema_file": "x.json"})
    )


def test_json_schema_missing_file_at_grading_time_is_an_error() -> None:
    grade = run("json-schema", "{}", schema_file="/nonexistent/schema.json")
    assert grade.error is not None and "schema file not found" in grade.reason


# ------------------------------------------------------------------------------ python

USER_MODULE = """
from evalgate import Grade
from evalgate.results import GradeResult


def is_polite(output, case):
    return "please" in output.lower()


def word_budget(output, case, words=5):
    n = len(output.split())
    return min(1.0, words / n) if n else 0.0


def as_grade(output, case):
    return Grade(0.25, False, f"custom reason for {case.id}")


def as_grade_result(output, case):
    return GradeResult("user", 0.75, True, "from a GradeResult")


def boom(output, case):
    raise RuntimeError("user code exploded")


def nothing(output, case):
    return None


def too_much(output, case):
    return 1.5


def with_call(output, case, call):
    return call is not None and call.output_tokens == 3


class Checks:
    @staticmethod
    def shouty(output, case):
        return output.isupper()


NOT_CALLABLE = 3


def needs_more(output, case, extra):
    return True
"""


@pytest.fixture(scope="module")
def user_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"eg_user_graders_{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("usermod")
    (folder / f"{name}.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    yield name
    sys.path.remove(str(folder))


def test_python_grader_return_kinds(user_module: str) -> None:
    m = user_module
    assert run("python", "Please wait", function=f"{m}.is_polite").passed
    assert not run("python", "Wait", function=f"{m}:is_polite").passed
    assert run("python", "SHOUT", function=f"{m}:Checks.shouty").passed
    budget = run(
        "python", "one two three four five six seven eight nine ten", function=f"{m}.word_budget"
    )
    assert (budget.score, budget.passed) == (0.5, False)  # floats pass at 1 by default
    lenient = run("python", "a b c d e f g h i j", function=f"{m}.word_budget", threshold=0.5)
    assert lenient.passed
    assert run("python", "a b", function=f"{m}.word_budget", args={"words": 1}).score == 0.5
    grade = run("python", "x", function=f"{m}.as_grade")
    assert (grade.score, grade.passed, grade.reason) == (0.25, False, "custom reason for case-1")
    grade = run("python", "x", function=f"{m}.as_grade_result")
    assert (grade.score, grade.passed, grade.reason) == (0.75, True, "from a GradeResult")
    negated = run("not-python", "Please", function=f"{m}.is_polite")
    assert not negated.passed and negated.score == 0


def test_python_grader_gets_the_call_when_it_asks(user_module: str) -> None:
    call = CallResult(output="a b c", output_tokens=3)
    assert run("python", "a b c", call=call, function=f"{user_module}.with_call").passed


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("boom", "grader error on case 'case-1': RuntimeError: user code exploded"),
        ("nothing", "returned NoneType; expected bool, a score in [0, 1] or evalgate.Grade"),
        ("too_much", "returned score 1.5; a score must be a number in [0, 1]"),
    ],
)
def test_python_grader_user_errors_are_readable(
    user_module: str, function: str, message: str
) -> None:
    grade = run("python", "x", function=f"{user_module}.{function}")
    assert grade.error is not None and not grade.passed and grade.score == 0
    assert message in grade.reason and "case 'case-1'" in grade.reason


def test_python_resolve_accepts_both_spellings(user_module: str) -> None:
    assert resolve(f"{user_module}.is_polite") is resolve(f"{user_module}:is_polite")
    assert resolve("os.path.join") is resolve("os.path:join")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "no_such_pkg_xyz.mod.func",
            "cannot import 'no_such_pkg_xyz.mod.func': "
            "ModuleNotFoundError: No module named 'no_such_pkg_xyz'",
        ),
        ("{m}.is_polit", "'{m}' has no attribute 'is_polit' (did you mean 'is_polite'?)"),
        ("{m}:Checks.shout", "'{m}.Checks' has no attribute 'shout' (did you mean 'shouty'?)"),
        ("{m}.NOT_CALLABLE", "'{m}.NOT_CALLABLE' is not callable (it is int)"),
        ("justaname", "expected a dotted path 'package.module.function'"),
        ("a..b", "expected a dotted path"),
        ("mod:", "expected 'package.module:function'"),
    ],
)
def test_python_bad_paths_fail_validation(user_module: str, path: str, message: str) -> None:
    problem = validate("python", {"function": path.format(m=user_module)})
    assert problem is not None
    assert problem.startswith("function: ")
    assert message.format(m=user_module) in problem


def test_python_validation_checks_the_signature(user_module: str) -> None:
    problem = validate("python", {"function": f"{user_module}.needs_more"})
    assert problem is not None and "cannot be called as (output, case)" in problem
    assert (
        validate("python", {"function": f"{user_module}.needs_more", "args": {"extra": 1}}) is None
    )
    assert "threshold" in str(validate("python", {"function": "os.path.join", "threshold": 2}))


def test_python_module_that_fails_to_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # validate adds the suite's folder
    name = f"eg_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import definitely_not_installed_pkg\n")
    problem = validate("python", {"function": f"{name}.f"}, tmp_path)  # found via suite_dir
    assert problem == (
        f"function: cannot import {name!r}: ModuleNotFoundError: No module named "
        "'definitely_not_installed_pkg'"
    )
    (tmp_path / f"{name}_syntax.py").write_text("def f(:\n")
    problem = validate("python", {"function": f"{name}_syntax.f"}, tmp_path)
    assert problem is not None and "SyntaxError" in problem


def test_python_module_next_to_the_suite_is_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"eg_beside_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def ok(output, case):\n    return True\n")
    assert validate("python", {"function": f"{name}:ok"}, tmp_path) is None
    assert run("python", "x", function=f"{name}:ok").passed


# ------------------------------------------------------------------------------ cost/latency

PRICED = CallResult(
    output="x", input_tokens=10, output_tokens=5, cost_usd=0.0004, latency_ms=850.0, ttft_ms=120.0
)


def test_cost_ceiling() -> None:
    assert run("cost", "x", call=PRICED, max_usd=0.001).passed
    over = run("cost", "x", call=PRICED, max_usd=0.0001)
    assert not over.passed and over.reason == "cost $0.0004 > $0.0001"
    assert run("cost", "x", call=PRICED, max_usd=0.0004).passed  # the ceiling is inclusive
    assert run("not-cost", "x", call=PRICED, max_usd=0.0001).passed


def test_cost_unknown_price_is_an_error_not_a_pass() -> None:
    unknown = CallResult(output="x", input_tokens=10, output_tokens=5, cost_usd=None)
    grade = run("cost", "x", call=unknown, max_usd=1.0)
    assert grade.error is not None and not grade.passed
    assert "price is unknown" in grade.reason
    negated = run("not-cost", "x", call=unknown, max_usd=1.0)
    assert negated.error is not None and not negated.passed


def test_cost_of_a_cache_hit_is_the_uncached_cost() -> None:
    hit = CallResult(output="x", cost_usd=0.0, saved_usd=0.0004, cached=True, latency_ms=850)
    assert uncached_cost(hit) == pytest.approx(0.0004)
    grade = run("cost", "x", call=hit, max_usd=0.0001)
    assert not grade.passed and "cache hit" in grade.reason
    unpriced_hit = CallResult(output="x", cost_usd=0.0, saved_usd=0.0, cached=True)
    grade = run("cost", "x", call=unpriced_hit, max_usd=1.0)
    assert grade.error is not None and "price is unknown" in grade.reason


def test_latency_ceilings() -> None:
    assert run("latency", "x", call=PRICED, max_ms=1000).passed
    slow = run("latency", "x", call=PRICED, max_ms=500)
    assert not slow.passed and slow.reason == "latency 850 ms > 500"
    both = run("latency", "x", call=PRICED, max_ms=500, ttft_max_ms=200)
    assert (both.score, both.passed) == (0.5, False)
    assert run("latency", "x", call=PRICED, ttft_max_ms=120).passed


def test_latency_of_a_cache_hit_is_the_original_calls() -> None:
    hit = CallResult(
        output="x",
        cost_usd=0.0,
        saved_usd=0.001,
        cached=True,
        latency_ms=3000.0,
        ttft_ms=900.0,
        hit_latency_ms=2.0,
    )
    grade = run("latency", "x", call=hit, max_ms=2000)
    assert not grade.passed and "cache hit" in grade.reason


def test_ttft_without_streaming_is_an_error() -> None:
    grade = run("latency", "x", call=CallResult(output="x", latency_ms=10), ttft_max_ms=100)
    assert grade.error is not None and "stream: true" in grade.reason


def test_budget_graders_without_a_call_are_errors() -> None:
    assert run("cost", "x", max_usd=1).error is not None
    assert run("latency", "x", max_ms=1).error is not None


def test_budget_validation() -> None:
    assert validate("latency", {}) == "expected `max_ms` and/or `ttft_max_ms`"
    assert validate("latency", {"max_ms": 0}) == "max_ms: expected a number > 0, found 0"
    assert validate("cost", {"max_usd": -1}) == "max_usd: expected a number >= 0, found -1"
    assert validate("cost", {"max_usd": 0}) is None


# ------------------------------------------------------------------------------ negation

NEGATABLE = [
    ("equals", "Paris", {"value": "Paris"}),
    ("contains", "Paris", {"value": "Par"}),
    ("regex", "Paris", {"pattern": "^P"}),
    ("numeric", "7", {"value": 7}),
    ("json-valid", "{}", {}),
    ("json-schema", "{}", {"schema": {"type": "object"}}),
    ("similar", "The capital is Paris.", {"value": "Paris is the capital."}),
    ("cost", "x", {"max_usd": 1}),
    ("latency", "x", {"max_ms": 10_000}),
    ("python", "x", {"function": "operator.is_not"}),  # is_not(output, case) -> True
]


@pytest.mark.parametrize(("name", "output", "params"), NEGATABLE, ids=[n[0] for n in NEGATABLE])
def test_every_grader_has_a_negation(name: str, output: str, params: dict[str, Any]) -> None:
    plain = run(name, output, call=PRICED, **params)
    negated = run("not-" + name, output, call=PRICED, **params)
    assert plain.passed and plain.error is None
    assert not negated.passed and negated.error is None
    assert negated.score == pytest.approx(1 - plain.score)
    assert negated.reason == f"not ({plain.reason})"
    assert negated.grader == "not-" + name


def test_every_builtin_grader_is_covered_by_the_negation_test() -> None:
    # llm-judge's negation is tested in tests/integration/test_judge_local.py.
    assert BUILTIN_NAMES - {"llm-judge"} == {n[0] for n in NEGATABLE}


def test_negation_never_turns_an_error_into_a_pass() -> None:
    grade = run("not-regex", "x", pattern="(")
    assert grade.error is not None and not grade.passed and grade.score == 0


# ------------------------------------------------------------------------------ combining


def g(score: float, passed: bool, weight: float = 1.0, error: str | None = None) -> GradeResult:
    return GradeResult("t", score, passed, "", weight, error)


def test_combine_weighted_mean_and_all_must_pass() -> None:
    grades = [g(1.0, True, 3.0), g(0.0, False, 1.0)]
    score, passed = grading.combine(grades, None)
    assert score == pytest.approx(0.75) and not passed
    assert grading.combine([g(1.0, True), g(0.6, True)], None) == (pytest.approx(0.8), True)
    assert grading.combine([], None) == (1.0, True)


def test_combine_with_a_suite_threshold() -> None:
    grades = [g(1.0, True, 3.0), g(0.0, False, 1.0)]
    assert grading.combine(grades, 0.75) == (pytest.approx(0.75), True)
    assert grading.combine(grades, 0.8)[1] is False
    # A grader error fails the case whatever the threshold.
    assert grading.combine([g(1.0, True, 9.0), g(0.0, False, 1.0, "boom")], 0.1)[1] is False
    # Zero weights everywhere do not divide by zero.
    assert grading.combine([g(1.0, True, 0.0)], None) == (0.0, True)


def test_grade_output_weights_and_threshold_end_to_end() -> None:
    case = Case("c", {"answer": "Paris"})
    specs = [
        GraderSpec("contains", {"value": "{{ answer }}"}, 2.0),
        GraderSpec("regex", {"pattern": r"\.$"}, 1.0),
        GraderSpec("not-contains", {"value": "Lyon"}, 1.0),
    ]
    grades, score, passed = grading.grade_output("It is Paris", case, specs, None)
    assert [x.passed for x in grades] == [True, False, True]
    assert score == pytest.approx(0.75) and not passed
    _, score, passed = grading.grade_output("It is Paris", case, specs, 0.7)
    assert score == pytest.approx(0.75) and passed
    precomputed = {1: GradeResult("regex", 1.0, True, "given", 1.0)}
    _, score, passed = grading.grade_output("It is Paris", case, specs, None, None, precomputed)
    assert score == 1.0 and passed


# ------------------------------------------------------------------------------ registry


def test_custom_grader_registers_with_params_and_negation() -> None:
    name = f"mentions-{uuid.uuid4().hex[:6]}"

    @evalgate.grader(name, params={"days": int})
    def mentions(output: str, case: Any, days: int = 30) -> bool:
        return f"{days} days" in output

    assert name in known_names() and f"not-{name}" in known_names()
    assert run(name, "within 30 days").passed
    assert not run(name, "within 30 days", days=14).passed
    assert run(f"not-{name}", "within 30 days", days=14).passed
    definition, negated = lookup(f"not-{name}")  # type: ignore[misc]
    assert negated and not definition.is_async
    assert definition.params == {"days": int, "timeout_s": (int, float)}  # every grader


def test_grader_names_may_not_start_with_not() -> None:
    with pytest.raises(ValueError, match="may not start with 'not-'"):
        evalgate.grader("not-this")


def test_custom_float_and_grade_results_are_normalised() -> None:
    name = f"raw-{uuid.uuid4().hex[:6]}"

    @evalgate.grader(name)
    def raw(output: str, case: Any) -> float:
        return float(output)

    assert run(name, "1.0").passed
    assert not run(name, "0.9").passed and run(name, "0.9").score == pytest.approx(0.9)
    # Out of range or NaN: rejected with one line, never clamped into a grade.
    for bad in ("7", "-0.5", "nan", "inf"):
        grade = run(name, bad)
        assert grade.error is not None and not grade.passed and grade.score == 0
        assert "a score must be a number in [0, 1]" in grade.reason


def test_builtin_module_registers_every_grader_without_heavy_imports() -> None:
    import subprocess

    code = textwrap.dedent(
        """
        import sys
        from evalgate.graders.registry import known_names
        names = known_names()
        heavy = [m for m in ("numpy", "jsonschema", "litellm", "tokenizers") if m in sys.modules]
        print(len(names), heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(None, 1) == [str(2 * len(BUILTIN_NAMES)), "[]\n"]
