"""Rate limits: the bucket rule, its state shared through a file, and real calls counted."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from evalgate.engine.calls import CallSpec, Endpoint, litellm_module
from evalgate.engine.engine import Engine
from evalgate.engine.limits import Limiter, RateLimit, limit_key, reserve
from evalgate.testing.fake_openai import make_model
from tests.plugin.test_limits_run import most_in_any_window


def test_a_burst_of_one_second_then_an_even_pace() -> None:
    state = None
    waits = []
    for _ in range(8):
        state, wait = reserve(state, 100.0, 1, per_minute=120)  # 2 per second
        waits.append(wait)
    assert waits == pytest.approx([0, 0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])


def test_a_request_larger_than_the_bucket_leaves_a_debt() -> None:
    state, first = reserve(None, 0.0, 500, per_minute=600)  # 10 tokens/s, bucket of 10
    state, second = reserve(state, 0.0, 10, per_minute=600)
    assert first == 0.0
    assert second == pytest.approx(50.0)  # the 490-token debt, then its own 10


def test_limiters_on_one_file_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "limits" / "k.bucket"
    # Two limiters on one file stand for two xdist workers: each sees the other's calls.
    first, second = Limiter(RateLimit(rpm=60), path), Limiter(RateLimit(rpm=60), path)
    waits = [first._reserve_shared(1), second._reserve_shared(1), first._reserve_shared(1)]
    assert waits == pytest.approx([0.0, 1.0, 2.0], abs=0.05)


def test_an_unreadable_state_file_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "k.bucket"
    path.write_bytes(b'{"requests": [1.0,')  # torn by a crash
    assert Limiter(RateLimit(rpm=60), path)._reserve_shared(1) == 0.0


def test_calls_to_a_limited_model_are_spread_out(fake_server, tmp_path: Path) -> None:
    key = uuid.uuid4().hex[:8]
    model = make_model(reply="ok", key=key)
    base = fake_server.base_url
    litellm_module()
    engine = Engine(
        lambda s: Endpoint(f"openai/{s.model}", s.api_base, "k"),
        concurrency=16,
        limits={limit_key(model, base): RateLimit(rpm=240)},  # 4 per second
        limits_dir=tmp_path / "limits",
        warm_up=False,
        processes=0,
    )
    try:
        futures = [
            engine.submit(
                CallSpec(
                    model=model,
                    messages=({"role": "user", "content": f"q{i}"},),
                    max_tokens=8,
                    temperature=0.0,
                    stream=True,
                    repeat=0,
                    tier="any-name",  # the limit is the model's at its endpoint
                    api_base=base,
                    timeout_s=60,
                )
            )
            for i in range(16)
        ]
        assert all(f.result(timeout=120).error is None for f in futures)
    finally:
        engine.close()
    times = fake_server.request_times(key)
    assert len(times) == 16
    # A second holds the bucket (4) plus a second's refill (4); 1 of slack for jitter.
    assert most_in_any_window(times, 1.0) <= 9


def test_limit_keys_separate_endpoints_but_not_spellings() -> None:
    assert limit_key("m", "http://H:1/v1/") == limit_key("m", "http://h:1/v1")
    assert limit_key("m", "http://h:1/v1") != limit_key("m", "http://h:2/v1")
    assert limit_key("m", None) != limit_key("n", None)


def test_without_a_directory_the_budget_is_the_process_own() -> None:
    limiter = Limiter(RateLimit(rpm=60, tpm=600))  # 1 request/s; 10 tokens/s
    waits = [limiter._reserve(limiter._state, 5) for _ in range(3)]
    assert waits == pytest.approx([0.0, 1.0, 2.0], abs=0.05)  # requests, not tokens, bind


def test_an_unwritable_state_file_still_limits_in_process(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "gone" / "k.bucket"
    limiter = Limiter(RateLimit(rpm=60), path)
    path.parent.rmdir()  # the run directory vanished under us

    async def twice() -> None:
        await limiter.acquire(1)

    asyncio.run(twice())  # no exception: the call is limited, not failed
    assert limiter._reserve(limiter._state, 1) == pytest.approx(1.0, abs=0.05)
