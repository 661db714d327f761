"""Defects a hostile review found in the runtime policy, each pinned by a test.

Real parts only: litellm against the fault-injecting server on 127.0.0.1, real SQLite
files, the real Redis at REDIS_URL and a redis-server this module starts and stops.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import Ledger, Policy, PolicyError, open_backend
from evalgate.runtime.policy_file import load_policy_file
from evalgate.testing.fake_openai import make_model
from tests.runtime.test_policy_calls import ask, feature, make_policy, records


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:10]


# -- 6. a mocked answer is never served to a real call --------------------------------------


def test_a_mocked_answer_is_never_served_to_a_real_call(
    tmp_path: Path, backend, fake_server, key
) -> None:
    model = make_model(key=key, reply="the real answer")
    policy = make_policy(tmp_path, backend, {"qa": feature(model, fake_server.base_url)})
    mocked = policy.completion(feature="qa", messages=ask(), mock_response="CANNED TEXT")
    assert mocked.choices[0].message.content == "CANNED TEXT"
    assert fake_server.request_count(key) == 0  # litellm answered the mock itself
    real = policy.completion(feature="qa", messages=ask())
    assert real.choices[0].message.content == "the real answer"
    assert fake_server.request_count(key) == 1
    again = policy.completion(feature="qa", messages=ask(), mock_response="CANNED TEXT")
    assert again.choices[0].message.content == "CANNED TEXT"
    assert len(records(policy)) == 3
    policy.close()


# -- 2. hostile policy files: one line naming the file (and key), never a traceback ---------

GOOD = b'{"version": 1, "features": {"f": {"model": "m"}}}'


def _feature_with(text: str) -> bytes:
    return ('POLICY = {"version": 1, "features": {"f": {"model": "m", ' + text + "}}}\n").encode()


HOSTILE_POLICIES = {
    "not-utf8": (
        b"# policy\nPOLICY = " + GOOD[:-2] + b', "x\xff\xfe": 1}}\n',
        r"p\.py:2: not UTF-8 text \(byte 0xff",
    ),
    "null-byte": (b"POLICY = " + GOOD + b"\n\x00\n", r"p\.py:2: contains a null byte"),
    "huge-decimal": (
        _feature_with('"max_tokens": 1' + "0" * 100_000),
        r"p\.py:1: not valid Python: an integer literal with too many digits",
    ),
    "huge-hex": (
        _feature_with('"timeout_s": 0x' + "f" * 30_000),
        r"p\.py:1: features\.f\.timeout_s: integer out of range \(an integer of 120000 bits\)",
    ),
    "huge-int-in-evidence": (
        _feature_with('"evidence": {"n": 0x' + "f" * 30_000 + "}"),
        r"features\.f\.evidence\.n: integer out of range",
    ),
    "assigned-twice": (
        b"POLICY = " + GOOD + b"\n\nPOLICY = " + GOOD + b"\n",
        r"p\.py:3: POLICY is assigned 2 times \(lines 1, 3\)",
    ),
    "nested-lists": (
        ("POLICY = " + "[" * 150 + "]" * 150 + "\n").encode(),
        r"p\.py:1: POLICY is nested more than 40 levels deep",
    ),
    "nested-in-evidence": (
        _feature_with('"evidence": {"x": ' + "{'a': " * 60 + "1" + "}" * 60 + "}"),
        r"p\.py:1: POLICY is nested more than 40 levels deep",
    ),
    "chained-sum": (("POLICY = 1" + " + 1" * 100_000 + "\n").encode(), r"p\.py: cannot parse"),
    "chained-minus": (("POLICY = " + "-" * 100_000 + "1\n").encode(), r"p\.py: cannot parse"),
    "unhashable-key": (b"POLICY = {[1]: 2}\n", r"p\.py:1: POLICY must be plain literal data"),
    "bytes-value": (
        _feature_with('"evidence": {"suite_hash": b"abc"}'),
        r"features\.f\.evidence\.suite_hash: expected plain data .*found bytes",
    ),
    "int-feature-name": (
        b'POLICY = {"version": 1, "features": {1: {"model": "m"}}}\n',
        r"p\.py:1: features: keys must be strings, found 1",
    ),
    "infinite-timeout": (
        _feature_with('"timeout_s": 1e999'),
        r"features\.f\.timeout_s: expected a finite number, found inf",
    ),
    "expected-not-a-dict": (
        _feature_with('"evidence": {"expected": [1]}'),
        r"features\.f\.evidence\.expected: expected a dict, found \[1\]",
    ),
    "expected-figure-not-a-number": (
        _feature_with('"evidence": {"expected": {"cost_per_call_usd": "cheap"}}'),
        r"features\.f\.evidence\.expected\.cost_per_call_usd: expected a finite number",
    ),
    "key-with-a-newline": (
        _feature_with('"modle\\nx": 1'),
        r"p\.py:1: features\.f\.modle\\nx: unknown key",
    ),
    "megabyte-key": (
        _feature_with('"' + "k" * 1_000_000 + '": 1'),
        r"p\.py:1: features\.f\.kkkk+\.\.\.: unknown key",
    ),
    "suite-hash-not-a-string": (
        _feature_with('"evidence": {"suite_hash": ["a"]}'),
        r"features\.f\.evidence\.suite_hash: expected a non-empty string",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_POLICIES))
def test_hostile_policy_files_are_one_line_errors(tmp_path: Path, name: str) -> None:
    content, message = HOSTILE_POLICIES[name]
    path = tmp_path / "p.py"
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=message) as excinfo:
        load_policy_file(path)
    text = str(excinfo.value)
    assert text.startswith(f"{path}") and "\n" not in text and len(text) < 600


def test_a_policy_file_over_16_mib_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "p.py"
    path.write_bytes(b"POLICY = " + GOOD + b"\n" + b"#" * (16 << 20))
    with pytest.raises(PolicyError, match=r"p\.py: larger than 16 MiB: not a policy module"):
        load_policy_file(path)


def test_a_hostile_policy_is_one_line_from_the_command(tmp_path: Path) -> None:
    """Through `evalgate usage --policy`: one line on stderr, no traceback."""
    path = tmp_path / "p.py"
    path.write_bytes(HOSTILE_POLICIES["huge-hex"][0])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evalgate.cli",
            "usage",
            "--policy",
            str(path),
            "--backend",
            f"sqlite:///{tmp_path / 'state.sqlite3'}",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"evalgate: error: {path}:1: features.f.timeout_s: ")
    assert len(proc.stderr.strip().splitlines()) == 1


# -- 3. a corrupt SQLite state file fails at construction, in one line ----------------------


def _truncated_state(path: Path) -> None:
    from evalgate.runtime.backends.sqlite import SQLiteBackend

    full = path.with_name("full.sqlite3")
    with SQLiteBackend(full) as backend:
        for i in range(2000):
            backend.ledger_append(float(i), b"r" * 200)
            backend.cache_set(f"k{i}", b"v" * 200, None)
        with backend._connections.use() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all rows in the file
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["random-bytes", "truncated", "a-directory"])
def test_a_corrupt_sqlite_state_file_fails_at_construction(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "state.sqlite3"
    if damage == "random-bytes":
        path.write_bytes(random.Random(7).randbytes(16384))
    elif damage == "truncated":
        _truncated_state(path)
    else:
        path.mkdir()
    policy_path = tmp_path / "policy.py"
    policy_path.write_text(render_policy({"version": 1, "features": {}}))
    with pytest.raises(PolicyError) as excinfo:
        Policy.load(policy_path, backend=f"sqlite:///{path}")
    text = str(excinfo.value)
    assert text.startswith(f"{path}: cannot use this file as the runtime's SQLite state (")
    assert "\n" not in text
    proc = subprocess.run(
        [sys.executable, "-m", "evalgate.cli", "usage", "--backend", f"sqlite:///{path}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"evalgate: error: {path}: cannot use this file")
    assert len(proc.stderr.strip().splitlines()) == 1


# -- 1. a backend that is down never fails an application's call ---------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    for _ in range(500):  # until it answers (a readiness wait, not a timed assertion)
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}")
            time.sleep(0.02)
    client.close()
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "evalgate.runtime" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


def _call_then_flush(policy: Policy, **kwargs: Any) -> Any:
    # Until the writer thread has tried (and failed) to store an answer, this process
    # serves it from memory; waiting for the writer makes each call meet the backend.
    response = policy.completion(feature="qa", messages=ask(), **kwargs)
    if kwargs.get("stream"):
        response = list(response)
    policy.ledger.flush()
    return response


@pytest.mark.redis
def test_redis_stopped_mid_run_the_calls_go_on_and_it_is_logged_once(
    tmp_path: Path, fake_server, key, caplog
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    caplog.set_level(logging.WARNING, logger="evalgate.runtime")
    port = _free_port()
    server = _start_redis(port, tmp_path)
    try:
        model = make_model(key=key, reply="the answer")
        path = tmp_path / "policy.py"
        path.write_text(
            render_policy({"version": 1, "features": {"qa": feature(model, fake_server.base_url)}})
        )
        policy = Policy.load(path, backend=f"redis://127.0.0.1:{port}/0")
        policy.failures.retry_after_s = 0  # every call tries the backend: no rest between
        assert policy.completion(feature="qa", messages=ask()).choices[0].message.content
        policy.ledger.flush()
        assert policy.completion(feature="qa", messages=ask())._hidden_params["evalgate"]["cached"]
        assert fake_server.request_count(key) == 1

        _stop(server)
        answers = [_call_then_flush(policy) for _ in range(3)]
        streamed = list(policy.completion(feature="qa", messages=ask(), stream=True))
        policy.ledger.flush()
        assert [a.choices[0].message.content for a in answers] == ["the answer"] * 3
        assert (
            "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "the answer"
        )
        assert fake_server.request_count(key) == 5  # each lookup missed; the model answered
        assert policy.failures.counts["cache lookup"] == 4
        assert policy.failures.counts["ledger write"] == 4  # the records lost, counted
        (lookup,) = _warnings(caplog, "(cache lookup: ConnectionError")
        assert f"runtime backend redis://127.0.0.1:{port}/0 failed" in lookup
        assert len(_warnings(caplog, "(ledger write: ConnectionError")) == 1
        assert len(_warnings(caplog, "(cache write: ConnectionError")) == 1

        server = _start_redis(port, tmp_path)  # back, empty: a miss that is stored again
        policy.completion(feature="qa", messages=ask())
        policy.ledger.flush()
        hit = policy.completion(feature="qa", messages=ask())
        assert hit._hidden_params["evalgate"]["cached"] and fake_server.request_count(key) == 6
        assert len(_warnings(caplog, "answers again")) == 1
        assert [r.cached for r in policy.ledger.read()] == [False, True]
        policy.close()
    finally:
        _stop(server)


def test_redis_on_a_closed_port_sync_async_and_streamed(
    tmp_path: Path, fake_server, key, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="evalgate.runtime")
    model = make_model(key=key, reply="still answered")
    path = tmp_path / "policy.py"
    path.write_text(
        render_policy({"version": 1, "features": {"qa": feature(model, fake_server.base_url)}})
    )
    with Policy.load(path, backend="redis://127.0.0.1:1/0") as policy:  # nothing listens
        assert _call_then_flush(policy).choices[0].message.content == "still answered"
        chunks = _call_then_flush(policy, stream=True)
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            == "still answered"
        )

        async def run() -> str:
            response = await policy.acompletion(feature="qa", messages=ask())
            return str(response.choices[0].message.content)

        assert asyncio.run(run()) == "still answered"
        policy.ledger.flush()
    assert fake_server.request_count(key) == 3
    assert len(_warnings(caplog, "(cache lookup: ConnectionError")) == 1


def test_sqlite_tables_gone_under_a_running_policy(
    tmp_path: Path, fake_server, key, caplog
) -> None:
    """An OperationalError (here: the tables dropped by another process) is a miss."""
    caplog.set_level(logging.WARNING, logger="evalgate.runtime")
    state = tmp_path / "state.sqlite3"
    model = make_model(key=key, reply="answered anyway")
    path = tmp_path / "policy.py"
    path.write_text(
        render_policy({"version": 1, "features": {"qa": feature(model, fake_server.base_url)}})
    )
    with Policy.load(path, backend=f"sqlite:///{state}") as policy:
        policy.completion(feature="qa", messages=ask())
        policy.ledger.flush()
        other = sqlite3.connect(state)
        other.executescript("DROP TABLE cache; DROP TABLE ledger;")
        other.close()
        for _ in range(2):
            assert _call_then_flush(policy).choices[0].message.content == "answered anyway"
        policy.ledger.flush()
    assert fake_server.request_count(key) == 3
    assert len(_warnings(caplog, "(cache lookup: OperationalError: no such table: cache")) == 1
    # Failed, or skipped while the backend rests after the failure: lost and counted.
    assert policy.failures.counts["ledger write"] == 2
    assert len(_warnings(caplog, "")) == 1


# -- 5. a stream the caller never reads, or leaves half way, is still recorded and settled --


class CountingGuard:
    """A real guard: admits every call and keeps what each admission was settled with."""

    def __init__(self) -> None:
        self.settled: list[list[Any]] = []

    def admit(self, call: Any) -> Any:
        guard = self

        class Admission:
            def __init__(self) -> None:
                self.records: list[Any] = []
                guard.settled.append(self.records)

            def settle(self, record: Any) -> None:
                self.records.append(record)

        return Admission()


def _streaming_policy(
    tmp_path: Path, backend, fake_server, key: str
) -> tuple[Policy, CountingGuard]:
    model = make_model(key=key, reply="one two three four five six", chunk_delay_ms=5)
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.py"
    path.write_text(
        render_policy({"version": 1, "features": {"qa": feature(model, fake_server.base_url)}})
    )
    guard = CountingGuard()
    return Policy.load(path, backend=backend, guards=[guard]), guard


@pytest.mark.parametrize("read", [0, 2])
def test_a_dropped_stream_writes_one_record_and_settles(
    tmp_path: Path, backend, fake_server, key, read: int
) -> None:
    policy, guard = _streaming_policy(tmp_path, backend, fake_server, key)
    stream = policy.completion(feature="qa", messages=ask(), stream=True)
    got = [next(stream) for _ in range(read)]
    del stream
    gc.collect()
    (record,) = records(policy)
    assert record.error == (
        f"Abandoned: the caller closed the stream before its end: {read} chunk(s), "
        f"{sum(len(c.choices[0].delta.content or '') for c in got)} characters received"
    )
    assert not record.cached and record.stream
    assert [len(s) for s in guard.settled] == [1] and guard.settled[0][0] is not None
    # Nothing half-read was cached: the next call reaches the model again.
    assert (
        "".join(
            c.choices[0].delta.content or ""
            for c in policy.completion(feature="qa", messages=ask(), stream=True)
            if c.choices
        )
        == "one two three four five six"
    )
    assert fake_server.request_count(key) == 2
    assert len(records(policy)) == 2 and [len(s) for s in guard.settled] == [1, 1]


def test_a_dropped_cache_replay_writes_one_record(
    tmp_path: Path, backend, fake_server, key
) -> None:
    policy, guard = _streaming_policy(tmp_path, backend, fake_server, key)
    list(policy.completion(feature="qa", messages=ask(), stream=True))
    policy.ledger.flush()
    replay = policy.completion(feature="qa", messages=ask(), stream=True)
    del replay
    gc.collect()
    first, dropped = records(policy)
    assert first.error is None and dropped.cached and dropped.error.startswith("Abandoned")
    assert [len(s) for s in guard.settled] == [1, 1]
    assert fake_server.request_count(key) == 1


def test_read_to_the_end_then_dropped_is_one_record(
    tmp_path: Path, backend, fake_server, key
) -> None:
    policy, guard = _streaming_policy(tmp_path, backend, fake_server, key)
    stream = policy.completion(feature="qa", messages=ask(), stream=True)
    list(stream)
    stream.close()
    del stream
    gc.collect()
    (record,) = records(policy)
    assert record.error is None and record.tokens_out == 6
    assert [len(s) for s in guard.settled] == [1]


def test_async_streams_dropped_or_closed_half_way(
    tmp_path: Path, backend, fake_server, key
) -> None:
    policy, guard = _streaming_policy(tmp_path, backend, fake_server, key)

    async def run() -> None:
        never = await policy.acompletion(feature="qa", messages=ask(), stream=True)
        del never
        gc.collect()
        half = await policy.acompletion(feature="qa", messages=ask("other"), stream=True)
        await anext(half)
        await half.aclose()
        # A cache replay dropped unread (the first one was never stored: it was abandoned).
        full = await policy.acompletion(feature="qa", messages=ask("third"), stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in full if c.choices])
        policy.ledger.flush()
        replay = await policy.acompletion(feature="qa", messages=ask("third"), stream=True)
        del replay
        gc.collect()

    asyncio.run(run())
    never, half, full, replay = records(policy)
    assert never.error.endswith(": 0 chunk(s), 0 characters received")
    assert half.error.startswith("Abandoned") and ": 1 chunk(s)" in half.error
    assert full.error is None and replay.cached and replay.error.startswith("Abandoned")
    assert [len(s) for s in guard.settled] == [1, 1, 1, 1]
    assert fake_server.request_count(key) == 3


EXIT_SCRIPT = """
import sys
from evalgate.runtime import Policy

