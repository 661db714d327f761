"""Defects a hostile review found in the runtime policy, each pinned by a test.

Real parts only: litellm against the fault-injecting server on 127.0.0.1, real SQLite
files, the real Redis at REDIS_URL and a redis-server this module starts and stops.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import Policy, PolicyError
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
    assert text.startswith(f"{path}") and "\n" not in text and len(text) < 400


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
        backend._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all rows in the file
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
