"""Processes opening one new response-cache file at the same moment all succeed.

Found when a pytest-xdist run failed one item with "database is locked": two workers
created the cache file together and SQLite's busy timeout does not cover switching a new
database to WAL.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from evalgate.engine.cache import ResponseCache
from evalgate.results import CallResult

REOPENS = 30


def _open_and_put(path: str, barrier: object, index: int, errors: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        for j in range(REOPENS):
            cache = ResponseCache(Path(path))
            cache.put(f"k{index}-{j}", "m", CallResult(output=f"answer {index} " * 100))
            cache.close()
    except Exception as exc:
        errors.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


def test_many_processes_create_the_same_cache_file_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    # On the code before the fix, 4 of 4 runs of these 10 rounds hit "database is locked".
    for attempt in range(10):
        path = tmp_path / f"a{attempt}" / "responses.sqlite3"
        workers = 8
        barrier, errors = context.Barrier(workers), context.Queue()
        procs = [
            context.Process(target=_open_and_put, args=(str(path), barrier, i, errors))
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
        assert failures == []
        assert all(p.exitcode == 0 for p in procs)
        assert len(ResponseCache(path)) == workers * REOPENS
