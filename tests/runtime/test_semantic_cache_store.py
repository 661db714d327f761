"""The semantic cache's store over time: a process's first read of a large scope (in the
background, lookups misses meanwhile), eviction at the bound, expired entries removed,
and readers in other processes that notice a compaction. Real SQLite files and the real
Redis at 127.0.0.1:6379 (unique prefixes, removed after); the deterministic one-hot
encoder of the hostile tests, since what is under test is the store."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
import tempfile
import time
from typing import Any

import numpy as np
import pytest

from evalgate.runtime.backends import open_backend
from evalgate.runtime.cache import CachedAnswer
from evalgate.runtime.semantic_cache import (
    INLINE_LOAD,
    decode_entries,
    encode_entry,
)
from tests.runtime.test_semantic_cache_hostile import DIM, answer, ask, cache, content


def stored(backend: Any, c: Any, tenant: str = "") -> list[str | None]:
    """The answers the store holds for the tenant's scope, oldest first."""
    scope = c.scope_of(ask("item 0", tenant))
    return [content(a) for a in decode_entries(backend.semantic_read(scope, 0)[1], DIM)[2]]


def held(c: Any, tenant: str = "") -> list[str | None]:
    """The answers a cache holds in memory for the tenant's scope."""
    state = c._scope(c.scope_of(ask("item 0", tenant)))
    return [] if state.index is None else [content(a) for a in state.index.answers]


def test_a_full_scope_evicts_its_oldest_and_keeps_caching(backend_spec):
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend, max_entries=3)
        for i in range(6):
            c.store(ask(f"item {i}", "acme"), answer(str(i)), ttl_s=None)
        assert stored(backend, c, "acme") == ["3", "4", "5"]
        served = [c.lookup(ask(f"item {i}", "acme")) for i in range(6)]
        assert [None if h is None else h.answer.content for h in served] == [
            None,
            None,
            None,
            "3",
            "4",
            "5",
        ]
        # Another process at the bound evicts the oldest too; the other tenant is untouched.
        c.store(ask("item 7", "globex"), answer("g7"), ttl_s=None)
        cache(backend, max_entries=3).store(ask("item 9", "acme"), answer("9"), ttl_s=None)
        assert stored(backend, c, "acme") == ["4", "5", "9"]
        assert stored(backend, c, "globex") == ["g7"]


def test_a_bound_of_ten_evicts_a_tenth_at_once(backend_spec):
    """Compactions come in batches (each one makes every reader read the scope again)."""
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend, max_entries=20)
        for i in range(21):
            c.store(ask(f"item {i}"), answer(str(i)), ttl_s=None)
        # At 20 the 21st store compacted to 18 (room for 2), then appended.
        assert stored(backend, c) == [str(i) for i in range(2, 21)]


def test_expired_entries_are_removed_from_the_store(backend_spec):
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend)
        for i in range(4):
            c.store(ask(f"item {i}"), answer(f"old {i}"), ttl_s=0.05)
        c.store(ask("item 4"), answer("kept"), ttl_s=None)
        time.sleep(0.1)
        assert len(stored(backend, c)) == 5  # expired, not yet compacted
        c.store(ask("item 5"), answer("new"), ttl_s=None)  # 4 of 5 expired: compacts
        assert stored(backend, c) == ["kept", "new"]
        assert c.lookup(ask("item 1")) is None
        hit = c.lookup(ask("item 4"))
        assert hit is not None and hit.answer.content == "kept"


def test_a_reader_elsewhere_reloads_a_compacted_scope(backend_spec):
    """A reader holding the scope at a position from before a compaction never resumes
    there (on Redis the list was trimmed: that index now names another entry): it reads
    the scope again and holds exactly what the store holds."""
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as one, open_backend(url, prefix=prefix) as two:
        writer, reader = cache(one, max_entries=10), cache(two, max_entries=10)
        for i in range(10):
            writer.store(ask(f"item {i}"), answer(str(i)), ttl_s=None)
        hit = reader.lookup(ask("item 0"))
        assert hit is not None and hit.answer.content == "0"
        for i in range(10, 13):  # room for 1: each of these compacts (evicts the oldest)
            writer.store(ask(f"item {i}"), answer(str(i)), ttl_s=None)
        assert stored(one, writer) == [str(i) for i in range(3, 13)]
        assert reader.lookup(ask("item 0")) is None  # evicted: not served from memory
        assert held(reader) == stored(one, writer)
        for i in range(3, 13):
            hit = reader.lookup(ask(f"item {i}"))
            assert hit is not None and hit.answer.content == str(i)


