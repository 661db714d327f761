"""The engine through real litellm calls to a real HTTP server that injects faults."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from evalgate.engine.cache import ResponseCache
from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.engine.engine import Engine
from evalgate.engine.retry import RetryPolicy
from evalgate.suite.model import Price
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model

PRICE = Price(input_per_mtok=1.0, output_per_mtok=2.0)


def spec(
    model: str,
    *,
    content: str = "hello there",
    stream: bool = True,
    repeat: int = 0,
    cache: bool = False,
    timeout_s: float = 10.0,
    max_tokens: int = 64,
) -> CallSpec:
    return CallSpec(
        model=model,
        messages=({"role": "user", "content": content},),
        max_tokens=max_tokens,
        temperature=0.0,
        stream=stream,
        repeat=repeat,
        tier="t",
        use_cache=cache,
        price=PRICE,
        timeout_s=timeout_s,
    )


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def engine_factory(fake_server: FakeOpenAIServer):
    engines: list[Engine] = []

    def make(**kwargs) -> Engine:
        def resolve(s: CallSpec) -> Endpoint:
            return Endpoint(f"openai/{s.model}", fake_server.base_url, "test-key")

        kwargs.setdefault("retry", RetryPolicy(max_attempts=4, base_s=0.05, max_backoff_s=5))
        engine = Engine(resolve, seed=1, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def run(engine: Engine, s: CallSpec):
    return engine.submit(s).result(timeout=60)


def test_streaming_call_measures_tokens_cost_latency_ttft(engine_factory, key) -> None:
    engine = engine_factory()
    result = run(engine, spec(make_model(reply="one two three", chunk_delay_ms=50, key=key)))
    assert result.error is None and result.output == "one two three"
    assert (result.input_tokens, result.output_tokens) == (2, 3)  # words, per the server
    assert result.cost_usd == pytest.approx((2 * 1.0 + 3 * 2.0) / 1e6)
    assert result.ttft_ms is not None and 0 < result.ttft_ms < result.latency_ms
    assert result.latency_ms - result.ttft_ms >= 90  # two more chunks 50 ms apart
    assert result.finish_reason == "stop" and result.attempts == 1


def test_non_streaming_call(engine_factory, key) -> None:
    result = run(engine_factory(), spec(make_model(reply="fine", key=key), stream=False))
    assert (result.output, result.ttft_ms, result.output_tokens) == ("fine", None, 1)


def test_429_is_retried_after_retry_after(engine_factory, fake_server, key) -> None:
    model = make_model(reply="ok", fail="429:2", retry_after=1, key=key)
    started = time.monotonic()
    result = run(engine_factory(), spec(model))
    assert result.error is None and result.attempts == 3
    assert time.monotonic() - started >= 2.0  # honoured Retry-After: 1 s, twice
    assert fake_server.request_count(key) == 3


def test_500_once_then_success(engine_factory, fake_server, key) -> None:
    result = run(engine_factory(), spec(make_model(reply="ok", fail="500:1", key=key)))
    assert (result.output, result.attempts, fake_server.request_count(key)) == ("ok", 2, 2)


def test_persistent_500_becomes_an_error_result(engine_factory, fake_server, key) -> None:
    result = run(engine_factory(), spec(make_model(fail="500", key=key)))
    assert result.error is not None and "InternalServerError" in result.error
    assert result.attempts == 4 and fake_server.request_count(key) == 4


def test_client_error_is_not_retried(engine_factory, fake_server, key) -> None:
    result = run(engine_factory(), spec(make_model(fail="400", key=key)))
    assert result.error is not None and result.attempts == 1
    assert fake_server.request_count(key) == 1


def test_timeout_is_retried(engine_factory, fake_server, key) -> None:
    model = make_model(reply="late but fine", hang_ms=3000, hang_times=1, key=key)
    result = run(engine_factory(), spec(model, timeout_s=0.5))
    assert result.error is None and result.output == "late but fine"
    assert result.attempts == 2


def test_stream_cut_midway_is_retried(engine_factory, fake_server, key) -> None:
    model = make_model(reply="a b c d e f", cut_after=2, cut_times=1, key=key)
    result = run(engine_factory(), spec(model))
    assert result.error is None and result.output == "a b c d e f" and result.attempts == 2


def test_stream_always_cut_is_an_error_not_a_partial_answer(engine_factory, key) -> None:
    result = run(engine_factory(), spec(make_model(reply="a b c d", cut_after=2, key=key)))
    assert result.error is not None and result.output == ""


def test_one_process_reaches_the_configured_concurrency(engine_factory, key) -> None:
    engine = engine_factory(concurrency=20)
    model = make_model(reply="x", latency_ms=500, key=key)
    started = time.monotonic()
    futures = [engine.submit(spec(model, content=f"q{i}")) for i in range(20)]
    results = [f.result(timeout=60) for f in futures]
    elapsed = time.monotonic() - started
    assert all(r.error is None for r in results)
    # Serial would take 10 s; 20 in flight take one latency. Generous bound for slow CI.
    assert elapsed < 5.0


def test_concurrency_limit_is_respected(engine_factory, key) -> None:
    engine = engine_factory(concurrency=2)
    model = make_model(reply="x", latency_ms=300, key=key)
    started = time.monotonic()
    futures = [engine.submit(spec(model, content=f"q{i}")) for i in range(6)]
    [f.result(timeout=60) for f in futures]
    assert time.monotonic() - started >= 0.9  # three waves of 300 ms


def test_cache_hit_is_flagged_free_and_keeps_original_latency(
    engine_factory, fake_server, key, tmp_path: Path
) -> None:
    engine = engine_factory(cache=ResponseCache(tmp_path / "c.sqlite3"))
    model = make_model(reply="cached answer", latency_ms=200, key=key)
    first = run(engine, spec(model, cache=True))
    second = run(engine, spec(model, cache=True))
    assert not first.cached and second.cached
    assert second.output == first.output and second.cost_usd == 0.0
    assert second.saved_usd == pytest.approx(first.cost_usd)
    assert second.latency_ms == first.latency_ms  # the original call's latency, kept
    assert second.hit_latency_ms is not None and second.hit_latency_ms < 200
    assert fake_server.request_count(key) == 1


def test_cache_keys_include_repeat_and_params(engine_factory, fake_server, key, tmp_path) -> None:
    engine = engine_factory(cache=ResponseCache(tmp_path / "c.sqlite3"))
    model = make_model(reply="x", key=key)
    run(engine, spec(model, cache=True, repeat=0))
    assert not run(engine, spec(model, cache=True, repeat=1)).cached
    assert not run(engine, spec(model, cache=True, max_tokens=5)).cached
    assert run(engine, spec(model, cache=True, repeat=1)).cached
    assert fake_server.request_count(key) == 3


def test_errors_are_never_cached(engine_factory, fake_server, key, tmp_path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    engine = engine_factory(cache=cache, retry=RetryPolicy(max_attempts=1))
    model = make_model(reply="x", fail="500:1", key=key)
    assert run(engine, spec(model, cache=True)).error is not None
    second = run(engine, spec(model, cache=True))
    assert second.error is None and not second.cached and len(cache) == 1


def test_cache_is_bypassed_for_configs_without_cache(
    engine_factory, fake_server, key, tmp_path
) -> None:
    engine = engine_factory(cache=ResponseCache(tmp_path / "c.sqlite3"))
    model = make_model(reply="x", key=key)
    run(engine, spec(model, cache=False))
    assert not run(engine, spec(model, cache=False)).cached
    assert fake_server.request_count(key) == 2


def test_missing_api_key_env_is_an_error_result(engine_factory) -> None:
    def resolve(s: CallSpec) -> Endpoint:
        raise RuntimeError("environment variable NOPE_KEY is not set")

    engine = Engine(resolve)
    try:
        result = engine.submit(spec("openai/x")).result(timeout=10)
    finally:
        engine.close()
    assert result.error == "RuntimeError: environment variable NOPE_KEY is not set"


def _completion_order(futures) -> list[int]:
    order: list[int] = []
    for i, future in enumerate(futures):
        future.add_done_callback(lambda _f, i=i: order.append(i))
    [f.result(timeout=60) for f in futures]
    return order


def test_calls_run_in_submission_order_with_or_without_cache(
    engine_factory, key, tmp_path: Path
) -> None:
    # pytest waits for items in order: a cache-enabled call must not lose its place in the
    # queue to its cache lookup, or its item would block until the end of the run.
    engine = engine_factory(concurrency=1, cache=ResponseCache(tmp_path / "c.sqlite3"))
    model = make_model(reply="x", latency_ms=50, key=key)
    futures = [engine.submit(spec(model, content=f"q{i}", cache=i % 2 == 1)) for i in range(8)]
    assert _completion_order(futures) == list(range(8))


def test_grader_calls_go_ahead_of_queued_item_calls(engine_factory, key) -> None:
    from evalgate.engine.slots import GRADER_PRIORITY

    engine = engine_factory(concurrency=1)
    model = make_model(reply="x", latency_ms=150, key=key)
    items = [engine.submit(spec(model, content=f"q{i}")) for i in range(5)]
    time.sleep(0.05)  # the first item call holds the only slot
    judge = engine.submit(spec(model, content="judge"), GRADER_PRIORITY)
    order = _completion_order([*items, judge])
    assert order.index(5) == 1, order  # right after the call that was running


def test_timeout_bounds_the_whole_attempt_not_each_gap(engine_factory, fake_server, key) -> None:
    # Every gap between chunks (0.4 s) is well inside the timeout; the whole reply is not.
    model = make_model(reply="a b c d e f", chunk_delay_ms=400, key=key)
    result = run(engine_factory(retry=RetryPolicy(max_attempts=2)), spec(model, timeout_s=1.0))
    assert result.error is not None and "Timeout" in result.error
    assert result.attempts == 2 and fake_server.request_count(key) == 2
