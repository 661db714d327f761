"""The runtime semantic cache: serve a stored answer to a paraphrase, per tenant.

A request is split in two (:func:`split_request`):

* its **scope**: the exact-cache key of the request with the last user turn blanked, so
  the system prompt, earlier turns, model, endpoint, generation parameters and the tenant
  must all match exactly (the tenant is part of the key: two tenants never share);
* its **user turn**, compared by meaning: MiniLM unit vectors, cosine similarity.

A lookup embeds the user turn, reads the scope's entries appended since this process last
looked (one indexed SQLite query or one Redis ``LRANGE``: the version check), and searches
them exactly in numpy (a matrix-vector product over unit float32 rows). The most similar
live entry is served when its similarity reaches the policy's certified threshold and,
with the guard on, its guard signature equals the request's
(:mod:`evalgate.semcache.guard`). A hit carries its similarity, which the ledger records.

Storage, by backend:

* **SQLite**: table ``semantic`` (scope, entry blob): the answer, signature, expiry and
  the vector as float32 bytes, appended; the row id is the readers' resume position.
* **Redis 7.0 without the query engine** (this machine): one list per scope under the
  cache prefix, appended with ``RPUSH``; its length is the version. Each process keeps
  the scope's matrix in memory and reads only the tail it has not seen, so a lookup is
  one round trip plus a local search, and every instance sees every other's entries.
* **Redis with the query engine (Redis Stack / Redis 8)**: the same entries as hashes
  with a ``VECTOR FLAT`` (or HNSW) field of 384 float32 dims, ``COSINE``, and TAG fields
  for scope and signature; a lookup is one ``FT.SEARCH idx "(@scope:{s}
  @sig:{g})=>[KNN 1 @v $q AS d]"``, served when ``1 - d >= threshold``. That moves the
  search to the server and the memory out of each process; not built here (the server
  here cannot run it) and so not tested.

Entries are never served past their ``ttl_s``; expired entries stay in the store until
``cache_clear`` (the search masks them). A backend failure is a miss, as for the exact
cache. The embedding model's identity must match the one the threshold was certified
with: :class:`SemanticCache` refuses to start otherwise, since another model's
similarities mean something else.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalgate.cachekey import request_key
from evalgate.runtime.backends.base import Backend
from evalgate.runtime.cache import CachedAnswer, CacheRequest, Hit
from evalgate.runtime.degraded import BackendFailures
from evalgate.runtime.errors import PolicyError
from evalgate.semcache.guard import GUARD_VERSION, signature

ENTRY_VERSION = 1
_HEADER = struct.Struct("<I")


def user_turn(messages: Sequence[Mapping[str, Any]]) -> tuple[int, str] | None:
    """(index, text) of the last user message, or None when it is not plain text."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") == "user":
            content = message.get("content")
            return (index, content) if isinstance(content, str) else None
    return None


def split_request(request: CacheRequest) -> tuple[str, str] | None:
    """(scope, user turn) of a request; None when it has no plain-text user turn."""
    found = user_turn(request.messages)
    if found is None:
        return None
    index, text = found
    blanked = [dict(m) for m in request.messages]
    blanked[index]["content"] = ""
    scope = request_key(
        model=request.model,
        messages=blanked,
        params=request.params,
        api_base=request.api_base,
        namespace=request.namespace,
    )
    return scope, text