def _store_many(url: str, prefix: str, first: int, count: int, bound: int) -> None:
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend, max_entries=bound)
        for i in range(first, first + count):
            c.store(ask(f"item {i}", "acme"), answer(str(i)), ttl_s=None)


def test_two_processes_storing_at_the_bound_at_once(backend_spec):
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        cache(backend).store(ask("item 499", "globex"), answer("other tenant"), ttl_s=None)
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_store_many, args=(url, prefix, start, 120, 40))
        for start in (0, 200)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with open_backend(url, prefix=prefix) as backend:
        reader = cache(backend, max_entries=40)
        answers = stored(backend, reader, "acme")
        # Each compaction leaves room for 4; a writer racing another's compaction may
        # append once past the bound before its next store compacts.
        assert 36 <= len(answers) <= 42
        assert len(set(answers)) == len(answers)
        assert answers[-1] in ("119", "319")  # the last store of whichever ended last
        for i in [*range(120), *range(200, 320)]:
            hit = reader.lookup(ask(f"item {i}", "acme"))
            assert (hit is None) == (str(i) not in answers)
            assert hit is None or hit.answer.content == str(i)
        hit = reader.lookup(ask("item 499", "globex"))
        assert hit is not None and hit.answer.content == "other tenant"


def _bulk(backend: Any, scope: str, count: int, tag: str = "") -> None:
    for i in range(count):
        vector = np.zeros(DIM, dtype=np.float32)
        vector[i % DIM] = 1.0
        backend.semantic_add(scope, encode_entry(vector, "", answer(f"{tag}{i}"), None))


def test_a_large_scope_is_read_in_the_background_its_lookups_missing(backend_spec):
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        scope = cache(backend).scope_of(ask("item 1"))
        _bulk(backend, scope, INLINE_LOAD + 10)
        reader = cache(backend)
        state = reader._scope(scope)
        assert reader.lookup(ask("item 1")) is None  # loading: a miss, not a wait
        assert state.loading is not None
        state.loading.result(timeout=60)
        hit = reader.lookup(ask("item 1"))
        assert hit is not None and hit.answer.content == "1"
        assert state.count == INLINE_LOAD + 10
        # A small scope is still read within its first lookup.
        small = cache(backend)
        small.store(ask("item 3", "t2"), answer("three"), ttl_s=None)
        hit = cache(backend).lookup(ask("item 3", "t2"))
        assert hit is not None and hit.answer.content == "three"


def test_entries_of_the_first_format_are_still_read_in_order(backend_spec):
    import json
    import struct

    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend)
        scope = c.scope_of(ask("item 1"))
        assert scope is not None
        for i in range(4):
            vector = np.zeros(DIM, dtype="<f4")
            vector[i] = 1.0
            if i % 2:
                backend.semantic_add(scope, encode_entry(vector, "", answer(f"v2 {i}"), None))
                continue
            head = {"v": 1, "sig": "", "exp": None, "a": answer(f"v1 {i}").to_bytes().decode()}
            raw = json.dumps(head).encode()
            backend.semantic_add(scope, struct.pack("<I", len(raw)) + raw + vector.tobytes())
        reader = cache(backend)
        for i in range(4):
            hit = reader.lookup(ask(f"item {i}"))
            assert hit is not None and hit.answer.content == f"v{1 + i % 2} {i}"
        assert held(reader) == ["v1 0", "v2 1", "v1 2", "v2 3"]


def test_a_torn_answer_is_skipped_when_served_and_the_next_best_served():
    vector = np.zeros(DIM, dtype=np.float32)
    vector[5] = 1.0
    good = encode_entry(vector, "", answer("five"), None)
    torn = encode_entry(vector, "", answer("torn"), None)[:-3]
    _, sigs, _, _ = decode_entries([torn, good], DIM)
    assert len(sigs) == 2  # answers are decoded when served, not when read

    with tempfile.TemporaryDirectory() as tmp, open_backend(f"sqlite:///{tmp}/s.sqlite3") as b:
        c = cache(b)
        scope = c.scope_of(ask("item 5"))
        b.semantic_add(scope, torn)
        b.semantic_add(scope, good)
        for _ in range(2):
            hit = c.lookup(ask("item 5"))
            assert hit is not None and hit.answer.content == "five"


