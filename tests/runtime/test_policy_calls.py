"""The policy's call path through real litellm to the fault-injecting server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import litellm
import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import Policy, PolicyError, UnknownFeatureError
from evalgate.runtime.backends import Backend
from evalgate.testing.fake_openai import make_model
from evalgate.trim import trim_context

CONTEXT = (
    "The office opens at nine. Parking is behind the building. "
    "The refund window is 30 days from delivery. Staff lunch is at noon. "
    "The wifi password is on the fridge. Deliveries arrive on Tuesdays."
)
QUESTION = "How long is the refund window?"


def feature(model: str, base: str, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": f"openai/{model}",
        "api_base": base,
        "api_key_env": None,
        "price": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
        "timeout_s": 10.0,
        "fallbacks": [],
        "context_trim": None,
        "max_tokens": 8,
        "temperature": 0.0,
        "stream": True,
        "cache": {"mode": "exact", "ttl_s": 60.0},
        "evidence": {"suite_hash": "abc", "expected": {"cost_per_call_usd": 1e-5}},
    }
    entry.update(overrides)
    return entry


def route(model: str, base: str, timeout_s: float = 10.0) -> dict[str, Any]:
    return {
        "model": f"openai/{model}",
        "api_base": base,
        "api_key_env": None,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
        "timeout_s": timeout_s,
    }


def make_policy(tmp_path: Path, backend: Backend, features: dict[str, Any]) -> Policy:
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.py"
    path.write_text(render_policy({"version": 1, "features": features}))
    return Policy.load(path, backend=backend)


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:10]


def ask(text: str = "hello there") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def records(policy: Policy) -> list[Any]:
    return list(policy.ledger.read())


def test_routes_to_the_feature_model_and_records_the_call(
    tmp_path, backend, fake_server, key
) -> None:
    model = make_model(key=key, reply="thirty days")
    policy = make_policy(tmp_path, backend, {"qa": feature(model, fake_server.base_url)})
    response = policy.completion(feature="qa", user="u1", tenant="acme", messages=ask())
    assert isinstance(response, litellm.ModelResponse)
    assert response.choices[0].message.content == "thirty days"
    assert fake_server.request_count(key) == 1
    (record,) = records(policy)
    assert (record.feature, record.user, record.tenant) == ("qa", "u1", "acme")
    assert record.model == f"openai/{model}" and record.fallback == 0 and not record.cached
    assert (record.tokens_in, record.tokens_out) == (2, 2)
    assert record.cost_usd == pytest.approx((2 * 2.0 + 2 * 8.0) / 1e6)
    assert record.latency_ms > 0 and record.error is None and record.policy_hash == "abc"


def test_max_tokens_is_capped_never_raised(tmp_path, backend, fake_server, key) -> None:
    reply = " ".join(f"w{i}" for i in range(30))
    policy = make_policy(
        tmp_path,
        backend,
        {
            "qa": feature(
                make_model(key=key, reply=reply), fake_server.base_url, cache={"mode": "off"}
            )
        },
    )
    big = policy.completion(feature="qa", messages=ask(), max_tokens=500)
    assert big.usage.completion_tokens == 8 and big.choices[0].finish_reason == "length"
    small = policy.completion(feature="qa", messages=ask(), max_tokens=3)
    assert small.usage.completion_tokens == 3
    default = policy.completion(feature="qa", messages=ask())
    assert default.usage.completion_tokens == 8


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1.5, True, 0, -1, "50"])
def test_a_bad_output_cap_is_one_clear_error_before_any_call(
    tmp_path, backend, fake_server, key, bad
) -> None:
    # int(nan) raised ValueError("cannot convert float NaN to integer") from deep in the
    # call path, int(1.5) silently sent 1 and int("50") sent 50.
    policy = make_policy(
        tmp_path, backend, {"qa": feature(make_model(key=key), fake_server.base_url)}
    )
    with pytest.raises(ValueError, match=r"^max_tokens: expected an integer >= 1, found"):
        policy.completion(feature="qa", messages=ask(), max_tokens=bad)
    assert fake_server.request_count(key) == 0


def test_context_is_trimmed_as_the_evals_measured(tmp_path, backend, fake_server, key) -> None:
    # The fake server echoes the last user message: the echo shows what was sent.
    policy = make_policy(
        tmp_path,
        backend,
        {
            "qa": feature(
                make_model(key=key),
                fake_server.base_url,
                max_tokens=200,
                context_trim={"ratio": 0.3, "variable": "context", "query": "question"},
            )
        },
    )
    messages = ask("Context: {context} Question: " + QUESTION)
    response = policy.completion(feature="qa", messages=messages, context=CONTEXT, query=QUESTION)
    kept = trim_context(CONTEXT, QUESTION, 0.3).text
    assert "refund window is 30 days" in kept and len(kept) < len(CONTEXT) / 2
    assert response.choices[0].message.content == f"echo: Context: {kept} Question: {QUESTION}"
    (record,) = records(policy)
    assert record.trimmed_tokens is not None and record.trimmed_tokens[1] < record.trimmed_tokens[0]
    # Without query= the last user message (slot removed) is the query: same result here.
    again = policy.completion(feature="qa", messages=messages, context=CONTEXT, tenant="t2")
    assert again.choices[0].message.content == response.choices[0].message.content


def test_context_without_its_slot_is_refused(tmp_path, backend, fake_server, key) -> None:
    policy = make_policy(
        tmp_path, backend, {"qa": feature(make_model(key=key), fake_server.base_url)}
    )
    with pytest.raises(ValueError, match=r"no message content contains the slot '\{context\}'"):
        policy.completion(feature="qa", messages=ask(), context=CONTEXT)
    with pytest.raises(TypeError, match="the policy chooses the model"):
        policy.completion(feature="qa", messages=ask(), model="openai/gpt-4o")
    assert fake_server.request_count(key) == 0


def test_fallback_on_500_and_on_timeout_in_order(tmp_path, backend, fake_server, key) -> None:
    failing = make_model(key=key + "a", fail="500")
    hanging = make_model(key=key + "b", hang_ms=5000)
    good = make_model(key=key + "c", reply="from the third")
    entry = feature(
        failing,
        fake_server.base_url,
        cache={"mode": "off"},
        fallbacks=[
            route(hanging, fake_server.base_url, timeout_s=0.5),
            route(good, fake_server.base_url),
        ],
    )
    policy = make_policy(tmp_path, backend, {"qa": entry})
    response = policy.completion(feature="qa", messages=ask())
    assert response.choices[0].message.content == "from the third"
    assert response._hidden_params["evalgate"]["fallback"] == 2
    assert [fake_server.request_count(key + s) for s in "abc"] == [1, 1, 1]
    (record,) = records(policy)
    assert record.fallback == 2 and record.attempts == 3 and record.model == f"openai/{good}"
    assert record.cost_usd == pytest.approx((2 + 3) / 1e6)  # the fallback's own price


def test_every_route_failing_raises_litellms_error_and_is_recorded(
    tmp_path, backend, fake_server, key
) -> None:
    entry = feature(
        make_model(key=key + "a", fail="500"),
        fake_server.base_url,
        fallbacks=[route(make_model(key=key + "b", fail="503"), fake_server.base_url)],
    )
    policy = make_policy(tmp_path, backend, {"qa": entry})
    with pytest.raises(litellm.ServiceUnavailableError) as excinfo:
        policy.completion(feature="qa", messages=ask())
    assert any("every route failed" in note for note in excinfo.value.__notes__)
    (record,) = records(policy)
    assert record.attempts == 2 and "InternalServerError" in record.error
    assert "ServiceUnavailableError" in record.error


def test_errors_are_never_cached(tmp_path, backend, fake_server, key) -> None:
    policy = make_policy(
        tmp_path, backend, {"qa": feature(make_model(key=key, fail="500:1"), fake_server.base_url)}
    )
    with pytest.raises(litellm.InternalServerError):
        policy.completion(feature="qa", messages=ask())
    ok = policy.completion(feature="qa", messages=ask())
    assert ok.choices[0].message.content.startswith("echo")
    assert fake_server.request_count(key) == 2


def test_exact_cache_hit_per_tenant_and_ttl(tmp_path, backend, fake_server, key) -> None:
    entry = feature(
        make_model(key=key), fake_server.base_url, cache={"mode": "exact", "ttl_s": 0.5}
    )
    policy = make_policy(tmp_path, backend, {"qa": entry})
    first = policy.completion(feature="qa", tenant="acme", messages=ask())
    hit = policy.completion(feature="qa", tenant="acme", messages=ask())
    assert fake_server.request_count(key) == 1
    assert isinstance(hit, litellm.ModelResponse) and hit._hidden_params["evalgate"]["cached"]
    assert hit.choices[0].message.content == first.choices[0].message.content
    assert hit.usage.completion_tokens == first.usage.completion_tokens
    policy.completion(feature="qa", tenant="globex", messages=ask())  # another tenant: a miss
    assert fake_server.request_count(key) == 2
    policy.completion(feature="qa", tenant="acme", messages=ask(), max_tokens=4)  # other params
    assert fake_server.request_count(key) == 3
    time.sleep(0.6)
    policy.completion(feature="qa", tenant="acme", messages=ask())  # expired
    assert fake_server.request_count(key) == 4
    cached = [r for r in records(policy) if r.cached]
    assert len(cached) == 1 and cached[0].cost_usd == 0
    assert cached[0].saved_usd == pytest.approx(records(policy)[0].cost_usd)


def test_stream_passthrough_records_ttft_and_a_hit_replays_as_a_stream(
    tmp_path, backend, fake_server, key
) -> None:
    model = make_model(key=key, reply="one two three four", chunk_delay_ms=20)
    policy = make_policy(tmp_path, backend, {"qa": feature(model, fake_server.base_url)})
    chunks = list(policy.completion(feature="qa", messages=ask(), stream=True))
    assert all(isinstance(c, litellm.ModelResponseStream) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    replayed = list(policy.completion(feature="qa", messages=ask(), stream=True))
    assert fake_server.request_count(key) == 1
    assert all(isinstance(c, litellm.ModelResponseStream) for c in replayed)
    assert "".join(c.choices[0].delta.content or "" for c in replayed) == text
    assert replayed[-1].usage.completion_tokens == 4
    # A non-streamed request shares the entry (streaming is transport, not identity).
    assert policy.completion(feature="qa", messages=ask()).choices[0].message.content == text
    miss, hit, hit2 = records(policy)
    assert miss.stream and 0 < miss.ttft_ms < miss.latency_ms and miss.tokens_out == 4
    assert hit.cached and hit.ttft_ms is not None and hit2.cached


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_answers_are_never_cached(tmp_path, backend, fake_server, key, stream) -> None:
    """An answer that calls a tool is its calls: a text-only cache entry would drop them."""
    model = make_model(key=key, tool_call="lookup_order")
    policy = make_policy(tmp_path, backend, {"qa": feature(model, fake_server.base_url)})
    for _ in range(2):
        response = policy.completion(feature="qa", messages=ask(), stream=stream)
        if stream:
            chunks = list(response)
            calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices]
            assert any(calls)
        else:
            assert response.choices[0].message.tool_calls[0].function.name == "lookup_order"
    assert fake_server.request_count(key) == 2
    assert not any(r.cached for r in records(policy))


def test_refusals_are_never_cached(tmp_path, backend, fake_server, key) -> None:
    """A refusal has no text (content null): stored, it would be served as an empty
    answer. (Streamed, litellm drops the refusal delta: the caller gets an empty answer.)"""
    model = make_model(key=key, refusal="I can't help with that.")
    policy = make_policy(tmp_path, backend, {"qa": feature(model, fake_server.base_url)})
    for _ in range(2):
        response = policy.completion(feature="qa", messages=ask())
        assert response.choices[0].message.content is None
        assert response.choices[0].message.refusal == "I can't help with that."
    assert fake_server.request_count(key) == 2
    assert not any(r.cached for r in records(policy))


def test_cut_and_abandoned_streams_are_never_cached(tmp_path, backend, fake_server, key) -> None:
    cut = make_model(key=key + "a", reply="a b c d e f", cut_after=2)
    policy = make_policy(tmp_path, backend, {"qa": feature(cut, fake_server.base_url)})
    with pytest.raises(Exception):  # noqa: B017 - litellm's error type for a cut stream varies
        list(policy.completion(feature="qa", messages=ask(), stream=True))
    (record,) = records(policy)
    assert record.error is not None and not record.cached

    slow = make_model(key=key + "b", reply="a b c d e f", chunk_delay_ms=10)
    policy2 = make_policy(tmp_path, backend, {"qb": feature(slow, fake_server.base_url)})
    stream = policy2.completion(feature="qb", messages=ask(), stream=True)
    next(stream)
    stream.close()
    abandoned = [r for r in records(policy2) if r.feature == "qb"]
    assert len(abandoned) == 1 and abandoned[0].error.startswith("Abandoned")
    list(policy2.completion(feature="qb", messages=ask(), stream=True))
    assert fake_server.request_count(key + "b") == 2  # the abandoned answer was not stored


def test_async_paths_stream_and_not(tmp_path, backend, fake_server, key) -> None:
    model = make_model(key=key, reply="async answer here")
    entry = feature(
        make_model(key=key + "x", fail="500"),
        fake_server.base_url,
        fallbacks=[route(model, fake_server.base_url)],
    )
    policy = make_policy(tmp_path, backend, {"qa": entry})

    async def run() -> tuple[str, str, str]:
        response = await policy.acompletion(feature="qa", messages=ask())
        stream = await policy.acompletion(feature="qa", messages=ask("other"), stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        replay = await policy.acompletion(feature="qa", messages=ask("other"), stream=True)
        again = "".join([c.choices[0].delta.content or "" async for c in replay if c.choices])
        return response.choices[0].message.content, text, again

    content, text, again = asyncio.run(run())
    assert content == text == again == "async answer here"
    assert fake_server.request_count(key) == 2  # the replay came from the cache
    kinds = [(r.fallback, r.cached, r.stream) for r in records(policy)]
    assert kinds == [(1, False, False), (1, False, True), (0, True, True)]


def test_unknown_feature_and_unusable_models_name_file_and_key(
    tmp_path, backend, fake_server, key, monkeypatch
) -> None:
    monkeypatch.delenv("EVALGATE_TEST_KEY", raising=False)
    features = {
        "qa": feature(make_model(key=key), fake_server.base_url),
        "local": {**feature("x", None), "model": "local/smollm2-135m"},
        "keyed": feature("gpt-4o-mini", None, api_key_env="EVALGATE_TEST_KEY"),
        "bogus": {**feature("x", None), "model": "nosuchprovider/model-x"},
    }
    policy = make_policy(tmp_path, backend, features)
    path = policy.document.path
    with pytest.raises(UnknownFeatureError) as excinfo:
        policy.completion(feature="q-a", messages=ask())
    assert str(excinfo.value) == (
        f"{path}: features.q-a: no such feature; the policy has: bogus, keyed, local, qa"
    )
    with pytest.raises(
        PolicyError, match=r"features\.local\.model: 'local/smollm2-135m' is a local"
    ):
        policy.completion(feature="local", messages=ask())
    with pytest.raises(PolicyError, match=r"features\.keyed\.api_key_env: environment variable "):
        policy.completion(feature="keyed", messages=ask())
    with pytest.raises(PolicyError, match=r"features\.bogus\.model: litellm cannot route"):
        policy.completion(feature="bogus", messages=ask())
    with pytest.raises(PolicyError, match=r"cannot read the policy"):
        Policy.load(tmp_path / "missing.py", backend=backend)


def test_runtime_import_is_light() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import evalgate.runtime; "
        "dt = time.perf_counter() - t; "
        "heavy = [m for m in ('pytest', 'scipy', 'pandas', 'jinja2', 'litellm', 'numpy', 'yaml') "
        "if m in sys.modules]; print(heavy, dt)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split(" ", 1)
    assert out[0] == "[]"
