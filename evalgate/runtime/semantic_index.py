"""One scope's semantic-cache entries in memory, and an exact nearest-entry search.

The search is exact (the entry served is the most similar live, guard-compatible one, and
its similarity is the float32 cosine), but it does not read every float32 row:

1. **Scan** an int8 copy of the vectors (each row scaled by its own max, the query to 7
   bits) with ONNX Runtime's integer matrix product: a quarter of the bytes of float32,
   which is what a 100,000 x 384 scan is bound by (38 MB instead of 154 MB).
2. **Bound**: for every row, ``|q.v - q'.v'| <= |q - q'| |v| + |q'| |v - v'|`` (primes are
   the dequantised copies; both error norms are computed, not assumed), so each row's
   exact similarity lies in ``[approx - err, approx + err]``.
3. **Re-rank** in float32 only the rows whose upper bound reaches both the threshold and
   the best lower bound: no other row can be the most similar one above the threshold.

Without onnxruntime the scan is the float32 matrix-vector product itself (numpy/BLAS).
The query is 7-bit (not 8) so that x86 kernels without VNNI, whose u8 x s8 pair sums
saturate at 16 bits, stay exact: 127 * 127 * 2 < 32767.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

BLOCK = 16_384
"""Rows per int8 scan block: one ORT call each; a partly filled block is scanned whole."""
INT8_FROM = 4_096
"""Rows from which the int8 scan is used: below, float32 is as fast (one block of int8
is scanned whole, and each ORT call has a fixed cost)."""
_SLACK = 1e-4  # float32 rounding of the scan, the norms and the re-rank, with margin
_Q_LEVELS = 63  # query quantised to [-63, 63], sent as uint8 with 64 added
_V_LEVELS = 127
_QUANTISE_CHUNK = 2_048


_sessions: dict[int, Any] = {}
_sessions_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # Another thread of the parent building a session at the fork holds the lock, and
    # that thread does not exist in the child: a fresh lock (sessions built are kept).
    global _sessions_lock
    _sessions_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def int8_scan_available() -> bool:
    """True when onnxruntime and onnx are importable (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def _int8_session(dim: int) -> Any:
    """This process's ORT session for ``(1, dim) uint8 x (dim, N) int8 -> (1, N) int32``."""
    with _sessions_lock:
        session = _sessions.get(dim)
        if session is None:
            session = _sessions[dim] = _build_int8_session(dim)
        return session


def _build_int8_session(dim: int) -> Any:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    # No zero-point input: with one, ORT's kernel is ~5x slower; the offset is
    # subtracted afterwards with each row's precomputed sum instead (exact in int32).
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["q", "v"], ["y"])],
        "int8-scan",
        [
            helper.make_tensor_value_info("q", TensorProto.UINT8, [1, dim]),
            helper.make_tensor_value_info("v", TensorProto.INT8, [dim, "N"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, "N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # shared cores: see evalgate.embeddings_onnx
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


class ScopeIndex:
    """Vectors, expiries, guard signatures and answers of one scope, append-only.

    An answer is held as its caller gave it: the semantic cache keeps a stored entry's
    answer as its undecoded bytes until it is served (decoding 100,000 answers is most of
    what a first read used to cost).

    Float32 rows live in a buffer that doubles when full (reading a tail of k new entries
    costs O(k)); the int8 copy lives in fixed blocks of :data:`BLOCK` columns.

    Args:
        dim: vector width.
        int8_scan: scan int8 copies with ONNX Runtime (default: when it is installed).
    """

    def __init__(self, dim: int, *, int8_scan: bool | None = None) -> None:
        self.dim = dim
        self.int8 = int8_scan_available() if int8_scan is None else int8_scan
        self.count = 0
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._expires = np.zeros(0)
        self._codes = np.zeros(0, dtype=np.int32)  # guard signature -> small int
        self._code_of: dict[str, int] = {}
        self._soonest = np.inf  # earliest expiry held: no mask to build before it
        self._max_norm = 0.0  # largest |v| held
        self._inv_scales = np.zeros(0, dtype=np.float32)  # v' = int8 row * inv_scale
        self._errors = np.zeros(0, dtype=np.float32)  # |v - v'|
        # (zero point) x (sum of the int8 row): the query offset's share, exact in float32.
        self._offsets = np.zeros(0, dtype=np.float32)
        self._blocks: list[np.ndarray] = []  # (dim, BLOCK) int8, C-contiguous
        self._quantised = 0  # rows with an int8 copy (none until INT8_FROM: see append)
        self.answers: list[Any] = []

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self.count]

    def append(
        self,
        vectors: np.ndarray,
        expires: np.ndarray,
        signatures: Sequence[str],
        answers: Sequence[Any],
    ) -> None:
        """Adds rows (unit float32 vectors, expiry times with inf for none)."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        start, need = self.count, self.count + len(vectors)
        if need > len(self._vectors):
            capacity = max(need, 2 * len(self._vectors), 64)
            self._vectors = _grown(self._vectors, capacity, start)
            self._expires = _grown(self._expires, capacity, start)
            self._codes = _grown(self._codes, capacity, start)
            self._inv_scales = _grown(self._inv_scales, capacity, start)
            self._errors = _grown(self._errors, capacity, start)
            self._offsets = _grown(self._offsets, capacity, start)
        self._vectors[start:need] = vectors
        self._expires[start:need] = expires
        self._codes[start:need] = [
            self._code_of.setdefault(s, len(self._code_of)) for s in signatures
        ]
        if len(vectors):
            self._soonest = min(self._soonest, float(np.min(expires)))
            squares = np.einsum("ij,ij->i", vectors, vectors)
            self._max_norm = max(self._max_norm, float(np.sqrt(squares.max())))
        if self.int8 and need >= INT8_FROM:
            # Below INT8_FROM the float32 scan runs, and an int8 block (dim x BLOCK bytes,
            # 6 MB at 384 dims) would cost a small scope (a tenant's) far more than its rows.
            self._quantise(self._vectors[self._quantised : need], self._quantised)
            self._quantised = need
        self.answers.extend(answers)
        self.count = need

    def _quantise(self, vectors: np.ndarray, start: int) -> None:
        end = start + len(vectors)
        while len(self._blocks) * BLOCK < end:
            self._blocks.append(np.zeros((self.dim, BLOCK), dtype=np.int8))
        # In chunks that stay in the CPU's cache: a first read quantises 100,000 rows at
        # once, and whole-matrix temporaries (150 MB each) made it several times slower.
        for lo in range(0, len(vectors), _QUANTISE_CHUNK):
            chunk = vectors[lo : lo + _QUANTISE_CHUNK]
            peak = np.maximum(chunk.max(axis=1), -chunk.min(axis=1))
            scales = np.where(
                peak > 0, np.float32(_V_LEVELS) / np.maximum(peak, np.float32(1e-30)), 1.0
            ).astype(np.float32)
            scaled = chunk * scales[:, None]
            np.rint(scaled, out=scaled)
            rows = scaled.astype(np.int8)
            scaled /= scales[:, None]  # the dequantised row v'
            scaled -= chunk
            first = start + lo
            last = first + len(chunk)
            self._inv_scales[first:last] = 1.0 / scales
            self._errors[first:last] = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
            self._offsets[first:last] = (_Q_LEVELS + 1) * rows.sum(axis=1, dtype=np.int32)
            done = 0
            while done < len(rows):  # a chunk may span blocks
                block, column = divmod(first + done, BLOCK)
                take = min(BLOCK - column, len(rows) - done)
                self._blocks[block][:, column : column + take] = rows[done : done + take].T
                done += take

    def expired(self, now: float) -> int:
        """How many rows have expired by ``now``."""
        if self._soonest > now:
            return 0
        return int(np.count_nonzero(self._expires[: self.count] <= now))

    def drop(self, row: int) -> None:
        """Never serves ``row`` again (an entry found unreadable when it was to be served)."""
        self._expires[row] = -np.inf
        self._soonest = -np.inf

    def search(
        self, query: np.ndarray, *, now: float, threshold: float, signature: str | None = None
    ) -> tuple[int, float] | None:
        """(row, float32 cosine) of the most similar live row whose signature matches
        (None: any), if its cosine reaches ``threshold``; else None."""
        if self.count == 0:
            return None
        n = self.count
        dead = None if self._soonest > now else self._expires[:n] <= now
        if signature is not None:
            code = self._code_of.get(signature)
            if code is None:
                return None
            other = self._codes[:n] != code
            dead = other if dead is None else dead | other
        query = np.asarray(query, dtype=np.float32)
        scanned = self._scan(query, n) if self.int8 and n >= INT8_FROM else None
        if scanned is None:
            sims = self.vectors @ query
            if dead is not None:
                sims[dead] = -np.inf
            best = int(np.argmax(sims))
            return (best, float(sims[best])) if sims[best] >= threshold else None
        approx, err = scanned
        if dead is not None:
            approx[dead] = -np.inf
        lower_best = float(np.max(approx - err))
        rows = np.flatnonzero(approx + err >= max(lower_best, threshold))
        if len(rows) == 0:
            return None
        sims = self._vectors[rows] @ query
        k = int(np.argmax(sims))
        return (int(rows[k]), float(sims[k])) if sims[k] >= threshold else None

    def _scan(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Approximate cosines of the first n rows and their error bounds; None when ONNX
        Runtime cannot run here (this index then stays on the float32 scan)."""
        try:
            return self._int8_scan(query, n)
        except Exception:  # ORT's errors subclass Exception directly; a
            # broken optional accelerator must cost speed, never a failed call
            self.int8 = False
            return None

    def _int8_scan(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        peak = float(np.abs(query).max())
        q_scale = _Q_LEVELS / peak if peak > 0 else 1.0
        q_int = np.rint(query * q_scale)
        q_err = float(np.linalg.norm(query - q_int / q_scale))
        q_norm = float(np.linalg.norm(q_int / q_scale))
        q_u8 = (q_int + (_Q_LEVELS + 1)).astype(np.uint8)[None, :]
        session = _int8_session(self.dim)
        blocks = -(-n // BLOCK)
        approx = np.empty(blocks * BLOCK, dtype=np.float32)
        for i, block in enumerate(self._blocks[:blocks]):
            (out,) = session.run(["y"], {"q": q_u8, "v": block})
            approx[i * BLOCK : (i + 1) * BLOCK] = out[0]  # |dot| < 2**24: exact in float32
        approx = approx[:n]
        approx -= self._offsets[:n]
        approx *= self._inv_scales[:n]
        approx *= np.float32(1.0 / q_scale)
        err = self._errors[:n] * np.float32(q_norm)
        err += np.float32(q_err * self._max_norm + _SLACK)
        return approx, err


def _grown(array: np.ndarray, capacity: int, keep: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[:keep] = array[:keep]
    return grown