def test_an_sqlite_file_from_before_compaction_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE semantic (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "scope TEXT NOT NULL, entry BLOB NOT NULL)"
    )
    db.commit()
    db.close()
    with open_backend(f"sqlite:///{path}") as backend:
        c = cache(backend, max_entries=2)
        for i in range(3):
            c.store(ask(f"item {i}"), answer(str(i)), ttl_s=None)
        assert stored(backend, c) == ["1", "2"]


def test_a_clear_reaches_a_reader_even_when_the_refill_is_identical(backend_spec):
    """The last-entry check alone cannot see a clear whose refill repeats the last entry
    byte for byte; the store's clear count can."""
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as one, open_backend(url, prefix=prefix) as two:
        a, b = cache(one), cache(two)
        a.store(ask("item 1"), answer("1"), ttl_s=None)
        a.store(ask("item 2"), answer("2"), ttl_s=None)
        assert b.lookup(ask("item 1")) is not None
        one.cache_clear()
        refill = cache(one)
        refill.store(ask("item 3"), answer("3"), ttl_s=None)
        refill.store(ask("item 2"), answer("2"), ttl_s=None)  # the same bytes as before
        assert b.lookup(ask("item 1")) is None
        assert held(b) == ["3", "2"]


@pytest.mark.parametrize("bad", [0, -1])
def test_a_bound_below_one_is_refused(tmp_path, bad):
    from evalgate.runtime import PolicyError

    with (
        open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend,
        pytest.raises(PolicyError, match="max_entries must be >= 1"),
    ):
        cache(backend, max_entries=bad)


def test_cached_answer_round_trip_through_format_two():
    vector = np.zeros(DIM, dtype=np.float32)
    vector[0] = 1.0
    full = CachedAnswer(content="x\ud800", model="m", tokens_in=3, cost_usd=0.5, created=1.0)
    raw = encode_entry(vector, "g1:\ud800'q'", full, 123.5)
    _, sigs, answers, expires = decode_entries([raw], DIM)
    assert sigs == ["g1:\ud800'q'"] and expires.tolist() == [123.5]
    assert content(answers[0]) == "x\ud800"


def test_expired_entries_a_compaction_cannot_reach_do_not_compact_every_write(backend_spec):
    """SQLite removes expired entries wherever they are; Redis removes the expired run at
    the list's old end, so entries behind a live one stay (masked) until they are oldest,
    and the writer stops asking after one compaction that removed nothing."""
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend)
        c.store(ask("item 0"), answer("live"), ttl_s=None)
        for i in range(1, 4):
            c.store(ask(f"item {i}"), answer(f"short {i}"), ttl_s=0.05)
        time.sleep(0.1)
        calls = []
        compact = backend.semantic_compact

        def counted(*args: Any) -> int:
            calls.append(args)
            return compact(*args)

        backend.semantic_compact = counted  # type: ignore[method-assign]
        c.store(ask("item 4"), answer("four"), ttl_s=None)
        c.store(ask("item 5"), answer("five"), ttl_s=None)
        if url.startswith("sqlite"):
            assert stored(backend, c) == ["live", "four", "five"]
        else:
            assert stored(backend, c) == ["live", "short 1", "short 2", "short 3", "four", "five"]
            assert len(calls) == 1  # removed nothing: not asked again for the same entries
        assert c.lookup(ask("item 2")) is None


def test_a_load_started_before_a_fork_is_started_again_in_the_child(tmp_path):
    from concurrent.futures import Future

    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        scope = cache(backend).scope_of(ask("item 1"))
        assert scope is not None
        _bulk(backend, scope, INLINE_LOAD + 10)
        reader = cache(backend)
        state = reader._scope(scope)
        # What a child process inherits: the parent's load in flight, whose thread it lacks.
        state.loading, state.loading_pid = Future(), -1
        assert reader.lookup(ask("item 1")) is None
        assert state.loading is not None and state.loading_pid > 0
        state.loading.result(timeout=60)
        hit = reader.lookup(ask("item 1"))
        assert hit is not None and hit.answer.content == "1"


