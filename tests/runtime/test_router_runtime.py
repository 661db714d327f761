"""A learned router in the runtime policy: real HTTP to the fake server, real MiniLM.

The router is fit (evalgate.routing.fit) on requests whose difficulty is known: short
questions are safe for the small model, long ones are not. The policy then routes live
requests through the real call path and records each decision and its score.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evalgate.policy.render import render_policy
from evalgate.routing.features import default_recipe, feature_matrix, request_text
from evalgate.routing.fit import fit_router
from evalgate.routing.model import RouterModel
from evalgate.runtime import Policy, PolicyError
from evalgate.runtime.backends import Backend
from evalgate.testing.fake_openai import make_model
from tests.runtime.test_policy_calls import feature, route

TOPICS = ["cats", "taxes", "rivers", "engines", "poems", "stars", "bread", "chess", "rain"]


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def easy(i: int) -> str:
    return f"What is {i} plus {i + 1}?"


def hard(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (
        f"Write a detailed, multi-paragraph analysis of how {topic} shaped the economic "
        f"history of region {i}, citing at least three sources and comparing two theories.\n"
        "Structure it with headings, then summarise the argument in one table."
    )


@pytest.fixture(scope="module")
def router() -> RouterModel:
    texts = [request_text(messages(easy(i) if i % 2 == 0 else hard(i))) for i in range(400)]
    x = feature_matrix(texts, default_recipe())
    q_small = np.array([1.0 if i % 2 == 0 else 0.0 for i in range(400)])
    model = fit_router(
        x, q_small, np.ones(400), max_loss=0.05, alpha=0.1, recipe=default_recipe(), seed=0
    )
    assert model.threshold is not None
    return model


def routed_feature(model_dict: dict[str, Any], small: str, large: str, base: str) -> dict:
    entry = feature(large, base, cache={"mode": "off"})
    entry["router"] = {
        "kind": "learned",
        "small": route(small, base),
        "large": route(large, base),
        "model": model_dict,
    }
    return entry


def load(tmp_path: Path, backend: Backend, features: dict[str, Any]) -> Policy:
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.py"
    path.write_text(render_policy({"version": 1, "features": features}))
    return Policy.load(path, backend=backend)


def test_requests_go_where_the_router_sends_them_and_the_ledger_says_so(
    tmp_path, backend, fake_server, router
) -> None:
    key = uuid.uuid4().hex[:8]
    small, large = make_model(key=f"s{key}", reply="4"), make_model(key=f"l{key}", reply="essay")
    policy = load(
        tmp_path,
        backend,
        {"qa": routed_feature(router.to_dict(), small, large, fake_server.base_url)},
    )
    with policy:
        short = policy.completion(feature="qa", messages=messages(easy(1001)))
        long = policy.completion(feature="qa", messages=messages(hard(1003)))
        policy.ledger.flush()
        records = sorted(policy.ledger.read(), key=lambda r: r.ts)
    assert short.choices[0].message.content == "4"
    assert long.choices[0].message.content == "essay"
    assert fake_server.request_count(f"s{key}") == 1 and fake_server.request_count(f"l{key}") == 1
    first, second = records
    assert (first.route, first.model) == ("small", f"openai/{small}")
    assert (second.route, second.model) == ("large", f"openai/{large}")
    assert first.route_score >= router.threshold > second.route_score


def test_a_router_without_a_certified_threshold_sends_everything_large(
    tmp_path, backend, fake_server, router
) -> None:
    key = uuid.uuid4().hex[:8]
    small, large = make_model(key=f"s{key}"), make_model(key=f"l{key}")
    uncertified = {**router.to_dict(), "threshold": None}
    policy = load(
        tmp_path, backend, {"qa": routed_feature(uncertified, small, large, fake_server.base_url)}
    )
    with policy:
        for i in range(3):
            policy.completion(feature="qa", messages=messages(easy(i)))
    assert fake_server.request_count(f"s{key}") == 0
    assert fake_server.request_count(f"l{key}") == 3


def test_the_other_route_is_the_fallback(tmp_path, backend, fake_server, router) -> None:
    key = uuid.uuid4().hex[:8]
    small = make_model(key=f"s{key}", fail="500")
    large = make_model(key=f"l{key}", reply="from large")
    policy = load(
        tmp_path,
        backend,
        {"qa": routed_feature(router.to_dict(), small, large, fake_server.base_url)},
    )
    with policy:
        answer = policy.completion(feature="qa", messages=messages(easy(7)))
        policy.ledger.flush()
        (record,) = list(policy.ledger.read())
    assert answer.choices[0].message.content == "from large"
    assert record.route == "small" and record.fallback == 1


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda r: r["model"]["weights"].__setitem__(3, 12345.5), "router.model.weights"),
        (lambda r: r["model"]["mean"].pop(), "router.model.mean"),
        (lambda r: r.__setitem__("kind", "magic"), "router.kind"),
        (lambda r: r.pop("small"), "router"),
        (
            lambda r: r["model"]["recipe"].__setitem__("embedding_model", "other-embedder==9"),
            "router.model.recipe.embedding_model",
        ),
    ],
)
def test_hostile_router_sections_are_one_line_policy_errors(
    tmp_path, backend, fake_server, router, edit, key
) -> None:
    entry = routed_feature(router.to_dict(), "a", "b", fake_server.base_url)
    edit(entry["router"])
    path = tmp_path / "policy.py"
    # 1e999 reads back as infinity: literal data that is not a usable weight.
    path.write_text(
        render_policy({"version": 1, "features": {"qa": entry}}).replace("12345.5", "1e999")
    )
    with pytest.raises(PolicyError) as caught:
        Policy.load(path, backend=backend)
    message = str(caught.value)
    assert f"features.qa.{key}" in message and "\n" not in message


def test_usage_shows_the_live_small_share_beside_the_evaluated_one(
    tmp_path, backend, fake_server, router
) -> None:
    from evalgate.runtime.usage import format_table, summarise

    key = uuid.uuid4().hex[:8]
    small, large = make_model(key=f"s{key}"), make_model(key=f"l{key}")
    policy = load(
        tmp_path,
        backend,
        {"qa": routed_feature(router.to_dict(), small, large, fake_server.base_url)},
    )
    with policy:
        for i in range(3):
            policy.completion(feature="qa", messages=messages(easy(i)))
        policy.completion(feature="qa", messages=messages(hard(5)))
        policy.ledger.flush()
        summary = summarise(policy.ledger.read(), policy.features)
    assert summary["qa"]["small_share"] == 0.75
    evaluated = router.evidence["calibration_small_share"]
    assert summary["qa"]["expected"]["small_share"] == evaluated
    assert f"router: 75% of calls to the small route (evals: {evaluated:.0%})" in format_table(
        summary, "all"
    )


def test_an_uncertified_router_exports_with_a_comment_saying_it_never_routes_small(
    tmp_path, backend, fake_server, router
) -> None:
    uncertified = {**router.to_dict(), "threshold": None}
    text = render_policy(
        {"version": 1, "features": {"qa": routed_feature(uncertified, "a", "b", "http://x")}}
    )
    before, _, after = text.partition("'threshold': None,")
    comment = " ".join(before.splitlines()[-4:])
    assert after and "# this router sends every request to the large route" in comment
    path = tmp_path / "policy.py"
    path.write_text(text)
    with Policy.load(path, backend=backend) as policy:
        assert policy.feature("qa").router.model.threshold is None


def test_routing_and_cascades_import_no_pytest_scipy_or_pandas(
    tmp_path, fake_server, router
) -> None:
    """An application process that routes with a learned router and checks a cascade's
    answer keeps pytest, scipy and pandas out of memory."""
    import subprocess
    import sys

    from tests.runtime.test_cascade_runtime import CHECKS, cascade_feature

    key = uuid.uuid4().hex[:8]
    base = fake_server.base_url
    features = {
        "routed": routed_feature(router.to_dict(), f"s{key}", f"l{key}", base),
        "checked": cascade_feature(f"f{key}", f"t{key}", base, CHECKS),
    }
    path = tmp_path / "policy.py"
    path.write_text(render_policy({"version": 1, "features": features}))
    script = (
        "import sys\n"
        "from evalgate.runtime import Policy\n"
        f"p = Policy.load({str(path)!r}, backend='sqlite:///{tmp_path / 'rt.sqlite3'}')\n"
        f"p.completion(feature='routed', messages=[{{'role': 'user', 'content': {easy(3)!r}}}])\n"
        "p.completion(feature='checked', messages=[{'role': 'user', 'content': 'hi'}])\n"
        "p.ledger.flush()\n"
        "print(sorted(r.route for r in p.ledger.read()))\n"
        "print([m for m in ('pytest', 'scipy', 'pandas') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["['escalated', 'small']", "[]"]
