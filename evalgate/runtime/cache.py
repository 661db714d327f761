"""The runtime response cache: exact lookups now, semantic ones later, behind one interface.

A :class:`CacheRequest` is everything that identifies a request (model, endpoint,
messages after trimming, generation parameters after the cap, tenant namespace). The
exact cache keys it with :func:`evalgate.cachekey.request_key` — the same function as
the eval cache, without the eval-only repeat index — so what was measured is what is
served. A semantic cache implements the same :class:`ResponseCache` protocol and returns
a :class:`Hit` with its similarity.

What is stored is a :class:`CachedAnswer`: the text and the original call's figures,
never an error, never a stream that was cut or abandoned, never a tool call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Protocol

from evalgate.cachekey import request_key
from evalgate.runtime.backends.base import Backend

ENTRY_VERSION = 1


@dataclass(frozen=True)
class CacheRequest:
    """A request's identity for the cache (the tenant is the namespace)."""

    model: str
    messages: Sequence[Mapping[str, Any]]
    params: Mapping[str, Any]
    api_base: str | None = None
    namespace: str = ""

    @cached_property
    def key(self) -> str:
        """The exact-cache key (computed once)."""
        return request_key(
            model=self.model,
            messages=self.messages,
            params=self.params,
            api_base=self.api_base,
            namespace=self.namespace,
        )


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """What a hit serves: the answer and the figures of the call that produced it."""

    content: str
    model: str
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    created: float = 0.0

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["v"] = ENTRY_VERSION
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedAnswer | None:
        try:
            data = json.loads(raw)
            if data.pop("v", None) != ENTRY_VERSION:
                return None
            return cls(**data)
        except (ValueError, TypeError):
            return None  # an entry of another version: a miss, never an error


@dataclass(frozen=True, slots=True)
class Hit:
    """A cache hit: the answer, how it was found, and (semantic) how close it was."""

    answer: CachedAnswer
    kind: str = "exact"
    similarity: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class ResponseCache(Protocol):
    """What the call path needs of a cache."""

    def lookup(self, request: CacheRequest) -> Hit | None:
        """The live entry serving ``request``, or None."""

    def store(self, request: CacheRequest, answer: CachedAnswer, ttl_s: float | None) -> None:
        """Keeps ``answer`` for ``request`` for ``ttl_s`` seconds (None: no expiry)."""


class ExactCache:
    """Serves a request only when its key matches byte for byte, within its tenant."""

    KEY_PREFIX = "x:"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def lookup(self, request: CacheRequest) -> Hit | None:
        raw = self.backend.cache_get(self.KEY_PREFIX + request.key)
        if raw is None:
            return None
        answer = CachedAnswer.from_bytes(raw)
        return None if answer is None else Hit(answer)

    def store(self, request: CacheRequest, answer: CachedAnswer, ttl_s: float | None) -> None:
        self.backend.cache_set(self.KEY_PREFIX + request.key, answer.to_bytes(), ttl_s)