def test_a_reader_during_many_compactions_never_serves_a_wrong_entry(backend_spec):
    """One process stores 400 entries into a scope bounded at 30 (a compaction every 3
    stores) while this one looks entries up: every hit is the entry asked for, and what
    this process holds never grows past the bound by more than the stores in between."""
    url, prefix = backend_spec
    worker = multiprocessing.get_context("fork").Process(
        target=_store_many, args=(url, prefix, 0, 400, 30)
    )
    with open_backend(url, prefix=prefix) as backend:
        reader = cache(backend, max_entries=30)
        worker.start()
        hits = 0
        largest = 0
        while worker.is_alive() or hits == 0:
            for i in range(0, 400, 7):
                hit = reader.lookup(ask(f"item {i}", "acme"))
                assert hit is None or hit.answer.content == str(i)
                hits += hit is not None
            largest = max(largest, len(held(reader, "acme")))
        worker.join(60)
        assert worker.exitcode == 0
        assert hits > 0 and largest <= 30 + 30
        assert reader.lookup(ask("item 399", "acme")) is not None
        assert held(reader, "acme") == stored(backend, reader, "acme")


def _with_answer_bytes(vector: np.ndarray, raw_answer: bytes) -> bytes:
    """An entry of format 2 whose answer bytes are ``raw_answer`` (a broken writer's)."""
    good = encode_entry(vector, "", answer("x"), None)
    return good[: len(good) - len(answer("x").to_bytes())] + raw_answer


@pytest.mark.parametrize(
    "raw_answer",
    [
        b"\xff\xfe",  # not UTF-8
        b"not json",
        b'"a string"',  # JSON, not an object
        b"[" * 100_000,  # nested past the parser's recursion limit
        b'{"v":1,"content":5,"model":"m"}',
        b'{"v":1,"content":null,"model":"m"}',
        b'{"v":1,"content":"c","model":["m"]}',
        b'{"v":1,"content":"c","model":"m","tokens_in":"12"}',
        b'{"v":1,"content":"c","model":"m","tokens_out":true}',
        b'{"v":1,"content":"c","model":"m","cost_usd":"0.1"}',
        b'{"v":1,"content":"c","model":"m","created":"now"}',
        b'{"v":1,"content":"c","model":"m","finish_reason":{}}',
    ],
    ids=lambda raw: raw[:40].decode("utf-8", "replace"),
)
def test_an_answer_of_the_wrong_shape_is_never_served(backend_spec, raw_answer):
    """The most similar entry's answer is broken (a broken or hostile writer): the lookup
    neither fails nor serves it; the next best entry is served."""
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend)
        scope = c.scope_of(ask("item 5"))
        assert scope is not None
        near = np.zeros(DIM, dtype=np.float32)
        near[5], near[6] = 0.999, math.sqrt(1 - 0.999**2)
        backend.semantic_add(scope, encode_entry(near, "", answer("good"), None))
        best = np.zeros(DIM, dtype=np.float32)
        best[5] = 1.0
        backend.semantic_add(scope, _with_answer_bytes(best, raw_answer))
        for reader in (c, cache(backend)):
            hit = reader.lookup(ask("item 5"))
            assert hit is not None and hit.answer.content == "good"
            assert hit.similarity is not None and hit.similarity < 1.0


@pytest.mark.parametrize("raw", [b'"a string"', b"[" * 100_000])
def test_an_exact_cache_entry_of_the_wrong_shape_is_a_miss(tmp_path, raw):
    from evalgate.runtime.cache import ExactCache

    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        exact = ExactCache(backend)
        request = ask("item 1")
        backend.cache_set(ExactCache.KEY_PREFIX + request.key, raw, None)
        assert exact.lookup(request) is None


def test_an_entry_of_the_first_format_nested_too_deep_is_skipped(backend_spec):
    """A JSON head past the parser's recursion limit is one torn entry: the rest of the
    scope still loads (it made every lookup in the scope fail)."""
    import struct

    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend)
        scope = c.scope_of(ask("item 1"))
        assert scope is not None
        deep = b"[" * 100_000
        backend.semantic_add(scope, struct.pack("<I", len(deep)) + deep + b"\0" * (4 * DIM))
        vector = np.zeros(DIM, dtype=np.float32)
        vector[1] = 1.0
        backend.semantic_add(scope, encode_entry(vector, "", answer("one"), None))
        hit = c.lookup(ask("item 1"))
        assert hit is not None and hit.answer.content == "one"


