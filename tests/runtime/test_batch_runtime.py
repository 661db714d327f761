"""policy.batch(): offline requests as provider batches, through litellm's batch functions
to the fake server's Files/Batches endpoints, on SQLite and Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import (
    LimitExceeded,
    LimitOptions,
    Policy,
    PolicyError,
    serve_local_models,
)
from evalgate.runtime.batch import BATCH_DISCOUNT
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model
from tests.integration.test_local_model import requires_smol

ROOT = Path(__file__).resolve().parents[2]
NOON = (time.time() // 86400) * 86400 + 43200  # today's noon, UTC (limits' windows)
PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 8.0}


def feature(model: str, base: str, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": f"openai/{model}",
        "api_base": base,
        "api_key_env": None,
        "price": PRICE,
        "timeout_s": 10.0,
        "fallbacks": [],
        "context_trim": None,
        "max_tokens": 8,
        "temperature": 0.0,
        "stream": False,
        "cache": {"mode": "exact", "ttl_s": 600.0},
        "evidence": {"suite_hash": "abc"},
    }
    entry.update(overrides)
    return entry


def write_policy(tmp_path: Path, features: dict[str, Any], limits: dict | None = None) -> Path:
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.py"
    data: dict[str, Any] = {"version": 1, "features": features}
    if limits is not None:
        data["limits"] = limits
    path.write_text(render_policy(data))
    return path


def ask(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "user": "u1", "tenant": "acme"}


def online_cost(tokens_in: int, tokens_out: int) -> float:
    return (tokens_in * PRICE["input_per_mtok"] + tokens_out * PRICE["output_per_mtok"]) / 1e6


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def policy_for(tmp_path, backend_spec):
    opened: list[Policy] = []

    def make(features: dict[str, Any], limits: dict | None = None) -> Policy:
        url, prefix = backend_spec
        path = write_policy(tmp_path, features, limits)
        clock = LimitOptions(clock=lambda: NOON)  # no test straddles a minute
        policy = Policy.load(path, backend=url, prefix=prefix, limits=clock)
        opened.append(policy)
        return policy

    yield make
    for policy in opened:
        policy.close()


def test_batch_answers_every_request_at_half_price_and_records_each_in_the_ledger(
    policy_for, fake_server, key
) -> None:
    policy = policy_for({"digest": feature(make_model(key=key), fake_server.base_url)})
    handle = policy.batch("digest", [ask(f"ticket {i}") for i in range(5)])
    results = handle.wait(timeout_s=60, poll_s=0.05)
    assert [r.content for r in results] == [f"echo: ticket {i}" for i in range(5)]
    assert all(r.error is None and not r.cached and r.batch_id for r in results)
    assert fake_server.batch_submissions(key) == 1 and fake_server.request_count(key) == 5
    policy.ledger.flush()
    records = [r for r in policy.ledger.read() if r.feature == "digest"]
    assert len(records) == 5
    for record in records:
        assert record.batch_id == results[0].batch_id and record.error is None
        assert (record.user, record.tenant) == ("u1", "acme")
        expected = online_cost(record.tokens_in, record.tokens_out) * BATCH_DISCOUNT
        assert record.cost_usd == pytest.approx(expected)


def test_cached_answers_are_never_sent_to_a_batch(policy_for, fake_server, key) -> None:
    policy = policy_for({"digest": feature(make_model(key=key), fake_server.base_url)})
    first = policy.batch("digest", [ask("a"), ask("b")]).wait(timeout_s=60, poll_s=0.05)
    assert [r.content for r in first] == ["echo: a", "echo: b"]
    handle = policy.batch("digest", [ask("a"), ask("b"), ask("c")])
    again = handle.wait(timeout_s=60, poll_s=0.05)
    assert [(r.content, r.cached) for r in again] == [
        ("echo: a", True),
        ("echo: b", True),
        ("echo: c", False),
    ]
    assert fake_server.request_count(key) == 3  # a, b once; c once
    policy.ledger.flush()
    hits = [r for r in policy.ledger.read() if r.cached]
    assert len(hits) == 2 and all(r.cost_usd == 0.0 for r in hits)


def test_tool_call_answers_from_a_batch_are_never_cached(policy_for, fake_server, key) -> None:
    """The batch path keeps the online rule (runtime.cache.is_cacheable): a tool-call
    answer (content null) was stored as an empty text answer and served as one."""
    model = make_model(key=key, tool_call="lookup_order")
    policy = policy_for({"digest": feature(model, fake_server.base_url)})
    first = policy.batch("digest", [ask("a")]).wait(timeout_s=60, poll_s=0.05)
    assert first[0].error is None and not first[0].cached
    again = policy.batch("digest", [ask("a")]).wait(timeout_s=60, poll_s=0.05)
    assert not again[0].cached
    assert fake_server.request_count(key) == 2
    online = policy.completion(feature="digest", messages=ask("a")["messages"], tenant="acme")
    assert online.choices[0].message.tool_calls  # not an empty cached text answer


def test_refusals_from_a_batch_are_never_cached_as_empty_text(policy_for, fake_server, key) -> None:
    """A refusal (content null, no tool call) is not a text answer: the online path never
    stores it, and the batch path stored it as "" and served that to later requests."""
    model = make_model(key=key, refusal="I can't help with that.")
    policy = policy_for({"digest": feature(model, fake_server.base_url)})
    first = policy.batch("digest", [ask("a")]).wait(timeout_s=60, poll_s=0.05)
    assert first[0].error is None and not first[0].cached
    again = policy.batch("digest", [ask("a")]).wait(timeout_s=60, poll_s=0.05)
    assert not again[0].cached
    online = policy.completion(feature="digest", messages=ask("a")["messages"], tenant="acme")
    assert online.choices[0].message.content is None  # the refusal, not a cached ""
    assert fake_server.request_count(key) == 3


def test_limits_are_reserved_for_the_whole_batch_all_or_none(policy_for, fake_server, key) -> None:
    policy = policy_for(
        {"digest": feature(make_model(key=key), fake_server.base_url, cache={"mode": "off"})},
        limits={"users": {"u1": {"requests_per_minute": 3}}},
    )
    with pytest.raises(LimitExceeded):
        policy.batch("digest", [ask(f"q{i}") for i in range(4)])
    assert fake_server.batch_submissions(key) == 0  # nothing sent
    # The refused batch left nothing reserved: three requests still fit.
    results = policy.batch("digest", [ask(f"q{i}") for i in range(3)]).wait(60, poll_s=0.05)
    assert all(r.error is None for r in results)
    with pytest.raises(LimitExceeded):
        policy.batch("digest", [ask("one more")])


def test_per_request_errors_land_in_the_ledger(policy_for, fake_server, key) -> None:
    model = make_model(key=key, fail="400:2")
    policy = policy_for({"digest": feature(model, fake_server.base_url, cache={"mode": "off"})})
    results = policy.batch("digest", [ask(f"q{i}") for i in range(4)]).wait(60, poll_s=0.05)
    errors = [r for r in results if r.error]
    assert len(errors) == 2 and all("HTTP 400" in r.error for r in errors)
    assert sum(r.content is not None for r in results) == 2
    policy.ledger.flush()
    records = list(policy.ledger.read())
    assert len(records) == 4 and sum(r.error is not None for r in records) == 2
    assert all(r.batch_id for r in records)


def test_expired_requests_are_submitted_again_alone(policy_for, fake_server, key) -> None:
    model = make_model(key=key, batch_expire=1, expire_keep=1)
    policy = policy_for({"digest": feature(model, fake_server.base_url, cache={"mode": "off"})})
    results = policy.batch("digest", [ask(f"q{i}") for i in range(3)]).wait(60, poll_s=0.05)
    assert [r.content for r in results] == [f"echo: q{i}" for i in range(3)]
    assert fake_server.batch_submissions(key) == 2
    assert fake_server.request_count(key) == 3  # the answered one was never sent again


def test_the_handle_is_awaitable(policy_for, fake_server, key) -> None:
    policy = policy_for({"digest": feature(make_model(key=key), fake_server.base_url)})

    async def main() -> list[Any]:
        handle = await policy.abatch("digest", [ask("x"), ask("y")])
        return await handle.wait_async(timeout_s=60, poll_s=0.05)

    results = asyncio.run(main())
    assert [r.content for r in results] == ["echo: x", "echo: y"]


def test_bad_requests_name_the_request(policy_for, fake_server, key) -> None:
    policy = policy_for({"digest": feature(make_model(key=key), fake_server.base_url)})
    with pytest.raises(PolicyError, match=r"requests\[1\]: expected a mapping with 'messages'"):
        policy.batch("digest", [ask("a"), {"user": "u1"}])
    with pytest.raises(PolicyError, match=r"requests\[0\]\.stream"):
        policy.batch("digest", [{**ask("a"), "stream": True}])
    with pytest.raises(PolicyError, match="not found"):
        policy.batch_handle("no-such-handle")
    assert fake_server.batch_submissions(key) == 0


# A process that submits a batch and dies: after storing the handle, or between creating
# the batch and storing its id.
_CHILD = """
import os, sys
from evalgate.runtime import LimitOptions, Policy
from evalgate.runtime import batch as b

