"""litellm starts with the first call that uses it, not with the engine.

A run whose tiers all go native never spawns the litellm worker processes nor imports or
warms up litellm; the first litellm call starts them once (however many such calls arrive
together), and its latency and timeout do not include that start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.engine.engine import Engine
from evalgate.engine.retry import RetryPolicy
from evalgate.suite.model import Price
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model

ROOT = Path(__file__).resolve().parents[2]
PRICE = Price(input_per_mtok=1.0, output_per_mtok=2.0)


def pool_children(pid: int) -> set[int]:
    """Live (not yet reaped) evalgate worker processes whose parent is ``pid``."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        # The command name (field 2) may hold spaces and parentheses: split after the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"evalgate.engine.procpool" in cmdline:
            found.add(int(entry))
    return found


def spec(model: str, transport: str, *, timeout_s: float = 60.0) -> CallSpec:
    return CallSpec(
        model=model,
        messages=({"role": "user", "content": "hello"},),
        max_tokens=16,
        temperature=0.0,
        stream=True,
        repeat=0,
        tier="t",
        price=PRICE,
        timeout_s=timeout_s,
        transport=transport,
    )


# A fresh interpreter: the test process may have imported litellm for other tests.
NATIVE_ONLY = """
import json, os, sys
from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.engine.engine import Engine
from evalgate.suite.model import Price
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model
sys.path.insert(0, {tests!r})
from test_engine_lazy_pool import pool_children

processes = int(sys.argv[1])
with FakeOpenAIServer() as server:
    engine = Engine(
        lambda s: Endpoint(f"openai/{{s.model}}", server.base_url, "k"),
        concurrency=50, processes=processes, warm_up=True,
    )
    specs = [
        CallSpec(model=make_model(reply="hi there"),
                 messages=({{"role": "user", "content": f"q{{i}}"}},), max_tokens=8,
                 temperature=0.0, stream=True, repeat=0, tier="t",
                 price=Price(input_per_mtok=1.0, output_per_mtok=2.0))
        for i in range(20)
    ]
    results = [f.result(timeout=120) for f in [engine.submit(s) for s in specs]]
    report = {{
        "ok": sum(r.error is None and r.output == "hi there" for r in results),
        "litellm_imported": "litellm" in sys.modules,
        "children": len(pool_children(os.getpid())),
        "processes": engine.processes,
    }}
    engine.close()
print(json.dumps(report))
"""


def run_script(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("processes", [0, 2])
def test_native_only_run_never_starts_litellm(processes: int) -> None:
    report = run_script(NATIVE_ONLY.format(tests=str(Path(__file__).parent)), str(processes))
    assert report == {
        "ok": 20,
        "litellm_imported": False,  # neither imported nor warmed up in this process
        "children": 0,  # no worker process was ever spawned
        "processes": 0,
    }


def test_first_litellm_calls_start_the_pool_once_outside_their_latency(
    fake_server: FakeOpenAIServer,
) -> None:
    me = os.getpid()
    before = pool_children(me)
    key = uuid.uuid4().hex[:8]
    engine = Engine(
        lambda s: Endpoint(f"openai/{s.model}", fake_server.base_url, "test-key"),
        concurrency=8,
        processes=2,
        warm_up=True,
        # One attempt: a first call whose timeout ran during the start would fail, not retry.
        retry=RetryPolicy(max_attempts=1),
    )
    try:
        assert pool_children(me) == before  # nothing spawned with the engine
        assert engine.processes == 0 and engine.litellm_startup_s is None
        # The workers import litellm (seconds): the timeout is shorter than their start on
        # this machine, and only the attempt itself may count against it.
        specs = [
            spec(make_model(reply=f"reply {i}", key=key), "litellm", timeout_s=3.0)
            for i in range(6)
        ]
        submitted = time.perf_counter()
        results = [f.result(timeout=300) for f in [engine.submit(s) for s in specs]]
        elapsed_ms = (time.perf_counter() - submitted) * 1000
        assert [(r.error, r.output, r.attempts) for r in results] == [
            (None, f"reply {i}", 1) for i in range(6)
        ]
        assert fake_server.request_count(key) == 6
        started = pool_children(me) - before
        assert len(started) == 2 and engine.processes == 2  # one pool for six first calls
        startup_ms = engine.litellm_startup_s * 1000  # type: ignore[operator]
        # Every attempt ran after the start had finished: its latency and TTFT fit in what
        # was left of the wait once the start was over.
        for r in results:
            assert r.ttft_ms is not None and r.ttft_ms <= r.latency_ms
            assert r.latency_ms <= elapsed_ms - startup_ms
        # Later calls reuse the same workers.
        assert engine.submit(spec(make_model(key=key), "litellm")).result(timeout=60).error is None
        assert pool_children(me) - before == started
    finally:
        engine.close()
    assert pool_children(me) & started == set()  # reaped


BROKEN_LITELLM = """
import json, sys
from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.engine.engine import Engine
from evalgate.engine.retry import RetryPolicy
from evalgate.suite.model import Price
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model

with FakeOpenAIServer() as server:
    engine = Engine(
        lambda s: Endpoint(f"openai/{s.model}", server.base_url, "k"),
        processes=int(sys.argv[1]), warm_up=True, retry=RetryPolicy(max_attempts=2, base_s=0.01),
    )
    def call(transport):
        return CallSpec(model=make_model(reply="hi"), messages=({"role": "user", "content": "q"},),
                        max_tokens=8, temperature=0.0, stream=True, repeat=0, tier="t",
                        price=Price(input_per_mtok=1.0, output_per_mtok=2.0), transport=transport)
    futures = [engine.submit(call(t)) for t in ("litellm", "native", "litellm")]
    results = [f.result(timeout=120) for f in futures]
    engine.close()
print(json.dumps([[r.output, r.error] for r in results]))
"""


@pytest.mark.parametrize("processes", [0, 2])
def test_litellm_that_cannot_start_fails_its_calls_only(tmp_path: Path, processes: int) -> None:
    # An installation whose litellm is broken: importing it raises.
    (tmp_path / "litellm").mkdir()
    (tmp_path / "litellm" / "__init__.py").write_text(
        "raise ImportError('litellm is broken here')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    (first, native, second) = run_script(BROKEN_LITELLM, str(processes), env=env)
    assert native == ["hi", None]  # the native tier is not affected
    for output, error in (first, second):
        assert output == "" and error is not None and "litellm is broken here" in error
