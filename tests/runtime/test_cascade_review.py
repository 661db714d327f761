"""A runtime cascade under hostile answers and callers: real HTTP to the fake server,
SQLite and Redis ledgers. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
from typing import Any

import pytest

from evalgate.testing.fake_openai import make_model
from tests.runtime.test_cascade_runtime import JSON_ANSWER, ask, cascade_feature, load, records

# Backtracks exponentially on a run of a's that ends in b (the `regex` engine too).
CATASTROPHIC = [{"type": "regex", "pattern": "^(a|aa)+$"}]
HOSTILE = "a" * 40 + "b"


def test_a_backtracking_check_on_a_hostile_answer_is_bounded_and_escalates(
    tmp_path, backend, fake_server
) -> None:
    """The check ran for about a minute inside the application's request before."""
    key = uuid.uuid4().hex[:8]
    first = make_model(key=f"f{key}", reply=HOSTILE)
    then = make_model(key=f"t{key}", reply=JSON_ANSWER)
    entry = cascade_feature(first, then, fake_server.base_url, CATASTROPHIC)
    with load(tmp_path, backend, entry) as policy:
        done: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: done.setdefault(
                "answer", policy.completion(feature="qa", messages=ask())
            ),
            daemon=True,
        )
        worker.start()
        worker.join(20)  # the runtime limit is 1 s; before the fix it was the 30 s grade one
        assert not worker.is_alive(), "the application's request hung on the accept check"
        assert done["answer"].choices[0].message.content == JSON_ANSWER
        (record,) = records(policy)
    assert record.route == "escalated"


def test_a_cancelled_async_escalation_is_recorded_once_with_the_first_cost(
    tmp_path, backend, fake_server
) -> None:
    """The caller's task is cancelled while the second route answers: the first call was
    paid for, so the ledger must say so (it recorded nothing before)."""
    key = uuid.uuid4().hex[:8]
    first = make_model(key=f"f{key}", reply="not json")
    then = make_model(key=f"t{key}", reply=JSON_ANSWER, latency_ms=5000)
    checks = [{"type": "json-valid"}]
    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, checks)) as p:

        async def main() -> None:
            task = asyncio.ensure_future(p.acompletion(feature="qa", messages=ask()))
            while fake_server.request_count(f"t{key}") == 0:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        (record,) = records(p)
    assert record.route == "escalated" and record.error and "Cancel" in record.error
    assert record.first_cost_usd is not None and record.first_cost_usd > 0
    assert record.cost_usd == record.first_cost_usd


@pytest.mark.parametrize("accepted", [True, False])
def test_streams_abandoned_half_way_from_many_threads_are_recorded_exactly_once(
    tmp_path, backend, fake_server, accepted
) -> None:
    key = uuid.uuid4().hex[:8]
    words = " ".join(f"w{i}" for i in range(30))
    first = make_model(key=f"f{key}", reply=words if accepted else "no")
    then = make_model(key=f"t{key}", reply=words)
    checks = [{"type": "contains", "value": "w1"}]
    calls = 12
    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, checks)) as p:

        def one(i: int) -> None:
            stream = p.completion(feature="qa", messages=ask(), stream=True, user=f"u{i}")
            for n, _ in enumerate(stream):
                if n == 3:
                    break
            if i % 2:
                stream.close()  # closed twice, and dropped after: still one record
                stream.close()
            del stream

        threads = [threading.Thread(target=one, args=(i,)) for i in range(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        gc.collect()
        found = records(p)
    assert len(found) == calls
    assert {r.user for r in found} == {f"u{i}" for i in range(calls)}
    assert all(r.error and r.error.startswith("Abandoned") for r in found)
    assert all(r.route == ("first" if accepted else "escalated") for r in found)
    if not accepted:
        # The first call's cost is kept; the whole is unknown (the cut stream's tokens are).
        assert all(r.first_cost_usd > 0 and r.cost_usd is None for r in found)


def test_a_cancelled_async_call_is_recorded(tmp_path, backend, fake_server) -> None:
    """The same on a feature without a cascade: a cancelled call left no record."""
    from tests.runtime.test_policy_calls import feature

    key = uuid.uuid4().hex[:8]
    slow = make_model(key=f"s{key}", latency_ms=5000)
    entry = feature(slow, fake_server.base_url, cache={"mode": "off"})
    with load(tmp_path, backend, entry) as p:

        async def main() -> None:
            task = asyncio.ensure_future(p.acompletion(feature="qa", messages=ask(), user="u"))
            while fake_server.request_count(f"s{key}") == 0:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        (record,) = records(p)
    assert record.user == "u" and record.error and "CancelledError" in record.error


def test_usage_counts_the_paid_first_call_of_a_failed_escalation(
    tmp_path, backend, fake_server
) -> None:
    """The first answer was billed and rejected, then the second route failed: `evalgate
    usage` left the record's known cost out of the feature's cost (it reported $0)."""
    from evalgate.runtime.usage import summarise

    key = uuid.uuid4().hex[:8]
    first = make_model(key=f"f{key}", reply="not json")
    then = make_model(key=f"t{key}", fail="500")
    checks = [{"type": "json-valid"}]
    with load(tmp_path, backend, cascade_feature(first, then, fake_server.base_url, checks)) as p:
        with pytest.raises(Exception, match="500"):
            p.completion(feature="qa", messages=ask())
        (record,) = records(p)
        summary = summarise(p.ledger.read(), p.features)
    assert record.error and record.cost_usd > 0
    assert summary["qa"]["errors"] == 1
    assert summary["qa"]["cost_usd"] == pytest.approx(record.cost_usd)


def test_a_tampered_escalation_share_above_one_is_a_one_line_policy_error(
    tmp_path, backend
) -> None:
    """It loaded, and `evalgate usage` showed the evals escalating 700% of calls."""
    from evalgate.policy.render import render_policy
    from evalgate.runtime import Policy, PolicyError

    entry = cascade_feature("a", "b", "http://127.0.0.1:9/v1", [{"type": "json-valid"}])
    entry["router"]["evidence"]["escalation_rate"] = 7.0
    path = tmp_path / "policy.py"
    path.write_text(render_policy({"version": 1, "features": {"qa": entry}}))
    with pytest.raises(PolicyError) as caught:
        Policy.load(path, backend=backend)
    shown = str(caught.value)
    assert "features.qa.router.evidence.escalation_rate" in shown and "[0, 1]" in shown
    assert "\n" not in shown
