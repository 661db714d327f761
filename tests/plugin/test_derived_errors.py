"""Routed and cascade configs when base calls fail, and when a base config is not run:
a pytest run against the fake OpenAI server, whose small tier refuses some requests."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from evalgate.testing.fake_openai import make_model
from tests.helpers import run_evalgate
from tests.plugin.test_derived import question, suite_text

CASES = 120
FAILED = 30  # the small tier's first 30 requests answer HTTP 400 (not retried)


def project(tmp_path: Path, fake_server: Any) -> Path:
    key = uuid.uuid4().hex[:8]
    text = suite_text(fake_server.base_url, key, cases=CASES)
    failing = "openai/" + make_model(key=f"small{key}", fail=f"400:{FAILED}")
    text = text.replace(
        "prompt:\n",
        f'  f: {{model: "{failing}", api_base: "{fake_server.base_url}", '
        "price: {input_per_mtok: 1, output_per_mtok: 20}}\nprompt:\n",
    ).replace("{id: small, tier: t, max_tokens: 3}", "{id: small, tier: f, max_tokens: 3}")
    (tmp_path / "s.yaml").write_text(text)
    return tmp_path


def test_errored_base_calls_are_errors_of_the_routed_config_and_escalate_the_cascade(
    tmp_path: Path, fake_server: Any
) -> None:
    root = project(tmp_path, fake_server)
    proc = run_evalgate(root, "--evalgate-gate", "none", "--evalgate-concurrency", "8")
    document = json.loads((root / "reports" / "evalgate.json").read_text())
    section = document["suites"]["routed"]
    rows = {(r["case_id"], r["config_id"]): r for r in section["cases"]}
    failed = [i for i in range(CASES) if rows[(f"q{i}", "small")]["error"]]
    assert len(failed) == FAILED, proc.stdout[-2000:]
    for i in range(CASES):
        small, large = rows[(f"q{i}", "small")], rows[(f"q{i}", "large")]
        routed, cascade = rows[(f"q{i}", "routed")], rows[(f"q{i}", "cascade")]
        if i in failed:
            # The routed config may have picked the failed call: an error, a loss.
            assert routed["error"] and routed["score"] == 0.0
            # The cascade escalates a failed first call: the large answer, both latencies.
            assert cascade["output"] == large["output"] and not cascade["error"]
            assert cascade["latency_ms"] == small["latency_ms"] + large["latency_ms"]
        else:
            assert not routed["error"]
            assert routed["output"] in (small["output"], large["output"])
    comparison = section["stats"]["comparisons"]["routed"]
    assert comparison["n_imputed"] == FAILED and comparison["n_paired"] == CASES
    record = section["derivations"]["routed"]
    assert record["errored_cases"] == FAILED and record["cases"] == CASES - FAILED
    assert f"{FAILED} case(s) where 'small' or 'large' errored count as errors" in proc.stdout
    assert question(0)  # the suite's questions are the shared ones


def test_deselecting_a_base_config_blocks_a_gated_routed_config(
    tmp_path: Path, fake_server: Any
) -> None:
    root = project(tmp_path, fake_server)
    # Only the large config runs: the routed config (gate: true) has no results.
    proc = run_evalgate(root, "-k", "large", "--evalgate-force-gate")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "routed: no results to gate" in proc.stdout
    assert "routed: NO RESULTS: no case has results of both 'small' and 'large'" in proc.stdout
