"""What a run stores for the report: case rows, inputs and rendered prompts (once)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.browser.demo import XSS_OUTPUT, demo_suite
from tests.helpers import run_evalgate


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, fake_server) -> tuple[Path, str]:
    """One demo-like run (120 cases x 4 configs) shared by this module's tests."""
    cwd = tmp_path_factory.mktemp("demo")
    (cwd / "s.yaml").write_text(demo_suite(fake_server.base_url, uuid.uuid4().hex[:8]))
    proc = run_evalgate(cwd, "--evalgate-concurrency", "8")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return cwd, proc.stdout


def suite_of(cwd: Path) -> dict:
    return json.loads((cwd / "reports" / "evalgate.json").read_text())["suites"]["demo-qa"]


def test_case_rows_keep_expected_and_finish_reason(demo_run) -> None:
    suite = suite_of(demo_run[0])
    rows = {(r["case_id"], r["config_id"]): r for r in suite["cases"]}
    assert rows["case-001", "large"]["expected"] == "contains(value='v7')"
    assert rows["case-001", "large"]["finish_reason"] == "stop"
    # small-short's 30-token cap cuts the echoed prompt: the provider says "length".
    assert rows["case-002", "small-short"]["finish_reason"] == "length"


def test_inputs_and_prompts_are_stored_once_per_case(demo_run) -> None:
    inputs = suite_of(demo_run[0])["inputs"]
    assert inputs["vars"]["case-001"]["answer"] == "v7"
    assert XSS_OUTPUT in inputs["vars"]["case-003"]["question"]
    prompt = inputs["prompt"]["case-001"]
    # Untrimmed configs send the same messages: one stored prompt, not three.
    assert prompt["large"] == prompt["small"] == prompt["small-short"]
    assert prompt["large-trim50"] != prompt["large"]
    full = inputs["messages"][prompt["large"]]
    trimmed = inputs["messages"][prompt["large-trim50"]]
    assert full[0] == {"role": "system", "content": "Answer with the code only."}
    assert full[1]["content"].startswith("Q: code of item 1 C: Note 0 about item 1.")
    assert len(trimmed[1]["content"]) < len(full[1]["content"])
    assert "The code of item 1 is v7." in trimmed[1]["content"]  # the relevant sentence stays
    # Two distinct prompts per case, no more.
    assert len(inputs["messages"]) == 2 * 120
    assert set(inputs["prompt"]) == set(inputs["vars"]) and len(inputs["vars"]) == 120


def test_run_writes_the_html_report_and_names_both_paths_last(demo_run) -> None:
    cwd, stdout = demo_run
    reports = cwd / "reports"
    page = (reports / "evalgate.html").read_text()
    assert 'data-testid="recommended"' in page and ">large-trim50<" in page
    lines = [line for line in stdout.splitlines() if not line.startswith("=")]
    assert lines[-2:] == [
        f"html report: {reports / 'evalgate.html'}",
        f"report: {reports / 'evalgate.json'}",
    ]
