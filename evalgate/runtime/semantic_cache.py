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

Storage, by backend (an entry, format 2: a fixed head with the expiry, the vector as
float32 at a fixed offset, the guard signature, the answer's bytes; entries of format 1,
a JSON head, are still read):

* **SQLite**: table ``semantic`` (scope, entry blob, expiry), appended; the row id is the
  readers' resume position (never reused); ``semantic_gen`` holds each scope's generation.
* **Redis 7.0 without the query engine** (this machine): one list per scope under the
  cache prefix, appended with ``RPUSH``, and a generation key beside it. Each process
  keeps the scope's matrix in memory and reads only the tail it has not seen, so a lookup
  is one round trip plus a local search, and every instance sees every other's entries.
* **Redis with the query engine (Redis Stack / Redis 8)**: the same entries as hashes
  with a ``VECTOR FLAT`` (or HNSW) field of 384 float32 dims, ``COSINE``, a NUMERIC
  expiry field, and TAG fields for scope and signature; a lookup is one ``FT.SEARCH idx
  "(@scope:{s} @sig:{g} @exp:[(now +inf])=>[KNN 1 @v $q AS d]"``, served when ``1 - d >=
  threshold``. That moves the search to the server and the memory out of each process:
  no first read (nothing to load), and eviction and expiry become per-entry deletes (or a
  key TTL per hash) with no generation, since no reader holds positions. Not built here
  (the server here cannot run it) and so not tested.

**A process's first read of a scope** decodes every vector in one numpy step and leaves
each answer as bytes until it is served. A scope of fewer than :data:`INLINE_LOAD`
entries is read inside the lookup that needs it; a larger one (100,000 entries: about
0.5 s) is read on a background thread, and lookups in that scope are misses until it is
in: the application's first requests go to the model instead of waiting, and every
request after the load is served from memory as before.

**Bound and expiry: compaction.** A scope holds at most ``max_entries``. A store that
finds the scope at its bound, or a quarter of it expired, first compacts it in one atomic
step (an SQLite write transaction; a Redis script): the expired entries go, then the
oldest until a tenth of the bound is free, and the scope's generation moves. Of two
processes storing at the bound at once, one compacts; the other finds the generation
moved and only appends. Every reader compares the generation at each version check
(read with the tail, in one snapshot) and, when it moved, drops what it holds and reads
the scope again: a position held from before a compaction (on Redis, a list index that
now names another entry) is never resumed. On Redis a compaction removes the run of
expired entries behind the evicted ones (with one TTL per scope, the expired entries are
the oldest); an expired entry elsewhere is masked by the search and goes when it is
oldest. Entries of format 1 have no expiry the stores can read: they go by age.

Entries are never served past their ``ttl_s``. A backend failure is a miss, as for the
exact cache. The embedding model's identity must match the one the threshold was
certified with: :class:`SemanticCache` refuses to start otherwise, since another model's
similarities mean something else; and scopes are stored under that identity, so two
deployments with different models that share a store never search each other's vectors.
What a broken writer could leave (a torn blob, a mistyped head, a NaN or non-unit vector,
an answer that does not parse) is skipped on read and never stored by this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalgate.cachekey import request_key
from evalgate.runtime.backends.base import SEMANTIC_ENTRY_MAGIC, Backend, SemanticTail
from evalgate.runtime.cache import CachedAnswer, CacheRequest, Hit
from evalgate.runtime.degraded import BackendFailures
from evalgate.runtime.errors import PolicyError
from evalgate.runtime.semantic_index import ScopeIndex
from evalgate.semcache.guard import GUARD_VERSION, signature