def test_a_store_during_a_background_load_does_not_hold_up_the_ledger(tmp_path):
    """Entries are written on the ledger's thread: a store into a scope still loading
    appends at once (its bound is checked by a store after the load) instead of holding
    every queued ledger record until the load ends (up to 3 x 60 s; a load queued behind
    other scopes' loads takes that long)."""
    import threading

    from evalgate.runtime.ledger import Ledger, UsageRecord

    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        scope = cache(backend).scope_of(ask("item 1"))
        assert scope is not None
        _bulk(backend, scope, INLINE_LOAD + 10)
        # The load's second read waits for the gate: a load that takes its time.
        gate = threading.Event()
        read = backend.semantic_tail

        def slow_tail(scope: str, after: int, limit: int | None = None) -> Any:
            if after > 0 and limit is not None:
                gate.wait(60)
            return read(scope, after, limit)

        backend.semantic_tail = slow_tail  # type: ignore[method-assign]
        ledger = Ledger(backend, write_behind=True)
        try:
            c = cache(backend, writer=ledger.submit)
            assert c.lookup(ask("item 1")) is None  # the load starts, and waits
            c.store(ask("item 2"), answer("new"), ttl_s=None)
            ledger.append(UsageRecord(ts=time.time(), feature="f"))
            deadline = time.monotonic() + 10
            while not list(backend.ledger_read()) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(list(backend.ledger_read())) == 1  # written while the load waits
        finally:
            gate.set()
            ledger.close()
        state = c._scope(scope)
        assert state.loading is not None
        state.loading.result(timeout=60)
        assert c.lookup(ask("item 2")) is not None  # loaded
        assert stored(backend, c)[-1] == "new" and held(c)[-1] == "new"


def _look_up_in_child(c: Any, done: Any) -> None:
    hit = c.lookup(ask("item 1"))
    c.store(ask("item 2"), answer("two"), ttl_s=None)
    again = c.lookup(ask("item 2"))
    done.put((None if hit is None else content(hit.answer), again and content(again.answer)))


def test_a_fork_while_another_thread_holds_a_scope_does_not_hang_the_child(tmp_path):
    """A thread of the parent inside a lookup or a write (holding the scope's lock) when
    another forks: in the child that thread does not exist, so the lock would never be
    released and the child's first lookup in the scope hung forever. The child reads the
    scope again (what the thread was changing may be half-changed)."""
    import queue
    import threading

    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        c = cache(backend)
        c.store(ask("item 1"), answer("one"), ttl_s=None)
        assert c.lookup(ask("item 1")) is not None
        state = c._scope(c.scope_of(ask("item 1")))  # type: ignore[arg-type]
        holding, release = threading.Event(), threading.Event()

        def in_flight() -> None:
            with state.lock:  # what a lookup on another thread holds while it reads
                holding.set()
                release.wait(60)

        thread = threading.Thread(target=in_flight)
        thread.start()
        holding.wait(10)
        context = multiprocessing.get_context("fork")
        done: Any = context.Queue()
        child = context.Process(target=_look_up_in_child, args=(c, done))
        child.start()
        try:
            result = done.get(timeout=15)
        except queue.Empty:
            result = "hung"
        finally:
            release.set()
            thread.join()
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()
        assert result == ("one", "two")
        assert child.exitcode == 0


def test_a_threshold_of_one_serves_identical_turns(tmp_path):
    """1.0 serves only identical turns, and all of them: a float32 unit vector's dot with
    itself is 1 - 6e-8 as often as not (57 of 200 random MiniLM-shaped rows missed)."""

    class Random:
        def encode(self, texts: list[str]) -> Any:
            rows = []
            for text in texts:
                seed = int(text.split()[-1])
                row = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
                rows.append(row / np.linalg.norm(row))
            return np.stack(rows)

    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        from evalgate.runtime.semantic_cache import SemanticCache

        c = SemanticCache(backend, threshold=1.0, embedding_model="random==1", encoder=Random())
        for i in range(60):
            c.store(ask(f"turn {i}"), answer(str(i)), ttl_s=None)
        for reader in (
            c,
            SemanticCache(backend, threshold=1.0, embedding_model="random==1", encoder=Random()),
        ):
            for i in range(60):
                hit = reader.lookup(ask(f"turn {i}"))
                assert hit is not None and hit.answer.content == str(i) and hit.similarity == 1.0
            assert reader.lookup(ask("turn 999")) is None


