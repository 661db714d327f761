"""The runtime learned router under review: real HTTP to the fake server, real MiniLM.
Each test failed before its fix."""

from __future__ import annotations

import uuid

from evalgate.testing.fake_openai import make_model
from tests.runtime.test_router_runtime import easy, load, messages, routed_feature, router

__all__ = ["router"]  # the module-scoped fitted router, shared with test_router_runtime


def test_an_uncertified_router_scores_nothing_and_records_no_score(
    tmp_path, backend, fake_server, router
) -> None:
    """It sends every request large whatever the score, so computing one (a MiniLM
    encoding per request: the routing decision's whole latency) only slowed each call."""
    key = uuid.uuid4().hex[:8]
    small, large = make_model(key=f"s{key}"), make_model(key=f"l{key}")
    uncertified = {**router.to_dict(), "threshold": None}
    feature = routed_feature(uncertified, small, large, fake_server.base_url)
    with load(tmp_path, backend, {"qa": feature}) as policy:
        for i in range(3):
            policy.completion(feature="qa", messages=messages(easy(i)))
        policy.ledger.flush()
        records = list(policy.ledger.read())
    assert [(r.route, r.route_score) for r in records] == [("large", None)] * 3
    assert fake_server.request_count(f"l{key}") == 3
