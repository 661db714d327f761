"""Per-user limits: reserve-then-settle through the real call path, on SQLite and Redis.

Every test runs against both backends (the ``backend`` fixture), calls the fault-injecting
OpenAI-protocol server through real litellm, and reads the counters back from the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import (
    LimitExceeded,
    LimitOptions,
    LimitRules,
    Limits,
    Policy,
    PolicyError,
)
from evalgate.runtime.backends import Backend
from evalgate.runtime.limits import DAY_S, MINUTE_S, input_token_bound
from evalgate.testing.fake_openai import make_model

# Output-only pricing makes a call's worst-case cost equal its real cost when the reply
# fills max_tokens: the budget arithmetic below is then exact.
OUT_PRICE = {"input_per_mtok": 0.0, "output_per_mtok": 1000.0}  # $0.001 per output token
REPLY8 = "one two three four five six seven eight"
# Today's noon, UTC: the default clock, so that no test straddles a minute or a day.
NOON = (time.time() // DAY_S) * DAY_S + DAY_S / 2


def feature(model: str, base: str, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": f"openai/{model}",
        "api_base": base,
        "api_key_env": None,
        "price": OUT_PRICE,
        "timeout_s": 10.0,
        "fallbacks": [],
        "context_trim": None,
        "max_tokens": 8,
        "temperature": 0.0,
        "stream": False,
        "cache": {"mode": "off"},
        "evidence": {},
    }
    entry.update(overrides)
    return entry


def make_policy(
    tmp_path: Path,
    backend: Backend,
    features: dict[str, Any],
    limits: dict[str, Any] | None = None,
    options: LimitOptions | None = None,
) -> Policy:
    data: dict[str, Any] = {"version": 1, "features": features}
    if limits is not None:
        data["limits"] = limits
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.py"
    path.write_text(render_policy(data))
    options = options or LimitOptions()
    if options.clock is time.time:
        options = dataclasses.replace(options, clock=lambda: NOON)
    return Policy.load(path, backend=backend, limits=options)


def ask(text: str = "hello there") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def counter(policy: Policy, scope: str, subject: str, metric: str, now: float | None = None):
    """(settled, reserved) of the current window of one limit."""
    now = NOON if now is None else now
    length = MINUTE_S if metric == "requests_per_minute" else DAY_S
    key = "|".join([scope, subject, metric, str(int(now // length))])
    assert policy.limiter is not None
    return policy.limiter.store.usage(key, now)  # type: ignore[attr-defined]


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def _clean_redis_limits(backend_spec: tuple[str, str]):
    yield
    url, prefix = backend_spec
    if url.startswith("redis"):
        from evalgate.runtime.backends.redis_limits import RedisLimitStore

        store = RedisLimitStore.from_url(url, prefix=prefix)
        store.delete_all()
        store.close()


def test_a_cost_budget_refuses_the_call_that_would_cross_it(
    tmp_path, backend, fake_server, key
) -> None:
    model = make_model(key=key, reply=REPLY8)
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={"users": {"u1": {"cost_per_day_usd": 0.024}}},  # exactly three calls
    )
    for _ in range(3):
        policy.completion(feature="qa", user="u1", messages=ask())
    with pytest.raises(LimitExceeded) as refused:
        policy.completion(feature="qa", user="u1", messages=ask())
    err = refused.value
    assert (err.scope, err.subject, err.limit_name) == ("user", "u1", "cost_per_day_usd")
    assert err.limit == 0.024 and err.used == pytest.approx(0.024)
    assert err.requested == pytest.approx(0.008)
    assert err.retry_after_s == DAY_S / 2  # noon to midnight, UTC
    assert fake_server.request_count(key) == 3  # the refused call never reached the model
    assert counter(policy, "user", "u1", "cost_per_day_usd") == (pytest.approx(0.024), 0.0)
    # Another user has a budget of their own (none here: unlimited).
    policy.completion(feature="qa", user="u2", messages=ask())
    records = list(policy.ledger.read())
    assert len(records) == 5
    refusals = [r for r in records if r.error and r.error.startswith("LimitExceeded")]
    assert len(refusals) == 1 and refusals[0].user == "u1" and refusals[0].attempts == 0
    assert "cost_per_day_usd" in refusals[0].error
    policy.close()


def test_settle_keeps_the_real_usage_and_releases_the_rest(
    tmp_path, backend, fake_server, key
) -> None:
    # The reply is 2 words while max_tokens is 8: each call reserves 8 output tokens plus
    # its input bound, and settles to what the server reports (2 + 2 words).
    model = make_model(key=key, reply="thirty days")
    messages = ask()
    worst = input_token_bound(messages, {}) + 8
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        # room for one worst case plus one settled call, not for two worst cases
        limits={"users": {"*": {"tokens_per_day": worst + 4}}},
    )
    policy.completion(feature="qa", user="u1", messages=messages)
    assert counter(policy, "user", "u1", "tokens_per_day") == (4.0, 0.0)
    policy.completion(feature="qa", user="u1", messages=messages)  # fits only once settled
    assert counter(policy, "user", "u1", "tokens_per_day") == (8.0, 0.0)
    with pytest.raises(LimitExceeded, match="tokens_per_day"):
        policy.completion(feature="qa", user="u1", messages=messages)
    policy.close()


def test_a_refusal_by_one_limit_reserves_nothing_on_the_others(
    tmp_path, backend, fake_server, key
) -> None:
    model = make_model(key=key, reply=REPLY8)
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={
            "users": {"*": {"requests_per_minute": 100, "cost_per_day_usd": 1.0}},
            "tenants": {"acme": {"cost_per_day_usd": 0.008}},  # one call
        },
    )
    policy.completion(feature="qa", user="u1", tenant="acme", messages=ask())
    with pytest.raises(LimitExceeded) as refused:
        policy.completion(feature="qa", user="u2", tenant="acme", messages=ask())
    assert (refused.value.scope, refused.value.subject) == ("tenant", "acme")
    # u2's own limits were checked first and fitted, yet nothing of them stayed reserved
    assert counter(policy, "user", "u2", "requests_per_minute") == (0.0, 0.0)
    assert counter(policy, "user", "u2", "cost_per_day_usd") == (0.0, 0.0)
    assert counter(policy, "user", "u1", "requests_per_minute") == (1.0, 0.0)
    policy.close()


def test_a_call_alone_over_the_limit_says_waiting_will_not_help(
    tmp_path, backend, fake_server, key
) -> None:
    model = make_model(key=key, reply=REPLY8)
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={"users": {"*": {"tokens_per_day": 10}}},
    )
    with pytest.raises(LimitExceeded, match="this call alone needs more") as refused:
        policy.completion(feature="qa", user="u1", messages=ask())
    assert refused.value.retry_after_s is None
    assert fake_server.request_count(key) == 0
    policy.close()


def test_streams_settle_at_their_end_and_an_abandoned_one_keeps_its_reservation(
    tmp_path, backend, fake_server, key
) -> None:
    model = make_model(key=key, reply=REPLY8)
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={"users": {"*": {"tokens_per_day": 10_000, "cost_per_day_usd": 1.0}}},
    )
    stream = policy.completion(feature="qa", user="u1", messages=ask(), stream=True)
    next(stream)
    # in flight: the worst case is held, nothing settled yet
    settled, held = counter(policy, "user", "u1", "tokens_per_day")
    assert settled == 0.0 and held == input_token_bound(ask(), {}) + 8
    list(stream)
    assert counter(policy, "user", "u1", "tokens_per_day") == (10.0, 0.0)  # 2 in + 8 out
    assert counter(policy, "user", "u1", "cost_per_day_usd") == (pytest.approx(0.008), 0.0)
    # Abandoned before the usage chunk: the provider may bill it all, so the reservation
    # is what is charged.
    abandoned = policy.completion(feature="qa", user="u2", messages=ask(), stream=True)
    next(abandoned)
    abandoned.close()
    assert counter(policy, "user", "u2", "tokens_per_day") == (held, 0.0)
    policy.close()


@pytest.mark.parametrize("count_hits", [True, False])
def test_a_cache_hit_costs_nothing_and_counts_as_the_rate_limit_says(
    tmp_path, backend, fake_server, key, count_hits
) -> None:
    model = make_model(key=key, reply=REPLY8)
    limits = {"requests_per_minute": 10, "cost_per_day_usd": 1.0, "count_cache_hits": count_hits}
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url, cache={"mode": "exact", "ttl_s": 60.0})},
        limits={"users": {"*": limits}},
    )
    policy.completion(feature="qa", user="u1", messages=ask())
    policy.ledger.flush()  # the cache entry is written behind
    hit = policy.completion(feature="qa", user="u1", messages=ask())
    assert hit._hidden_params["evalgate"]["cached"]
    assert fake_server.request_count(key) == 1
    assert counter(policy, "user", "u1", "cost_per_day_usd") == (pytest.approx(0.008), 0.0)
    assert counter(policy, "user", "u1", "requests_per_minute") == (2.0 if count_hits else 1.0, 0.0)
    policy.close()


def test_requests_per_minute_admits_the_limit_in_each_calendar_minute(
    tmp_path, backend, fake_server, key
) -> None:
    now = [(math.floor(time.time() / 60) + 1) * 60 - 0.5]  # half a second before a minute
    model = make_model(key=key, reply="ok")
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={"users": {"*": {"requests_per_minute": 3}}},
        options=LimitOptions(clock=lambda: now[0]),
    )
    for _ in range(3):
        policy.completion(feature="qa", user="u1", messages=ask())
    with pytest.raises(LimitExceeded) as refused:
        policy.completion(feature="qa", user="u1", messages=ask())
    assert refused.value.retry_after_s == pytest.approx(0.5)
    now[0] += 0.5  # the new minute starts
    for _ in range(3):
        policy.completion(feature="qa", user="u1", messages=ask())
    with pytest.raises(LimitExceeded):
        policy.completion(feature="qa", user="u1", messages=ask())
    assert fake_server.request_count(key) == 6
    policy.close()


def test_an_unsettled_reservation_expires_after_its_ttl(
    tmp_path, backend, fake_server, key
) -> None:
    now = [NOON]
    model = make_model(key=key, reply=REPLY8)
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={"users": {"*": {"cost_per_day_usd": 0.008}}},
        options=LimitOptions(clock=lambda: now[0], reservation_ttl_s=30),
    )
    assert policy.limiter is not None
    # A call admitted and never settled: what a killed process leaves behind.
    call = policy._prepare("qa", ask(), "u1", "", None, None, {})
    policy.limiter.admit(call)
    with pytest.raises(LimitExceeded):
        policy.completion(feature="qa", user="u1", messages=ask())
    now[0] += 31
    policy.completion(feature="qa", user="u1", messages=ask())
    policy.close()


def test_code_gives_limits_to_users_the_file_does_not_name(
    tmp_path, backend, fake_server, key
) -> None:
    plans = {"free": Limits(requests_per_minute=1), "pro": Limits(requests_per_minute=3)}
    plan_of = {"alice": "pro", "bob": "free"}
    model = make_model(key=key, reply="ok")
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={"users": {"root": {"requests_per_minute": 2}}},
        options=LimitOptions(user_limits=lambda user: plans.get(plan_of.get(user, ""))),
    )

    def admitted(user: str) -> int:
        n = 0
        for _ in range(5):
            try:
                policy.completion(feature="qa", user=user, messages=ask())
            except LimitExceeded:
                continue
            n += 1
        return n

    assert [admitted(u) for u in ("alice", "bob", "root", "carol")] == [3, 1, 2, 5]
    policy.close()


def test_per_feature_limits_apply_within_that_feature_only(
    tmp_path, backend, fake_server, key
) -> None:
    model = make_model(key=key, reply="ok")
    base = fake_server.base_url
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, base), "chat": feature(model, base)},
        limits={"features": {"qa": {"*": {"requests_per_minute": 1}}}},
    )
    policy.completion(feature="qa", user="u1", messages=ask())
    with pytest.raises(LimitExceeded) as refused:
        policy.completion(feature="qa", user="u1", messages=ask())
    assert refused.value.scope == "feature:qa"
    policy.completion(feature="chat", user="u1", messages=ask())
    policy.completion(feature="qa", user="u2", messages=ask())
    policy.close()


def test_the_async_path_refuses_with_the_same_error(tmp_path, backend, fake_server, key) -> None:
    model = make_model(key=key, reply=REPLY8)
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={"users": {"*": {"cost_per_day_usd": 0.016}}},
    )

    async def run() -> list[Any]:
        return await asyncio.gather(
            *(policy.acompletion(feature="qa", user="u1", messages=ask()) for _ in range(4)),
            return_exceptions=True,
        )

    outcomes = asyncio.run(run())
    refused = [o for o in outcomes if isinstance(o, LimitExceeded)]
    assert len(refused) == 2 and len(outcomes) - len(refused) == 2
    assert not [o for o in outcomes if isinstance(o, Exception) and o not in refused]
    policy.close()


def test_calls_without_a_user_have_no_per_user_limit(tmp_path, backend, fake_server, key) -> None:
    model = make_model(key=key, reply="ok")
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        limits={"users": {"*": {"requests_per_minute": 0}}},
    )
    policy.completion(feature="qa", messages=ask())
    with pytest.raises(LimitExceeded):
        policy.completion(feature="qa", user="u1", messages=ask())
    policy.close()


def test_a_cost_limit_needs_a_price(tmp_path, backend, fake_server, key) -> None:
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature("no-such-priced-model", fake_server.base_url, price=None)},
        limits={"users": {"*": {"cost_per_day_usd": 1.0}}},
    )
    with pytest.raises(PolicyError, match="has no price; give the route a `price`"):
        policy.completion(feature="qa", user="u1", messages=ask())
    assert counter(policy, "user", "u1", "cost_per_day_usd") == (0.0, 0.0)
    policy.close()


def test_no_limits_means_no_guard(tmp_path, backend, fake_server, key) -> None:
    model = make_model(key=key, reply="ok")
    policy = make_policy(tmp_path, backend, {"qa": feature(model, fake_server.base_url)})
    assert policy.limiter is None
    rules = LimitRules(users={"*": Limits(requests_per_minute=1)})
    coded = make_policy(
        tmp_path,
        backend,
        {"qa": feature(model, fake_server.base_url)},
        options=LimitOptions(rules=rules),
    )
    assert coded.limiter is not None
    policy.close()
    coded.close()


def test_code_limits_of_the_wrong_type_are_named(tmp_path, backend, fake_server, key) -> None:
    policy = make_policy(
        tmp_path,
        backend,
        {"qa": feature(make_model(key=key), fake_server.base_url)},
        options=LimitOptions(user_limits=lambda user: {"requests_per_minute": 1}),
    )
    with pytest.raises(TypeError, match=r"user_limits\('u1'\) returned .*expected evalgate"):
        policy.completion(feature="qa", user="u1", messages=ask())
    assert fake_server.request_count(key) == 0
    policy.close()


def test_the_refusal_survives_pickling() -> None:
    import pickle

    err = LimitExceeded(
        scope="user",
        subject="u1",
        limit_name="tokens_per_day",
        limit=10.0,
        used=9.0,
        requested=2.0,
        retry_after_s=30.0,
    )
    back = pickle.loads(pickle.dumps(err))
    assert (back.subject, back.used, back.retry_after_s, str(back)) == (
        "u1",
        9.0,
        30.0,
        str(err),
    )
