"""Routed and cascade configs end to end, against the deterministic fake OpenAI server.

The fake server echoes the question and cuts its reply to ``max_tokens`` words, so the
small config (3 tokens) answers short questions right and long ones wrong, while the
large config (50 tokens) answers all: a difficulty a router can learn from the request's
length, with the truth known for every case.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.results import latest_by_item, read_results
from evalgate.runs import latest_run_id
from evalgate.suite.errors import SuiteError
from evalgate.suite.loader import load_suite
from evalgate.testing.fake_openai import make_model
from tests.helpers import run_evalgate

CASES = 300

LONG = "please tell me, in a complete sentence, which value the record holds:"


def question(i: int) -> str:
    return f"v{i * 7}" if i % 2 == 0 else f"{LONG} v{i * 7}"


def suite_text(base_url: str, key: str, extra_configs: str = "", cases: int = CASES) -> str:
    model = "openai/" + make_model(key=key)
    rows = "\n".join(
        f'  - {{id: q{i}, vars: {{question: "{question(i)}", answer: "v{i * 7}"}}}}'
        for i in range(cases)
    )
    return f"""\
suite: routed
tiers:
  t: {{model: "{model}", api_base: "{base_url}", price: {{input_per_mtok: 1, output_per_mtok: 20}}}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "{{{{ answer }}}}"}}
