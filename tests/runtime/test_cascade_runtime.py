"""A cascade in the runtime policy: real HTTP to the fake server, SQLite and Redis ledgers.

The first route answers; the cascade's accept checks (the suite's graders, run in the
application) decide whether that answer is kept or the second route is asked, and the
ledger records the escalation and what both calls cost.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import Policy, PolicyError
from evalgate.runtime.backends import Backend
from evalgate.testing.fake_openai import make_model
from tests.runtime.test_policy_calls import feature, route

JSON_ANSWER = '{"city": "Paris"}'
SCHEMA = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}


def cascade_feature(first: str, then: str, base: str, accept: list[dict[str, Any]]) -> dict:
    entry = feature(then, base, cache={"mode": "off"}, max_tokens=64)
    entry["router"] = {
        "kind": "cascade",
        "first": route(first, base),
        "then": route(then, base),
        "accept": accept,
        "evidence": {"escalation_rate": 0.25},
    }
    return entry


def load(tmp_path: Path, backend: Backend, entry: dict[str, Any]) -> Policy:
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.py"
    path.write_text(render_policy({"version": 1, "features": {"qa": entry}}))
    return Policy.load(path, backend=backend)


def ask() -> list[dict[str, str]]:
    return [{"role": "user", "content": "Which city? Answer in JSON."}]


def records(policy: Policy) -> list[Any]:
    policy.ledger.flush()
    return sorted(policy.ledger.read(), key=lambda r: r.ts)


def price(record: Any) -> float:
    return (record.tokens_in + record.tokens_out) / 1e6  # route(): $1 per Mtok both ways


CHECKS = [{"type": "json-schema", "schema": SCHEMA}, {"type": "not-contains", "value": "sorry"}]


def test_an_accepted_first_answer_is_the_answer(tmp_path, backend, fake_server) -> None:
    key = uuid.uuid4().hex[:8]
    first, then = make_model(key=f"f{key}", reply=JSON_ANSWER), make_model(key=f"t{key}")
    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, CHECKS)) as p:
        answer = p.completion(feature="qa", messages=ask())
        (record,) = records(p)
    assert answer.choices[0].message.content == JSON_ANSWER
    assert fake_server.request_count(f"f{key}") == 1 and fake_server.request_count(f"t{key}") == 0
    assert (record.route, record.model, record.first_cost_usd) == ("first", f"openai/{first}", None)
    assert record.cost_usd == pytest.approx(price(record))


@pytest.mark.parametrize(
    "reply", ["Paris, I think.", '{"town": "Paris"}', 'sorry: {"city": "Paris"}']
)
def test_a_rejected_answer_escalates_and_the_ledger_pays_for_both(
    tmp_path, backend, fake_server, reply
) -> None:
    key = uuid.uuid4().hex[:8]
    first = make_model(key=f"f{key}", reply=reply)
    then = make_model(key=f"t{key}", reply=JSON_ANSWER)
    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, CHECKS)) as p:
        answer = p.completion(feature="qa", messages=ask())
        (record,) = records(p)
    assert answer.choices[0].message.content == JSON_ANSWER
    assert fake_server.request_count(f"f{key}") == 1 and fake_server.request_count(f"t{key}") == 1
    assert (record.route, record.model, record.fallback) == ("escalated", f"openai/{then}", 1)
    # The first call's tokens: the prompt and the rejected reply, at $1/Mtok.
    assert record.first_cost_usd is not None and record.first_cost_usd > 0
    assert record.cost_usd == pytest.approx(record.first_cost_usd + price(record))


def test_a_failing_first_route_escalates_at_no_first_cost(tmp_path, backend, fake_server) -> None:
    key = uuid.uuid4().hex[:8]
    first = make_model(key=f"f{key}", fail="500")
    then = make_model(key=f"t{key}", reply=JSON_ANSWER)
    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, CHECKS)) as p:
        answer = p.completion(feature="qa", messages=ask())
        (record,) = records(p)
    assert answer.choices[0].message.content == JSON_ANSWER
    assert (record.route, record.first_cost_usd) == ("escalated", 0.0)


def test_a_failing_escalation_raises_and_is_recorded_with_the_first_cost(
    tmp_path, backend, fake_server
) -> None:
    key = uuid.uuid4().hex[:8]
    first = make_model(key=f"f{key}", reply="not json")
    then = make_model(key=f"t{key}", fail="500")
    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, CHECKS)) as p:
        with pytest.raises(Exception) as caught:
            p.completion(feature="qa", messages=ask())
        (record,) = records(p)
    assert "escalated" in " ".join(getattr(caught.value, "__notes__", []))
    assert record.route == "escalated" and record.error and record.cost_usd > 0
    assert record.cost_usd == record.first_cost_usd


@pytest.mark.parametrize("accepted", [True, False])
def test_a_streamed_cascade_checks_the_whole_first_answer_before_streaming(
    tmp_path, backend, fake_server, accepted
) -> None:
    key = uuid.uuid4().hex[:8]
    first = make_model(key=f"f{key}", reply=JSON_ANSWER if accepted else "no")
    then = make_model(key=f"t{key}", reply='{"city": "Lyon"}')
    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, CHECKS)) as p:
        chunks = p.completion(feature="qa", messages=ask(), stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        (record,) = records(p)
    assert text == (JSON_ANSWER if accepted else '{"city": "Lyon"}')
    assert record.stream and record.route == ("first" if accepted else "escalated")
    assert record.error is None and record.ttft_ms is not None
    assert fake_server.request_count(f"t{key}") == (0 if accepted else 1)


def test_the_async_path_escalates_alike(tmp_path, backend, fake_server) -> None:
    key = uuid.uuid4().hex[:8]
    first = make_model(key=f"f{key}", reply="nope")
    then = make_model(key=f"t{key}", reply=JSON_ANSWER)

    async def main(p: Policy) -> list[str]:
        plain = await p.acompletion(feature="qa", messages=ask())
        stream = await p.acompletion(feature="qa", messages=ask(), stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return [plain.choices[0].message.content, text]

    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, CHECKS)) as p:
        assert asyncio.run(main(p)) == [JSON_ANSWER, JSON_ANSWER]
        routes = [r.route for r in records(p)]
    assert routes == ["escalated", "escalated"]


def test_usage_shows_the_live_escalation_share_beside_the_evaluated_one(
    tmp_path, backend, fake_server
) -> None:
    from evalgate.runtime.usage import format_table, summarise

    key = uuid.uuid4().hex[:8]
    first, then = make_model(key=f"f{key}"), make_model(key=f"t{key}", reply="large")
    # The fake server echoes the question: "ok" questions pass the check, one does not.
    entry = cascade_feature(first, then, fake_server.base_url, [{"type": "regex", "pattern": "ok"}])
    with load(tmp_path, backend, entry) as p:
        for text in ("ok 1", "ok 2", "ok 3", "no 4"):
            p.completion(feature="qa", messages=[{"role": "user", "content": text}])
        summary = summarise(records(p), p.features)
    assert summary["qa"]["escalation_share"] == 0.25
    assert "cascade: 25% of calls escalated (evals: 25%)" in format_table(summary, "all")


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda r: r.__setitem__("accept", []), "router.accept"),
        (lambda r: r.__setitem__("accept", [{"type": "python", "path": "x:y"}]), "accept[0].type"),
        (lambda r: r.__setitem__("accept", [{"type": "llm-judge"}]), "accept[0].type"),
        (lambda r: r.__setitem__("accept", [{"type": "regex"}]), "accept[0].pattern"),
        (
            lambda r: r.__setitem__("accept", [{"type": "regex", "pattern": "{{ answer }}"}]),
            "accept[0].pattern",
        ),
        (lambda r: r.__setitem__("accept", [{"type": "regex", "pattern": "(["}]), "accept[0]"),
        (lambda r: r.__setitem__("accept", [{"type": "json-schema"}]), "accept[0].schema"),
        (
            lambda r: r.__setitem__("accept", [{"type": "json-schema", "schema_file": "s.json"}]),
            "accept[0].schema_file",
        ),
        (lambda r: r.__setitem__("accept", [{"type": "contains", "value": {"a": 1}}]), "accept[0]"),
        (lambda r: r.__setitem__("accept", ["json-valid"]), "accept[0]"),
        (lambda r: r.pop("then"), "router"),
        (lambda r: r.__setitem__("kind", "waterfall"), "router.kind"),
        (lambda r: r["evidence"].__setitem__("escalation_rate", "high"), "escalation_rate"),
        (lambda r: r.__setitem__("extra", 1), "router.extra"),
    ],
)
def test_hostile_cascade_sections_are_one_line_policy_errors(
    tmp_path, backend, fake_server, edit, key
) -> None:
    entry = cascade_feature("a", "b", fake_server.base_url, [{"type": "json-valid"}])
    edit(entry["router"])
    path = tmp_path / "policy.py"
    path.write_text(render_policy({"version": 1, "features": {"qa": entry}}))
    with pytest.raises(PolicyError) as caught:
        Policy.load(path, backend=backend)
    message = str(caught.value)
    assert "features.qa.router" in message and key in message and "\n" not in message


@pytest.mark.parametrize(
    ("check", "named"),
    [
        ({"type": "regex", "pattern": "^{{ answer }}$"}, "cascade.accept[0].pattern"),
        ({"type": "python", "path": "checks:ok"}, "cascade.accept[0].type"),
        ({"type": "json-schema", "schema_file": "s.json"}, "cascade.accept[0].schema_file"),
    ],
)
def test_export_refuses_a_check_the_application_cannot_run(check, named) -> None:
    from evalgate.policy.export import ExportError, _cascade_section

    config = {"model": "openai/m", "api_base": None, "price": None}
    record = {"kind": "cascade", "accept": [check], "escalation_rate": 0.2}
    with pytest.raises(ExportError) as caught:
        _cascade_section("suite 's': config 'c'", "c", {}, record, config, config, {})
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_export_writes_the_checks_without_the_grade_time_limit() -> None:
    from evalgate.policy.export import _cascade_section

    config = {"model": "openai/m", "api_base": None, "price": None}
    record = {
        "accept": [{"type": "regex", "pattern": "^ok", "timeout_s": 5}],
        "escalation_rate": 0.5,
    }
    section = _cascade_section("w", "c", {}, record, config, config, {})
    assert section["accept"] == [{"type": "regex", "pattern": "^ok"}]
    assert section["evidence"] == {"escalation_rate": 0.5}


def test_ledger_records_written_before_routing_read_back() -> None:
    from evalgate.runtime.ledger import UsageRecord

    old = b'{"ts": 1.0, "feature": "qa", "model": "m", "cost_usd": 0.5, "v": 1}'
    record = UsageRecord.from_bytes(old)
    assert (record.route, record.route_score, record.first_cost_usd) == (None, None, None)
    new = UsageRecord(ts=2.0, feature="qa", route="escalated", cost_usd=0.3, first_cost_usd=0.1)
    assert UsageRecord.from_bytes(new.to_bytes()) == new
