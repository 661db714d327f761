"""Backends, exact cache and ledger: the same tests on SQLite and on the real Redis."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evalgate.runtime.backends import Backend, open_backend
from evalgate.runtime.cache import CachedAnswer, CacheRequest, ExactCache
from evalgate.runtime.errors import PolicyError
from evalgate.runtime.ledger import Ledger, UsageRecord

MESSAGES = [{"role": "user", "content": "What is the refund window?"}]


def request(namespace: str = "", **params: object) -> CacheRequest:
    return CacheRequest(
        model="openai/m",
        messages=MESSAGES,
        params={"max_tokens": 16, **params},
        namespace=namespace,
    )


def test_cache_round_trip_and_miss(backend: Backend) -> None:
    cache = ExactCache(backend)
    assert cache.lookup(request()) is None
    cache.store(request(), CachedAnswer("30 days", "openai/m", "stop", 7, 2, 1e-5), ttl_s=60)
    hit = cache.lookup(request())
    assert hit is not None and hit.answer.content == "30 days" and hit.answer.tokens_in == 7
    assert cache.lookup(request(max_tokens=17)) is None  # another parameter, another entry


def test_tenants_never_share_an_entry(backend: Backend) -> None:
    cache = ExactCache(backend)
    cache.store(request("acme"), CachedAnswer("acme's answer", "openai/m"), ttl_s=60)
    assert cache.lookup(request("globex")) is None
    assert cache.lookup(request("")) is None
    hit = cache.lookup(request("acme"))
    assert hit is not None and hit.answer.content == "acme's answer"


def test_entries_expire_after_their_ttl(backend: Backend) -> None:
    cache = ExactCache(backend)
    cache.store(request(), CachedAnswer("short-lived", "openai/m"), ttl_s=0.2)
    cache.store(request(temperature=0.5), CachedAnswer("long-lived", "openai/m"), ttl_s=60)
    assert cache.lookup(request()) is not None
    time.sleep(0.35)
    assert cache.lookup(request()) is None
    assert cache.lookup(request(temperature=0.5)) is not None


def test_an_unreadable_entry_is_a_miss(backend: Backend) -> None:
    backend.cache_set(ExactCache.KEY_PREFIX + request().key, b"{not json", 60)
    assert ExactCache(backend).lookup(request()) is None


def test_cache_clear_keeps_the_ledger(backend: Backend) -> None:
    ExactCache(backend).store(request(), CachedAnswer("x", "openai/m"), ttl_s=None)
    Ledger(backend).append(UsageRecord(ts=time.time(), feature="f"))
    backend.cache_clear()
    assert ExactCache(backend).lookup(request()) is None
    assert len(list(Ledger(backend).read())) == 1


def test_ledger_round_trip_in_time_order_and_since(backend: Backend) -> None:
    ledger = Ledger(backend)
    now = time.time()
    ledger.append(UsageRecord(ts=now - 7200, feature="old", user="u1", cost_usd=0.5))
    ledger.append(
        UsageRecord(
            ts=now,
            feature="doc-qa",
            user="u2",
            tenant="acme",
            model="openai/m",
            tokens_in=10,
            tokens_out=3,
            cost_usd=1e-4,
            latency_ms=12.5,
            ttft_ms=3.0,
            trimmed_tokens=(100, 30),
            error=None,
        )
    )
    records = list(ledger.read())
    assert [r.feature for r in records] == ["old", "doc-qa"]
    assert records[1].trimmed_tokens == (100, 30) and records[1].tenant == "acme"
    assert [r.feature for r in ledger.read(since=now - 3600)] == ["doc-qa"]


WRITER = textwrap.dedent(
    """
    import sys, time
    from evalgate.runtime.backends import open_backend
    from evalgate.runtime.ledger import Ledger, UsageRecord
    url, prefix, worker = sys.argv[1], sys.argv[2], sys.argv[3]
    n, start = int(sys.argv[4]), float(sys.argv[5])
    # write-behind, as the policy writes: the records still queued at exit are written.
    ledger = Ledger(open_backend(url, prefix=prefix), write_behind=True)
    while time.time() < start:
        time.sleep(0.001)
    for i in range(n):
        ledger.append(UsageRecord(ts=time.time(), feature="f", user=f"{worker}:{i}"))
    """
)


def test_eight_processes_writing_at_once_lose_no_record(
    backend_spec: tuple[str, str], tmp_path: Path
) -> None:
    url, prefix = backend_spec
    n = 150
    start = time.time() + 2.0  # every writer imports first, then all start together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, prefix, str(w), str(n), repr(start)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(8)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with open_backend(url, prefix=prefix) as backend:
        users = [r.user for r in Ledger(backend).read()]
    assert len(users) == 8 * n
    assert set(users) == {f"{w}:{i}" for w in range(8) for i in range(n)}


def test_unknown_backend_scheme_is_one_line() -> None:
    with pytest.raises(PolicyError, match=r"unknown scheme 'postgres'; expected sqlite:///"):
        open_backend("postgres://localhost/db")


def test_sqlite_url_follows_sqlalchemy_convention(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_backend("sqlite:///rel/state.db") as rel:
        assert Path(rel.path) == Path("rel/state.db")  # type: ignore[attr-defined]
    absolute = tmp_path / "abs.db"
    with open_backend(f"sqlite:///{absolute}") as abs_:
        assert Path(abs_.path) == absolute  # type: ignore[attr-defined]
    assert (tmp_path / "rel" / "state.db").exists()


def _append_in_child(backend: Backend, done: object) -> None:
    try:
        backend.ledger_append(2.0, b"child")
        done.put("written")  # type: ignore[attr-defined]
    except Exception as exc:
        done.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


def test_a_fork_during_another_threads_sqlite_transaction_leaves_the_child_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite keeps each file's lock state per process: a child forked while another
    thread of the parent was inside a write transaction inherited a lock nobody in the
    child would release, and every write of the child to that file then failed with
    "database is locked" after the busy timeout (30 s each). A fork now waits for the
    statements in flight to end."""
    import multiprocessing
    import threading

    from evalgate.runtime.backends import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_S", 2.0)  # the child's, when it fails
    with open_backend(f"sqlite:///{tmp_path / 's.sqlite3'}") as backend:
        assert isinstance(backend, sqlite_backend.SQLiteBackend)
        backend.ledger_append(1.0, b"parent")
        holding = threading.Event()

        def in_transaction() -> None:
            with backend._connections.use() as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO ledger (ts, record) VALUES (1.5, x'00')")
                holding.set()
                time.sleep(0.3)
                db.execute("COMMIT")

        thread = threading.Thread(target=in_transaction)
        thread.start()
        holding.wait(10)
        context = multiprocessing.get_context("fork")
        done = context.Queue()
        child = context.Process(target=_append_in_child, args=(backend, done))
        child.start()
        result = done.get(timeout=30)
        child.join(10)
        thread.join()
        assert result == "written"
        assert [record for _, record in backend.ledger_read()][-1] == b"child"


def _append_then_exit(ledger: Ledger) -> None:
    ledger.append(UsageRecord(ts=2.0, feature="child"))
    ledger.flush()  # what the exit hook does at a normal exit (os.fork, then sys.exit)


def test_a_forked_child_writes_its_ledger_records_and_exits(backend_spec) -> None:
    """A policy loaded before the fork (a pre-forking server): the writer thread stays in
    the parent, so the child queued its records (and cache writes) for a thread it does
    not have, and then hung forever at exit (or in ``flush``) waiting for them. The child
    now starts its own writer."""
    import multiprocessing

    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        ledger = Ledger(backend, write_behind=True)
        ledger.append(UsageRecord(ts=1.0, feature="parent"))
        ledger.flush()
        child = multiprocessing.get_context("fork").Process(
            target=_append_then_exit, args=(ledger,)
        )
        child.start()
        child.join(20)
        hung = child.is_alive()
        if hung:
            child.kill()
            child.join()
        assert not hung and child.exitcode == 0
        assert sorted(r.feature for r in ledger.read()) == ["child", "parent"]
        ledger.close()
