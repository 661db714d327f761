"""The runtime learned router under review: real HTTP to the fake server, real MiniLM.
Each test failed before its fix."""

from __future__ import annotations

import uuid

import pytest

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


@pytest.mark.parametrize("share", [7.0, -0.5, "most", True])
def test_a_tampered_evaluated_small_share_is_a_one_line_policy_error(
    tmp_path, backend, router, share
) -> None:
    """A share of 7 loaded, and `evalgate usage` showed the evals sending 700% small."""
    from evalgate.policy.render import render_policy
    from evalgate.runtime import Policy, PolicyError

    model = router.to_dict()
    model["evidence"] = {**model["evidence"], "calibration_small_share": share}
    entry = routed_feature(model, "a", "b", "http://127.0.0.1:9/v1")
    path = tmp_path / "policy.py"
    path.write_text(render_policy({"version": 1, "features": {"qa": entry}}))
    with pytest.raises(PolicyError) as caught:
        Policy.load(path, backend=backend)
    shown = str(caught.value)
    assert "features.qa.router.model.evidence.calibration_small_share" in shown
    assert "\n" not in shown
