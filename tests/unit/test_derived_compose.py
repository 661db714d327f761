"""Derived configs composed from stored results: the report writer's whole path (real suite
files, real results.jsonl, real graders and grading threads) on results written here, so
each hostile situation is exact: a base config with no results, a check that never ends,
a derived config over a batch config. Every test here failed before its fix."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evalgate.report.gate import GateSettings
from evalgate.report.write import WrittenReport, write_run_report
from evalgate.results import CallResult, CaseResult, GradeResult, ResultsWriter
from evalgate.runs import RunPaths
from evalgate.suite.errors import SuiteError
from evalgate.suite.loader import load_suite

ROUTED = "{id: routed, router: {small: small, large: large, max_loss: 0.1, alpha: 0.1}, gate: true}"
CASCADE = (
    "{id: casc, cascade: {first: small, then: large, "
    'accept: [{type: regex, pattern: "^a$"}]}, gate: true}'
)


def suite_text(cases: int, derived: list[str], measured: str = "") -> str:
    rows = "\n".join(
        f'  - {{id: q{i}, vars: {{question: "question {i}", answer: "a"}}}}' for i in range(cases)
    )
    configs = "\n".join(f"  - {c}" for c in derived)
    return f"""\
suite: s
tiers:
  t:
    model: openai/x
    api_base: "http://127.0.0.1:9/v1"
    price: {{input_per_mtok: 1, output_per_mtok: 1}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "{{{{ answer }}}}"}}
configs:
  - {{id: large, tier: t}}
  - {{id: small, tier: t}}
{measured}{configs}
baseline: large
cases:
{rows}
"""


Outcome = Callable[[str, str], "tuple[str, str | None] | None"]


def always_right(case_id: str, config_id: str) -> tuple[str, str | None] | None:
    return "a", None


def report(
    tmp_path: Path,
    text: str,
    outcome: Outcome = always_right,
    settings: GateSettings | None = None,
) -> WrittenReport:
    """Loads the suite, writes one result per measured item (``outcome`` gives its output
    and error, or None to leave the item without a result) and writes the run's report."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "s.yaml").write_text(text)
    suite = load_suite(tmp_path / "s.yaml")
    paths = RunPaths(tmp_path / "reports", "r1")
    writer = ResultsWriter(paths.results)
    for case in suite.cases:
        for config in suite.configs:
            if config.derived is not None:
                continue
            made = outcome(case.id, config.id)
            if made is None:
                continue
            output, error = made
            # "grader: why": the call answered, its suite grader erred.
            grader_error = error.removeprefix("grader:") if error and "grader:" in error else None
            if grader_error:
                error = None
            score = 0.0 if error or grader_error else float(output == "a")
            writer.append(
                CaseResult(
                    item_key=f"s::{case.id}[{config.id}]",
                    run_id="r1",
                    suite="s",
                    feature="s",
                    suite_hash=suite.suite_hash,
                    case_id=case.id,
                    config_id=config.id,
                    repeat=0,
                    group=case.group,
                    tier=config.tier,
                    model=suite.tiers[config.tier].model,
                    must_pass=False,
                    call=CallResult(
                        output=output,
                        cost_usd=1.0 if config.id == "large" else 0.1,
                        latency_ms=100.0 if config.id == "large" else 40.0,
                        ttft_ms=None if error else 10.0,
                        error=error,
                    ),
                    grades=()
                    if error
                    else (
                        GradeResult(
                            "contains", score, score == 1.0, "r", error=grader_error or None
                        ),
                    ),
                    score=score,
                    passed=score == 1.0,
                    request_hash="h",
                    grading_hash=case.grading_hash,
                )
            )
    writer.close()
    return write_run_report(paths, {"s": suite}, settings or GateSettings())


def no_small(case_id: str, config_id: str) -> tuple[str, str | None] | None:
    return None if config_id == "small" else ("a", None)


def test_a_gated_derived_config_without_results_blocks_the_gate(tmp_path: Path) -> None:
    """The small config was not run (deselected, or a shard missing): the routed and
    cascade configs have no results; a gated one must block, never pass silently."""
    written = report(tmp_path, suite_text(120, [ROUTED, CASCADE]), no_small)
    assert written.document is not None
    reasons = written.document["gate"]["reasons"]
    assert written.blocked, written.document["gate"]
    for config in ("routed", "casc"):
        (line,) = [r for r in reasons if f"s: {config}:" in r]
        assert "no results" in line and "'small'" in line and "\n" not in line