def encode_entry(
    vector: np.ndarray, sig: str, answer: CachedAnswer, expires: float | None
) -> bytes:
    head = json.dumps(
        {"v": ENTRY_VERSION, "sig": sig, "exp": expires, "a": answer.to_bytes().decode()},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    return _HEADER.pack(len(head)) + head + np.asarray(vector, dtype="<f4").tobytes()


def decode_entry(raw: bytes, dim: int) -> tuple[np.ndarray, str, CachedAnswer, float | None] | None:
    """An entry, or None for one of another version or shape (skipped, never an error)."""
    try:
        (length,) = _HEADER.unpack_from(raw)
        head = json.loads(raw[_HEADER.size : _HEADER.size + length])
        vector = np.frombuffer(raw[_HEADER.size + length :], dtype="<f4")
        answer = CachedAnswer.from_bytes(head["a"].encode("utf-8"))
        bad = vector.shape != (dim,) or not np.isfinite(vector).all()
        if head.get("v") != ENTRY_VERSION or bad or answer is None:
            return None
        return vector, str(head["sig"]), answer, head.get("exp")
    except (struct.error, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass(slots=True)
class _Scope:
    """One scope's entries as this process has read them.

    Vectors and expiries live in buffers that double when full, so reading a tail of k
    new entries costs O(k), not a copy of the whole matrix (a busy scope gains an entry
    per miss, from every instance).
    """

    position: int = 0
    count: int = 0
    buffer: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    expires_buffer: np.ndarray = field(default_factory=lambda: np.zeros(0))
    signatures: list[str] = field(default_factory=list)
    answers: list[CachedAnswer] = field(default_factory=list)
    # Entries this process stored and already holds: skipped when read back from the store.
    own: set[bytes] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def vectors(self) -> np.ndarray:
        return self.buffer[: self.count]

    def reset(self) -> None:
        self.position = self.count = 0
        self.signatures.clear()
        self.answers.clear()
        self.own.clear()

    @property
    def expires(self) -> np.ndarray:
        return self.expires_buffer[: self.count]

    def append(self, vectors: np.ndarray, expires: np.ndarray) -> None:
        need = self.count + len(vectors)
        if need > len(self.buffer):
            capacity = max(need, 2 * len(self.buffer), 64)
            grown = np.zeros((capacity, vectors.shape[1]), dtype=np.float32)
            if self.count:
                grown[: self.count] = self.vectors
            grown_exp = np.zeros(capacity)
            grown_exp[: self.count] = self.expires
            self.buffer, self.expires_buffer = grown, grown_exp
        self.buffer[self.count : need] = vectors
        self.expires_buffer[self.count : need] = expires
        self.count = need


class SemanticCache:
    """Serves the most similar earlier answer in the request's scope (see the module).

    Args:
        backend: where entries live (SQLite or Redis).
        threshold: the certified similarity threshold (1.0 serves only identical turns).
        guard: apply the near-miss guard.
        embedding_model: the identity the threshold was certified with; must match the
            installed model's (``evalgate.routing.features.embedding_model_identity``).
        encoder: texts -> unit rows (default: :func:`evalgate.embeddings.get_encoder`).
        failures: where backend failures are reported (a failure is a miss).
        writer: runs a function on a background thread (the ledger's), so storing an
            entry never adds to a call's latency; None: written inline.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        threshold: float,
        guard: bool = False,
        embedding_model: str | None = None,
        encoder: Any = None,
        failures: BackendFailures | None = None,
        writer: Callable[[Callable[[], None]], None] | None = None,
    ):
        if not 0.0 < threshold <= 1.0:
            raise PolicyError(f"semantic cache threshold must be in (0, 1] (got {threshold!r})")
        self.backend = backend
        self.threshold = float(threshold)
        self.guard = guard
        self.embedding_model = embedding_model
        self._encoder = encoder
        self._encoder_checked = encoder is not None
        self.failures = failures or BackendFailures(backend.url)
        self._scopes: dict[str, _Scope] = {}
        self._scopes_lock = threading.Lock()
        self._writer = writer

    def _encode(self, text: str) -> np.ndarray:
        if not self._encoder_checked:
            from evalgate.embeddings import get_encoder
            from evalgate.routing.features import embedding_model_identity

            installed = embedding_model_identity()
            if self.embedding_model is not None and self.embedding_model != installed:
                raise PolicyError(
                    f"semantic cache certified with embedding model {self.embedding_model!r}, "
                    f"but {installed!r} is installed: re-run the evaluation and export"
                )
            self._encoder = get_encoder()
            self._encoder_checked = True
        return np.asarray(self._encoder.encode([text])[0], dtype=np.float32)

    def _signature(self, text: str) -> str:
        return f"g{GUARD_VERSION}:{signature(text)}" if self.guard else ""

    def _scope(self, scope: str) -> _Scope:
        with self._scopes_lock:
            state = self._scopes.get(scope)
            if state is None:
                state = self._scopes[scope] = _Scope()
            return state

    def _refresh(self, scope: str, state: _Scope, dim: int) -> None:
        """Reads the entries appended since this process last looked (the version check)."""
        position, raws = self.backend.semantic_read(scope, state.position)
        if position < state.position:  # cleared: start over
            state.reset()
            position, raws = self.backend.semantic_read(scope, position)
        if not raws:
            return
        fresh = []
        for raw in raws:
            if raw in state.own:
                state.own.discard(raw)
            else:
                fresh.append(raw)
        decoded = [e for e in (decode_entry(raw, dim) for raw in fresh) if e is not None]
        if decoded:
            exp = np.array([np.inf if e[3] is None else e[3] for e in decoded])
            state.append(np.stack([e[0] for e in decoded]), exp)
            state.signatures.extend(e[1] for e in decoded)
            state.answers.extend(e[2] for e in decoded)
        state.position = position

    def lookup(self, request: CacheRequest) -> Hit | None:
        split = split_request(request)
        if split is None:
            return None
        scope, text = split
        vector = self._encode(text)
        state = self._scope(scope)
        with state.lock:
            if not self.failures.available():
                self.failures.skipped("semantic cache lookup")
            else:
                try:
                    self._refresh(scope, state, len(vector))
                except self.backend.errors as exc:
                    self.failures.failed("semantic cache lookup", exc)
                else:
                    self.failures.succeeded()
            if not state.answers:
                return None
            sims = state.vectors @ vector
            sims[state.expires <= time.time()] = -np.inf
            if self.guard:
                sig = self._signature(text)
                allowed = np.fromiter((s == sig for s in state.signatures), bool, len(sims))
                sims[~allowed] = -np.inf
            best = int(np.argmax(sims))
            # float32 rounding: an identical turn scores 1 - 1e-7, and 1.0 means identical.
            similarity = 1.0 if sims[best] >= 1.0 - 1e-6 else float(sims[best])
            answer = state.answers[best]
        if not similarity >= self.threshold:
            return None
        return Hit(answer, kind="semantic", similarity=similarity)

    def store(self, request: CacheRequest, answer: CachedAnswer, ttl_s: float | None) -> None:
        split = split_request(request)
        if split is None:
            return
        scope, text = split
        expires = None if ttl_s is None else time.time() + ttl_s
        vector, sig = self._encode(text), self._signature(text)
        entry = encode_entry(vector, sig, answer, expires)
        state = self._scope(scope)
        with state.lock:  # this process serves it at once, before the write lands
            state.append(vector[None, :], np.array([np.inf if expires is None else expires]))
            state.signatures.append(sig)
            state.answers.append(answer)
            state.own.add(entry)
        if self._writer is None:
            self._write(scope, entry)
        else:
            self._writer(lambda: self._write(scope, entry))

    def _write(self, scope: str, entry: bytes) -> None:
        if not self.failures.available():
            self.failures.skipped("semantic cache write")
            return
        try:
            self.backend.semantic_add(scope, entry)
        except self.backend.errors as exc:
            self.failures.failed("semantic cache write", exc)
            return
        self.failures.succeeded()
