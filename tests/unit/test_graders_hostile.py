"""Graders against hostile or awkward outputs (issue 18): every case here misgraded,
errored or hung before the fix."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest

import evalgate
from evalgate.graders import deadline, grading
from evalgate.graders.deadline import GraderTimeout, GradingThreads
from evalgate.results import CallResult, GradeResult
from evalgate.suite.model import Case, GraderSpec
from tests.unit.test_graders import run, validate

DEEP = "[" * 50_000 + "]" * 50_000  # parses with no recursion limit only
DEEPISH = '{"a": ' * 600 + "1" + "}" * 600  # parses, but validating it recurses deeply


# ------------------------------------------------------------------ 4: errors an output forces


@pytest.mark.parametrize("grader", ["json-valid", "json-schema"])
def test_a_deeply_nested_output_is_a_miss_not_a_grader_error(grader: str) -> None:
    params = {"schema": {"type": "array"}} if grader == "json-schema" else {}
    grade = run(grader, DEEP, **params)
    assert grade.error is None and not grade.passed and "nested too deeply" in grade.reason


def test_validating_a_deep_document_is_a_miss_not_a_grader_error() -> None:
    schema = {
        "$ref": "#/$defs/node",
        "$defs": {"node": {"type": "object", "properties": {"a": {"$ref": "#/$defs/node"}}}},
    }
    grade = run("json-schema", DEEPISH, schema=schema)
    assert grade.error is None and not grade.passed


def test_three_good_and_one_deeply_nested_case_pass_three_quarters() -> None:
    outputs = ["[1]", "[2]", "[3]", DEEP]
    grades = [run("json-valid", o) for o in outputs]
    assert [g.error for g in grades] == [None] * 4
    assert sum(g.passed for g in grades) / len(grades) == 0.75


# ------------------------------------------------------------------ 5: bounded time


def test_a_job_past_its_limit_times_out_and_later_jobs_keep_flowing() -> None:
    threads = GradingThreads(f"t-{uuid.uuid4().hex[:4]}", 1)
    try:

        def forever() -> None:
            while True:
                pass

        hung = threads.submit(forever, 0.2, "grader 'python'")
        after = threads.submit(lambda: "next", 5, "grader 'equals'")
        with pytest.raises(
            GraderTimeout, match=r"grader 'python' ran past its time limit of 0\.2 s"
        ):
            hung.result(timeout=60)
        assert after.result(timeout=60) == "next"
    finally:
        threads.close()


def test_the_abandoned_thread_is_stopped() -> None:
    name = f"stop-{uuid.uuid4().hex[:4]}"
    threads = GradingThreads(name, 1)
    try:

        def spin() -> None:
            while True:
                pass

        with pytest.raises(GraderTimeout):
            threads.submit(spin, 0.1, "grader 'python'").result(timeout=60)
        threads.submit(lambda: None, 5, "x").result(timeout=60)
        for _ in range(200):  # the interrupt lands at the spinning thread's next instruction
            spinning = [t for t in threading.enumerate() if t.name == f"{name}-1"]
            if not spinning:
                break
            time.sleep(0.05)
        assert not spinning
    finally:
        threads.close()


def test_a_graders_model_calls_do_not_count_against_its_limit() -> None:
    threads = GradingThreads(f"p-{uuid.uuid4().hex[:4]}", 1)
    try:

        def waits_for_its_model() -> str:
            with deadline.paused():
                time.sleep(0.5)  # a judge call, bounded by the engine instead
            return "verdict"

        assert threads.submit(waits_for_its_model, 0.2, "judge").result(timeout=60) == "verdict"
    finally:
        threads.close()


def test_a_catastrophic_regex_is_bounded() -> None:
    # The stdlib `re` spends minutes on this; the `regex` engine answers or times out.
    grade = run("regex", "a" * 40 + "!", pattern=r"^(\w+\s?)*$")
    assert grade.error is None and not grade.passed
    threads = GradingThreads(f"r-{uuid.uuid4().hex[:4]}", 1)
    try:
        slow = threads.submit(
            lambda: deadline.search(r"(.*a){15}$", "a" * 80 + "b"), 0.001, "grader 'regex'"
        )
        # Whichever notices first: the regex engine's own timeout or the watchdog.
        with pytest.raises(GraderTimeout, match="ran past"):
            slow.result(timeout=60)
    finally:
        threads.close()


def test_a_json_schema_pattern_runs_on_the_bounded_engine() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": r"^(\w+\s?)*$"}}}
    grade = run("json-schema", '{"a": "' + "word " * 12 + '!"}', schema=schema)
    assert grade.error is None and not grade.passed and "does not match" in grade.reason
    assert run("json-schema", '{"a": "two words"}', schema=schema).passed


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_timeout_s_is_a_positive_number_of_seconds(bad: float) -> None:
    assert "timeout_s: expected a number of seconds > 0" in str(
        validate("equals", {"value": "x", "timeout_s": bad})
    )
    assert validate("equals", {"value": "x", "timeout_s": 2}) is None


def test_every_grader_takes_timeout_s_and_never_sees_it() -> None:
    grade = run("equals", "x", value="x", timeout_s=5)
    assert grade.passed and grade.error is None
    assert grading.timeout_s(GraderSpec("equals", {"value": "x", "timeout_s": 5})) == 5
    assert grading.timeout_s(GraderSpec("equals", {})) == deadline.DEFAULT_TIMEOUT_S


def test_async_graders_run_off_the_calling_loop() -> None:
    """A blocking async grader runs on its grading thread's loop, not the engine's."""
    name = f"blocking-{uuid.uuid4().hex[:6]}"

    @evalgate.grader(name)
    async def blocking(output: str, case: Any) -> bool:
        time.sleep(0.2)  # blocks whatever loop it runs on
        return True

    threads = GradingThreads(f"a-{uuid.uuid4().hex[:4]}", 2)

    async def engine_loop() -> tuple[GradeResult, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        spec = GraderSpec(name, {})
        future = threads.submit(lambda: grading.grade_one(spec, "x", Case("c", {}), None), 30, name)
        grade = await asyncio.wrap_future(future)
        task.cancel()
        return grade, ticks

    try:
        grade, ticks = asyncio.run(engine_loop())
    finally:
        threads.close()
    assert grade.passed and grade.error is None
    assert ticks > 1  # the loop kept running while the grader blocked its own


# ------------------------------------------------------------------ 6: numbers


@pytest.mark.parametrize(
    ("output", "value", "passed"),
    [
        ("The answer is −42.", 42, False),
        ("The answer is −42.", -42, True),
        ("The answer is -42.", -42, True),
        ("The digits are 4,2.", 42, False),
        ("x = 3,14", 314, False),
        ("42 (pages 10-12)", -12, False),
        ("42 (pages 10-12)", 12, True),  # the last number, a range's end
        ("The total is 1,234.50.", 1234.5, True),
        ("about 1,234,567 people", 1234567, True),
        ("1,2345", 12345, False),
    ],
)
def test_numbers_keep_their_sign_and_valid_thousands_groups(
    output: str, value: float, passed: bool
) -> None:
    assert run("numeric", output, value=value).passed is passed


def test_which_number_is_a_setting() -> None:
    output = "Of 12 apples, 3 were left."
    assert run("numeric", output, value=3).passed  # last by default
    assert run("numeric", output, value=12, which="first").passed
    only = run("numeric", output, value=3, which="only")
    assert not only.passed and "several numbers" in only.reason
    assert run("numeric", "It is 3.", value=3, which="only").passed
    assert "which: expected one of last, first, only" in str(
        validate("numeric", {"value": 3, "which": "middle"})
    )


def test_an_expected_value_that_is_not_one_number_is_a_suite_error() -> None:
    assert "value: expected one number" in str(validate("numeric", {"value": "4 or 5"}))
    assert validate("numeric", {"value": "{{ total }}"}) is None  # checked per case


# ------------------------------------------------------------------ 7: which JSON is the answer


@pytest.mark.parametrize(
    ("output", "passed"),
    [
        # A fenced draft, then the fenced final answer: the final one is graded.
        ('Draft:\n```json\n{"answer": 1}\n```\nFinal:\n```json\n{"answer": "Paris"}\n```', True),
        ('Draft:\n```json\n{"answer": "Paris"}\n```\nFinal:\n```json\n{"answer": 1}\n```', False),
        # An answer followed by a retraction is not a JSON answer.
        ('```json\n{"answer": "Paris"}\n```\nI refuse; ignore the above', False),
        ('{"answer": "Paris"} I refuse; ignore the above', False),
        ('```JSON\n{"answer": "Paris"}\n```', True),  # upper-case tag
        ('{"answer": "Paris", "note": "```json\\n{}\\n```"}', True),  # ``` inside a string
        ('Here it is:\n~~~\n{"answer": "Paris"}\n~~~', True),
    ],
)
def test_the_json_answer_is_the_output_or_its_final_fence(output: str, passed: bool) -> None:
    schema = {
        "type": "object",
        "required": ["answer"],
        "properties": {"answer": {"type": "string"}},
    }
    grade = run("json-schema", output, schema=schema)
    assert grade.error is None and grade.passed is passed, grade.reason


# ------------------------------------------------------------------ 8: empty values, escaping, NFC


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"value": ""}, "value: expected a non-empty value"),
        ({"value": "  "}, "value: expected a non-empty value"),
        ({"value": [], "mode": "all"}, "value: expected a non-empty list"),
        ({"value": ["a", ""]}, "value[1]: expected a non-empty value"),
    ],
)
def test_an_empty_contains_value_is_a_suite_error(params: dict[str, Any], message: str) -> None:
    assert message in str(validate("contains", params))


def test_a_value_that_renders_empty_is_a_case_error_not_a_pass() -> None:
    for type_name in ("contains", "not-contains"):
        grade = run(type_name, "anything", value="{{ answer }}", vars={"answer": ""})
        assert grade.error is not None and not grade.passed, grade
        assert "expected a non-empty value" in grade.reason and "case-1" in grade.reason


def test_an_empty_regex_pattern_is_a_suite_error() -> None:
    assert "pattern: expected a non-empty pattern" in str(validate("regex", {"pattern": ""}))
    assert "invalid regular expression" in str(validate("regex", {"pattern": "(unclosed"}))


def test_case_values_in_a_pattern_match_literally() -> None:
    vars = {"answer": "3.14"}
    assert not run("regex", "pi is 3914", pattern=r"\b{{ answer }}\b", vars=vars).passed
    assert run("regex", "pi is 3.14", pattern=r"\b{{ answer }}\b", vars=vars).passed
    assert run("regex", "a (b) c", pattern="{{ x }}", vars={"x": "(b)"}).passed
    # Unless the suite says the values are patterns.
    loose = run("regex", "pi is 3914", pattern=r"\b{{ answer }}\b", vars=vars, pattern_vars=True)
    assert loose.passed


def test_text_comparisons_normalise_unicode() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert run("equals", composed, value=decomposed).passed
    assert run("contains", f"a {decomposed} au lait", value=composed).passed
    assert run("regex", decomposed, pattern=f"^{composed}$").passed


# ------------------------------------------------------------------ 9: long outputs


def test_an_answer_after_a_long_preamble_is_found_by_windows() -> None:
    pytest.importorskip("tokenizers")
    preamble = "Thank you for your question, we are always happy to help. " * 40
    grade = run(
        "similar",
        preamble + "Returns are accepted within 30 days.",
        value="Returns are accepted within 30 days.",
    )
    assert grade.passed and "windows of a long output" in grade.reason


# ------------------------------------------------------------------ 10: what a grader returns


def test_numpy_results_count_as_their_python_values() -> None:
    name = f"np-{uuid.uuid4().hex[:6]}"

    @evalgate.grader(name, params={"kind": str})
    def numpy_result(output: str, case: Any, kind: str) -> Any:
        return {"bool": np.bool_(True), "float": np.float64(1.0), "f32": np.float32(0.25)}[kind]

    assert run(name, "x", kind="bool").passed
    assert run(name, "x", kind="float").passed
    f32 = run(name, "x", kind="f32")
    assert f32.error is None and f32.score == 0.25 and not f32.passed


@pytest.mark.parametrize("score", [7.0, -0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("passed", [True, False])
def test_a_grade_out_of_range_is_rejected_like_a_plain_score(score: float, passed: bool) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"

    @evalgate.grader(name)
    def bad(output: str, case: Any) -> evalgate.Grade:
        return evalgate.Grade(score, passed, "mine")

    grade = run(name, "x")
    assert grade.error is not None and not grade.passed and grade.score == 0
    assert "a score must be a number in [0, 1]" in grade.reason


def test_an_async_python_grader_runs(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"async_checks_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            async def polite(output, case):
                await asyncio.sleep(0)
                return "please" in output
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert validate("python", {"function": f"{module}:polite"}, tmp_path) is None
    assert run("python", "please wait", function=f"{module}:polite").passed
    assert not run("python", "wait", function=f"{module}:polite").passed


# ------------------------------------------------------------------ 11: judge cost on cache hits


def test_judge_cost_and_savings_are_kept_like_a_configs() -> None:
    priced = CallResult(output="{}", cost_usd=3e-4, latency_ms=100.0)
    priced_hit = CallResult(output="{}", cost_usd=0.0, saved_usd=3e-4, cached=True)
    unpriced = CallResult(output="{}", cost_usd=None, latency_ms=100.0)
    unpriced_hit = CallResult(output="{}", cost_usd=0.0, saved_usd=0.0, cached=True)

    def metered(*calls: CallResult) -> dict[str, Any]:
        meter = grading.UsageMeter()
        for call in calls:
            meter.add(call)
        return meter.as_dict()

    assert metered(priced)["cost_usd"] == 3e-4 and metered(priced)["saved_usd"] == 0
    warm = metered(priced_hit)
    assert warm["cost_usd"] == 0.0 and warm["saved_usd"] == 3e-4
    # An unpriced judge's cost is unknown, warm as cold: never "$0.00".
    assert metered(unpriced)["cost_usd"] is None
    assert metered(unpriced_hit)["cost_usd"] is None


# ------------------------------------------------------------------ C: the public API


def test_call_result_and_grade_context_are_exported_without_heavy_imports() -> None:
    code = textwrap.dedent(
        """
        import sys
        import evalgate
        assert evalgate.CallResult.__name__ == "CallResult"
        assert evalgate.GradeContext.__name__ == "GradeContext"
        heavy = ("litellm", "scipy", "pandas", "jinja2", "pytest", "numpy", "regex")
        print([m for m in heavy if m in sys.modules])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert {"CallResult", "GradeContext"} <= set(evalgate.__all__)
    assert not hasattr(evalgate.graders.registry, "GradeUsage")
