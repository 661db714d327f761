"""The runtime semantic cache: serve a stored answer to a paraphrase, per tenant.

A request is split in two (:func:`split_request`):

* its **scope**: the exact-cache key of the request with the last user turn blanked, so
  the system prompt, earlier turns, model, endpoint, generation parameters and the tenant
  must all match exactly (the tenant is part of the key: two tenants never share);
* its **user turn**, compared by meaning: MiniLM unit vectors, cosine similarity.

A lookup embeds the user turn (MiniLM on ONNX Runtime when installed), reads the scope's
entries appended since this process last looked (one indexed SQLite query or one Redis
``LRANGE``: the version check; on Redis it runs while the turn is embedded), and searches
them exactly (:mod:`evalgate.runtime.semantic_index`: an int8 scan with error bounds and a
float32 re-rank, or a float32 scan). The most similar live entry is served when its
similarity reaches the policy's certified threshold and, with the guard on, its guard
signature equals the request's (:mod:`evalgate.semcache.guard`). A hit carries its
similarity, which the ledger records.

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
similarities mean something else; and scopes are stored under that identity, so two
deployments with different models that share a store never search each other's vectors.
What a broken writer could leave (a torn blob, a mistyped head, a NaN or non-unit vector)
is skipped on read and never stored by this module; a scope stops growing at
``max_entries``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalgate.cachekey import request_key
from evalgate.runtime.backends.base import Backend
from evalgate.runtime.cache import CachedAnswer, CacheRequest, Hit
from evalgate.runtime.degraded import BackendFailures
from evalgate.runtime.errors import PolicyError
from evalgate.runtime.semantic_index import ScopeIndex
from evalgate.semcache.guard import GUARD_VERSION, signature

ENTRY_VERSION = 1
_HEADER = struct.Struct("<I")
UNIT_TOLERANCE = 1e-3
"""How far from 1 a vector's norm may be (float32 MiniLM rows are within 1e-6)."""
# ((position, last entry) when the read started, the read)
_Read = tuple[tuple[int, bytes | None], "Future[tuple[int, list[bytes]]]"]
DEFAULT_MAX_ENTRIES = 200_000
"""Entries per scope unless the caller says otherwise (see :class:`SemanticCache`)."""


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


def scope_key(scope: str, embedding_model: str) -> str:
    """The stored scope: the request's scope under the embedding model's identity, so
    entries of two models never meet in one search (their similarities are not
    comparable), even when two deployments share one store."""
    return hashlib.sha256(f"{embedding_model}\x00{scope}".encode()).hexdigest()


def usable(vector: np.ndarray, dim: int) -> bool:
    """A finite unit vector of the right width: anything else (a broken encoder, a flipped
    bit) could score above every threshold or turn a search's maximum into NaN."""
    return (
        vector.shape == (dim,)
        and bool(np.isfinite(vector).all())
        and abs(float(np.linalg.norm(vector)) - 1.0) <= UNIT_TOLERANCE
    )


def encode_entry(
    vector: np.ndarray, sig: str, answer: CachedAnswer, expires: float | None
) -> bytes:
    fields = {"v": ENTRY_VERSION, "sig": sig, "exp": expires, "a": answer.to_bytes().decode()}
    try:
        head = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate in the guard's signature (quoted text is kept as written) has
        # no UTF-8 form: escaped, it reads back unchanged.
        head = json.dumps(fields, separators=(",", ":")).encode("ascii")
    return _HEADER.pack(len(head)) + head + np.asarray(vector, dtype="<f4").tobytes()


def decode_entry(raw: bytes, dim: int) -> tuple[np.ndarray, str, CachedAnswer, float] | None:
    """(vector, signature, answer, expiry or inf), or None for an entry of another version
    or shape, a torn one, or one whose fields have the wrong types (skipped, never an
    error: a lookup must not fail because one writer misbehaved)."""
    vectors, sigs, answers, expires = decode_entries([raw], dim)
    return (vectors[0], sigs[0], answers[0], float(expires[0])) if sigs else None