def test_an_ungated_derived_config_without_results_is_one_clear_line(tmp_path: Path) -> None:
    text = suite_text(120, [ROUTED, CASCADE]).replace(", gate: true", "")
    written = report(tmp_path, text, no_small)
    assert written.document is not None and not written.blocked
    lines = written.document["suites"]["s"]["derivations"]
    for config in ("routed", "casc"):
        line = lines[config]["line"]
        # It has no results: it neither routes anything large nor escalates "-" of 0.
        assert line.startswith(f"{config}: NO RESULTS: no case has results of both")
        assert "routes everything" not in line and "\n" not in line
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert "routed: NO RESULTS" in summary


def test_cases_left_out_of_a_derived_config_are_counted_in_its_line(tmp_path: Path) -> None:
    """A resumed or partial run where some cases lack the small config's result."""

    def some_missing(case_id: str, config_id: str) -> tuple[str, str | None] | None:
        return None if config_id == "small" and int(case_id[1:]) < 7 else ("a", None)

    written = report(tmp_path, suite_text(120, [ROUTED, CASCADE]), some_missing)
    assert written.document is not None
    for config in ("routed", "casc"):
        record = written.document["suites"]["s"]["derivations"][config]
        assert record["missing_cases"] == 7
        assert "7 case(s) lack a result of 'small' or 'large' (left out)" in record["line"]


def test_errored_base_rows_are_errors_of_the_routed_config_and_said(tmp_path: Path) -> None:
    def small_fails(case_id: str, config_id: str) -> tuple[str, str | None] | None:
        if config_id == "small" and int(case_id[1:]) % 4 == 0:
            return "", "APIError: injected"
        return "a", None

    written = report(tmp_path, suite_text(120, [ROUTED]), small_fails)
    assert written.document is not None
    section = written.document["suites"]["s"]
    rows = {r["case_id"]: r for r in section["cases"] if r["config_id"] == "routed"}
    assert len(rows) == 120
    assert all(rows[f"q{i}"]["error"] for i in range(0, 120, 4))
    record = section["derivations"]["routed"]
    assert record["errored_cases"] == 30
    assert "30 case(s) where 'small' or 'large' errored count as errors" in record["line"]
    # An error is a loss in the statistics, never dropped.
    assert section["stats"]["comparisons"]["routed"]["n_imputed"] == 30


def write_hostile_check(folder: Path) -> None:
    (folder / "hostile_checks.py").write_text(
        "def never_ends(output, case):\n    while True:\n        pass\n"
    )


def test_a_cascade_check_that_never_ends_is_bounded_and_escalates(tmp_path: Path) -> None:
    write_hostile_check(tmp_path)
    check = (
        "{id: casc, cascade: {first: small, then: large, accept: "
        '[{type: python, function: "hostile_checks:never_ends", timeout_s: 0.2}]}}'
    )
    done: dict[str, Any] = {}

    def compose() -> None:
        done["written"] = report(tmp_path, suite_text(3, [check]))

    worker = threading.Thread(target=compose, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the report hung on a cascade check"
    written = done["written"]
    record = written.document["suites"]["s"]["derivations"]["casc"]
    # A check that cannot decide rejects the answer, as a failed check does at runtime.
    assert record["escalation_rate"] == 1.0 and record["check_errors"] == 3
    assert "3 check(s) erred or ran past their time limit (escalated)" in record["line"]


@pytest.mark.parametrize("where", ["router: {small: sb, large: large", "cascade: {first: sb"])
def test_a_derived_config_over_a_batch_config_is_refused_at_load(
    tmp_path: Path, where: str
) -> None:
    derived = (
        f"{{id: r, {where}, max_loss: 0.1, alpha: 0.1}}}}"
        if where.startswith("router")
        else f"{{id: r, {where}, then: large, accept: [{{type: regex, pattern: a}}]}}}}"
    )
    text = suite_text(3, [derived], measured="  - {id: sb, tier: t, batch: true}\n")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SuiteError) as caught:
        load_suite(tmp_path / "s.yaml")
    shown = str(caught.value)
    assert "s.yaml:" in shown and "\n" not in shown
    assert ".sb" not in shown and "batch" in shown and "configs[3]" in shown


@pytest.mark.parametrize("config", ["routed", "casc"])
def test_export_refuses_a_derived_config_without_results(tmp_path: Path, config: str) -> None:
    """A cascade without results exported before, with no evidence and no verdict."""
    from evalgate.policy.export import ExportError, build_features

    written = report(tmp_path, suite_text(120, [ROUTED, CASCADE]), no_small)
    assert written.document is not None
    with pytest.raises(ExportError) as caught:
        build_features(written.document, suite="s", config=config)
    shown = str(caught.value)
    assert "holds no evaluation of it" in shown and "NO RESULTS" in shown and "\n" not in shown