ENTRY_VERSION = 1
"""The format with a JSON head (written before format 2): still read, no longer written."""
_HEADER = struct.Struct("<I")
_FIXED = struct.Struct("<4sdI")
"""Format 2's fixed head: magic, expiry (inf: none), vector width. The vector follows at
a fixed offset, then the guard signature (length-prefixed) and the answer's bytes."""
_FIXED_DTYPE = np.dtype([("magic", "S4"), ("expires", "<f8"), ("dim", "<u4")])
IDENTICAL = 1.0 - 1e-6
"""A similarity from which two turns count as identical: a float32 unit vector's dot with
itself is 1 - 6e-8 as often as 1.0, so a threshold of 1.0 must accept that rounding."""
UNIT_TOLERANCE = 1e-3
"""How far from 1 a vector's norm may be (float32 MiniLM rows are within 1e-6)."""
# ((position, last entry, generation) when the read started, the read)
_Read = tuple[tuple[int, bytes | None, int], "Future[SemanticTail]"]
DEFAULT_MAX_ENTRIES = 200_000
"""Entries per scope unless the caller says otherwise (see :class:`SemanticCache`)."""
INLINE_LOAD = 2_048
"""A scope of fewer entries is read inside the lookup that first needs it (a few ms); a
larger one is read on a background thread while its lookups are misses (see the module)."""
LOAD_CHUNK = 25_000
"""Entries per read of a background load (each one round trip)."""
EVICT_SHARE = 10
"""A compaction at the bound leaves room for max_entries // EVICT_SHARE new entries, so a
full scope is compacted (and re-read by every process) once per that many stores."""


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
    """An entry of format 2: the fixed head, the float32 vector at a fixed offset (so a
    first read decodes every vector in one numpy step), the signature and the answer."""
    vector = np.asarray(vector, dtype="<f4")
    # A lone surrogate in the guard's signature (quoted text is kept as written) has no
    # UTF-8 form: surrogatepass keeps it, and decoding the same way gives it back.
    sig_bytes = sig.encode("utf-8", "surrogatepass")
    head = _FIXED.pack(SEMANTIC_ENTRY_MAGIC, math.inf if expires is None else expires, len(vector))
    return b"".join(
        (head, vector.tobytes(), _HEADER.pack(len(sig_bytes)), sig_bytes, answer.to_bytes())
    )


def decode_entry(raw: bytes, dim: int) -> tuple[np.ndarray, str, CachedAnswer, float] | None:
    """(vector, signature, answer, expiry or inf), or None for an entry of another version
    or shape, a torn one, or one whose fields have the wrong types (skipped, never an
    error: a lookup must not fail because one writer misbehaved)."""
    vectors, sigs, answers, expires = decode_entries([raw], dim)
    if not sigs:
        return None
    answer = answer_of(answers[0])
    return None if answer is None else (vectors[0], sigs[0], answer, float(expires[0]))


def answer_of(held: CachedAnswer | bytes) -> CachedAnswer | None:
    """The answer an index holds (see :func:`decode_entries`): decoded when still bytes;
    None when those bytes are not an answer."""
    if isinstance(held, CachedAnswer):
        return held
    try:
        return CachedAnswer.from_bytes(held)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeError):
        return None


def decode_entries(
    raws: Sequence[bytes], dim: int
) -> tuple[np.ndarray, list[str], list[CachedAnswer | bytes], np.ndarray]:
    """The usable entries of ``raws`` (see :func:`decode_entry`), in order, as a
    ``(k, dim)`` float32 matrix, signatures, answers and expiries. Answers of format 2
    stay bytes until served (:func:`answer_of`): parsing every answer of a 100,000-entry
    scope was most of what a process's first read cost."""
    new = [i for i, raw in enumerate(raws) if raw[:4] == SEMANTIC_ENTRY_MAGIC]
    if len(new) == len(raws):
        return _decode_v2(raws, dim)[1:]
    old = sorted(set(range(len(raws))) - set(new))
    parts = [_decode_v2([raws[i] for i in new], dim), _decode_v1([raws[i] for i in old], dim)]
    where = np.concatenate(
        [
            np.asarray(picked, dtype=np.int64)[part[0]]
            for picked, part in zip((new, old), parts, strict=True)
        ]
    )
    order = np.argsort(where, kind="stable")
    vectors = np.concatenate([part[1] for part in parts])[order]
    sigs = [s for part in parts for s in part[2]]
    answers = [a for part in parts for a in part[3]]
    expires = np.concatenate([part[4] for part in parts])[order]
    return vectors, [sigs[k] for k in order], [answers[k] for k in order], expires


_Decoded = tuple[np.ndarray, np.ndarray, list[str], list[CachedAnswer | bytes], np.ndarray]


