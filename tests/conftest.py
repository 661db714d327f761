"""Shared fixtures: a real OpenAI-protocol server on 127.0.0.1 for fault injection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evalgate.testing.fake_openai import FakeOpenAIServer

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeOpenAIServer]:
    """One fault-injecting server for the session; tests isolate by behaviour `key`."""
    with FakeOpenAIServer(mode="process") as server:
        yield server
