"""Routed and cascade configs when base calls fail, and when a base config is not run:
a pytest run against the fake OpenAI server, whose small tier refuses some requests."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from evalgate.testing.fake_openai import make_model
from tests.helpers import run_evalgate
from tests.plugin.test_derived import suite_text

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


def test_deselecting_a_base_config_blocks_a_gated_routed_config(
    tmp_path: Path, fake_server: Any
) -> None:
    root = project(tmp_path, fake_server)
    # Only the large config runs: the routed config (gate: true) has no results.
    proc = run_evalgate(root, "-k", "large", "--evalgate-force-gate")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "routed: no results to gate" in proc.stdout
    assert "routed: NO RESULTS: no case has results of both 'small' and 'large'" in proc.stdout


def derived_view(reports: Path) -> dict[str, Any]:
    """What the derived configs came to: their rows' deterministic fields and records."""
    document = json.loads((reports / "evalgate.json").read_text())
    section = document["suites"]["routed"]
    rows = sorted(
        (r["case_id"], r["config_id"], r["output"], r["score"], r["error"], r["cost_usd"])
        for r in section["cases"]
        if r["config_id"] in ("routed", "cascade")
    )
    records = {
        cid: {k: v for k, v in record.items() if k not in ("latency_p50_ms", "line")}
        for cid, record in section["derivations"].items()
    }
    return {"rows": rows, "records": records}


def test_merged_shards_and_a_resumed_run_compose_derived_configs_as_one_run(
    tmp_path: Path, fake_server: Any
) -> None:
    import subprocess
    import sys

    root = tmp_path
    (root / "s.yaml").write_text(
        suite_text(fake_server.base_url, uuid.uuid4().hex[:8], cases=CASES)
    )

    def run(reports: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_evalgate(root, "--evalgate-reports", reports, "--evalgate-gate", "none", *args)

    assert run("whole").returncode == 0
    for k in (1, 2):
        assert run(f"s{k}", "--evalgate-shard", f"{k}/2").returncode == 0
    merged = subprocess.run(
        [sys.executable, "-m", "evalgate.cli", "merge", "s1", "s2", "-o", "merged"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert merged.returncode == 0, merged.stdout + merged.stderr
    # Resumed: a first run of the large config only, then the rest.
    assert run("resumed", "-k", "large").returncode == 0
    assert run("resumed", "--evalgate-resume").returncode == 0
    whole = derived_view(root / "whole")
    assert whole["records"]["routed"]["cases"] == CASES
    assert len(whole["rows"]) == 2 * CASES
    assert derived_view(root / "merged") == whole
    assert derived_view(root / "resumed") == whole
