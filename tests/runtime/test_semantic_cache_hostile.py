"""A hostile review of the runtime semantic cache: concurrent writers, killed writers,
corrupt and poisoned entries, model mismatch, tenant strings, store growth, and the
exactness of the int8 scan. Real SQLite files and the real Redis at 127.0.0.1:6379
(unique prefixes, removed after); vectors come from a deterministic test encoder, since
what is under test is the store and the search, not MiniLM."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import struct
import time
from typing import Any

import numpy as np
import pytest

from evalgate.runtime.backends import open_backend
from evalgate.runtime.cache import CachedAnswer, CacheRequest
from evalgate.runtime.semantic_cache import SemanticCache, answer_of, encode_entry

DIM = 512


class OneHot:
    """``"item N"`` -> basis vector N; ``"nan N"`` -> NaN; ``"big N"`` -> 5 x basis N;
    ``"zero N"`` -> the zero vector."""

    dim = DIM

    def encode(self, texts: list[str]) -> Any:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            kind, number = text.split()[-2:]
            out[row, int(number) % DIM] = {"item": 1.0, "nan": math.nan, "big": 5.0}.get(kind, 0.0)
        return out


def ask(text: str, tenant: str = "") -> CacheRequest:
    return CacheRequest(
        model="m", messages=[{"role": "user", "content": text}], params={}, namespace=tenant
    )


def answer(text: str) -> CachedAnswer:
    return CachedAnswer(content=text, model="m")


def content(held: Any) -> str | None:
    """The text of an answer an index holds (decoded lazily: see answer_of)."""
    decoded = answer_of(held)
    return None if decoded is None else decoded.content


def cache(backend: Any, **kwargs: Any) -> SemanticCache:
    kwargs.setdefault("threshold", 0.99)
    kwargs.setdefault("embedding_model", "onehot==1")
    return SemanticCache(backend, encoder=OneHot(), **kwargs)


def test_a_nan_zero_or_oversized_vector_never_poisons_the_scope(tmp_path):
    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        c = cache(backend)
        c.store(ask("item 1"), answer("one"), ttl_s=None)
        c.store(ask("nan 2"), answer("nan"), ttl_s=None)  # a broken encoder's output
        c.store(ask("zero 3"), answer("zero"), ttl_s=None)
        c.store(ask("big 4"), answer("big"), ttl_s=None)
        hit = c.lookup(ask("item 1"))
        assert hit is not None and hit.answer.content == "one"
        # A vector 5x too long would score 5.0 against its direction: never served.
        assert c.lookup(ask("item 4")) is None
        assert c.lookup(ask("nan 1")) is None and c.lookup(ask("zero 1")) is None
        # Another process reads the same store: the same answers.
        other = cache(backend)
        hit = other.lookup(ask("item 1"))
        assert hit is not None and hit.answer.content == "one"
        assert other.lookup(ask("item 4")) is None


@pytest.mark.parametrize(
    "head",
    [
        {"v": 1, "sig": "", "exp": "soon", "a": None},  # wrong types, filled in below
        {"v": 1, "sig": "", "exp": [1], "a": None},
        {"v": 1, "sig": None, "exp": None, "a": None},
        {"v": 1, "sig": "", "exp": None},
        [],
    ],
)
def test_corrupt_entries_are_skipped_not_raised(backend_spec, head):
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend)
        c.store(ask("item 7"), answer("seven"), ttl_s=None)
        scope = c.scope_of(ask("item 9"))
        if isinstance(head, dict) and "a" in head:
            head["a"] = answer("corrupt").to_bytes().decode()
        raw = json.dumps(head).encode()
        vector = np.zeros(DIM, dtype="<f4")
        vector[9] = 1.0
        backend.semantic_add(scope, struct.pack("<I", len(raw)) + raw + vector.tobytes())
        good = encode_entry(vector, "", answer("nine"), None)
        backend.semantic_add(scope, good[: len(good) // 2])  # a torn blob
        reader = cache(backend)
        assert reader.lookup(ask("item 9")) is None
        hit = reader.lookup(ask("item 7"))
        assert hit is not None and hit.answer.content == "seven"


def test_vectors_of_another_embedding_model_are_never_compared(backend_spec):
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as one, open_backend(url, prefix=prefix) as two:
        old = cache(one, embedding_model="model-a==1")
        new = cache(two, embedding_model="model-b==2")
        old.store(ask("item 5", "acme"), answer("from model a"), ttl_s=None)
        assert new.lookup(ask("item 5", "acme")) is None
        new.store(ask("item 5", "acme"), answer("from model b"), ttl_s=None)
        hit = cache(one, embedding_model="model-b==2").lookup(ask("item 5", "acme"))
        assert hit is not None and hit.answer.content == "from model b"


HOSTILE_TENANTS = ("acme", "acme:", ":acme", "*", "acme*", "a:b:c", "", "?", "[a-z]", "\x00")


def test_hostile_tenant_strings_never_share_an_entry(backend_spec):
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        writer = cache(backend)
        for i, tenant in enumerate(HOSTILE_TENANTS):
            writer.store(ask("item 1", tenant), answer(f"for {tenant!r}"), ttl_s=None)
            writer.store(ask(f"item {100 + i}", tenant), answer("own"), ttl_s=None)
        reader = cache(backend)
        for i, tenant in enumerate(HOSTILE_TENANTS):
            hit = reader.lookup(ask("item 1", tenant))
            assert hit is not None and hit.answer.content == f"for {tenant!r}"
            for j in range(len(HOSTILE_TENANTS)):
                if j != i:  # another tenant's own question: a miss here
                    assert reader.lookup(ask(f"item {100 + j}", tenant)) is None


def _write_many(url: str, prefix: str, first: int, count: int, tenant: str) -> None:
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend)
        for i in range(first, first + count):
            c.store(ask(f"item {i}", tenant), answer(str(i)), ttl_s=None)


def test_two_processes_writing_one_tenant_at_once(backend_spec):
    url, prefix = backend_spec
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_write_many, args=(url, prefix, start, 150, "acme"))
        for start in (0, 150)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    with open_backend(url, prefix=prefix) as backend:
        reader = cache(backend)
        for i in range(300):
            hit = reader.lookup(ask(f"item {i}", "acme"))
            assert hit is not None and hit.answer.content == str(i)
        assert reader.lookup(ask("item 7", "globex")) is None


def _write_forever(url: str, prefix: str) -> None:
    _write_many(url, prefix, 0, 10**9, "acme")


def test_a_writer_killed_mid_write_leaves_only_whole_entries(backend_spec):
    url, prefix = backend_spec
    worker = multiprocessing.get_context("fork").Process(target=_write_forever, args=(url, prefix))
    worker.start()
    with open_backend(url, prefix=prefix) as backend:
        scope = cache(backend).scope_of(ask("item 0", "acme"))
        deadline = time.monotonic() + 60
        while len(backend.semantic_read(scope, 0)[1]) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
        worker.join(10)
        stored = len(backend.semantic_read(scope, 0)[1])
        assert stored >= 50
        reader = cache(backend)
        for i in range(stored):
            hit = reader.lookup(ask(f"item {i}", "acme"))
            assert hit is not None and hit.answer.content == str(i)


@pytest.mark.parametrize("written", ["1e999", "-1e999", "True", "0.0", "'0.9'", "1.0000001"])
def test_policy_file_threshold_out_of_range_names_file_line_and_key(tmp_path, written):
    from evalgate.policy.render import render_policy
    from evalgate.runtime import Policy, PolicyError
    from tests.runtime.test_policy_calls import feature

    spec = {"mode": "semantic", "threshold": 0.123456, "embedding_model": "x"}
    entry = feature("m", "http://127.0.0.1:9/v1", cache=spec)
    text = render_policy({"version": 1, "features": {"qa": entry}})
    assert text.count("0.123456") == 1
    path = tmp_path / "policy.py"
    path.write_text(text.replace("0.123456", written))  # as a person would write it
    with pytest.raises(PolicyError, match=r"policy\.py:\d+: features\.qa\.cache\.threshold"):
        Policy.load(path, backend=f"sqlite:///{tmp_path / 's.sqlite3'}")


@pytest.mark.redis
def test_a_version_check_started_early_is_never_applied_twice(tmp_path):
    """On Redis the version check runs while the turn is embedded; if another lookup read
    the scope meanwhile, the early read is dropped, so no entry is held twice."""
    from tests.runtime.conftest import backend_url

    url, prefix = backend_url("redis", tmp_path)
    with open_backend(url, prefix=prefix) as one, open_backend(url, prefix=prefix) as two:
        try:
            reader, writer = cache(one), cache(two)
            assert reader.lookup(ask("item 9")) is None  # reads the (empty) scope
            writer.store(ask("item 1"), answer("1"), ttl_s=None)
            scope = reader.scope_of(ask("item 1"))
            assert scope is not None
            state = reader._scope(scope)
            early = reader._prefetch(scope, state)
            assert early is not None
            assert reader.lookup(ask("item 1")) is not None  # reads the scope meanwhile
            writer.store(ask("item 2"), answer("2"), ttl_s=None)
            reader._refreshed(scope, state, DIM, "test", early)
            assert state.index is not None
            assert [content(a) for a in state.index.answers] == ["1", "2"]
            late = reader._prefetch(scope, state)
            assert late is not None
            late[1].result()  # the early read is done before the next write
            writer.store(ask("item 3"), answer("3"), ttl_s=None)
            reader._refreshed(scope, state, DIM, "test", late)  # used: nothing read since
            assert state.count == 2 and reader.lookup(ask("item 3")) is not None
            assert state.count == 3
        finally:
            one.delete_all()


def test_a_clear_reaches_other_processes_even_when_the_scope_refills(backend_spec):
    """A cleared cache must not keep serving from other processes' memory: on SQLite
    (whose row ids keep growing) and on Redis when the list regrows past their position."""
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as one, open_backend(url, prefix=prefix) as two:
        a, b = cache(one), cache(two)
        a.store(ask("item 1"), answer("stale 1"), ttl_s=None)
        a.store(ask("item 2"), answer("stale 2"), ttl_s=None)
        assert b.lookup(ask("item 1")) is not None  # b holds both entries
        one.cache_clear()
        refill = cache(one)
        for i in (3, 4, 5):
            refill.store(ask(f"item {i}"), answer(f"new {i}"), ttl_s=None)
        assert b.lookup(ask("item 1")) is None
        assert b.lookup(ask("item 2")) is None
        hit = b.lookup(ask("item 4"))
        assert hit is not None and hit.answer.content == "new 4"
        scope = b.scope_of(ask("item 4"))
        assert scope is not None and b._scope(scope).count == 3
        # With nothing new, the scope stays as it is (no reload, no duplicates).
        assert b.lookup(ask("item 5")) is not None and b._scope(scope).count == 3
