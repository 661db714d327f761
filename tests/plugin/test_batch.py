"""Batch configs end to end: real pytest runs against the fake server's Batches API."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from evalgate.results import CaseResult, latest_by_item, read_results
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model
from tests.helpers import evalgate_command, run_evalgate

# Short waits so the tests do not sit in the production polling intervals.
FAST = {"EVALGATE_BATCH_SEND_DELAY_S": "0.2", "EVALGATE_BATCH_POLL_S": "0.1"}


def batch_suite(
    base_url: str, model: str, *, cases: int, online_twin: bool = False, cache: bool = False
) -> str:
    rows = "\n".join(f'  - {{id: q{i}, vars: {{q: "n{i}", a: "n{i}"}}}}' for i in range(cases))
    flag = str(cache).lower()
    twin = f"  - {{id: online, tier: t, max_tokens: 8, cache: {flag}}}\n" if online_twin else ""
    batched = f"  - {{id: batched, tier: t, max_tokens: 8, batch: true, cache: {flag}}}"
    return f"""\
suite: batch-demo
tiers:
  t: {{model: "openai/{model}", api_base: "{base_url}",
      price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
prompt:
  - {{role: user, content: "{{{{ q }}}}"}}
assert:
  - {{type: contains, value: "{{{{ a }}}}"}}
configs:
{twin}{batched}
cases:
{rows}
"""


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **FAST, **extra}


def results(cwd: Path) -> dict[str, CaseResult]:
    files = list((cwd / "reports" / "runs").glob("*/results.jsonl"))
    assert len(files) == 1
    return {f"{k.case}/{k.config}": r for k, r in latest_by_item(read_results(files[0])).items()}


def batch_files(cwd: Path) -> list[Path]:
    """Records of created batches (an ``intent-*`` record is written before creation)."""
    found = (cwd / "reports" / "runs").glob("*/batches/*.json")
    return [p for p in found if not p.name.startswith("intent-")]


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:8]


def test_batch_config_matches_its_online_twin_at_half_the_cost(tmp_path, fake_server, key) -> None:
    cases = 2000
    model = make_model("fake", key=key)
    (tmp_path / "s.yaml").write_text(
        batch_suite(fake_server.base_url, model, cases=cases, online_twin=True)
    )
    proc = run_evalgate(tmp_path, "-q", "--evalgate-concurrency", "16", env=env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = results(tmp_path)
    assert len(got) == 2 * cases
    for i in range(cases):
        online, batched = got[f"q{i}/online"].call, got[f"q{i}/batched"].call
        assert batched.error is None and online.error is None
        assert batched.output == online.output == f"echo: n{i}"
        assert (batched.input_tokens, batched.output_tokens) == (
            online.input_tokens,
            online.output_tokens,
        )
        assert batched.cost_usd == pytest.approx(online.cost_usd / 2)
        assert batched.ttft_ms is None  # a batch has no time to first token
    assert fake_server.batch_submissions(key) == 1  # every request in one batch
    # Offline: its turnaround is reported apart, never as a per-call latency.
    assert "batched is a batch config (offline): batch turnaround p50" in proc.stdout
    assert "online price x 0.5 (documented batch discount)" in proc.stdout
    assert fake_server.request_count(key) == 2 * cases  # cases online + cases in the batch


def test_run_killed_while_polling_resumes_without_a_second_submission(tmp_path, key) -> None:
    with FakeOpenAIServer() as server:
        model = make_model("fake", key=key, batch_ms=6000)
        (tmp_path / "s.yaml").write_text(batch_suite(server.base_url, model, cases=30))
        cmd = evalgate_command("--evalgate-cache-dir", str(tmp_path / ".cache"))
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while not batch_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # polling now: the batch is due in 6 s
        proc.wait()
        assert server.batch_submissions(key) == 1
        assert not list((tmp_path / "reports" / "runs").glob("*/results.jsonl")) or not results(
            tmp_path
        )

        resumed = run_evalgate(tmp_path, "--evalgate-resume", env=env())
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert server.batch_submissions(key) == 1  # polled the stored batch, paid once
        got = results(tmp_path)
        assert len(got) == 30
        assert all(
            r.call.output == f"echo: n{i}"
            for i, r in enumerate(got[f"q{j}/batched"] for j in range(30))
        )
        assert server.request_count(key) == 30


def test_expired_batch_resubmits_only_the_missing_requests(tmp_path, fake_server, key) -> None:
    model = make_model("fake", key=key, batch_expire=1, expire_keep=4)
    (tmp_path / "s.yaml").write_text(batch_suite(fake_server.base_url, model, cases=10))
    proc = run_evalgate(tmp_path, env=env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = results(tmp_path)
    assert len(got) == 10 and all(r.call.error is None for r in got.values())
    assert fake_server.batch_submissions(key) == 2
    sizes = sorted(
        n
        for b, n in fake_server.batches()["requests"].items()
        if b in {*(p.stem for p in batch_files(tmp_path))}
    )
    assert sizes == [6, 10]  # the expired batch's 6 unanswered requests, and only them
    assert fake_server.request_count(key) == 10  # each request answered once


def test_per_request_errors_become_error_results(tmp_path, fake_server, key) -> None:
    model = make_model("fake", key=key, fail="400:2")
    (tmp_path / "s.yaml").write_text(batch_suite(fake_server.base_url, model, cases=6))
    run_evalgate(tmp_path, env=env())
    got = results(tmp_path)
    errors = [r.call.error for r in got.values() if r.call.error]
    assert len(errors) == 2 and all("HTTP 400" in e for e in errors)
    assert fake_server.batch_submissions(key) == 1  # a request error is not resubmitted


def test_provider_limits_split_a_suite_into_several_batches(tmp_path, fake_server, key) -> None:
    model = make_model("fake", key=key)
    (tmp_path / "s.yaml").write_text(batch_suite(fake_server.base_url, model, cases=20))
    proc = run_evalgate(tmp_path, env=env(EVALGATE_BATCH_MAX_REQUESTS="7"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(results(tmp_path)) == 20
    assert fake_server.batch_submissions(key) == 3
    mine = {p.stem for p in batch_files(tmp_path)}
    sizes = sorted(n for b, n in fake_server.batches()["requests"].items() if b in mine)
    assert sizes == [6, 7, 7]


def test_cached_answers_are_never_sent_to_a_batch(tmp_path, fake_server, key) -> None:
    model = make_model("fake", key=key)
    suite = tmp_path / "s.yaml"
    # The online config alone fills the cache; then the batch config asks the same requests.
    text = batch_suite(fake_server.base_url, model, cases=8, online_twin=True, cache=True)
    suite.write_text(text.replace("  - {id: batched", "#  - {id: batched"))
    assert run_evalgate(tmp_path, env=env()).returncode == 0
    suite.write_text(text.replace("  - {id: online", "#  - {id: online"))
    (tmp_path / "reports").rename(tmp_path / "reports-1")
    proc = run_evalgate(tmp_path, env=env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = results(tmp_path)
    assert len(got) == 8 and all(r.call.cached for r in got.values())
    assert fake_server.batch_submissions(key) == 0


def test_batch_on_a_tier_without_a_batch_api_is_a_one_line_error(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text(
        """\
suite: s
tiers:
  t: {model: "anthropic/claude-3-haiku-20240307"}
prompt:
  - {role: user, content: "hi"}
configs:
  - {id: a, tier: t, batch: true}
cases:
  - {id: c}
"""
    )
    proc = run_evalgate(tmp_path)
    assert proc.returncode != 0
    assert "s.yaml:7: configs[0].batch: batch not supported for anthropic/" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_ctrl_c_cancels_the_runs_batches(tmp_path, key) -> None:
    with FakeOpenAIServer() as server:
        model = make_model("fake", key=key, batch_ms=600000)
        (tmp_path / "s.yaml").write_text(batch_suite(server.base_url, model, cases=5))
        cmd = evalgate_command("--evalgate-cache-dir", str(tmp_path / ".cache"))
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # As from a terminal: a runner that started us in the background (SIGINT
            # ignored, which the child inherits) must not make pytest deaf to Ctrl-C.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 60
        while not batch_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert server.batches()["cancelled"] == 1
        assert "cancelled batch batch_fake" in err


def test_with_xdist_each_worker_sends_its_own_batch(tmp_path, fake_server, key) -> None:
    model = make_model("fake", key=key)
    (tmp_path / "s.yaml").write_text(batch_suite(fake_server.base_url, model, cases=40))
    proc = run_evalgate(tmp_path, "-n", "2", env=env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = results(tmp_path)
    assert [got[f"q{i}/batched"].call.output for i in range(40)] == [
        f"echo: n{i}" for i in range(40)
    ]
    assert fake_server.batch_submissions(key) == 2  # one per worker, each request once
    assert fake_server.request_count(key) == 40


def test_a_stored_batch_the_server_no_longer_knows_is_submitted_again(tmp_path, key) -> None:
    with FakeOpenAIServer() as server:
        model = make_model("fake", key=key, batch_ms=4000)
        (tmp_path / "s.yaml").write_text(batch_suite(server.base_url, model, cases=4))
        cmd = evalgate_command("--evalgate-cache-dir", str(tmp_path / ".cache"))
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while not batch_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        port = server.port
    # A restarted server on the same address: the stored batch id is unknown (HTTP 404).
    with FakeOpenAIServer(port=port) as fresh:
        resumed = run_evalgate(tmp_path, "--evalgate-resume", env=env())
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert len(results(tmp_path)) == 4
        assert fresh.batch_submissions(key) == 1
