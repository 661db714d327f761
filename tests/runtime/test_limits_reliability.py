"""Limits under load and failure: real processes, real SQLite and Redis, a real server.

- 16 processes x 50 concurrent calls against one user's cost budget;
- a process SIGKILLed in the middle of a call;
- a Redis server stopped and restarted under a running application.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import LimitExceeded, LimitOptions, LimitsUnavailable, Policy
from evalgate.runtime.backends import open_backend, open_limit_store
from evalgate.runtime.ledger import Ledger
from evalgate.runtime.limits import DAY_S
from evalgate.testing.fake_openai import make_model

OUT_PRICE = {"input_per_mtok": 0.0, "output_per_mtok": 1000.0}  # $0.001 per output token
REPLY8 = "one two three four five six seven eight"
CALL_COST = 0.008  # 8 output tokens, the cap: worst case == real cost


def write_policy(path: Path, model: str, base: str, limits: dict[str, Any]) -> Path:
    entry = {
        "model": f"openai/{model}",
        "api_base": base,
        "api_key_env": None,
        "price": OUT_PRICE,
        "timeout_s": 60.0,
        "fallbacks": [],
        "context_trim": None,
        "max_tokens": 8,
        "temperature": 0.0,
        "stream": False,
        "cache": {"mode": "off"},
        "evidence": {},
    }
    path.write_text(render_policy({"version": 1, "features": {"qa": entry}, "limits": limits}))
    return path


def spend_key(user: str) -> str:
    return f"user|{user}|cost_per_day_usd|{int(time.time() // DAY_S)}"


@pytest.fixture
def limits_backend(backend_spec: tuple[str, str]):
    """(url, prefix) of a fresh backend; its Redis limit counters are removed after."""
    yield backend_spec
    url, prefix = backend_spec
    if url.startswith("redis"):
        from evalgate.runtime.backends.redis_limits import RedisLimitStore

        store = RedisLimitStore.from_url(url, prefix=prefix)
        store.delete_all()
        store.close()


# One launcher imports litellm once, then forks the workers: 16 imports of litellm would
# take longer than the test itself. Each worker opens its own Policy after the fork.
LAUNCHER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    T0 = time.time()
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm
    from evalgate.runtime import LimitExceeded, Policy
    policy_path, url, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    procs, per_proc = int(sys.argv[4]), int(sys.argv[5])

    async def worker(policy, w):
        async def one(i):
            try:
                await policy.acompletion(
                    feature="qa", user="budget-user", tenant=f"{w}-{i}",
                    messages=[{"role": "user", "content": f"question {w} {i}"}],
                )
                return "ok"
            except LimitExceeded:
                return "refused"
            except Exception as exc:
                return f"error {type(exc).__name__}: {exc}"
        return await asyncio.gather(*(one(i) for i in range(per_proc)))

    imported = time.time()
    start = time.time() + 0.5
    children = []
    for w in range(procs):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            policy = Policy.load(policy_path, backend=url, prefix=prefix)
            while time.time() < start:
                time.sleep(0.001)
            outcomes = asyncio.run(worker(policy, w))
            policy.close()
            os.write(write, json.dumps(outcomes).encode())
            os.close(write)
            os._exit(0)
        os.close(write)
        children.append((pid, read))
    results = []
    for pid, read in children:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        results.append({"status": status, "outcomes": json.loads(data or b"null")})
    print(json.dumps(results))
    print(f"imported in {imported - T0:.2f} s, ran in {time.time() - start:.2f} s", file=sys.stderr)
    """
)


def test_sixteen_processes_never_overspend_one_budget(
    tmp_path, limits_backend, fake_server
) -> None:
    url, prefix = limits_backend
    key = uuid.uuid4().hex[:10]
    allowed = 100  # of 800 calls
    budget = allowed * CALL_COST
    model = make_model(key=key, reply=REPLY8, jitter_ms=40)  # random latency per request
    policy_path = write_policy(
        tmp_path / "policy.py",
        model,
        fake_server.base_url,
        {"users": {"budget-user": {"cost_per_day_usd": budget}}},
    )
    procs, per_proc = 16, 50
    launcher = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(policy_path), url, prefix, str(procs), str(per_proc)],
        capture_output=True,
        text=True,
        timeout=300,  # a deadlock fails here; the run itself takes seconds
    )
    assert launcher.returncode == 0, launcher.stderr[-3000:]
    print(launcher.stderr.strip().splitlines()[-1])  # shown with -s: import and run time
    results = json.loads(launcher.stdout.strip().splitlines()[-1])
    assert [r["status"] for r in results] == [0] * procs
    outcomes = Counter(o for r in results for o in r["outcomes"])
    assert set(outcomes) <= {"ok", "refused"}, outcomes
    admitted = outcomes["ok"]

    with open_backend(url, prefix=prefix) as backend:
        store = open_limit_store(backend)
        settled, held = store.usage(spend_key("budget-user"), time.time())  # type: ignore[attr-defined]
        store.close()
        records = list(Ledger(backend).read())

    # Never over budget by more than one call's worst case (here: not at all, since the
    # worst case is the real cost), and every call the budget allows was let through.
    assert settled <= budget + CALL_COST + 1e-9
    assert abs(admitted - allowed) <= 1, outcomes
    assert settled == pytest.approx(admitted * CALL_COST)
    assert held == 0.0
    assert fake_server.request_count(key) == admitted
    # Every call is in the ledger exactly once, refusals included.
    tenants = Counter(r.tenant for r in records)
    assert tenants == Counter({f"{w}-{i}": 1 for w in range(procs) for i in range(per_proc)})
    refusals = [r for r in records if r.error and r.error.startswith("LimitExceeded")]
    assert len(refusals) == outcomes["refused"]
    assert sum(r.cost_usd or 0.0 for r in records) == pytest.approx(settled)