def _empty(dim: int) -> _Decoded:
    none = np.zeros(0, dtype=np.int64)
    return none, np.zeros((0, dim), dtype=np.float32), [], [], np.zeros(0)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Which rows are finite unit vectors (a NaN or an overflow fails the comparison)."""
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        return np.abs(norms - 1.0) <= UNIT_TOLERANCE


def _decode_v2(raws: Sequence[bytes], dim: int) -> _Decoded:
    """(kept positions in ``raws``, vectors, signatures, answer bytes, expiries)."""
    end = _FIXED.size + 4 * dim
    picked = [i for i, raw in enumerate(raws) if len(raw) >= end + _HEADER.size]
    if not picked:
        return _empty(dim)
    heads = np.frombuffer(b"".join([raws[i][: _FIXED.size] for i in picked]), _FIXED_DTYPE)
    vectors = np.frombuffer(
        b"".join([raws[i][_FIXED.size : end] for i in picked]), dtype="<f4"
    ).reshape(-1, dim)
    ok = (heads["dim"] == dim) & ~np.isnan(heads["expires"]) & _unit_rows(vectors)
    sigs: list[str] = []
    answers: list[CachedAnswer | bytes] = []
    names: dict[bytes, str] = {}  # signatures repeat (all "" without the guard)
    for k in np.flatnonzero(ok):
        raw = raws[picked[k]]
        start = end + _HEADER.size
        stop = start + _HEADER.unpack_from(raw, end)[0]
        sig = _signature_of(raw[start:stop], names) if stop <= len(raw) else None
        if sig is None:  # torn, or not UTF-8
            ok[k] = False
            continue
        sigs.append(sig)
        answers.append(raw[stop:])
    kept = np.flatnonzero(ok)
    vectors = vectors[kept] if len(kept) < len(vectors) else vectors
    return kept, vectors, sigs, answers, heads["expires"][kept].astype(np.float64)


def _signature_of(raw: bytes, names: dict[bytes, str]) -> str | None:
    name = names.get(raw)
    if name is None:
        try:
            name = names[raw] = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
    return name


def _decode_v1(raws: Sequence[bytes], dim: int) -> _Decoded:
    """:func:`_decode_v2` for entries of format 1 (a JSON head, then the vector)."""
    kept: list[tuple[int, bytes, str, CachedAnswer, float]] = []
    width = 4 * dim
    for i, raw in enumerate(raws):
        head_end = _HEADER.size + (_HEADER.unpack_from(raw)[0] if len(raw) >= 4 else 0)
        if len(raw) < 4 or len(raw) - head_end != width:
            continue  # torn, or of another width
        parsed = _parse_head(raw[_HEADER.size : head_end])
        if parsed is not None:
            kept.append((i, raw[head_end:], *parsed))
    if not kept:
        return _empty(dim)
    vectors = np.frombuffer(b"".join(k[1] for k in kept), dtype="<f4").reshape(-1, dim)
    ok = _unit_rows(vectors)
    rows = [k for k, good in zip(kept, ok, strict=True) if good]
    return (
        np.array([r[0] for r in rows], dtype=np.int64),
        vectors[ok],
        [r[2] for r in rows],
        [r[3] for r in rows],
        np.array([r[4] for r in rows], dtype=np.float64),
    )


def _parse_head(raw: bytes) -> tuple[str, CachedAnswer, float] | None:
    """(signature, answer, expiry or inf) of an entry's JSON head, or None."""
    try:
        head = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
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


@dataclass(frozen=True, slots=True)
class _Loaded:
    """A scope read whole (by a background load): what :meth:`_Scope.install` takes."""

    generation: int
    position: int
    last: bytes | None
    index: ScopeIndex | None


