"""Sharded runs (``--evalgate-shard K/N``) and ``evalgate merge``, end to end.

Against the deterministic fake OpenAI server: three shards merged give exactly the
per-case results of one unsharded run (outputs, grades, tokens, costs) and the same
quality statistics (deltas, intervals, p-values, verdicts) and gate verdict. Latencies
are measured, so they differ from run to run; everything compared here is deterministic.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.results import latest_by_item, read_results
from evalgate.runs import latest_run_id
from evalgate.shard import ShardSpecError, case_shard, parse_shard
from evalgate.testing.fake_openai import make_model
from tests.helpers import run_evalgate

CASES = 40


def suite_text(base_url: str, key: str, cases: int = CASES, name: str = "sharded") -> str:
    model = "openai/" + make_model(key=key)
    rows = "\n".join(
        f'  - {{id: q{i}, vars: {{question: "item {i} is v{i * 7}", answer: "v{i * 7}"}}}}'
        for i in range(cases)
    )
    return f"""\
suite: {name}
tiers:
  t: {{model: "{model}", api_base: "{base_url}", price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "{{{{ answer }}}}"}}
configs:
  - {{id: base, tier: t, max_tokens: 20}}
  - {{id: short, tier: t, max_tokens: 3, gate: true}}
baseline: base
gate: {{margin: 0.05, alpha: 0.05, force: true}}
cases:
{rows}
"""


def run(cwd: Path, reports: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_evalgate(
        cwd,
        "--evalgate-reports",
        reports,
        "--evalgate-cache-dir",
        str(cwd / f".cache-{reports}"),
        *args,
        cache=False,
    )


def merge(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalgate.cli", "merge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def deterministic(reports: Path) -> dict[Any, Any]:
    """Per item: what the model said, how it was graded and what it cost."""
    run_dir = reports / "runs" / str(latest_run_id(reports))
    out = {}
    for key, r in latest_by_item(read_results(run_dir / "results.jsonl")).items():
        call = r.call
        out[tuple(key)] = (
            call.output,
            call.input_tokens,
            call.output_tokens,
            call.cost_usd,
            call.error,
            call.finish_reason,
            tuple((g.grader, g.score, g.passed, g.reason) for g in r.grades),
            r.suite_hash,
        )
    return out


def quality_stats(reports: Path) -> dict[str, Any]:
    document = json.loads((reports / "evalgate.json").read_text())
    stats = document["suites"]["sharded"]["stats"]
    comparisons = {
        cid: {k: c.get(k) for k in ("delta", "p_value", "verdict", "noninferiority", "n")}
        for cid, c in stats["comparisons"].items()
    }
    return {"comparisons": comparisons, "gate": document["gate"]}


def merged_report(out: Path) -> str:
    document = json.loads((out / "evalgate.json").read_text(encoding="utf-8"))
    del document["merged_from"], document["created"]
    return json.dumps(document, indent=1, ensure_ascii=False)


def reference_report(out: Path, project: Path) -> str:
    from evalgate.runs import RunPaths, latest_run_id
    from evalgate.suite.loader import load_suite
    from tests.unit.test_report_memory import _reference_report

    run_id = latest_run_id(out)
    assert run_id is not None
    with contextlib.chdir(project):  # as the merge loads it: relative to the project
        suite = load_suite(Path("suites/s.yaml"))
        text, _, _ = _reference_report(RunPaths(out, run_id), {suite.name: suite})
    document = json.loads(text)
    del document["created"]
    return json.dumps(document, indent=1, ensure_ascii=False)


@pytest.fixture
def project(tmp_path: Path, fake_server: Any) -> Path:
    (tmp_path / "suites").mkdir()
    key = uuid.uuid4().hex[:8]
    (tmp_path / "suites" / "s.yaml").write_text(suite_text(fake_server.base_url, key))
    return tmp_path


def test_three_shards_merged_equal_one_unsharded_run(project: Path) -> None:
    whole = run(project, "whole", "suites/")
    assert whole.returncode == 1, whole.stdout[-2000:]  # `short` truncates: the gate blocks
    counts = []
    for k in (1, 2, 3):
        proc = run(project, f"s{k}", "suites/", "--evalgate-shard", f"{k}/3")
        # A shard never gates (its part is underpowered): it passes and says so.
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert f"evalgate gate: not applied (shard {k}/3:" in proc.stdout
        counts.append(sum(case_shard("sharded", f"q{i}", 3) == k for i in range(CASES)))
        assert f"shard {k}/3: {counts[-1]} of {CASES} cases" in proc.stdout
    assert sum(counts) == CASES and all(counts)

    merged = merge(project, "s1", "s2", "s3", "-o", "merged")
    assert merged.returncode == 1, merged.stdout + merged.stderr  # the same verdict
    assert "evalgate gate: BLOCKED" in merged.stdout
    assert deterministic(project / "merged") == deterministic(project / "whole")
    assert len(deterministic(project / "merged")) == 2 * CASES
    assert quality_stats(project / "merged") == quality_stats(project / "whole")
    assert (project / "merged" / "summary.md").read_text().startswith("# evalgate summary")
    assert (project / "merged" / "evalgate.html").is_file()
    # The streamed writer's merged report is the one the in-memory writer made of the
    # merged results.jsonl (all but the time it was made and where it came from).
    assert merged_report(project / "merged") == reference_report(project / "merged", project)
    # The inputs are only read.
    for k in (1, 2, 3):
        assert json.loads((project / f"s{k}" / "evalgate.json").read_text())["shard"] == {
            "index": k,
            "count": 3,
        }


def test_merge_refuses_shards_that_do_not_form_one_run(project: Path, fake_server: Any) -> None:
    for k in (1, 2):
        assert run(project, f"s{k}", "suites/", "--evalgate-shard", f"{k}/2").returncode == 0
    # The same shard twice: overlapping items.
    twice = merge(project, "s1", "s1", "-o", "m")
    assert twice.returncode == 2 and "overlapping shards" in twice.stderr
    assert len(twice.stderr.strip().splitlines()) == 1
    # A shard missing.
    missing = merge(project, "s1", "-o", "m")
    assert missing.returncode == 2 and "missing shard(s) 2/2" in missing.stderr
    assert merge(project, "s1", "-o", "m", "--allow-partial").returncode in (0, 1)
    # Shards of a different N.
    assert run(project, "t3", "suites/", "--evalgate-shard", "3/3").returncode == 0
    mixed = merge(project, "s1", "s2", "t3", "-o", "m")
    assert mixed.returncode == 2 and "different splits" in mixed.stderr
    # Not a shard run.
    assert run(project, "plain", "suites/").returncode in (0, 1)
    plain = merge(project, "plain", "s2", "-o", "m")
    assert plain.returncode == 2 and "not a shard run" in plain.stderr
    nothing = merge(project, "nowhere", "-o", "m")
    assert nothing.returncode == 2 and "nowhere" in nothing.stderr
    # Shards of a different suite version.
    suite = project / "suites" / "s.yaml"
    suite.write_text(suite.read_text().replace("max_tokens: 20", "max_tokens: 21"))
    assert run(project, "e2", "suites/", "--evalgate-shard", "2/2").returncode == 0
    edited = merge(project, "s1", "e2", "-o", "m")
    assert edited.returncode == 2 and "differs between shards" in edited.stderr
    # Suites edited since the shards ran: refused, not merged against the wrong suite.
    stale = merge(project, "s1", "s2", "-o", "m")
    assert stale.returncode == 2 and "has changed since the shards ran" in stale.stderr


@pytest.mark.parametrize("value", ["0/3", "4/3", "a/b", "3", "1/0", ""])
def test_bad_shard_values_are_one_line_usage_errors(tmp_path: Path, value: str) -> None:
    proc = run_evalgate(tmp_path, "--evalgate-shard", value, cache=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "--evalgate-shard:" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "--evalgate-shard" in line]) == 1
    with pytest.raises(ShardSpecError):
        parse_shard(value)


def test_a_case_keeps_its_shard_when_cases_are_added() -> None:
    before = {f"q{i}": case_shard("s", f"q{i}", 4) for i in range(200)}
    after = {f"q{i}": case_shard("s", f"q{i}", 4) for i in range(400)}
    assert all(after[c] == shard for c, shard in before.items())
    assert set(before.values()) == {1, 2, 3, 4}
    # A fixed digest, not Python's salted hash(): every machine of a matrix agrees.
    assert [case_shard("s", "q0", 4), case_shard("s", "q1", 4), case_shard("sharded", "q7", 3)] == [
        4,
        1,
        3,
    ]


def test_the_workflow_example_runs_a_shard_matrix_and_gates_the_merge() -> None:
    import yaml

    root = Path(__file__).resolve().parents[2]
    flow = yaml.safe_load((root / "examples/github-actions/evalgate.yml").read_text())
    shard, gate = flow["jobs"]["shard"], flow["jobs"]["gate"]
    assert len(shard["strategy"]["matrix"]["shard"]) == int(shard["env"]["SHARDS"])
    runs = " ".join(step.get("run", "") for step in shard["steps"])
    assert "--evalgate-shard ${{ matrix.shard }}/$SHARDS" in runs
    assert gate["needs"] == "shard"
    merges = [s["run"] for s in gate["steps"] if "evalgate merge" in s.get("run", "")]
    assert merges and "-o reports" in merges[0]


def test_empty_shards_pass_and_merge(tmp_path: Path, fake_server: Any) -> None:
    """One case over four shards: three shards hold nothing, exit 0, and still merge."""
    (tmp_path / "suites").mkdir()
    text = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], cases=1)
    (tmp_path / "suites" / "s.yaml").write_text(text)
    for k in (1, 2, 3, 4):
        proc = run(tmp_path, f"s{k}", "suites/", "--evalgate-shard", f"{k}/4")
        assert proc.returncode == 0, proc.stdout[-2000:]
    merged = merge(tmp_path, "s1", "s2", "s3", "s4", "-o", "m", "--gate", "none")
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert len(deterministic(tmp_path / "m")) == 2


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_merge_refuses_items_outside_a_shards_part_and_leaves_inputs_alone(
    project: Path, fake_server: Any
) -> None:
    """A shard dir holding another shard's items (e.g. an unsharded run resumed as a
    shard, or hand-copied results) is refused, not double-counted; inputs stay as they were."""
    import shutil

    for k in (1, 2):
        assert run(project, f"s{k}", "suites/", "--evalgate-shard", f"{k}/2").returncode == 0
    shutil.copytree(project / "s1", project / "bad1")
    bad_run = project / "bad1" / "runs" / str(latest_run_id(project / "bad1"))
    s2_run = project / "s2" / "runs" / str(latest_run_id(project / "s2"))
    with open(bad_run / "results.jsonl", "ab") as fh:
        fh.write((s2_run / "results.jsonl").read_bytes())
    before = {d: tree_bytes(project / d) for d in ("bad1", "s1", "s2")}
    foreign = merge(project, "bad1", "s2", "-o", "m")
    assert foreign.returncode == 2, foreign.stdout + foreign.stderr
    assert len(foreign.stderr.strip().splitlines()) == 1
    assert "is not in shard 1/2's part" in foreign.stderr
    assert not (project / "m" / "evalgate.json").exists()
    into_input = merge(project, "s1", "s2", "-o", "s2")
    assert into_input.returncode == 2 and "own directory" in into_input.stderr
    ok = merge(project, "s1", "s2", "-o", "m")
    assert ok.returncode in (0, 1), ok.stdout + ok.stderr
    assert {d: tree_bytes(project / d) for d in ("bad1", "s1", "s2")} == before
