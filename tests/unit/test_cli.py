"""The `evalgate` command re-renders stored reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DOC = {
    "version": 1,
    "run_id": "r1",
    "created": "now",
    "suites": {
        "s": {
            "feature": "s",
            "suite_hash": "h",
            "baseline": "a",
            "cases": [],
            "configs": {
                "a": {
                    "tier": "t",
                    "model": "m",
                    "n_cases": 1,
                    "n_items": 1,
                    "quality_mean": 1.0,
                    "pass_rate": 1.0,
                    "errors": 0,
                    "misses": [],
                    "cost_per_case_usd": 1e-6,
                    "latency_p50_ms": 10.0,
                    "latency_p95_ms": 12.0,
                    "ttft_p50_ms": 5.0,
                    "ttft_p95_ms": 6.0,
                    "cache_hits": 0,
                }
            },
        }
    },
    "gate": {"blocked": True, "reasons": ["s: b: FAIL: because"], "notes": []},
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalgate.cli", *args], capture_output=True, text=True, check=False
    )


def test_report_prints_table_and_exits_like_the_gate(tmp_path: Path) -> None:
    path = tmp_path / "evalgate.json"
    path.write_text(json.dumps(DOC))
    proc = run("report", str(path))
    assert proc.returncode == 1
    assert "suite s (feature s, baseline a)" in proc.stdout
    assert "blocked: s: b: FAIL: because" in proc.stdout


def test_summary_is_markdown(tmp_path: Path) -> None:
    path = tmp_path / "evalgate.json"
    path.write_text(json.dumps(DOC))
    proc = run("summary", str(path))
    assert proc.returncode == 0 and proc.stdout.startswith("# evalgate summary")
    assert "**Gate: BLOCKED**" in proc.stdout


def test_missing_report_is_one_line(tmp_path: Path) -> None:
    proc = run("report", str(tmp_path / "nope.json"))
    assert proc.returncode == 1 and proc.stderr.startswith("evalgate: cannot read ")