@dataclass(slots=True)
class _Scope:
    """One scope as this process has read it: the store position and the index."""

    position: int = 0
    # The last entry read: each version check reads it again, and finds it gone (or
    # another in its place) when the scope was cleared, even if it has refilled since.
    last: bytes | None = None
    generation: int = 0  # the store's generation of the scope when it was read
    index: ScopeIndex | None = None
    loaded: bool = False  # read whole since the last reset
    loading: Future[_Loaded] | None = None  # a background load of this scope
    loading_pid: int = 0  # the process that started it (a fork's child never sees it end)
    # Expired entries the last compaction could not remove (entries of format 1 on
    # SQLite, or not at the old end of a Redis list): they do not trigger another.
    stuck: int = 0
    # Entries this process stored and already holds: skipped when read back from the
    # store, once per time stored (the same bytes may be stored twice).
    own: Counter[bytes] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forgets the scope (a load in flight is dropped: it may predate the change)."""
        self.position = 0
        self.last = None
        self.generation = 0
        self.index = None
        self.loaded = False
        self.loading = None
        self.stuck = 0
        self.own.clear()

    def resume(self) -> int:
        """Where the next read starts: at the last entry read (SQLite: ids after its id
        minus one; Redis: from its index), or at the start."""
        return self.position - 1 if self.last is not None else self.position

    def install(self, loaded: _Loaded) -> None:
        self.generation, self.position, self.last = loaded.generation, loaded.position, loaded.last
        self.index = loaded.index
        self.loaded = True

    def add(
        self,
        vectors: np.ndarray,
        expires: np.ndarray,
        sigs: list[str],
        answers: Sequence[CachedAnswer | bytes],
        int8_scan: bool | None,
    ) -> None:
        if self.index is None:
            self.index = ScopeIndex(vectors.shape[1], int8_scan=int8_scan)
        self.index.append(vectors, expires, sigs, answers)

    @property
    def count(self) -> int:
        return 0 if self.index is None else self.index.count


_caches: weakref.WeakSet[SemanticCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_caches):
        cache._after_fork()


# A forked child has only the thread that forked: a lock another thread held at that
# moment (a lookup or a write in flight) would never be released there.
os.register_at_fork(after_in_child=_after_fork_in_child)


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
        max_entries: entries per scope (tenant, prompt, model and parameters) at most:
            a store into a full scope evicts the oldest tenth (expired entries first)
            and every process reads the scope again. It bounds the store and each
            process's memory (about 2 KB per entry in memory).
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
        self._pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None
        self._pool_pid = 0
        # Entries a compaction at the bound leaves room for (see EVICT_SHARE).
        self._room = max(1, self.max_entries // EVICT_SHARE)
        _caches.add(self)

    def _after_fork(self) -> None:
        """In a forked child: fresh locks for those another thread of the parent held at
        the fork; a scope such a thread was changing may be half-changed, so it is
        forgotten and read again."""
        self._scopes_lock = threading.Lock()
        for state in self._scopes.values():
            if state.lock.locked():
                state.reset()
                state.lock = threading.Lock()

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

    def _executor(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        """(version checks started early, background loads): this process's threads."""
        pid = os.getpid()
        with self._scopes_lock:
            if self._pools is None or self._pool_pid != pid:  # new, or inherited by fork
                self._pools = (
                    ThreadPoolExecutor(2, thread_name_prefix="evalgate-semcache"),
                    # One load at a time: loads are memory-bound, and a second would only
                    # slow the first (2 cores shared with the application).
                    ThreadPoolExecutor(1, thread_name_prefix="evalgate-semcache-load"),
                )
                self._pool_pid = pid
            return self._pools

    def _prefetch(self, scope: str, state: _Scope) -> _Read | None:
        """Starts the version check on a worker thread (see ``_overlap``)."""
        if not self._overlap or not state.loaded or not self.failures.available():
            return None
        started = (state.position, state.last, state.generation)
        return started, self._executor()[0].submit(
            self.backend.semantic_tail, scope, state.resume()
        )

    def _load(self, scope: str, state: _Scope, dim: int) -> bool:
        """Reads the scope whole: inline when it is small, else on the load thread (this
        call then returns False until the load is done, and the lookups in the meantime
        are misses rather than waiting for seconds behind it). Holds ``state.lock``."""
        if state.loading is not None and state.loading_pid != os.getpid():
            state.loading = None  # started before a fork, by a thread the child lacks
        if state.loading is None:
            first = self.backend.semantic_tail(scope, 0, INLINE_LOAD)
            if len(first.entries) < INLINE_LOAD:
                state.install(self._indexed(first.generation, first.position, first.entries, dim))
                return True
            state.loading = self._executor()[1].submit(self._read_rest, scope, first, dim)
            state.loading_pid = os.getpid()
            return False  # the lookup that starts a load is a miss, however fast it ends
        if not state.loading.done():
            return False
        done, state.loading = state.loading, None
        state.install(done.result())  # a backend error: reported by the caller
        return True

    def _read_rest(self, scope: str, first: SemanticTail, dim: int) -> _Loaded:
        """The load thread: the rest of the scope in chunks, from one generation (a
        compaction in between starts the read over), decoded and indexed."""
        for _attempt in range(5):
            raws, tail = list(first.entries), first
            while len(tail.entries) == (INLINE_LOAD if tail is first else LOAD_CHUNK):
                tail = self.backend.semantic_tail(scope, tail.position, LOAD_CHUNK)
                if tail.generation != first.generation or tail.position < first.position:
                    break
                raws += tail.entries
            else:
                return self._indexed(first.generation, tail.position, raws, dim)
            first = self.backend.semantic_tail(scope, 0, INLINE_LOAD)
        # Compacted five times during one read: whatever is read next is current.
        tail = self.backend.semantic_tail(scope, 0)
        return self._indexed(tail.generation, tail.position, tail.entries, dim)

    def _indexed(self, generation: int, position: int, raws: list[bytes], dim: int) -> _Loaded:
        vectors, sigs, answers, expires = decode_entries(raws, dim)
        index = None
        if sigs:
            index = ScopeIndex(dim, int8_scan=self._int8_scan)
            index.append(vectors, expires, sigs, answers)
        return _Loaded(generation, position, raws[-1] if raws else None, index)

    def _refresh(self, scope: str, state: _Scope, dim: int, read: _Read | None = None) -> bool:
        """Reads the entries appended since this process last looked (the version check);
        ``read``: one started earlier, used if nothing was read since it started. A scope
        compacted or cleared since is read again whole (:meth:`_load`). True when the
        scope's index is current."""
        if not state.loaded:
            return self._load(scope, state, dim)
        after = state.resume()
        started = (state.position, state.last, state.generation)
        if read is not None and read[0] == started and read[0][1] is state.last:
            tail = read[1].result()
        else:
            tail = self.backend.semantic_tail(scope, after)
        position, raws = tail.position, tail.entries
        if tail.generation != state.generation or (
            state.last is not None
            and (position < after or not raws or raws[0] != state.last)  # cleared
        ):
            state.reset()  # compacted or cleared: positions held may now name other entries
            return self._load(scope, state, dim)
        if state.last is not None:
            raws = raws[1:]
        if not raws:
            return True
        state.last = raws[-1]
        fresh = []
        for raw in raws:
            if state.own[raw] > 0:
                state.own[raw] -= 1
                if not state.own[raw]:
                    del state.own[raw]
            else:
                fresh.append(raw)
        vectors, sigs, answers, expires = decode_entries(fresh, dim)
        if sigs:
            state.add(vectors, expires, sigs, answers, self._int8_scan)
        state.position = position
        return True

    def _refreshed(
        self, scope: str, state: _Scope, dim: int, what: str, read: _Read | None = None
    ) -> bool:
        """:meth:`_refresh`, a backend failure reported and taken as nothing new."""
        if not self.failures.available():
            self.failures.skipped(what)
            return state.loaded
        try:
            current = self._refresh(scope, state, dim, read)
        except self.backend.errors as exc:
            self.failures.failed(what, exc)
            return state.loaded
        self.failures.succeeded()
        return current

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
            if state.index is None:  # empty, or still loading: a miss
                return None
            signature = self._signature(text) if self.guard else None
            while True:
                found = state.index.search(
                    vector,
                    now=time.time(),
                    threshold=min(self.threshold, IDENTICAL),
                    signature=signature,
                )
                if found is None:
                    return None
                row, similarity = found
                answer = answer_of(state.index.answers[row])
                if answer is not None:
                    state.index.answers[row] = answer  # decoded once
                    break
                state.index.drop(row)  # a torn answer: never served, the next best is
        # float32 rounding: an identical turn scores 1 - 1e-7, and 1.0 means identical.
        return Hit(
            answer, kind="semantic", similarity=1.0 if similarity >= IDENTICAL else similarity
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
            if not state.loaded:  # small: read now; large: loading, and read back with it
                self._refreshed(scope, state, len(vector), "semantic cache lookup")
            if state.loaded:
                until = np.array([math.inf if expires is None else expires])
                state.add(vector[None, :], until, [sig], [answer], self._int8_scan)
                state.own[entry] += 1
        if self._writer is None:
            self._write(scope, entry, expires, len(vector))
        else:
            self._writer(lambda: self._write(scope, entry, expires, len(vector)))

    def _write(self, scope: str, entry: bytes, expires: float | None, dim: int) -> None:
        """Appends ``entry`` (on the writer thread), compacting the scope first when it is
        at its bound or a quarter of it has expired."""
        state = self._scope(scope)
        with state.lock:
            # What other processes stored counts toward the bound too. A scope still
            # loading is appended to unchecked (a store after the load checks it): this
            # runs on the ledger's thread, whose records must not wait seconds for a load.
            current = self._refreshed(scope, state, dim, "semantic cache write")
            now = time.time()
            stored = state.count - state.own.total()
            expired = 0 if state.index is None else state.index.expired(now)
            expired -= min(expired, state.stuck)
            generation = state.generation
        compact = current and (stored >= self.max_entries or 0 < 4 * expired >= stored)
        if not self.failures.available():
            self.failures.skipped("semantic cache write")
            return
        try:
            if compact:
                removed = self.backend.semantic_compact(
                    scope, generation, now, self.max_entries - self._room
                )
                with state.lock:
                    if state.generation != generation:
                        pass  # read again since: nothing held is from before
                    elif removed:
                        state.reset()  # this process reads the compacted scope again too
                    elif state.index is not None:
                        state.stuck = state.index.expired(now)
            self.backend.semantic_add(scope, entry, expires)
        except self.backend.errors as exc:
            self.failures.failed("semantic cache write", exc)
            return
        self.failures.succeeded()