def decode_entries(
    raws: Sequence[bytes], dim: int
) -> tuple[np.ndarray, list[str], list[CachedAnswer], np.ndarray]:
    """The usable entries of ``raws`` (see :func:`decode_entry`), as a ``(k, dim)`` float32
    matrix, signatures, answers and expiries: the vectors are checked together, which
    is most of the cost of a process's first read of a large scope."""
    kept: list[tuple[bytes, str, CachedAnswer, float]] = []
    width = 4 * dim
    for raw in raws:
        head_end = _HEADER.size + (_HEADER.unpack_from(raw)[0] if len(raw) >= 4 else 0)
        if len(raw) < 4 or len(raw) - head_end != width:
            continue  # torn, or of another width
        parsed = _parse_head(raw[_HEADER.size : head_end])
        if parsed is not None:
            kept.append((raw[head_end:], *parsed))
    if not kept:
        return np.zeros((0, dim), dtype=np.float32), [], [], np.zeros(0)
    vectors = np.frombuffer(b"".join(k[0] for k in kept), dtype="<f4").reshape(-1, dim)
    vectors = vectors.astype(np.float32)  # a writable native-order copy
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(vectors, axis=1)
    ok = np.isfinite(vectors).all(axis=1) & (np.abs(norms - 1.0) <= UNIT_TOLERANCE)
    rows = [k for k, good in zip(kept, ok, strict=True) if good]
    return (
        vectors[ok],
        [r[1] for r in rows],
        [r[2] for r in rows],
        np.array([r[3] for r in rows], dtype=np.float64),
    )


def _parse_head(raw: bytes) -> tuple[str, CachedAnswer, float] | None:
    """(signature, answer, expiry or inf) of an entry's JSON head, or None."""
    try:
        head = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(head, dict) or head.get("v") != ENTRY_VERSION:
        return None
    sig, expires, text = head.get("sig"), head.get("exp", 0), head.get("a")
    if not isinstance(sig, str) or not isinstance(text, str):
        return None
    if expires is None:
        expires = math.inf
    elif isinstance(expires, bool) or not isinstance(expires, int | float) or math.isnan(expires):
        return None
    try:
        answer = CachedAnswer.from_bytes(text.encode("utf-8"))
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeError):
        return None
    return None if answer is None else (sig, answer, float(expires))


@dataclass(slots=True)
class _Scope:
    """One scope as this process has read it: the store position and the index."""

    position: int = 0
    # The last entry read: each version check reads it again, and finds it gone (or
    # another in its place) when the scope was cleared, even if it has refilled since.
    last: bytes | None = None
    index: ScopeIndex | None = None
    # Entries this process stored and already holds: skipped when read back from the store.
    own: set[bytes] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.position = 0
        self.last = None
        self.index = None
        self.own.clear()

    def resume(self) -> int:
        """Where the next read starts: at the last entry read (SQLite: ids after its id
        minus one; Redis: from its index), or at the start."""
        return self.position - 1 if self.last is not None else self.position

    def add(
        self,
        vectors: np.ndarray,
        expires: np.ndarray,
        sigs: list[str],
        answers: list[CachedAnswer],
        int8_scan: bool | None,
    ) -> None:
        if self.index is None:
            self.index = ScopeIndex(vectors.shape[1], int8_scan=int8_scan)
        self.index.append(vectors, expires, sigs, answers)

    @property
    def count(self) -> int:
        return 0 if self.index is None else self.index.count