path, url, prefix, when = sys.argv[1:5]
if when == "created":
    save = b.BatchHandle._save
    def dying_save(self, state):
        if any(g["batch_id"] for g in state["groups"]):
            os._exit(9)  # the batch exists on the server; its id never reaches the backend
        save(self, state)
    b.BatchHandle._save = dying_save
noon = float(sys.argv[5])  # one clock in both processes: no test straddles a minute
policy = Policy.load(
    path, backend=url, prefix=prefix, limits=LimitOptions(clock=lambda: noon)
)
handle = policy.batch("digest", [
    {"messages": [{"role": "user", "content": f"t{i}"}], "user": "u1"} for i in range(4)
])
print(handle.id, flush=True)
os._exit(0)  # killed while the batch runs: no wait, no close
"""


@pytest.mark.parametrize("when", ["submitted", "created"])
def test_a_new_process_picks_up_the_handle_without_resubmitting(
    tmp_path, backend_spec, key, when
) -> None:
    url, prefix = backend_spec
    with FakeOpenAIServer() as server:
        model = make_model(key=key, batch_ms=500)
        path = write_policy(
            tmp_path,
            {"digest": feature(model, server.base_url, cache={"mode": "off"})},
            limits={"users": {"u1": {"requests_per_minute": 10}}},
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), url, prefix, when, str(NOON)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert server.batch_submissions(key) == 1, proc.stderr[-2000:]
        policy = Policy.load(
            path, backend=url, prefix=prefix, limits=LimitOptions(clock=lambda: NOON)
        )
        try:
            if when == "submitted":
                assert proc.returncode == 0, proc.stderr[-2000:]
                handle_id = proc.stdout.strip()
            else:
                assert proc.returncode == 9, proc.stderr[-2000:]
                handle_id = _only_handle(policy)
            results = policy.batch_handle(handle_id).wait(timeout_s=60, poll_s=0.05)
            assert [r.content for r in results] == [f"echo: t{i}" for i in range(4)]
            assert server.batch_submissions(key) == 1  # found by its id or its tag: paid once
            policy.ledger.flush()
            assert len([r for r in policy.ledger.read() if r.batch_id]) == 4
            # The reservations made by the dead process were settled here: 4 used of 10.
            policy.batch("digest", [ask(f"more {i}") for i in range(6)])
            with pytest.raises(LimitExceeded):
                policy.batch("digest", [ask("one too many")])
        finally:
            policy.close()


def _only_handle(policy: Policy) -> str:
    """The one stored handle's id (the dying child never printed it)."""
    backend = policy.backend
    if hasattr(backend, "_r"):
        keys = [k.decode() for k in backend._r.scan_iter(match=backend._cache + "evalgate-batch:*")]
        return keys[0].rpartition("evalgate-batch:")[2]
    import sqlite3

    rows = sqlite3.connect(backend.path).execute(
        "SELECT key FROM cache WHERE key LIKE 'evalgate-batch:%'"
    )
    (found,) = rows.fetchall()
    return found[0].rpartition(":")[2]


