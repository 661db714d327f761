"""Running suites end to end through the plugin, against a real fault-injecting server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from evalgate.results import latest_by_item, read_results
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model
from tests.helpers import evalgate_command, run_evalgate


def suite_yaml(
    base_url: str,
    key: str,
    *,
    cases: int = 12,
    latency_ms: int = 0,
    extra_config: str = "",
    must_pass: str = "",
    price: bool = True,
    api_key_env: str = "",
) -> str:
    model = "openai/" + make_model(latency_ms=latency_ms, key=key)
    tier_extra = ", price: {input_per_mtok: 1.0, output_per_mtok: 2.0}" if price else ""
    if api_key_env:
        tier_extra += f", api_key_env: {api_key_env}"
    rows = "\n".join(
        f'  - {{id: q{i}, vars: {{question: "item {i} is {i * 7}", answer: "{i * 7}"}}'
        f"{must_pass if i == 0 else ''}}}"
        for i in range(cases)
    )
    return f"""\
suite: run-demo
tiers:
  t: {{model: "{model}", api_base: "{base_url}"{tier_extra}}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "{{{{ answer }}}}"}}
configs:
  - {{id: a, tier: t, max_tokens: 20}}
  - {{id: b, tier: t, max_tokens: 3}}
{extra_config}
rows_follow: here
cases:
{rows}
""".replace("rows_follow: here\n", "")


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:8]


run_pytest = run_evalgate


def results_of(cwd: Path) -> dict[str, tuple]:
    run_id = (cwd / "reports" / "runs" / "LATEST").read_text().strip()
    records = list(read_results(cwd / "reports" / "runs" / run_id / "results.jsonl"))
    keys = [r.item_key for r in records]
    assert len(keys) == len(set(keys)), "an item was recorded twice"
    return {
        r.item_key: (
            r.call.output,
            r.score,
            r.passed,
            r.call.input_tokens,
            r.call.output_tokens,
            r.call.cost_usd,
        )
        for r in records
    }


def test_run_writes_results_report_and_table(tmp_path, fake_server, key) -> None:
    (tmp_path / "s.yaml").write_text(suite_yaml(fake_server.base_url, key))
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "24 passed" in proc.stdout
    assert "suite run-demo" in proc.stdout and "misses: q1, q10" in proc.stdout
    report = json.loads((tmp_path / "reports" / "evalgate.json").read_text())
    configs = report["suites"]["run-demo"]["configs"]
    # "echo: item 3 is 21" truncated to 3 words keeps only "echo: item 3": b misses (but q0's 0).
    assert configs["a"]["quality_mean"] == 1.0
    assert configs["b"]["quality_mean"] == pytest.approx(1 / 12)
    assert configs["a"]["n_cases"] == 12 and configs["a"]["errors"] == 0
    assert configs["a"]["tokens_in"] == 12 * 4 and configs["a"]["tokens_out"] == 12 * 5
    assert configs["a"]["cost_per_case_usd"] == pytest.approx((4 + 5 * 2) / 1e6)
    assert configs["a"]["latency_p95_ms"] >= configs["a"]["latency_p50_ms"] > 0
    assert configs["a"]["ttft_p50_ms"] is not None
    assert len(report["suites"]["run-demo"]["cases"]) == 24
    assert fake_server.request_count(key) == 24
    # Each config's settings are stored, so the report and the export need no suite file.
    settings = report["suites"]["run-demo"]["settings"]
    assert settings["configs"]["b"]["max_tokens"] == 3
    assert settings["configs"]["a"]["api_base"] == fake_server.base_url
    assert settings["configs"]["a"]["model"].startswith("openai/")
    assert settings["trim"] == {"variable": "context", "query": "question"}


def test_xdist_gives_the_same_results_as_one_process(tmp_path, fake_server, key) -> None:
    for sub in ("serial", "xdist"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "s.yaml").write_text(suite_yaml(fake_server.base_url, key, cases=30))
    serial = run_pytest(tmp_path / "serial", "-n", "0")
    parallel = run_pytest(tmp_path / "xdist", "-n", "2")
    assert serial.returncode == parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert len(results_of(tmp_path / "serial")) == 60
    assert results_of(tmp_path / "xdist") == results_of(tmp_path / "serial")
    assert fake_server.request_count(key) == 120  # nothing called twice
    workers = {
        r.worker
        for r in read_results(next((tmp_path / "xdist").glob("reports/runs/2*/results.jsonl")))
    }
    assert workers == {"gw0", "gw1"}


def test_interrupted_run_resumes_without_rerunning_finished_items(tmp_path, key) -> None:
    # A server of its own so the request count belongs to this test alone.
    with FakeOpenAIServer(mode="process") as server:
        (tmp_path / "s.yaml").write_text(suite_yaml(server.base_url, key, cases=40, latency_ms=100))
        proc = subprocess.Popen(
            evalgate_command(
                "--evalgate-concurrency", "2", "--evalgate-cache-dir", str(tmp_path / ".cache")
            ),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        results = tmp_path / "reports" / "runs"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = list(results.glob("*/results.jsonl"))
            if files and sum(1 for _ in files[0].open()) >= 10:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # as hard as a crash: no cleanup runs
        proc.wait()
        finished = latest_by_item(read_results(files[0]))
        assert 10 <= len(finished) < 80
        calls_before = server.request_count(key)

        resumed = run_pytest(tmp_path, "--evalgate-resume")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        after = latest_by_item(read_results(files[0]))
        assert len(after) == 80
        assert all(after[k] == v for k, v in finished.items())  # finished lines untouched
        # Only the missing items were called (calls in flight at the kill may have reached
        # the server without being recorded: at most the concurrency, 2).
        new_calls = server.request_count(key) - calls_before
        assert 80 - len(finished) <= new_calls <= 80 - len(finished)
        report = json.loads((tmp_path / "reports" / "evalgate.json").read_text())
        assert len(report["suites"]["run-demo"]["cases"]) == 80


def test_resume_without_an_earlier_run_is_a_usage_error(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text(suite_yaml("http://127.0.0.1:9/v1", "k"))
    proc = run_pytest(tmp_path, "--evalgate-resume")
    assert proc.returncode == 4 and "no earlier run" in proc.stderr


def test_cache_serves_the_second_run(tmp_path, fake_server, key) -> None:
    extra = "  - {id: c, tier: t, max_tokens: 20, cache: true}"
    (tmp_path / "s.yaml").write_text(
        suite_yaml(fake_server.base_url, key, cases=5, extra_config=extra)
    )
    assert run_pytest(tmp_path, "-k", "c]").returncode == 0
    assert fake_server.request_count(key) == 5
    assert run_pytest(tmp_path, "-k", "c]").returncode == 0
    assert fake_server.request_count(key) == 5
    config = json.loads((tmp_path / "reports" / "evalgate.json").read_text())["suites"]["run-demo"][
        "configs"
    ]["c"]
    assert config["cache_hits"] == 5 and config["cost_total_usd"] == 0.0
    assert config["saved_usd"] == pytest.approx(5 * (4 + 5 * 2) / 1e6)
    assert run_pytest(tmp_path, "-k", "c]", "--evalgate-no-cache").returncode == 0
    assert fake_server.request_count(key) == 10


def test_failed_call_fails_its_item_only_and_says_why(tmp_path, fake_server, key) -> None:
    bad = "openai/" + make_model(fail="500", key=key + "x")
    extra = "  - {id: broken, tier: bad}"
    text = suite_yaml(fake_server.base_url, key, cases=3, extra_config=extra).replace(
        "prompt:", f'  bad: {{model: "{bad}", api_base: "{fake_server.base_url}"}}\nprompt:'
    )
    (tmp_path / "s.yaml").write_text(text)
    proc = run_pytest(tmp_path, "--evalgate-max-attempts", "2")
    assert proc.returncode == 1
    assert "3 failed, 6 passed" in proc.stdout
    assert "call failed after 2 attempt(s): InternalServerError" in proc.stdout
    assert "Traceback" not in proc.stdout
    report = json.loads((tmp_path / "reports" / "evalgate.json").read_text())
    assert report["suites"]["run-demo"]["configs"]["broken"]["errors"] == 3


def test_must_pass_miss_fails_with_expected_output_and_reasons(tmp_path, fake_server, key) -> None:
    (tmp_path / "s.yaml").write_text(
        suite_yaml(fake_server.base_url, key, cases=2, must_pass=", must_pass: true").replace(
            '"item 0 is 0", answer: "0"', '"item 0 is 0", answer: "zero"'
        )
    )
    proc = run_pytest(tmp_path)
    assert proc.returncode == 1
    assert "2 failed, 2 passed" in proc.stdout
    assert "must-pass case 'q0' missed under config 'a'" in proc.stdout
    assert "expected: contains(value='zero')" in proc.stdout
    assert "output:   'echo: item 0 is 0'" in proc.stdout
    assert "[MISS] contains (score 0.00): expected any of ['zero']" in proc.stdout


def test_reports_never_contain_api_keys(tmp_path, fake_server, key) -> None:
    secret = "sk-test-" + uuid.uuid4().hex
    (tmp_path / "s.yaml").write_text(
        suite_yaml(fake_server.base_url, key, cases=2, api_key_env="EVALGATE_TEST_KEY")
    )
    env = {**os.environ, "EVALGATE_TEST_KEY": secret}
    proc = run_evalgate(tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout
    for path in (tmp_path / "reports").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in proc.stdout + proc.stderr


def _report(cwd: Path) -> dict:
    return json.loads((cwd / "reports" / "evalgate.json").read_text())


def test_resume_regrades_when_a_python_graders_source_changes(tmp_path, fake_server, key) -> None:
    grader = tmp_path / "mygrader.py"
    grader.write_text("def check(output, case):\n    return False\n")
    text = suite_yaml(fake_server.base_url, key, cases=4).replace(
        "assert:\n", "assert:\n  - {type: python, function: 'mygrader:check'}\n"
    )
    (tmp_path / "s.yaml").write_text(text)
    assert run_pytest(tmp_path).returncode == 0
    assert _report(tmp_path)["suites"]["run-demo"]["configs"]["a"]["quality_mean"] < 1
    calls = fake_server.request_count(key)

    grader.write_text("def check(output, case):\n    return True\n")  # the YAML is unchanged
    resumed = run_pytest(tmp_path, "--evalgate-resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "evalgate: resume: 0 result(s) reused, 8 regraded without a call" in resumed.stdout
    assert fake_server.request_count(key) == calls  # regraded from the stored outputs
    assert _report(tmp_path)["suites"]["run-demo"]["configs"]["a"]["quality_mean"] == 1.0


def test_resume_regrades_when_a_module_the_python_grader_imports_changes(
    tmp_path, fake_server, key
) -> None:
    # The grader file is unchanged; the project module it imports decides the grade.
    (tmp_path / "rubric.py").write_text("def verdict(output):\n    return False\n")
    (tmp_path / "mygrader.py").write_text(
        "import rubric\n\ndef check(output, case):\n    return rubric.verdict(output)\n"
    )
    text = suite_yaml(fake_server.base_url, key, cases=4).replace(
        "assert:\n", "assert:\n  - {type: python, function: 'mygrader:check'}\n"
    )
    (tmp_path / "s.yaml").write_text(text)
    assert run_pytest(tmp_path).returncode == 0
    assert _report(tmp_path)["suites"]["run-demo"]["configs"]["a"]["quality_mean"] < 1

    (tmp_path / "rubric.py").write_text("def verdict(output):\n    return True\n")
    resumed = run_pytest(tmp_path, "--evalgate-resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "evalgate: resume: 0 result(s) reused, 8 regraded without a call" in resumed.stdout
    assert _report(tmp_path)["suites"]["run-demo"]["configs"]["a"]["quality_mean"] == 1.0


def test_resume_calls_again_only_the_items_whose_call_changed(tmp_path, fake_server, key) -> None:
    (tmp_path / "s.yaml").write_text(suite_yaml(fake_server.base_url, key, cases=4))
    assert run_pytest(tmp_path).returncode == 0
    calls = fake_server.request_count(key)
    text = (tmp_path / "s.yaml").read_text().replace('"item 2 is 14"', '"item 2 is now 14"')
    (tmp_path / "s.yaml").write_text(text)
    resumed = run_pytest(tmp_path, "--evalgate-resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (
        "evalgate: resume: 6 result(s) reused, 2 called again (prompt, case, config or tier "
        "changed)" in resumed.stdout
    )
    assert fake_server.request_count(key) == calls + 2
    cases = _report(tmp_path)["suites"]["run-demo"]["cases"]
    assert len(cases) == 8
    assert "ignored" not in resumed.stdout


def test_resume_reports_only_the_current_items(tmp_path, fake_server, key) -> None:
    extra = "  - {id: c, tier: t, max_tokens: 1}"
    (tmp_path / "s.yaml").write_text(
        suite_yaml(fake_server.base_url, key, cases=4, extra_config=extra)
    )
    assert run_pytest(tmp_path).returncode == 0
    assert set(_report(tmp_path)["suites"]["run-demo"]["configs"]) == {"a", "b", "c"}
    (tmp_path / "s.yaml").write_text(suite_yaml(fake_server.base_url, key, cases=3))
    resumed = run_pytest(tmp_path, "--evalgate-resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = _report(tmp_path)
    assert set(report["suites"]["run-demo"]["configs"]) == {"a", "b"}
    assert len(report["suites"]["run-demo"]["cases"]) == 6
    note = (
        "evalgate: 6 stored result(s) ignored: 6 for items the current suites do not define "
        "(removed or renamed)"
    )
    assert note in resumed.stdout
    assert report["notes"] == [note]
