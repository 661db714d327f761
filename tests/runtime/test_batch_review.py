"""policy.batch() under attack: two collectors of one handle, a submission that fails
before any batch exists, hostile request values, provider per-batch limits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalgate.runtime import LimitExceeded, LimitOptions, Policy, PolicyError, batch_requests
from evalgate.runtime import batch as batch_module
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model
from tests.runtime import test_batch_runtime as base
from tests.runtime.test_batch_runtime import NOON, ROOT, ask, feature, write_policy

key = base.key  # the fixtures of the batch tests
policy_for = base.policy_for


@pytest.fixture
def two_policies(tmp_path, backend_spec):
    """Two policies on one backend: what two processes holding the same handle see."""
    opened: list[Policy] = []

    def make(features: dict[str, Any], limits: dict | None = None) -> tuple[Policy, Policy]:
        url, prefix = backend_spec
        path = write_policy(tmp_path, features, limits)
        for _ in range(2):
            clock = LimitOptions(clock=lambda: NOON)
            opened.append(Policy.load(path, backend=url, prefix=prefix, limits=clock))
        return opened[-2], opened[-1]

    yield make
    for policy in opened:
        policy.close()


def _ledger(policy: Policy) -> list[Any]:
    policy.ledger.flush()
    return [r for r in policy.ledger.read() if r.feature == "digest"]


@pytest.mark.parametrize("lease", ["held", "expired"])
def test_two_collectors_of_one_handle_record_each_request_once(
    two_policies, fake_server, key, monkeypatch, lease
) -> None:
    """The second collector starts while the first is recording answers (its lease held,
    or already expired): each request lands in the ledger exactly once, settles once."""
    first, second = two_policies(
        {"digest": feature(make_model(key=key), fake_server.base_url, cache={"mode": "off"})},
        limits={"users": {"u1": {"requests_per_minute": 8}}},
    )
    handle = first.batch("digest", [ask(f"t{i}") for i in range(4)])
    if lease == "expired":
        monkeypatch.setattr(batch_module, "LEASE_S", 0.001)
    answer = batch_module.BatchHandle._answer
    interleaved: list[bool] = []

    def answer_while_another_collects(self, *args: Any) -> None:
        if not interleaved:
            interleaved.append(True)
            time.sleep(0.01)  # past an expired lease
            second.batch_handle(handle.id).poll()  # the other process, at the same moment
        answer(self, *args)

    monkeypatch.setattr(batch_module.BatchHandle, "_answer", answer_while_another_collects)
    while not handle.poll():
        time.sleep(0.05)
    monkeypatch.setattr(batch_module.BatchHandle, "_answer", answer)
    results = second.batch_handle(handle.id).wait(timeout_s=60, poll_s=0.05)
    assert [r.content for r in results] == [f"echo: t{i}" for i in range(4)]
    assert interleaved and fake_server.batch_submissions(key) == 1
    second.ledger.flush()  # its records too (the ledger writes in the background)
    records = [r for r in _ledger(first) if r.batch_id]
    assert sorted(r.tokens_in for r in records) == sorted(r.tokens_in for r in results)
    assert len(records) == 4
    # Settled once each: 4 used of 8 (a double settle would count 8).
    first.batch("digest", [ask(f"more {i}") for i in range(4)])
    with pytest.raises(LimitExceeded):
        first.batch("digest", [ask("one too many")])


def test_a_request_the_state_cannot_store_releases_every_reservation(
    policy_for, fake_server, key
) -> None:
    """A value that is not JSON (the handle's state cannot be stored) fails the submission
    in one line naming the request and key, and nothing stays reserved for 26 hours."""
    policy = policy_for(
        {"digest": feature(make_model(key=key), fake_server.base_url, cache={"mode": "off"})},
        limits={"users": {"u1": {"requests_per_minute": 2}}},
    )
    with pytest.raises(PolicyError, match=r"requests\[1\]\.seed: .*JSON") as raised:
        policy.batch("digest", [ask("a"), {**ask("b"), "seed": object()}])
    assert "\n" not in str(raised.value)
    assert fake_server.batch_submissions(key) == 0
    results = policy.batch("digest", [ask("a"), ask("b")]).wait(timeout_s=60, poll_s=0.05)
    assert [r.content for r in results] == ["echo: a", "echo: b"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 1.5, True])
def test_a_bad_max_tokens_is_refused_before_anything_is_reserved(
    policy_for, fake_server, key, value
) -> None:
    policy = policy_for(
        {"digest": feature(make_model(key=key), fake_server.base_url, cache={"mode": "off"})},
        limits={"users": {"u1": {"requests_per_minute": 1}}},
    )
    with pytest.raises(PolicyError, match=r"requests\[0\]\.max_tokens"):
        policy.batch("digest", [{**ask("a"), "max_tokens": value}])
    assert fake_server.batch_submissions(key) == 0
    assert policy.batch("digest", [ask("a")]).wait(timeout_s=60, poll_s=0.05)[0].error is None


def test_an_empty_request_list_gives_a_finished_handle(policy_for, fake_server, key) -> None:
    policy = policy_for({"digest": feature(make_model(key=key), fake_server.base_url)})
    handle = policy.batch("digest", [])
    assert handle.poll() and handle.wait(timeout_s=5) == []
    assert fake_server.batch_submissions(key) == 0


def test_requests_over_the_provider_caps_split_into_several_batches(
    policy_for, fake_server, key, monkeypatch
) -> None:
    """OpenAI takes at most 50,000 requests and 200 MB per batch: more is split (here with
    the caps lowered, so the test stays small)."""
    monkeypatch.setattr(batch_requests, "MAX_REQUESTS_PER_BATCH", 3)
    policy = policy_for(
        {"digest": feature(make_model(key=key), fake_server.base_url, cache={"mode": "off"})}
    )
    results = policy.batch("digest", [ask(f"q{i}") for i in range(7)]).wait(60, poll_s=0.05)
    assert [r.content for r in results] == [f"echo: q{i}" for i in range(7)]
    assert fake_server.batch_submissions(key) == 3
    assert len({r.batch_id for r in results}) == 3
    monkeypatch.setattr(batch_requests, "MAX_REQUESTS_PER_BATCH", 1000)
    monkeypatch.setattr(batch_requests, "MAX_BATCH_BYTES", 600)  # about two lines each
    results = policy.batch("digest", [ask(f"r{i} " + "x" * 150) for i in range(6)]).wait(
        60, poll_s=0.05
    )
    assert [r.content for r in results] == [f"echo: r{i} " + "x" * 150 for i in range(6)]
    assert 1 < len({r.batch_id for r in results}) == fake_server.batch_submissions(key) - 3


class _OwnRedis:
    """A redis-server of this test's own (append-only file in ``tmp``), stopped and started
    again at will: a real outage, without touching the shared Redis."""

    def __init__(self, tmp: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.tmp), "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--save", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        import redis

        for _ in range(200):
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path) -> Iterator[_OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    server = _OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _redis_policy(
    tmp_path: Path, server: _OwnRedis, model: str, base_url: str, fail_open: bool = False
) -> Policy:
    path = write_policy(
        tmp_path,
        {"digest": feature(model, base_url, cache={"mode": "off"})},
        limits={"users": {"u1": {"requests_per_minute": 3}}},
    )
    return Policy.load(
        path,
        backend=server.url,
        prefix="t:",
        limits=LimitOptions(clock=lambda: NOON, fail_open=fail_open),
    )


def test_redis_down_while_collecting_the_handle_waits_it_out(
    tmp_path, own_redis, fake_server, key
) -> None:
    """Polls while the backend is down say 'not yet' (nothing collected, nothing lost); once
    it is back, the batch is collected once."""
    policy = _redis_policy(tmp_path, own_redis, make_model(key=key), fake_server.base_url)
    try:
        handle = policy.batch("digest", [ask(f"t{i}") for i in range(3)])
        own_redis.stop()
        assert handle.poll() is False
        with pytest.raises(TimeoutError):
            handle.wait(timeout_s=0.3, poll_s=0.05)
        own_redis.start()
        results = handle.wait(timeout_s=60, poll_s=0.05)
        assert [r.content for r in results] == [f"echo: t{i}" for i in range(3)]
        assert fake_server.batch_submissions(key) == 1
        assert len([r for r in _ledger(policy) if r.batch_id]) == 3
    finally:
        policy.close()


def test_redis_down_at_submission_sends_nothing_and_says_so(
    tmp_path, own_redis, fake_server, key
) -> None:
    """Limits failing open admit the requests; the handle cannot be stored, so nothing is
    sent (a batch no process could collect would be paid and lost)."""
    policy = _redis_policy(
        tmp_path, own_redis, make_model(key=key), fake_server.base_url, fail_open=True
    )
    try:
        own_redis.stop()
        with pytest.raises(PolicyError, match="nothing was sent") as raised:
            policy.batch("digest", [ask("a")])
        assert "\n" not in str(raised.value)
        assert fake_server.batch_submissions(key) == 0
        own_redis.start()
        # Nothing stayed reserved: the whole minute's 3 requests still fit.
        results = policy.batch("digest", [ask(f"b{i}") for i in range(3)]).wait(60, poll_s=0.05)
        assert all(r.error is None for r in results)
    finally:
        policy.close()


_COLLECTOR = """
import sys
from evalgate.runtime import LimitOptions, Policy

path, url, prefix, handle_id, noon = sys.argv[1:6]
policy = Policy.load(
    path, backend=url, prefix=prefix, limits=LimitOptions(clock=lambda: float(noon))
)
results = policy.batch_handle(handle_id).wait(timeout_s=120, poll_s=0.02, max_poll_s=0.02)
print(sum(r.error is None for r in results), flush=True)
policy.close()
"""


def test_two_processes_waiting_on_one_handle_record_each_request_once(
    tmp_path, backend_spec, fake_server, key
) -> None:
    url, prefix = backend_spec
    model = make_model(key=key, batch_ms=1500)  # both are polling when it completes
    path = write_policy(tmp_path, {"digest": feature(model, fake_server.base_url)})
    policy = Policy.load(path, backend=url, prefix=prefix, limits=LimitOptions(clock=lambda: NOON))
    try:
        handle = policy.batch("digest", [ask(f"t{i}") for i in range(30)])
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        argv = [sys.executable, "-c", _COLLECTOR, str(path), url, prefix, handle.id, str(NOON)]
        procs = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
        assert [o.strip() for o, _ in outs] == [b"30", b"30"]
        assert fake_server.batch_submissions(key) == 1
        assert len([r for r in _ledger(policy) if r.batch_id]) == 30
    finally:
        policy.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_provider_down_at_submission_or_while_polling_is_waited_out(policy_for, key) -> None:
    """A connection refused when creating the batch (or polling it) is not the requests'
    fault: the handle tries again on the next poll, and nothing ends as an error."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}/v1"
    policy = policy_for({"digest": feature(make_model(key=key), base, cache={"mode": "off"})})
    handle = policy.batch("digest", [ask("a"), ask("b")])  # nobody listens yet
    assert handle.poll() is False and handle.results() == [None, None]
    with FakeOpenAIServer(port=port) as server:
        results = handle.wait(timeout_s=60, poll_s=0.05)
        assert [r.content for r in results] == ["echo: a", "echo: b"]
        assert server.batch_submissions(key) == 1
    # The provider goes away while the next batch runs: polls say 'not yet'.
    with FakeOpenAIServer(port=port) as server:
        handle = policy.batch("digest", [ask("c")])
    assert handle.poll() is False
    with FakeOpenAIServer(port=port) as server:
        # A new server knows no batch of the old one: the request is submitted again.
        results = handle.wait(timeout_s=60, poll_s=0.05)
        assert [r.content for r in results] == ["echo: c"]


def test_cancel_ends_every_unanswered_request_once_and_never_resubmits(
    policy_for, fake_server, key
) -> None:
    model = make_model(key=key, batch_ms=60_000)
    policy = policy_for({"digest": feature(model, fake_server.base_url, cache={"mode": "off"})})
    handle = policy.batch("digest", [ask(f"c{i}") for i in range(3)])
    cancelled = policy.batch_handle(handle.id).cancel()  # from another handle object
    assert len(cancelled) == 1
    results = handle.wait(timeout_s=60, poll_s=0.05)
    assert all(r.content is None and cancelled[0] in r.error for r in results)
    assert fake_server.batch_submissions(key) == 1
    assert len([r for r in _ledger(policy) if r.error]) == 3


def test_a_batch_that_fails_every_time_gives_its_token_budget_back(
    policy_for, fake_server, key
) -> None:
    """Validation fails on each of the 3 submissions: each request ends as an error, and
    its day's token reservation is released (3 more requests fit the same budget)."""
    model = make_model(key=key, batch_fail=3)
    policy = policy_for(
        {"digest": feature(model, fake_server.base_url, cache={"mode": "off"})},
        limits={"users": {"u1": {"tokens_per_day": 150}}},
    )
    handle = policy.batch("digest", [ask(f"f{i}") for i in range(3)])
    reserved = policy.backend.cache_get("evalgate-batch:" + handle.id)
    per_request = json.loads(reserved)["requests"][0]["reservation"]["tokens"]
    assert 3 * per_request <= 150 < 6 * per_request  # the test's premise
    results = handle.wait(timeout_s=60, poll_s=0.05)
    assert all(r.error and "failed" in r.error for r in results)
    assert fake_server.batch_submissions(key) == 3
    again = policy.batch("digest", [ask(f"g{i}") for i in range(3)])
    assert again.wait(timeout_s=60, poll_s=0.05)[0].error is None