@pytest.mark.parametrize("prefix", ["hosted_vllm", "litellm_proxy"])
def test_litellm_batch_functions_serve_other_openai_compatible_providers(
    tmp_path, fake_server, key, prefix
) -> None:
    # litellm's create_file/create_batch/retrieve_batch/file_content for another provider
    # prefix, pointed at the fake server (Azure, Vertex and Bedrock need their clouds).
    entry = {
        **feature(make_model(key=key), fake_server.base_url),
        "model": f"{prefix}/fake?key={key}",
    }
    path = write_policy(tmp_path, {"digest": entry})
    with Policy.load(path, backend=f"sqlite:///{tmp_path / 's.sqlite3'}") as policy:
        results = policy.batch("digest", [ask("p"), ask("q")]).wait(60, poll_s=0.05)
    assert [r.content for r in results] == ["echo: p", "echo: q"]
    assert fake_server.batch_submissions(key) == 1


@pytest.mark.integration
@requires_smol
def test_a_local_model_batch_gives_the_online_answers_at_half_price(tmp_path) -> None:
    entry = {
        "model": "local/smollm2-135m",
        "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4},
        "max_tokens": 6,
        "temperature": 0.0,
        "cache": {"mode": "off"},
        "evidence": {"suite_hash": "local"},
    }
    path = write_policy(tmp_path, {"geo": entry})
    questions = ["What is the capital of France?", "What is the capital of Japan?"]
    with (
        Policy.load(path, backend=f"sqlite:///{tmp_path / 's.sqlite3'}") as policy,
        serve_local_models(policy),
    ):
        batched = policy.batch("geo", [ask(q) for q in questions]).wait(300, poll_s=0.2)
        online = [policy.completion(feature="geo", messages=ask(q)["messages"]) for q in questions]
        policy.ledger.flush()
        records = list(policy.ledger.read())
    assert [r.content for r in batched] == [o.choices[0].message.content for o in online]
    batch_records = [r for r in records if r.batch_id]
    assert len(batch_records) == 2
    for record in batch_records:  # the tier's price, halved
        full = (record.tokens_in * 0.1 + record.tokens_out * 0.4) / 1e6
        assert record.cost_usd == pytest.approx(full * 0.5)
