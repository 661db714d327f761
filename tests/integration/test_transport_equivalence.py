"""The native transport and litellm give the same results for the same calls.

Each call runs twice through one engine, once with ``transport: native`` and once with
``transport: litellm``, against real servers: the fault-injecting OpenAI-protocol server
(429 with Retry-After, 500, timeouts, cut streams, client errors) and the real SmolLM2
model served by llama.cpp. Everything a result records must agree: output, token
counts, cost, finish reason, attempts, whether TTFT was measured, and the error's kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.engine.engine import Engine
from evalgate.engine.retry import RetryPolicy
from evalgate.engine.servers import LocalServers
from evalgate.results import CallResult
from evalgate.runner import Endpoints
from evalgate.suite.model import Price
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model
from tests.integration.test_local_model import requires_smol

PRICE = Price(input_per_mtok=1.0, output_per_mtok=2.0)
TRANSPORTS = ("native", "litellm")


def kind(error: str | None) -> str | None:
    """The error's class name: what a result's ``Type: message`` starts with."""
    return None if error is None else error.split(":", 1)[0]


def observable(result: CallResult) -> dict[str, Any]:
    """What a result records, less what differs from call to call (timings, wording)."""
    return {
        "output": result.output,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cost_usd": result.cost_usd,
        "finish_reason": result.finish_reason,
        "attempts": result.attempts,
        "error_kind": kind(result.error),
        "ttft_measured": result.ttft_ms is not None,
    }


def call(model: str, transport: str, **overrides: Any) -> CallSpec:
    fields: dict[str, Any] = {
        "model": model,
        "messages": ({"role": "user", "content": "hello there"},),
        "max_tokens": 64,
        "temperature": 0.0,
        "stream": True,
        "repeat": 0,
        "tier": "t",
        "price": PRICE,
        "timeout_s": 10.0,
        "transport": transport,
    }
    fields.update(overrides)
    return CallSpec(**fields)


# --------------------------------------------------------------------------- fake server


@pytest.fixture(scope="module")
def fake_engine(fake_server: FakeOpenAIServer) -> Iterator[Engine]:
    def resolve(spec: CallSpec) -> Endpoint:
        return Endpoint(f"openai/{spec.model}", fake_server.base_url, "sk-equivalence-key")

    engine = Engine(
        resolve,
        concurrency=16,
        retry=RetryPolicy(max_attempts=4, base_s=0.05, max_backoff_s=5),
        seed=1,
        processes=0,
    )
    yield engine
    engine.close()


def both(
    engine: Engine, server: FakeOpenAIServer, stream: bool = True, **directives: Any
) -> dict[str, tuple[CallResult, int]]:
    """The same call through each transport (own fault counters): result, requests served."""
    keys = {t: f"{t}-{uuid.uuid4().hex[:8]}" for t in TRANSPORTS}
    timeout_s = directives.pop("timeout_s", 10.0)
    max_tokens = directives.pop("max_tokens", 64)
    futures: dict[str, Future[CallResult]] = {
        t: engine.submit(
            call(
                make_model(key=keys[t], **directives),
                t,
                stream=stream,
                timeout_s=timeout_s,
                max_tokens=max_tokens,
            )
        )
        for t in TRANSPORTS
    }
    return {t: (f.result(timeout=120), server.request_count(keys[t])) for t, f in futures.items()}


def assert_same(results: dict[str, tuple[CallResult, int]]) -> dict[str, Any]:
    (native, native_requests), (litellm, litellm_requests) = (results[t] for t in TRANSPORTS)
    assert observable(native) == observable(litellm)
    assert native_requests == litellm_requests
    return observable(native)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ({"reply": "one two three", "chunk_delay_ms": 20}, {"output": "one two three"}),
        ({"reply": "a b c d e f g h", "max_tokens": 3}, {"finish_reason": "length"}),
        ({"reply": "ok", "fail": "429:2", "retry_after": 1}, {"attempts": 3}),
        ({"reply": "ok", "fail": "500:1"}, {"attempts": 2}),
        ({"fail": "500"}, {"attempts": 4, "error_kind": "InternalServerError"}),
        ({"fail": "429", "retry_after": 0}, {"attempts": 4, "error_kind": "RateLimitError"}),
        ({"fail": "503:1", "reply": "ok"}, {"attempts": 2}),
        ({"fail": "400"}, {"attempts": 1, "error_kind": "BadRequestError"}),
        ({"fail": "401"}, {"attempts": 1, "error_kind": "AuthenticationError"}),
        ({"fail": "404"}, {"attempts": 1, "error_kind": "NotFoundError"}),
        (
            {"reply": "late but fine", "hang_ms": 3000, "hang_times": 1, "timeout_s": 0.5},
            {"attempts": 2, "output": "late but fine"},
        ),
        ({"hang_ms": 3000, "timeout_s": 0.3}, {"attempts": 4, "error_kind": "TimeoutError"}),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v}" for k, v in value.items())[:60] if isinstance(value, dict) else None
    ),
)
def test_same_results_through_both_transports(
    fake_engine: Engine,
    fake_server: FakeOpenAIServer,
    stream: bool,
    directives: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    seen = assert_same(both(fake_engine, fake_server, stream, **dict(directives)))
    assert {k: seen[k] for k in expected} == expected
    assert seen["ttft_measured"] is (stream and seen["error_kind"] is None)


def test_a_stream_cut_midway_is_retried_the_same_way(fake_engine, fake_server) -> None:
    once = assert_same(
        both(fake_engine, fake_server, reply="a b c d e f", cut_after=2, cut_times=1)
    )
    assert (once["output"], once["attempts"]) == ("a b c d e f", 2)
    always = assert_same(both(fake_engine, fake_server, reply="a b c d", cut_after=2))
    assert (always["output"], always["attempts"]) == ("", 4)
    assert always["error_kind"] == "MidStreamFallbackError"


def test_server_error_messages_reach_the_result_through_both(fake_engine, fake_server) -> None:
    results = both(fake_engine, fake_server, fail="429", retry_after=0)
    for result, _ in results.values():
        assert result.error is not None and "injected failure 429" in result.error
        assert "sk-equivalence-key" not in result.error


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_hostile_model_output_comes_back_verbatim(fake_engine, fake_server, stream) -> None:
    reply = 'naïve 東京 "quoted" \\ back\nslash data: [DONE]\n\n: not a comment {"json": 1}'
    seen = assert_same(both(fake_engine, fake_server, stream, reply=reply, chunks=4))
    assert seen["output"] == reply


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_cost_from_litellms_price_map_is_the_same(fake_engine, fake_server, stream) -> None:
    # gpt-4o-mini is in litellm's price map; the fake server answers any model name.
    results = {
        t: fake_engine.submit(call("gpt-4o-mini", t, stream=stream, price=None)).result(60)
        for t in TRANSPORTS
    }
    native, litellm = results["native"], results["litellm"]
    assert native.cost_usd is not None and native.cost_usd > 0
    assert observable(native) == observable(litellm)
    unpriced = {
        t: fake_engine.submit(call(make_model(reply="x"), t, price=None)).result(60)
        for t in TRANSPORTS
    }
    assert unpriced["native"].cost_usd is None
    assert observable(unpriced["native"]) == observable(unpriced["litellm"])


# --------------------------------------------------------------------------- SmolLM2

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
]


@pytest.fixture(scope="module")
def smol_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    servers = LocalServers(tmp_path_factory.mktemp("smol"), threads=2, parallel=1)
    running = servers.ensure(["smollm2-135m"])
    endpoints = Endpoints(tmp_path_factory.mktemp("unused") / "servers.json")
    endpoints.set_local({name: server.base_url for name, server in running.items()})
    # One call at a time: llama.cpp batches concurrent requests, and the batch a request
    # shares can change its floating-point result.
    engine = Engine(endpoints, concurrency=1, retry=RetryPolicy(max_attempts=2), processes=0)
    try:
        yield engine
    finally:
        engine.close()
        servers.stop_all()


@pytest.mark.integration
@requires_smol
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize("max_tokens", [8, 48])
def test_same_results_from_real_smollm2(smol_engine: Engine, stream: bool, max_tokens: int) -> None:
    for question in QUESTIONS:
        seen = []
        for transport in TRANSPORTS:
            spec = call(
                "local/smollm2-135m",
                transport,
                messages=(
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": question},
                ),
                stream=stream,
                max_tokens=max_tokens,
                timeout_s=60.0,
            )
            seen.append(observable(smol_engine.submit(spec).result(timeout=120)))
        assert seen[0] == seen[1], question
        assert seen[0]["error_kind"] is None and seen[0]["output"].strip()
        assert seen[0]["input_tokens"] > 5 and 0 < seen[0]["output_tokens"] <= max_tokens


def test_keys_stay_out_of_results(fake_engine, fake_server, tmp_path: Path) -> None:
    results = both(fake_engine, fake_server, fail="401")
    for result, _ in results.values():
        assert "sk-equivalence-key" not in repr(result)