KILLED = textwrap.dedent(
    """
    import os, sys
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm  # before the reservation: importing it takes seconds
    from evalgate.runtime import LimitOptions, Policy
    policy_path, url, prefix, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    policy = Policy.load(policy_path, backend=url, prefix=prefix,
                         limits=LimitOptions(reservation_ttl_s=ttl))
    print("calling", flush=True)
    policy.completion(feature="qa", user="victim", messages=[{"role": "user", "content": "hi"}])
    """
)


def test_a_process_killed_mid_call_leaves_no_permanent_reservation(
    tmp_path, limits_backend, fake_server
) -> None:
    url, prefix = limits_backend
    key = uuid.uuid4().hex[:10]
    ttl = 5.0
    # The first request hangs (the victim is killed while waiting); later ones answer.
    model = make_model(key=key, reply=REPLY8, hang_ms=60_000, hang_times=1)
    policy_path = write_policy(
        tmp_path / "policy.py",
        model,
        fake_server.base_url,
        {"users": {"victim": {"cost_per_day_usd": CALL_COST}}},  # room for one call
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(policy_path), url, prefix, str(ttl)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout is not None and victim.stdout.readline() == "calling\n"
        calling = time.time()  # its reservation is made after this, so expires after +ttl
        deadline = calling + 120
        while fake_server.request_count(key) < 1:  # its call has reached the model
            assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
            assert time.time() < deadline, "the victim never called the model"
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()

    policy = Policy.load(
        policy_path, backend=url, prefix=prefix, limits=LimitOptions(reservation_ttl_s=ttl)
    )
    messages = [{"role": "user", "content": "hi"}]
    if time.time() < calling + ttl:  # the dead call's reservation still holds
        with pytest.raises(LimitExceeded):
            policy.completion(feature="qa", user="victim", messages=messages)
    deadline = time.time() + 60
    while True:  # ... until it expires, a bounded time after the call
        try:
            policy.completion(feature="qa", user="victim", messages=messages)
            break
        except LimitExceeded:
            assert time.time() < deadline, "the killed call's reservation never expired"
            time.sleep(0.2)
    assert time.time() >= calling + ttl  # not before its TTL
    with pytest.raises(LimitExceeded):  # the budget holds again after the one call
        policy.completion(feature="qa", user="victim", messages=messages)
    policy.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            assert proc.poll() is None, "redis-server exited"
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_restarted_mid_test_fails_closed_then_recovers(tmp_path, fake_server) -> None:
    pytest.importorskip("redis")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    key = uuid.uuid4().hex[:10]
    model = make_model(key=key, reply="ok")
    policy_path = write_policy(
        tmp_path / "policy.py",
        model,
        fake_server.base_url,
        {"users": {"*": {"requests_per_minute": 1000}}},
    )
    server = start_redis(port)
    try:
        closed = Policy.load(policy_path, backend=url)
        open_ = Policy.load(policy_path, backend=url, limits=LimitOptions(fail_open=True))
        messages = [{"role": "user", "content": "hi"}]
        closed.completion(feature="qa", user="u1", messages=messages)
        stop(server)

        with pytest.raises(LimitsUnavailable) as down:
            closed.completion(feature="qa", user="u1", messages=messages)
        text = str(down.value)
        assert f"127.0.0.1:{port}" in text and "fail closed" in text and "\n" not in text
        assert fake_server.request_count(key) == 1  # refused before the model
        # fail-open admits unchecked (the ledger write fails too, and is only logged)
        response = open_.completion(feature="qa", user="u1", messages=messages)
        assert response.choices[0].message.content == "ok"
        assert fake_server.request_count(key) == 2

        server = start_redis(port)  # empty: it saved nothing
        closed.completion(feature="qa", user="u1", messages=messages)  # reconnects by itself
        closed.ledger.flush()
        assert fake_server.request_count(key) == 3
        with open_backend(url) as backend:
            store = open_limit_store(backend)
            now = time.time()
            settled, held = store.usage(f"user|u1|requests_per_minute|{int(now // 60)}", now)  # type: ignore[attr-defined]
            store.close()
        assert settled <= 1.0 and held == 0.0  # the restarted server kept nothing
        closed.close()
        open_.close()
    finally:
        stop(server)
