"""Backends for the runtime tests: real SQLite files and the real Redis at REDIS_URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalgate.runtime.backends import Backend, open_backend

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception:
        return False
    return True


def backend_url(kind: str, tmp_path: Path) -> tuple[str, str]:
    """(url, prefix) of a fresh, isolated backend of ``kind``."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite3'}", "evalgate:"
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL, f"evalgate-test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, prefix) of a fresh backend; Redis keys under the prefix are removed after."""
    url, prefix = backend_url(request.param, tmp_path)
    yield url, prefix
    if request.param == "redis":
        from evalgate.runtime.backends.redis import RedisBackend

        cleanup = RedisBackend.from_url(url, prefix=prefix)
        cleanup.delete_all()
        cleanup.close()


@pytest.fixture
def backend(backend_spec: tuple[str, str]) -> Iterator[Backend]:
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as opened:
        yield opened