ask = [{"role": "user", "content": "hello there"}]
first = Policy.load(sys.argv[1], backend=sys.argv[2])
list(first.completion(feature="qa", messages=ask, stream=True))  # read to its end
second = Policy.load(sys.argv[1], backend=sys.argv[2])
OPEN = second.completion(feature="qa", messages=[{"role": "user", "content": "x"}], stream=True)
next(OPEN)
print("exiting with a stream open", flush=True)
"""


def test_a_stream_still_open_at_exit_is_recorded(tmp_path: Path, fake_server, key) -> None:
    """A real process exits with a half-read stream: its record is written, not lost."""
    model = make_model(key=key, reply="one two three four", chunk_delay_ms=5)
    path = tmp_path / "policy.py"
    path.write_text(
        render_policy({"version": 1, "features": {"qa": feature(model, fake_server.base_url)}})
    )
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(path), url],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open_backend(url) as backend:
        done, left = Ledger(backend).read()
    assert done.error is None
    assert left.error == (
        "Abandoned: the caller closed the stream before its end: 1 chunk(s), 0 characters received"
    )


# -- closing an SQLite backend while another thread writes ------------------------------------

_CLOSE_WHILE_WRITING = """
import sqlite3, sys, threading, time
from evalgate.runtime.backends.sqlite import SQLiteBackend

backend = SQLiteBackend(sys.argv[1])
errors = []
done = threading.Event()

def write():
    i = 0
    while not done.is_set():
        i += 1
        try:
            backend.ledger_append(float(i), b"r" * 100)
        except sqlite3.Error as exc:  # closed under us: an error, never a crash
            errors.append(type(exc).__name__)

writers = [threading.Thread(target=write) for _ in range(2)]
for writer in writers:
    writer.start()
for _ in range(300):
    time.sleep(0.002)
    backend.close()
done.set()
for writer in writers:
    writer.join()
print("ok", len(errors))
"""


def test_closing_the_sqlite_backend_while_another_thread_writes_never_crashes(
    tmp_path: Path,
) -> None:
    # A policy closing its backend while its ledger writer thread was mid-statement
    # crashed the interpreter (SIGSEGV): close now waits for the statement in flight.
    proc = subprocess.run(
        [sys.executable, "-c", _CLOSE_WHILE_WRITING, str(tmp_path / "state.sqlite3")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.startswith("ok ")