def _compact_twice_and_refill(url: str, prefix: str, scope: str, size: int, clear: bool) -> None:
    with open_backend(url, prefix=prefix) as backend:
        if clear:
            backend.cache_clear()
            _bulk(backend, scope, size, tag="c")
            return
        for round_ in range(2):
            generation = backend.semantic_tail(scope, 0, 1).generation
            assert backend.semantic_compact(scope, generation, time.time(), size - 300) == 300
            _bulk(backend, scope, 300, tag=f"r{round_}-")  # back to the same length


@pytest.mark.parametrize("clear", [False, True], ids=["compacted-twice", "cleared"])
def test_a_background_load_across_compactions_and_a_refill_to_the_same_length(backend_spec, clear):
    """Between two reads of a background load, another process compacts the scope twice
    (or clears it) and refills it to the same length: positions and the last entry read
    could line up again (ABA), the generation does not. The load starts over and holds
    exactly what the store holds."""
    import threading

    url, prefix = backend_spec
    size = INLINE_LOAD + 500
    with open_backend(url, prefix=prefix) as backend, open_backend(url, prefix=prefix) as own:
        scope = cache(backend).scope_of(ask("item 1"))
        assert scope is not None
        _bulk(backend, scope, size)
        paused, resume = threading.Event(), threading.Event()
        read = own.semantic_tail

        def paused_tail(scope: str, after: int, limit: int | None = None) -> Any:
            if after > 0 and limit is not None and not paused.is_set():
                paused.set()  # the load's second read: the other process runs now
                resume.wait(60)
            return read(scope, after, limit)

        own.semantic_tail = paused_tail  # type: ignore[method-assign]
        reader = cache(own)
        assert reader.lookup(ask("item 1")) is None
        assert paused.wait(30)
        other = multiprocessing.get_context("fork").Process(
            target=_compact_twice_and_refill, args=(url, prefix, scope, size, clear)
        )
        other.start()
        other.join(60)
        resume.set()
        assert other.exitcode == 0
        state = reader._scope(scope)
        assert state.loading is not None
        state.loading.result(timeout=60)
        reader.lookup(ask("item 1"))
        while state.loading is not None:  # a load from before the change is read again
            state.loading.result(timeout=60)
            reader.lookup(ask("item 1"))
        assert len(stored(backend, reader)) == size
        assert held(reader) == stored(backend, reader)


def test_the_same_entry_stored_twice_is_held_twice_not_three_times(backend_spec):
    """An entry this process stored is held at once and skipped when read back; the same
    bytes stored twice (an answer stored with a fixed ``created``, no expiry) were skipped
    once and held again: the process held more than the store, and counted it toward
    the bound."""
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        c = cache(backend)
        for _ in range(3):
            c.store(ask("item 1"), answer("same"), ttl_s=None)
        c.store(ask("item 2"), answer("two"), ttl_s=None)
        assert c.lookup(ask("item 2")) is not None
        assert held(c) == stored(backend, c) == ["same", "same", "same", "two"]


def test_garbage_under_a_scopes_generation_key_is_a_miss_not_an_error(tmp_path):
    """Another writer's value under evalgate's generation key (Redis): a lookup is a miss
    (a backend fault, logged), never a ValueError out of the application's call."""
    from tests.runtime.conftest import backend_url

    url, prefix = backend_url("redis", tmp_path)
    with open_backend(url, prefix=prefix) as backend:
        try:
            c = cache(backend)
            c.store(ask("item 1"), answer("one"), ttl_s=None)
            scope = c.scope_of(ask("item 1"))
            backend._r.set(backend._semantic_gen + scope, b"not a number")
            assert cache(backend).lookup(ask("item 1")) is None
        finally:
            backend.delete_all()