def test_a_derived_config_that_pulls_no_lever_is_never_recommended(tmp_path: Path) -> None:
    """The small config is always wrong: the router certifies nothing and routes every
    case large (the baseline's cost and latency), the cascade escalates every case (dearer
    and slower). Both PASS non-inferiority; recommending either shipped nothing but a
    router to run on every request."""

    def small_wrong(case_id: str, config_id: str) -> tuple[str, str | None] | None:
        return ("a" if config_id == "large" else "b"), None

    written = report(tmp_path, suite_text(150, [ROUTED, CASCADE]), small_wrong)
    assert written.document is not None
    stats = written.document["suites"]["s"]["stats"]
    assert stats["comparisons"]["routed"]["verdict"] == "PASS"
    assert stats["recommendation"] is None
    assert any(
        "no candidate passing non-inferiority is cheaper or faster than 'large'" in note
        for note in stats["notes"]
    ), stats["notes"]


def test_an_accepted_cascade_answer_reaches_the_user_after_the_whole_first_call(
    tmp_path: Path,
) -> None:
    """The runtime checks the whole first answer before a streaming caller sees a token,
    so the evaluated TTFT of an accepted answer is the first call's latency, not its
    streamed TTFT (the evals showed 10 ms where the application waits 40 ms)."""

    def half_rejected(case_id: str, config_id: str) -> tuple[str, str | None] | None:
        return ("b" if config_id == "small" and int(case_id[1:]) % 2 else "a"), None

    written = report(tmp_path, suite_text(20, [CASCADE]), half_rejected)
    assert written.document is not None
    rows = [r for r in written.document["suites"]["s"]["cases"] if r["config_id"] == "casc"]
    accepted = [r for r in rows if int(r["case_id"][1:]) % 2 == 0]
    escalated = [r for r in rows if int(r["case_id"][1:]) % 2]
    assert accepted and all(r["ttft_ms"] == 40.0 and r["latency_ms"] == 40.0 for r in accepted)
    assert escalated and all(r["ttft_ms"] == 40.0 + 10.0 for r in escalated)


def test_a_router_over_grouped_cases_says_its_bound_assumes_independent_cases(
    tmp_path: Path,
) -> None:
    text = suite_text(40, [ROUTED])
    for i in range(40):
        text = text.replace(f"{{id: q{i}, vars:", f"{{id: q{i}, group: g{i // 4}, vars:", 1)
    written = report(tmp_path, text)
    assert written.document is not None
    record = written.document["suites"]["s"]["derivations"]["routed"]
    assert record["groups"] == 10
    assert "the cases form 10 group(s)" in record["line"] and "independent" in record["line"]


def test_a_derived_config_names_both_tiers_in_the_config_table(tmp_path: Path) -> None:
    """The table showed the tier of whichever config answered the first case."""
    text = (
        suite_text(20, [CASCADE])
        .replace("  - {id: small, tier: t}", "  - {id: small, tier: cheap}")
        .replace(
            "prompt:\n", "  cheap: {model: openai/y, api_base: 'http://127.0.0.1:9/v1'}\nprompt:\n"
        )
    )
    written = report(tmp_path, text)
    assert written.document is not None
    configs = written.document["suites"]["s"]["configs"]
    assert configs["casc"]["tier"] == "cheap" and configs["small"]["tier"] == "cheap"

    def rejected(case_id: str, config_id: str) -> tuple[str, str | None] | None:
        return ("b" if config_id == "small" and int(case_id[1:]) % 2 else "a"), None

    written = report(tmp_path / "mixed", text, rejected)
    assert written.document is not None
    configs = written.document["suites"]["s"]["configs"]
    assert configs["casc"]["tier"] == "cheap+t"
    assert configs["casc"]["model"] == "openai/x+openai/y"


def test_a_first_answer_whose_suite_grader_erred_is_kept_if_the_checks_accept_it(
    tmp_path: Path,
) -> None:
    """The runtime sees the answer and the accept checks only, never the suite's graders:
    a first call that answered is escalated only when a check rejects it. Offline, a
    suite-grader error on the first answer escalated it, and the cascade took the second
    config's answer (scoring better than the runtime would do)."""

    def grader_fails(case_id: str, config_id: str) -> tuple[str, str | None] | None:
        if config_id == "small" and int(case_id[1:]) % 2:
            return "a", "grader: TimeoutError: slow"
        return "a", None

    written = report(tmp_path, suite_text(20, [CASCADE]), grader_fails)
    assert written.document is not None
    record = written.document["suites"]["s"]["derivations"]["casc"]
    assert record["escalation_rate"] == 0.0
    rows = {
        r["case_id"]: r
        for r in written.document["suites"]["s"]["cases"]
        if r["config_id"] == "casc"
    }
    assert all(rows[f"q{i}"]["error"] and rows[f"q{i}"]["score"] == 0.0 for i in range(1, 20, 2))
