"""Replay traffic through a semantic cache at any threshold (offline, pure numpy).

Traffic is a sequence of requests in arrival order. Each request has:

* a **key**: everything that must match exactly for two requests to share an answer
  (system prompt, model, generation parameters, tenant), as one string;
* a **user turn**, compared by meaning through its unit embedding (MiniLM);
* ``fresh_pass``: whether a fresh model call for it passed its graders (None: no fresh
  call exists), and the fresh call's cost and latency (what a hit saves).

The cache holds only answers produced by misses: at threshold ``t`` request i is served
the answer of its most similar earlier *entry* in its key (similarity >= t), else it
calls the model and becomes an entry. So which request serves which depends on ``t``, and
:meth:`Replay.run` replays the whole stream for each threshold.

A **wrong hit** (the loss certified in :mod:`evalgate.semcache.certify`) is a hit whose
served answer fails request i's graders while a fresh call would pass, or fails them
where no fresh call exists. Grading "the answer stored for j served to i" is the
caller's ``grade_served(i, j)`` callable (extra grader calls in a real run); it is called
once per pair, lazily, only for pairs some replay actually serves.

Identical user turns in one key have similarity exactly 1.0, so threshold 1.0 is exact
caching (:data:`EXACT`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from evalgate.semcache.guard import signature

EXACT = 1.0
"""The threshold that serves only identical user turns (exact caching)."""

GradeServed = Callable[[int, int], bool]


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """One replay at one threshold; arrays are per request, in arrival order.

    Attributes:
        threshold: the similarity threshold replayed.
        served_from: index of the entry whose answer was served (-1: a miss).
        similarity: similarity to that entry (NaN on a miss).
        wrong_hit: 1 where the hit was wrong (see the module docstring), else 0.
        cost_saved: the fresh call's cost on a hit, else 0.
        latency_saved_ms: the fresh call's latency on a hit, minus the lookup's (which
            every request pays, so a miss saves a negative amount).
    """

    threshold: float
    served_from: np.ndarray
    similarity: np.ndarray
    wrong_hit: np.ndarray
    cost_saved: np.ndarray
    latency_saved_ms: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.served_from >= 0


class Replay:
    """Traffic, its embeddings and outcomes, replayable at any threshold.

    Args:
        keys: per request, the exact part of the cache key (tenant included).
        texts: per request, the user turn.
        embeddings: (n, d) rows of unit length, one per request.
        fresh_pass: per request, whether a fresh call passed (None: no fresh call).
        grade_served: ``grade_served(i, j)``: does the answer stored for j pass i's graders.
        cost, latency_ms: per request, the fresh call's cost and latency (default 0).
        guard: apply the near-miss guard (:mod:`evalgate.semcache.guard`).
        lookup_ms: latency every request pays for the lookup (embedding included).
        memo: a dict shared between replays of the same traffic (with and without the
            guard) so no served pair is graded twice.
    """

    def __init__(
        self,
        keys: Sequence[str],
        texts: Sequence[str],
        embeddings: np.ndarray,
        fresh_pass: Sequence[bool | None],
        grade_served: GradeServed,
        *,
        cost: Sequence[float] | None = None,
        latency_ms: Sequence[float] | None = None,
        guard: bool = False,
        lookup_ms: float = 0.0,
        memo: dict[tuple[int, int], bool] | None = None,
    ):
        n = len(keys)
        vectors = np.asarray(embeddings, dtype=np.float64)
        if len(texts) != n or len(fresh_pass) != n or vectors.shape[0] != n:
            raise ValueError(
                f"keys ({n}), texts ({len(texts)}), fresh_pass ({len(fresh_pass)}) and "
                f"embeddings ({vectors.shape[0]}) must describe the same requests"
            )
        if n and (vectors.ndim != 2 or not np.isfinite(vectors).all()):
            raise ValueError("embeddings must be a finite (requests, dimensions) array")
        self.n = n
        self.keys = list(keys)
        self.texts = list(texts)
        self.fresh_pass = list(fresh_pass)
        self._grade_served = grade_served
        self._graded: dict[tuple[int, int], bool] = {} if memo is None else memo
        self.cost = _per_request(cost, n, "cost")
        self.latency_ms = _per_request(latency_ms, n, "latency_ms")
        self.guard = guard
        self.lookup_ms = float(lookup_ms)
        # Per key: the request indices (arrival order) and their similarity block, with
        # -inf where the pair may never share (later entries, guard-forbidden pairs).
        self._blocks: list[tuple[np.ndarray, np.ndarray]] = []
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(self.keys):
            groups.setdefault(key, []).append(i)
        signatures = [signature(t) for t in self.texts] if guard else None
        for members in groups.values():
            idx = np.array(members, dtype=int)
            block = vectors[idx] @ vectors[idx].T
            same_text = np.array(
                [[self.texts[a] == self.texts[b] for b in members] for a in members]
            )
            block = np.where(same_text, EXACT, np.minimum(block, np.nextafter(EXACT, 0)))
            allowed = np.tril(np.ones((len(idx), len(idx)), dtype=bool), k=-1)
            if signatures is not None:
                sig = np.array([signatures[i] for i in members], dtype=object)
                allowed &= sig[:, None] == sig[None, :]
            self._blocks.append((idx, np.where(allowed, block, -np.inf)))

    def nearest_earlier(self) -> tuple[np.ndarray, np.ndarray]:
        """Per request: its most similar earlier request in its key (-1, NaN: none).

        Every earlier request counts here (as if all were entries): the similarity profile
        of the traffic, independent of any threshold.
        """
        nearest = np.full(self.n, -1, dtype=int)
        sims = np.full(self.n, np.nan)
        for idx, block in self._blocks:
            for row in range(1, len(idx)):
                col = int(np.argmax(block[row, :row]))
                if np.isfinite(block[row, col]):
                    nearest[idx[row]], sims[idx[row]] = idx[col], block[row, col]
        return nearest, sims

    def graded(self, i: int, j: int) -> bool:
        """Whether the answer stored for j passes i's graders (memoised)."""
        pair = (i, j)
        if pair not in self._graded:
            self._graded[pair] = bool(self._grade_served(i, j))
        return self._graded[pair]

    def is_wrong(self, i: int, j: int) -> bool:
        """Serving j's answer to i is a wrong hit."""
        fresh = self.fresh_pass[i]
        if fresh is False:
            return False  # a fresh call would fail too: the cache lost nothing
        return not self.graded(i, j)

    def run(self, threshold: float, *, only: np.ndarray | None = None) -> ReplayRun:
        """Replay the stream at ``threshold``.

        ``only``: a boolean mask of the requests that exist (the others are dropped from
        the stream, as if they never arrived); dropped requests get no outcome (-1, NaN).
        """
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number (got {threshold!r})")
        served = np.full(self.n, -1, dtype=int)
        sims = np.full(self.n, np.nan)
        wrong = np.zeros(self.n)
        present = np.ones(self.n, dtype=bool) if only is None else np.asarray(only, dtype=bool)
        for idx, block in self._blocks:
            live = present[idx]
            entries = np.zeros(len(idx), dtype=bool)
            for row in range(len(idx)):
                if not live[row]:
                    continue
                candidates = np.where(entries[:row], block[row, :row], -np.inf)
                col = int(np.argmax(candidates)) if row else -1
                if col >= 0 and candidates[col] >= threshold:
                    i, j = int(idx[row]), int(idx[col])
                    served[i], sims[i] = j, candidates[col]
                    wrong[i] = float(self.is_wrong(i, j))
                else:
                    entries[row] = True
        hit = served >= 0
        return ReplayRun(
            threshold=float(threshold),
            served_from=served,
            similarity=sims,
            wrong_hit=wrong,
            cost_saved=np.where(hit, self.cost, 0.0),
            # A miss pays the lookup too, then the model call.
            latency_saved_ms=np.where(hit, self.latency_ms, 0.0) - self.lookup_ms * present,
        )


def _per_request(values: Sequence[float] | None, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.zeros(n)
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,) or not np.isfinite(array).all():
        raise ValueError(f"{name} must hold one finite number per request ({n})")
    return array
