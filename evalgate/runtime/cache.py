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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Protocol

from evalgate.cachekey import request_key
from evalgate.runtime.backends.base import Backend
from evalgate.runtime.degraded import BackendFailures

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


def is_cacheable(
    content: Any, finish_reason: Any, *, tool_calls: bool, refusal: bool = False
) -> bool:
    """Whether an answer may be stored and served again: the one rule for every path.

    Only a complete text answer is reusable: its content is a string and the provider
    said why it stopped (a cut stream has no finish reason). An answer that calls tools
    is never stored: its meaning is the calls, which a cached answer (text only) would
    drop, and whose effects the application must run each time. Nor is a refusal
    (``message.refusal``, content null): a cached answer would serve it as empty text.
    """
    return isinstance(content, str) and not tool_calls and not refusal and finish_reason is not None


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
        try:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (json.loads makes one of a provider's "\ud800") has no
            # UTF-8 form: escaped, the answer still round-trips unchanged.
            return json.dumps(data, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedAnswer | None:
        """The answer stored as ``raw``, or None for anything else: an entry of another
        version, or bytes a broken writer left (not JSON, nested past the parser's
        recursion limit, an object whose fields have the wrong types). A miss, never an
        error, and never an answer whose content is not text."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
        if not isinstance(data, dict) or data.pop("v", None) != ENTRY_VERSION:
            return None
        for name, value in data.items():
            if not _FIELD_CHECKS.get(name, _never)(value):
                return None
        try:
            return cls(**data)
        except TypeError:  # a required field missing
            return None


def _never(value: Any) -> bool:
    return False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


# What each stored field may hold (a served answer's fields reach the application and
# the ledger: a number where text belongs would fail there, far from the broken entry).
_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "content": _text,
    "model": _text,
    "finish_reason": _optional(_text),
    "tokens_in": _optional(_number),
    "tokens_out": _optional(_number),
    "cost_usd": _optional(_number),
    "latency_ms": _optional(_number),
    "ttft_ms": _optional(_number),
    "created": _number,
}


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
    """Serves a request only when its key matches byte for byte, within its tenant.

    With a ``writer`` (a callable that runs a function on a background thread, as the
    policy's ledger writer does), :meth:`store` returns at once and this process serves
    the entry from memory until it is written, so a write never adds to a call's latency.

    A backend that fails (``backend.errors``) makes a lookup a miss and a write a no-op,
    reported to ``failures`` (logged, rate-limited): the cache never fails a call.
    """

    KEY_PREFIX = "x:"

    def __init__(
        self,
        backend: Backend,
        writer: Callable[[Callable[[], None]], None] | None = None,
        failures: BackendFailures | None = None,
    ):
        self.backend = backend
        self._writer = writer
        self._pending: dict[str, tuple[bytes, float | None]] = {}
        self.failures = failures or BackendFailures(backend.url)

    def lookup(self, request: CacheRequest) -> Hit | None:
        key = self.KEY_PREFIX + request.key
        pending = self._pending.get(key)
        if pending is not None and (pending[1] is None or pending[1] > time.time()):
            raw: bytes | None = pending[0]
        elif not self.failures.available():
            self.failures.skipped("cache lookup")
            return None
        else:
            try:
                raw = self.backend.cache_get(key)
            except self.backend.errors as exc:
                self.failures.failed("cache lookup", exc)
                return None  # a miss: the model answers
            self.failures.succeeded()
        if raw is None:
            return None
        answer = CachedAnswer.from_bytes(raw)
        return None if answer is None else Hit(answer)

    def store(self, request: CacheRequest, answer: CachedAnswer, ttl_s: float | None) -> None:
        key, value = self.KEY_PREFIX + request.key, answer.to_bytes()
        if self._writer is None:
            self._write(key, value, ttl_s)
            return
        expires = None if ttl_s is None else time.time() + ttl_s
        self._pending[key] = (value, expires)

        def write() -> None:
            try:
                self._write(key, value, ttl_s)
            finally:
                if self._pending.get(key, (None,))[0] is value:
                    del self._pending[key]

        self._writer(write)

    def _write(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if not self.failures.available():
            self.failures.skipped("cache write")
            return
        try:
            self.backend.cache_set(key, value, ttl_s)
        except self.backend.errors as exc:
            self.failures.failed("cache write", exc)  # skipped: the caller has its answer
            return
        self.failures.succeeded()