class SemanticCache:
    """Serves the most similar earlier answer in the request's scope (see the module).

    Args:
        backend: where entries live (SQLite or Redis).
        threshold: the certified similarity threshold (1.0 serves only identical turns).
        guard: apply the near-miss guard.
        guard_version: which version of the guard (the one the threshold was certified
            with: an exported policy's ``guard_version``).
        embedding_model: the identity the threshold was certified with; must match the
            installed model's (``evalgate.routing.features.embedding_model_identity``).
            Entries are stored under it: another model's entries are never searched.
        encoder: texts -> unit rows (default: the fastest installed MiniLM backend).
        failures: where backend failures are reported (a failure is a miss).
        writer: runs a function on a background thread (the ledger's), so storing an
            entry never adds to a call's latency; None: written inline.
        max_entries: entries per scope (tenant, prompt, model and parameters) at most;
            a full scope serves what it holds and stores nothing more. It bounds the
            store and each process's memory (about 2 KB per entry in memory); expired
            entries count until ``cache_clear``.
        int8_scan: search through the int8 scan (:mod:`evalgate.runtime.semantic_index`);
            None: when ONNX Runtime is installed. Either way the search is exact.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        threshold: float,
        guard: bool = False,
        guard_version: int = GUARD_VERSION,
        embedding_model: str | None = None,
        encoder: Any = None,
        failures: BackendFailures | None = None,
        writer: Callable[[Callable[[], None]], None] | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        int8_scan: bool | None = None,
    ):
        if not 0.0 < threshold <= 1.0:
            raise PolicyError(f"semantic cache threshold must be in (0, 1] (got {threshold!r})")
        if max_entries < 1:
            raise PolicyError(f"semantic cache max_entries must be >= 1 (got {max_entries!r})")
        self.backend = backend
        self.threshold = float(threshold)
        self.guard = guard
        try:  # an unknown version fails here, not on every request
            signature("", guard_version)
        except ValueError as exc:
            raise PolicyError(f"semantic cache: {exc}") from None
        self.guard_version = int(guard_version)
        self.embedding_model = embedding_model
        self.max_entries = int(max_entries)
        self._encoder = encoder
        self._encoder_checked = encoder is not None
        self.failures = failures or BackendFailures(backend.url)
        self._scopes: dict[str, _Scope] = {}
        self._scopes_lock = threading.Lock()
        self._writer = writer
        self._int8_scan = int8_scan
        # Over a network (Redis), the version check's round trip runs while the user turn
        # is embedded; SQLite's is a local read (~0.1 ms) that a thread hand-off would not
        # shorten.
        self._overlap = not backend.url.startswith("sqlite")
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def _model_identity(self) -> str:
        if self.embedding_model is None:
            from evalgate.routing.features import embedding_model_identity

            self.embedding_model = embedding_model_identity()
        return self.embedding_model

    def scope_of(self, request: CacheRequest) -> str | None:
        """The stored scope of ``request`` (None: no plain-text user turn)."""
        split = split_request(request)
        return None if split is None else scope_key(split[0], self._model_identity())

    def _encode(self, text: str) -> np.ndarray:
        if not self._encoder_checked:
            from evalgate.routing.features import embedding_model_identity

            installed = embedding_model_identity()
            if self.embedding_model is not None and self.embedding_model != installed:
                raise PolicyError(
                    f"semantic cache certified with embedding model {self.embedding_model!r}, "
                    f"but {installed!r} is installed: re-run the evaluation and export"
                )
            from evalgate.embeddings import fastest_encoder

            self._encoder = fastest_encoder()
            self._encoder_checked = True
        return np.asarray(self._encoder.encode([text])[0], dtype=np.float32)

    def _signature(self, text: str) -> str:
        version = self.guard_version
        return f"g{version}:{signature(text, version)}" if self.guard else ""

    def _scope(self, scope: str) -> _Scope:
        with self._scopes_lock:
            state = self._scopes.get(scope)
            if state is None:
                state = self._scopes[scope] = _Scope()
            return state

    def _prefetch(self, scope: str, state: _Scope) -> _Read | None:
        """Starts the version check on a worker thread (see ``_overlap``)."""
        if not self._overlap or not self.failures.available():
            return None
        pid = os.getpid()
        with self._scopes_lock:
            if self._pool is None or self._pool_pid != pid:  # new, or inherited by fork
                self._pool = ThreadPoolExecutor(2, thread_name_prefix="evalgate-semcache")
                self._pool_pid = pid
            pool = self._pool
        started = (state.position, state.last)
        return started, pool.submit(self.backend.semantic_read, scope, state.resume())

    def _refresh(self, scope: str, state: _Scope, dim: int, read: _Read | None = None) -> None:
        """Reads the entries appended since this process last looked (the version check);
        ``read``: one started earlier, used if nothing was read since it started."""
        after = state.resume()
        if read is not None and read[0][0] == state.position and read[0][1] is state.last:
            position, raws = read[1].result()
        else:
            position, raws = self.backend.semantic_read(scope, after)
        if state.last is not None:
            if position < after or not raws or raws[0] != state.last:  # cleared: start over
                state.reset()
                position, raws = self.backend.semantic_read(scope, 0)
            else:
                raws = raws[1:]
        if not raws:
            return
        state.last = raws[-1]
        fresh = []
        for raw in raws:
            if raw in state.own:
                state.own.discard(raw)
            else:
                fresh.append(raw)
        vectors, sigs, answers, expires = decode_entries(fresh, dim)
        if sigs:
            state.add(vectors, expires, sigs, answers, self._int8_scan)
        state.position = position

    def _refreshed(
        self, scope: str, state: _Scope, dim: int, what: str, read: _Read | None = None
    ) -> None:
        """:meth:`_refresh`, a backend failure reported and taken as nothing new."""
        if not self.failures.available():
            self.failures.skipped(what)
            return
        try:
            self._refresh(scope, state, dim, read)
        except self.backend.errors as exc:
            self.failures.failed(what, exc)
        else:
            self.failures.succeeded()

    def lookup(self, request: CacheRequest) -> Hit | None:
        split = split_request(request)
        if split is None:
            return None
        scope, text = split
        scope = scope_key(scope, self._model_identity())
        state = self._scope(scope)
        read = self._prefetch(scope, state)
        vector = self._encode(text)
        if not usable(vector, len(vector)):
            return None
        with state.lock:
            self._refreshed(scope, state, len(vector), "semantic cache lookup", read)
            if state.index is None:
                return None
            found = state.index.search(
                vector,
                now=time.time(),
                threshold=self.threshold,
                signature=self._signature(text) if self.guard else None,
            )
            if found is None:
                return None
            row, similarity = found
            answer = state.index.answers[row]
        # float32 rounding: an identical turn scores 1 - 1e-7, and 1.0 means identical.
        return Hit(
            answer, kind="semantic", similarity=1.0 if similarity >= 1.0 - 1e-6 else similarity
        )

    def store(self, request: CacheRequest, answer: CachedAnswer, ttl_s: float | None) -> None:
        split = split_request(request)
        if split is None:
            return
        scope, text = split
        scope = scope_key(scope, self._model_identity())
        expires = None if ttl_s is None else time.time() + ttl_s
        vector, sig = self._encode(text), self._signature(text)
        if not usable(vector, len(vector)):
            return  # never stored, never served: see usable()
        entry = encode_entry(vector, sig, answer, expires)
        state = self._scope(scope)
        with state.lock:  # this process serves it at once, before the write lands
            if state.count >= self.max_entries:
                return
            until = np.array([math.inf if expires is None else expires])
            state.add(vector[None, :], until, [sig], [answer], self._int8_scan)
            state.own.add(entry)
        if self._writer is None:
            self._write(scope, entry, len(vector))
        else:
            self._writer(lambda: self._write(scope, entry, len(vector)))

    def _write(self, scope: str, entry: bytes, dim: int) -> None:
        state = self._scope(scope)
        with state.lock:
            # What other processes stored counts toward the bound too (read off the
            # call's path: this runs on the writer thread).
            self._refreshed(scope, state, dim, "semantic cache write")
            if state.count - len(state.own) >= self.max_entries:
                return
        if not self.failures.available():
            self.failures.skipped("semantic cache write")
            return
        try:
            self.backend.semantic_add(scope, entry)
        except self.backend.errors as exc:
            self.failures.failed("semantic cache write", exc)
            return
        self.failures.succeeded()
