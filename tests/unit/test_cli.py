"""The `evalgate` command re-renders stored reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    missing = tmp_path / "nope.json"
    proc = run("report", str(missing))
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"evalgate: error: {missing}: cannot read"
    )


FOREIGN = {
    "object": ('{"a": 1}', "not an evalgate report (no 'suites' section)"),
    "array": ("[]", "not an evalgate report (the JSON is an array, not an object)"),
    "number": ("5", "not an evalgate report (the JSON is a number, not an object)"),
    "truncated": (json.dumps(DOC)[:120], "not valid JSON: "),
    "no-gate": (json.dumps({**DOC, "gate": None}), "not an evalgate report (no 'gate' section)"),
    "suite-not-object": (
        json.dumps({**DOC, "suites": {"s": 5}}),
        "not an evalgate report (suites.s: no 'configs' section)",
    ),
    "deeply-nested": ("[" * 100_000 + "]" * 100_000, "not an evalgate report (nested too deeply)"),
    "not-utf8": ('{"suites": "\xff"}', "not UTF-8 text"),
}


@pytest.mark.parametrize("command", ["report", "summary", "export"])
@pytest.mark.parametrize("kind", [*sorted(FOREIGN), "missing"])
def test_a_foreign_or_missing_report_is_one_line_and_exit_2(
    tmp_path: Path, command: str, kind: str
) -> None:
    """Never "Gate: passed", never a traceback: one line naming the file, exit status 2."""
    path = tmp_path / "five.json"
    if kind == "missing":
        message = "cannot read: No such file or directory"
    else:
        text, message = FOREIGN[kind]
        path.write_bytes(text.encode("latin-1") if kind == "not-utf8" else text.encode())
    extra = ["-o", str(tmp_path / "policy.py")] if command == "export" else []
    proc = run(command, str(path), *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"evalgate: error: {path}: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert not (tmp_path / "policy.py").exists()


def test_a_report_missing_a_field_the_tables_need_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**DOC, "suites": {"s": {"feature": "s", "configs": {"a": {}}}}}))
    proc = run("report", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(
        f"evalgate: error: {path}: not an evalgate report this version can read (KeyError: "
    )
    assert len(proc.stderr.strip().splitlines()) == 1


def test_summary_of_a_run_killed_before_its_report_says_the_gate_did_not_run(
    tmp_path: Path,
) -> None:
    from evalgate.results import ResultsWriter
    from evalgate.testing.report_data import synthetic_results, synthetic_suite

    writer = ResultsWriter(tmp_path / "results.jsonl")
    for result in synthetic_results(synthetic_suite(5)):
        writer.append(result)
    writer.close()
    proc = run("summary", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "**Gate: not run** (no statistics)" in proc.stdout and "passed" not in proc.stdout


def test_usage_with_redis_down_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    proc = run("usage", "--backend", url)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"evalgate: error: {url}: cannot read the ledger: Connection")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run("usage", "--since", "yesterday")
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "evalgate: error: --since 'yesterday': expected a span like 30m, 24h, 7d, or 'all'\n"
    )
    proc = run("usage", "--tolerance", "nan")
    assert proc.returncode == 2 and proc.stderr.startswith("evalgate: error: --tolerance nan")


# -- evalgate html ------------------------------------------------------------------------


def test_html_writes_the_page_beside_the_json(tmp_path: Path) -> None:
    from evalgate.testing.report_data import synthetic_document

    path = tmp_path / "evalgate.json"
    path.write_text(json.dumps(synthetic_document(20)))
    proc = run("html", str(path))
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "evalgate.html"
    assert proc.stdout.strip() == f"report: {page}"
    assert 'data-testid="pareto"' in page.read_text()


def test_html_output_option_and_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "evalgate.json").write_text(json.dumps(DOC))
    target = tmp_path / "out" / "page.html"
    proc = run("html", str(run_dir), "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    assert "<!doctype html>" in target.read_text()


def test_html_from_a_run_killed_before_its_report(tmp_path: Path) -> None:
    """A run directory with only results.jsonl still gives a page of its cases."""
    from evalgate.results import ResultsWriter
    from evalgate.testing.report_data import synthetic_results, synthetic_suite

    suite = synthetic_suite(5)
    writer = ResultsWriter(tmp_path / "results.jsonl")
    for result in synthetic_results(suite):
        writer.append(result)
    writer.close()
    proc = run("html", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "evalgate.html").read_text()
    assert "case-00004" in page and "rebuilt from results.jsonl" in page
    assert "No recommendation" in page and "Keep <strong>" not in page


def test_html_of_a_missing_or_foreign_source_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    proc = run("html", str(missing))
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"evalgate: error: {missing}: cannot read"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    (tmp_path / "other.json").write_text("[1, 2]")
    proc = run("html", str(tmp_path / "other.json"))
    assert proc.returncode == 2 and "not an evalgate report" in proc.stderr
    proc = run("html", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