configs:
  - {{id: large, tier: t, max_tokens: 50}}
  - {{id: small, tier: t, max_tokens: 3}}
  - {{id: routed, router: {{small: small, large: large, max_loss: 0.1, alpha: 0.1}}, gate: true}}
  - id: cascade
    cascade: {{first: small, then: large, accept: [{{type: regex, pattern: "^echo: v[0-9]+$"}}]}}
{extra_configs}
baseline: large
gate: {{margin: 0.1, alpha: 0.05}}
cases:
{rows}
"""


@pytest.fixture
def project(tmp_path: Path, fake_server: Any) -> Path:
    (tmp_path / "s.yaml").write_text(suite_text(fake_server.base_url, uuid.uuid4().hex[:8]))
    return tmp_path


def test_routed_and_cascade_configs_are_composed_analysed_and_gated(project: Path) -> None:
    proc = run_evalgate(project, "--evalgate-concurrency", "16")
    assert proc.returncode == 0, proc.stdout[-3000:]
    # Derived configs make no calls and have no items: 2 measured configs x 300 cases.
    assert f"{2 * CASES} passed" in proc.stdout
    document = json.loads((project / "reports" / "evalgate.json").read_text())
    section = document["suites"]["routed"]
    derivations = section["derivations"]
    router = derivations["routed"]
    assert router["kind"] == "router" and router["cases"] == CASES
    # Half the cases (the short ones) are safe for the small config; the router finds
    # most of them without routing a long one (whose loss would be 1).
    share = router["cross_fit"]["small_share"]
    assert 0.3 < share <= 0.5 + 0.1, router
    assert router["cross_fit"]["certified_folds"] == 5
    assert router["realised_loss"]["estimate"] <= 0.1
    assert router["realised_loss"]["estimate"] < router["random_router_loss"]
    assert router["router"]["threshold"] is not None
    assert (
        router["router"]["evidence"]["n_fit"] + router["router"]["evidence"]["n_calibration"]
        == CASES
    )
    # The routed rows are the small or the large config's own results, case by case.
    cases = {(r["case_id"], r["config_id"]): r for r in section["cases"]}
    routed_small = 0
    for i in range(CASES):
        row = cases[(f"q{i}", "routed")]
        assert row["score"] in (
            cases[(f"q{i}", "small")]["score"],
            cases[(f"q{i}", "large")]["score"],
        )
        if (
            row["output"]
            == cases[(f"q{i}", "small")]["output"]
            != cases[(f"q{i}", "large")]["output"]
        ):
            routed_small += 1
    assert routed_small > 0
    # The cascade escalates exactly the truncated answers and pays for both calls there.
    cascade = derivations["cascade"]
    assert cascade["escalation_rate"] == pytest.approx(0.5)
    for i in (0, 1):
        small, large, both = (cases[(f"q{i}", c)] for c in ("small", "large", "cascade"))
        if i % 2 == 0:
            assert both["output"] == small["output"] and both["cost_usd"] == small["cost_usd"]
        else:
            assert both["output"] == large["output"]
            assert both["cost_usd"] == pytest.approx(small["cost_usd"] + large["cost_usd"])
            assert both["latency_ms"] == pytest.approx(small["latency_ms"] + large["latency_ms"])
    # Both take part in the statistics and the gate like measured configs.
    stats = section["stats"]
    assert {"routed", "cascade", "small"} <= set(stats["comparisons"])
    assert stats["comparisons"]["routed"]["verdict"] == "PASS"
    assert stats["comparisons"]["small"]["verdict"] in ("FAIL", "INCONCLUSIVE")
    assert "derived routed: routed small=small large=large" in proc.stdout
    summary = (project / "reports" / "summary.md").read_text()
    assert "- derived cascade: cascade first=small then=large" in summary
    # Only measured results are stored; derived ones are recomposed from them.
    run_dir = project / "reports" / "runs" / str(latest_run_id(project / "reports"))
    stored = latest_by_item(read_results(run_dir / "results.jsonl"))
    assert {k.config for k in stored} == {"large", "small"}


def test_a_router_that_cannot_be_certified_routes_everything_large(tmp_path, fake_server) -> None:
    text = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], cases=40)
    (tmp_path / "s.yaml").write_text(
        text.replace("max_loss: 0.1, alpha: 0.1", "max_loss: 0.01, alpha: 0.01")
    )
    proc = run_evalgate(tmp_path, "--evalgate-gate", "none")
    assert proc.returncode == 0, proc.stdout[-3000:]
    document = json.loads((tmp_path / "reports" / "evalgate.json").read_text())
    router = document["suites"]["routed"]["derivations"]["routed"]
    assert router["cross_fit"]["small_share"] == 0.0
    assert "no threshold could be certified" in router["note"]
    assert router["router"]["threshold"] is None
    cases = {(r["case_id"], r["config_id"]): r for r in document["suites"]["routed"]["cases"]}
    assert all(
        cases[(f"q{i}", "routed")]["output"] == cases[(f"q{i}", "large")]["output"]
        for i in range(40)
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "{id: r2, router: {small: nope, large: large, max_loss: 0.1, alpha: 0.1}}",
            "configs[4].router.small",
        ),
        (
            "{id: r2, router: {small: routed, large: large, max_loss: 0.1, alpha: 0.1}}",
            "expected the id of a measured config",
        ),
        (
            "{id: r2, router: {small: small, large: large, max_loss: .nan, alpha: 0.1}}",
            "configs[4].router.max_loss",
        ),
        (
            "{id: r2, router: {small: small, large: large, max_loss: 0.1, alpha: 1.5}}",
            "configs[4].router.alpha",
        ),
        (
            "{id: r2, router: {small: small, large: large, max_loss: 0.1, alpha: 0.1, folds: 51}}",
            "configs[4].router.folds: expected an integer from 2 to 50, found 51",
        ),
        (
            "{id: r2, router: {small: small, large: small, max_loss: 0.1, alpha: 0.1}}",
            "must differ",
        ),
        (
            "{id: r2, router: {small: small, large: large, max_loss: 0.1}}",
            "missing required key 'alpha'",
        ),
        (
            "{id: r2, router: {small: small, large: large, max_loss: 0.1, alpha: 0.1}, tier: t}",
            "configs[4].tier",
        ),
        (
            "{id: r2, router: {small: small, large: large, max_loss: 0.1, alpha: 0.1}, "
            "cascade: {}}",
            "not both",
        ),
        ("{id: r2, cascade: {first: small, then: large, accept: []}}", "at least one check"),
        (
            "{id: r2, cascade: {first: small, then: large, "
            "accept: [{type: llm-judge, rubric: x}]}}",
            "calls a model",
        ),
        (
            "{id: routed, router: {small: small, large: large, max_loss: 0.1, alpha: 0.1}}",
            "duplicate config id",
        ),
    ],
)
def test_bad_derived_configs_are_one_line_errors(tmp_path: Path, config: str, message: str) -> None:
    text = suite_text("http://127.0.0.1:9/v1", "k", extra_configs=f"  - {config}", cases=3)
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    shown = str(caught.value)
    assert message in shown and "\n" not in shown and "s.yaml:" in shown


def test_the_baseline_must_be_measured(tmp_path: Path) -> None:
    text = suite_text("http://127.0.0.1:9/v1", "k", cases=3).replace(
        "baseline: large", "baseline: routed"
    )
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SuiteError, match="must be measured"):
        load_suite(tmp_path / "s.yaml")


def test_export_carries_a_routed_config_into_the_policy(tmp_path: Path, fake_server: Any) -> None:
    import subprocess
    import sys

    key = uuid.uuid4().hex[:8]
    text = suite_text(fake_server.base_url, key, cases=120)
    cheap = "openai/" + make_model(key=f"cheap{key}")
    # A second tier; the routed configs differ in tier only, as a policy can carry.
    text = text.replace(
        "prompt:\n",
        f'  c: {{model: "{cheap}", api_base: "{fake_server.base_url}", '
        "price: {input_per_mtok: 0.1, output_per_mtok: 2}}\nprompt:\n",
    ).replace("{id: small, tier: t, max_tokens: 3}", "{id: small, tier: c, max_tokens: 50}")
    (tmp_path / "s.yaml").write_text(text)
    proc = run_evalgate(tmp_path, "--evalgate-gate", "none")
    assert proc.returncode == 0, proc.stdout[-3000:]

    def export(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "evalgate.cli", "export", "reports/evalgate.json", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )

    done = export("-o", "policy.py", "--config", "routed")
    assert done.returncode == 0, done.stdout + done.stderr
    from evalgate.runtime import Policy

    with Policy.load(tmp_path / "policy.py", backend=f"sqlite:///{tmp_path / 'rt.sqlite3'}") as p:
        routing = p.feature("routed").router
        assert routing is not None
        assert routing.small.model == cheap and routing.large.model.endswith(key)
        # Both tiers answer every case right: the certified router sends all to the cheap one.
        assert routing.model.threshold is not None
    # The cascade's regex check travels into the policy and decides there as it did in the
    # evals: the cheap tier's echo of a short question passes, a long one's does not.
    done = export("-o", "policy2.py", "--config", "cascade")
    assert done.returncode == 0, done.stdout + done.stderr
    with Policy.load(tmp_path / "policy2.py", backend=f"sqlite:///{tmp_path / 'rt.sqlite3'}") as p:
        cascade = p.feature("routed").router  # the suite names the feature
        assert cascade.first.model == cheap and [c.type for c in cascade.accept] == ["regex"]
        assert 0 < cascade.escalation_rate < 1
        for text in (question(0), question(1)):
            p.completion(feature="routed", messages=[{"role": "user", "content": text}])
        p.ledger.flush()
        records = sorted(p.ledger.read(), key=lambda r: r.ts)
    assert [r.route for r in records] == ["first", "escalated"]
    assert records[1].cost_usd > records[1].first_cost_usd > 0
