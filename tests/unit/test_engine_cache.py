"""The engine's response cache: one key function, every parameter, single flight.

Real litellm calls to the real fault-injecting server; requests are counted at the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalgate.cachekey import request_key
from evalgate.engine import cache as cache_module
from evalgate.engine.cache import ResponseCache
from evalgate.engine.calls import CallSpec, Endpoint, litellm_module
from evalgate.engine.engine import Engine
from evalgate.engine.retry import RetryPolicy
from evalgate.suite.model import Price
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model


def spec(model: str, *, api_base: str, **overrides) -> CallSpec:
    fields = dict(
        model=model,
        messages=({"role": "user", "content": "hello there"},),
        max_tokens=16,
        temperature=0.0,
        stream=True,
        repeat=0,
        tier="t",
        use_cache=True,
        price=Price(1.0, 2.0),
        api_base=api_base,
        timeout_s=30.0,
    )
    fields.update(overrides)
    return CallSpec(**fields)


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    def resolve(s: CallSpec) -> Endpoint:
        assert s.api_base is not None
        return Endpoint(f"openai/{s.model}", s.api_base, "test-key")

    litellm_module()  # imported before the first call's timeout starts
    made = Engine(
        resolve,
        concurrency=4,
        cache=ResponseCache(tmp_path / "c.sqlite3"),
        retry=RetryPolicy(max_attempts=1),
        seed=1,
        warm_up=False,
        processes=0,
    )
    yield made
    made.close()


def test_the_cache_key_is_the_shared_request_key() -> None:
    s = spec("m", api_base="http://h/v1", params=(("seed", 7),), repeat=2)
    assert s.cache_key() == request_key(
        model="m",
        messages=s.messages,
        params={"max_tokens": 16, "temperature": 0.0, "seed": 7},
        api_base="http://h/v1",
        sample=2,
    )
    assert not hasattr(cache_module, "cache_key")  # one key function, not two


def test_two_endpoints_serving_the_same_model_name_do_not_share_entries(engine, key) -> None:
    model = make_model(reply="from somewhere", key=key)
    with FakeOpenAIServer() as one, FakeOpenAIServer() as two:
        first = engine.submit(spec(model, api_base=one.base_url)).result(timeout=30)
        second = engine.submit(spec(model, api_base=two.base_url)).result(timeout=30)
        again = engine.submit(spec(model, api_base=two.base_url + "/")).result(timeout=30)
        assert first.error is None, first.error
        assert (one.request_count(key), two.request_count(key)) == (1, 1)
    assert not first.cached and not second.cached
    assert again.cached  # the same endpoint written with a trailing slash


@pytest.mark.parametrize(
    "params",
    [
        (("top_p", 0.5),),
        (("seed", 42),),
        (("stop", ["\n"]),),
        (("response_format", {"type": "json_object"}),),
    ],
)
def test_every_generation_parameter_is_part_of_the_key(engine, fake_server, key, params) -> None:
    model = make_model(reply="x", key=key)
    base = fake_server.base_url
    plain = engine.submit(spec(model, api_base=base)).result(timeout=30)
    varied = engine.submit(spec(model, api_base=base, params=params)).result(timeout=30)
    same = engine.submit(spec(model, api_base=base, params=params)).result(timeout=30)
    assert plain.error is None and varied.error is None, (plain.error, varied.error)
    assert not varied.cached and same.cached
    assert fake_server.request_count(key) == 2


def test_streaming_does_not_change_the_key(engine, fake_server, key) -> None:
    model = make_model(reply="x", key=key)
    engine.submit(spec(model, api_base=fake_server.base_url)).result(timeout=30)
    hit = engine.submit(spec(model, api_base=fake_server.base_url, stream=False)).result(30)
    assert hit.cached and fake_server.request_count(key) == 1


def test_identical_requests_in_flight_make_one_model_call(engine, fake_server, key) -> None:
    model = make_model(reply="only once", latency_ms=300, key=key)
    futures = [engine.submit(spec(model, api_base=fake_server.base_url)) for _ in range(3)]
    results = [f.result(timeout=30) for f in futures]
    assert fake_server.request_count(key) == 1
    assert [r.output for r in results] == ["only once"] * 3
    assert sorted(r.cached for r in results) == [False, True, True]
    paid = next(r for r in results if not r.cached)
    assert paid.cost_usd and all(
        r.cost_usd == 0.0 and r.saved_usd == paid.cost_usd for r in results if r.cached
    )


def test_a_failed_call_is_not_shared_with_the_identical_one_waiting(
    engine, fake_server, key
) -> None:
    model = make_model(reply="second try", latency_ms=200, fail="500:1", key=key)
    futures = [engine.submit(spec(model, api_base=fake_server.base_url)) for _ in range(2)]
    first, second = (f.result(timeout=30) for f in futures)
    assert first.error is not None  # one attempt only (max_attempts=1)
    assert second.error is None and second.output == "second try" and not second.cached
    assert fake_server.request_count(key) == 2
