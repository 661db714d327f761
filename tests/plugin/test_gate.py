"""The non-inferiority gate end to end: verdicts, exit status, stored-baseline comparison."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from evalgate.results import latest_by_item, read_results
from evalgate.testing.fake_openai import make_model
from tests.helpers import run_evalgate as run_pytest


def gate_suite(
    base_url: str, key: str, cases: int, *, worse_gate: bool = True, force: str = ""
) -> str:
    model = "openai/" + make_model(key=key)
    rows = "\n".join(
        f'  - {{id: q{i}, group: g{i % 7}, vars: {{question: "item {i} is {i * 7}", '
        f'answer: "{i * 7}"}}}}'
        if False
        else f'  - {{id: q{i}, vars: {{question: "item {i} is v{i * 7}", answer: "v{i * 7}"}}}}'
        for i in range(cases)
    )
    return f"""\
suite: gated
tiers:
  t: {{model: "{model}", api_base: "{base_url}", price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "{{{{ answer }}}}"}}
configs:
  - {{id: base, tier: t, max_tokens: 20}}
  - {{id: same, tier: t, max_tokens: 30, gate: true}}
  - {{id: worse, tier: t, max_tokens: 3, gate: {str(worse_gate).lower()}}}
baseline: base
gate: {{margin: 0.05, alpha: 0.05{force}}}
cases:
{rows}
"""


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:8]


def report(cwd: Path) -> dict:
    return json.loads((cwd / "reports" / "evalgate.json").read_text())


def test_worse_config_blocks_and_equivalent_passes(tmp_path, fake_server, key) -> None:
    (tmp_path / "s.yaml").write_text(gate_suite(fake_server.base_url, key, 300))
    proc = run_pytest(tmp_path, "--evalgate-concurrency", "16")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "900 passed" in proc.stdout  # grader misses are data: no item failed
    assert "evalgate gate: BLOCKED" in proc.stdout
    assert "  blocked: gated: worse: FAIL: 90% upper bound" in proc.stdout
    stats = report(tmp_path)["suites"]["gated"]["stats"]
    assert stats["comparisons"]["worse"]["verdict"] == "FAIL"
    assert stats["comparisons"]["same"]["verdict"] == "PASS"
    # `same` costs what `base` costs and is not clearly faster: it pulls no lever, so it
    # is never recommended (by latency noise it would be in about half the runs).
    assert stats["recommendation"] is None
    assert any("cheaper or faster than 'base'" in note for note in stats["notes"])
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert "**Gate: BLOCKED**" in summary and "| worse |" in summary


def test_ungated_worse_config_does_not_block(tmp_path, fake_server, key) -> None:
    (tmp_path / "s.yaml").write_text(gate_suite(fake_server.base_url, key, 120, worse_gate=False))
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "evalgate gate: passed" in proc.stdout
    # --evalgate-gate=all gates every candidate.
    blocked = run_pytest(tmp_path, "--evalgate-gate", "all")
    assert blocked.returncode == 1 and "gated: worse: FAIL" in blocked.stdout


def test_underpowered_suite_reports_inconclusive_with_n_needed(tmp_path, fake_server, key) -> None:
    # 40 identical outcomes cannot show non-inferiority at 0.05: alone, 59 would be needed;
    # beside a second candidate Holm's first step needs 0.025, hence 72.
    (tmp_path / "s.yaml").write_text(gate_suite(fake_server.base_url, key, 40, worse_gate=False))
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "reports but does not gate" in proc.stdout
    assert "INCONCLUSIVE" in proc.stdout and "needs N≈72" in proc.stdout
    forced = run_pytest(tmp_path, "--evalgate-force-gate")
    assert forced.returncode == 1 and "gated: same: INCONCLUSIVE" in forced.stdout
    allowed = run_pytest(tmp_path, "--evalgate-force-gate", "--evalgate-allow-inconclusive")
    assert allowed.returncode == 0


def test_report_agrees_with_independent_recomputation(tmp_path, fake_server, key) -> None:
    (tmp_path / "s.yaml").write_text(gate_suite(fake_server.base_url, key, 150))
    run_pytest(tmp_path)
    run_id = (tmp_path / "reports" / "runs" / "LATEST").read_text().strip()
    latest = latest_by_item(read_results(tmp_path / "reports" / "runs" / run_id / "results.jsonl"))
    scores = {(r.case_id, r.config_id): r.score for r in latest.values()}
    cases = sorted({c for c, _ in scores})
    base = np.array([scores[c, "base"] for c in cases])
    worse = np.array([scores[c, "worse"] for c in cases])
    b, c = int(((base == 1) & (worse == 0)).sum()), int(((base == 0) & (worse == 1)).sum())
    expected_p = sps.binomtest(min(b, c), b + c, 0.5).pvalue
    comparison = report(tmp_path)["suites"]["gated"]["stats"]["comparisons"]["worse"]
    assert comparison["delta"]["estimate"] == pytest.approx((worse - base).mean())
    assert comparison["p_value"] == pytest.approx(expected_p)
    assert comparison["n_paired"] == 150


def test_pr_check_against_a_stored_main_run(tmp_path, fake_server, key) -> None:
    main = gate_suite(fake_server.base_url, key, 120, worse_gate=False)
    (tmp_path / "s.yaml").write_text(main)
    assert run_pytest(tmp_path).returncode == 0
    stored = tmp_path / "main.json"
    shutil.copy(tmp_path / "reports" / "evalgate.json", stored)
    # The PR lowers the baseline's max_tokens (a regression) and adds five cases.
    extra = "\n".join(
        f'  - {{id: new{i}, vars: {{question: "n {i}", answer: "n"}}}}' for i in range(5)
    )
    head = (
        main.replace("{id: base, tier: t, max_tokens: 20}", "{id: base, tier: t, max_tokens: 3}")
        + extra
        + "\n"
    )
    (tmp_path / "s.yaml").write_text(head)
    proc = run_pytest(tmp_path, "--evalgate-baseline", str(stored))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "gated: base vs stored run: FAIL" in proc.stdout
    assert "note: gated: 5 case(s) not in the stored run (reported, not compared)" in proc.stdout
    assert "note: gated: the suite changed since the stored run" in proc.stdout
    vs = report(tmp_path)["suites"]["gated"]["stats"]["vs_stored"]
    assert vs["new_cases"] == [f"new{i}" for i in range(5)] and vs["suite_hash_changed"]
    assert vs["configs"]["same"]["verdict"] == "PASS"
    # The HTML report shows the same comparison, config by config.
    page = (tmp_path / "reports" / "evalgate.html").read_text()
    table = re.search(r'<table class="candidates vs-stored">.*?</table>', page, re.S)
    assert table, "no stored-run comparison in the HTML report"
    assert "5 case(s) not in the stored run" in table.group(0)
    assert "the suite changed since the stored run" in table.group(0)
    rows = dict(
        re.findall(r'<tr data-config="([^"]+)"><td>[^<]*</td><td[^>]*>(\w+)<', table.group(0))
    )
    assert rows["same"] == "PASS" and rows["base"] == "FAIL"


@pytest.mark.parametrize(
    "stored, says",
    [
        ({"suites": {"gated": {"cases": [{"case": "q1"}]}}}, "suites.gated.cases[0] lacks"),
        ({"suites": ["gated"]}, "not an evalgate.json report: no 'suites' mapping"),
        ([1, 2], "not an evalgate.json report"),
    ],
)
def test_stored_baseline_of_the_wrong_shape_is_one_line(
    tmp_path, fake_server, key, stored, says
) -> None:
    (tmp_path / "s.yaml").write_text(gate_suite(fake_server.base_url, key, 20))
    path = tmp_path / "main.json"
    path.write_text(json.dumps(stored))
    proc = run_pytest(tmp_path, "--evalgate-baseline", str(path))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "KeyError" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert f"blocked: --evalgate-baseline {path}: {says}" in proc.stdout
    assert report(tmp_path)["suites"]["gated"]["configs"]["base"]["n_cases"] == 20


def test_a_defect_in_one_suites_analysis_leaves_the_report_intact(
    tmp_path, fake_server, key
) -> None:
    (tmp_path / "s.yaml").write_text(gate_suite(fake_server.base_url, key, 20))
    # A defect (not a ValueError) inside the statistics of this suite.
    (tmp_path / "conftest.py").write_text(
        "import evalgate.stats\n"
        "def _broken(*args, **kwargs):\n"
        "    raise ZeroDivisionError('injected')\n"
        "evalgate.stats.analyze_suite = _broken\n"
    )
    proc = run_pytest(tmp_path, "--evalgate-gate", "all", "--evalgate-force-gate")
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert "note: gated: statistics failed (ZeroDivisionError: injected)" in proc.stdout
    assert proc.returncode == 1
    document = report(tmp_path)
    assert document["suites"]["gated"]["configs"]["worse"]["n_items"] == 20
    assert (tmp_path / "reports" / "summary.md").exists()


def test_results_rewritten_under_every_report_attempt_are_one_line_and_block(
    tmp_path, fake_server, key
) -> None:
    # Something rewrites results.jsonl in place (not appending) each time the report's
    # statistics run: the writer makes the report again, then gives up in one line; the
    # results stay on disk and the run does not pass with an unknown verdict.
    (tmp_path / "s.yaml").write_text(gate_suite(fake_server.base_url, key, 12))
    (tmp_path / "conftest.py").write_text(
        "import pathlib\n"
        "import evalgate.stats\n"
        "_analyze = evalgate.stats.analyze_suite\n"
        "def _rewriting(*args, **kwargs):\n"
        "    for path in pathlib.Path('reports/runs').glob('*/results.jsonl'):\n"
        "        data = path.read_bytes()\n"
        "        flipped = data.replace(b'\"repeat\":0,', b'\"repeat\":0 ,', 1)\n"
        "        if flipped == data:  # a space in JSON: the same results, other bytes\n"
        "            flipped = data.replace(b'\"repeat\":0 ,', b'\"repeat\":0,', 1)\n"
        "        with path.open('r+b') as fh:\n"
        "            fh.write(flipped)\n"
        "            fh.truncate()\n"
        "    return _analyze(*args, **kwargs)\n"
        "evalgate.stats.analyze_suite = _rewriting\n"
    )
    proc = run_pytest(tmp_path)
    out = proc.stdout + proc.stderr
    assert "INTERNALERROR" not in out and proc.returncode == 1, out[-3000:]
    lines = [line for line in out.splitlines() if "report not written" in line]
    assert len(lines) == 1, out[-3000:]
    assert "results.jsonl: rewritten while the report read it" in lines[0]
    assert (
        len(list(read_results(next((tmp_path / "reports" / "runs").glob("*/results.jsonl"))))) == 36
    )
