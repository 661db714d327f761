"""Project-wide pytest configuration: what every test run in this repository shares.

A project that uses evalgate keeps its shared fixtures and its own graders in its
top-level conftest.py; this one holds evalgate's own shared fixtures. It is loaded into
every pytest run here (``pytest tests/`` and ``pytest --evalgate suites/`` alike), so it
imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from evalgate.testing.fake_openai import FakeOpenAIServer

# Tests talk only to 127.0.0.1: a test module that imports litellm itself must find it
# set to its bundled price map, or litellm fetches one from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# pytester runs pytest --evalgate in-process for the plugin tests; pytest only honours
# pytest_plugins in the top-level conftest.
pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeOpenAIServer]:
    """A real OpenAI-protocol server on 127.0.0.1 that injects faults, one per session.

    Tests isolate their traffic by the behaviour key in the model name (see
    :func:`evalgate.testing.fake_openai.make_model`).
    """
    from evalgate.testing.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(mode="process") as server:
        yield server
