"""What the router sees of a request: its text, embedded, plus length and structure.

The same code computes the features offline (from a case's rendered messages) and at
runtime (from the prepared call's messages), so an exported router scores a live request
exactly as its evaluation scored the cases. A :class:`FeatureRecipe` names what goes in,
including the embedding model's identity, and travels with the exported weights: a
runtime with a different embedding model refuses the router instead of mis-scoring.

The embedding reads at most ``max_word_pieces`` word pieces of the request, its start and
its end (recipe version 2; 48 by default), the length/structure features the whole text.
MiniLM's cost grows with the input's length (to 256 pieces, its own limit), so a cap keeps
a long prompt's routing decision within the latency target; the cap is part of the recipe,
so the evaluation's cases and the live requests are cut alike. A version 1 recipe
(exported before the cap) reads up to the encoder's own limit, as it was fit.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RECIPE_VERSION = 2
READABLE_RECIPE_VERSIONS = (1, 2)
EMBEDDING_DIM = 384
DEFAULT_WORD_PIECES = 48
"""Word pieces of the request the embedding reads (``[CLS]``/``[SEP]`` not counted).

MiniLM's CPU time per request is about 5.5 ms plus 0.25 ms per word piece here (measured
with ``process_time``: 10 ms at 22 pieces, 22 ms at 74, 38 ms at 144, 70 ms at 256), so
48 pieces (50 with [CLS]/[SEP]) keep one routing decision near 16 ms, under the 20 ms
target; a question of a few sentences is read whole."""
MAX_WORD_PIECES = 254  # MiniLM reads 256 with [CLS] and [SEP]: a larger cap is no cap
_CHARS_PER_PIECE_CAP = 64  # characters per allowed piece tokenised at each end of a huge text
_RECIPE_KEYS = ("version", "embedding_model", "embedding", "extra", "max_word_pieces")
_CODE = re.compile(r"```|^\s*(def|class|import|function|SELECT|#include)\b", re.MULTILINE)


def _log_chars(text: str) -> float:
    return math.log1p(len(text))


def _log_words(text: str) -> float:
    return math.log1p(len(text.split()))


def _digit_share(text: str) -> float:
    return sum(ch.isdigit() for ch in text) / len(text) if text else 0.0


def _log_lines(text: str) -> float:
    return math.log1p(text.count("\n"))


def _has_code(text: str) -> float:
    return 1.0 if _CODE.search(text) else 0.0


def _questions(text: str) -> float:
    return math.log1p(text.count("?"))


EXTRA_FEATURES: Mapping[str, Callable[[str], float]] = {
    "log_chars": _log_chars,
    "log_words": _log_words,
    "digit_share": _digit_share,
    "log_lines": _log_lines,
    "has_code": _has_code,
    "log_questions": _questions,
}
"""Length and structure features by name (their order in a recipe is the column order)."""


def embedding_model_identity() -> str:
    """``package==version`` of the installed MiniLM package (what produced the vectors)."""
    from importlib import metadata

    from evalgate.embeddings import MODEL_PACKAGE

    name = MODEL_PACKAGE.replace("_", "-")
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return f"{name} (not installed)"


@dataclass(frozen=True, slots=True)
class FeatureRecipe:
    """Which features, in which order; recorded with the weights that use them."""

    embedding_model: str = ""
    embedding: bool = True
    extra: tuple[str, ...] = field(default_factory=lambda: tuple(EXTRA_FEATURES))
    version: int = RECIPE_VERSION
    # None: the encoder's own limit (256 with [CLS]/[SEP]); always None in version 1.
    max_word_pieces: int | None = None

    @property
    def width(self) -> int:
        return (EMBEDDING_DIM if self.embedding else 0) + len(self.extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "embedding_model": self.embedding_model,
            "embedding": self.embedding,
            "extra": list(self.extra),
        }
        if self.version >= 2:
            out["max_word_pieces"] = self.max_word_pieces
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "recipe") -> FeatureRecipe:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        version = data.get("version")
        # type(): True == 1 in Python, and a JSON ``true`` is no version number.
        if type(version) is not int or version not in READABLE_RECIPE_VERSIONS:
            readable = ", ".join(map(str, READABLE_RECIPE_VERSIONS))
            raise ValueError(
                f"{where}.version: {version!r} is not a recipe version this evalgate reads "
                f"({readable})"
            )
        allowed = _RECIPE_KEYS if version >= 2 else _RECIPE_KEYS[:-1]
        unknown_keys = sorted(str(k) for k in data if k not in allowed)
        if unknown_keys:
            raise ValueError(
                f"{where}.{unknown_keys[0]}: not a key of a version {version} recipe "
                f"(expected {', '.join(allowed)})"
            )
        pieces = data.get("max_word_pieces") if version >= 2 else None
        if version >= 2 and "max_word_pieces" not in data:
            raise ValueError(f"{where}.max_word_pieces: missing (an integer, or null)")
        if pieces is not None and (type(pieces) is not int or not 1 <= pieces <= MAX_WORD_PIECES):
            raise ValueError(
                f"{where}.max_word_pieces: {pieces!r} is not an integer from 1 to "
                f"{MAX_WORD_PIECES}, or null"
            )
        extra = data.get("extra", [])
        if not isinstance(extra, list) or not all(isinstance(e, str) for e in extra):
            raise ValueError(f"{where}.extra: expected a list of feature names")
        unknown = [e for e in extra if e not in EXTRA_FEATURES]
        if unknown:
            raise ValueError(f"{where}.extra: unknown feature(s) {', '.join(unknown)}")
        embedding = data.get("embedding", True)
        if not isinstance(embedding, bool):
            raise ValueError(f"{where}.embedding: expected true or false")
        model = data.get("embedding_model", "")
        if not isinstance(model, str):
            raise ValueError(f"{where}.embedding_model: expected a string")
        return cls(
            embedding_model=model,
            embedding=embedding,
            extra=tuple(extra),
            version=version,
            max_word_pieces=pieces,
        )


def default_recipe() -> FeatureRecipe:
    """MiniLM embedding of at most 48 word pieces (start and end) plus every
    length/structure feature, naming the installed model."""
    return FeatureRecipe(
        embedding_model=embedding_model_identity(), max_word_pieces=DEFAULT_WORD_PIECES
    )


@functools.cache
def _word_pieces() -> Any:
    """MiniLM's tokenizer, untruncated and without special tokens (loaded once)."""
    from tokenizers import Tokenizer

    from evalgate.embeddings import model_dir

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _offsets(text: str) -> list[tuple[int, int]]:
    return _word_pieces().encode(text, add_special_tokens=False).offsets


def embedded_text(text: str, max_word_pieces: int | None) -> str:
    """The part of ``text`` the embedding reads: the whole text when it has at most
    ``max_word_pieces`` word pieces (or the cap is None), else its first half of them, a
    " ... ", and its last half (the first piece more when the cap is odd).

    Head and tail, not the head alone: a long request's instruction is often at its start
    and its question at its end, with the bulk (a document, code) between; head+tail is
    also what worked best for long texts with BERT-sized models (Sun et al., 2019, "How to
    Fine-Tune BERT for Text Classification?"). A text longer than 128 characters per
    allowed piece is tokenised in two windows of 64 characters per piece (its start and
    its end), so a huge prompt costs no more than a long one; the same cut runs offline
    and at runtime.
    """
    if max_word_pieces is None:
        return text
    head_n = (max_word_pieces + 1) // 2
    tail_n = max_word_pieces - head_n
    window = _CHARS_PER_PIECE_CAP * max_word_pieces
    if len(text) <= 2 * window:
        offsets = _offsets(text)
        if len(offsets) <= max_word_pieces:
            return text
        head_end = offsets[head_n - 1][1]
        tail_start = offsets[len(offsets) - tail_n][0] if tail_n else len(text)
        return text[:head_end] + " ... " + text[tail_start:]
    start, end = text[:window], text[-window:]
    head_offsets, tail_offsets = _offsets(start), _offsets(end)
    head = start[: head_offsets[min(head_n, len(head_offsets)) - 1][1]] if head_offsets else ""
    tail = (
        end[tail_offsets[max(0, len(tail_offsets) - tail_n)][0] :]
        if tail_n and tail_offsets
        else ""
    )
    return head + " ... " + tail


def request_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The request as the router reads it: ``role: content`` per message, one per line.

    Non-text content parts (images) contribute their text parts only.
    """
    lines = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}]: expected a mapping, got {type(message).__name__}")
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(part.get("text", "")) for part in content if isinstance(part, Mapping)
            )
        lines.append(f"{message.get('role', 'user')}: {content or ''}")
    return "\n".join(lines)


def extra_features(texts: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """(n, len(names)) float64 of the named length/structure features."""
    out = np.empty((len(texts), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        compute = EXTRA_FEATURES[name]
        for i, text in enumerate(texts):
            out[i, j] = compute(text)
    return out


def feature_matrix(texts: Sequence[str], recipe: FeatureRecipe, encoder: Any = None) -> np.ndarray:
    """(n, recipe.width) float64: the embedding (unit length) of each text's
    :func:`embedded_text`, then the extra features of the whole text.

    One request at runtime costs one encoder call (the encoder's LRU makes a repeated
    text nearly free); the extra features are pure Python on the string.
    """
    if isinstance(texts, str):
        raise TypeError("feature_matrix() takes a sequence of texts, not a single string")
    parts = []
    if recipe.embedding:
        if encoder is None:
            from evalgate.embeddings import fastest_encoder

            encoder = fastest_encoder()
        cut = [embedded_text(t, recipe.max_word_pieces) for t in texts]
        vectors = np.asarray(encoder.encode(cut), dtype=np.float64)
        parts.append(vectors.reshape(len(texts), EMBEDDING_DIM))
    parts.append(extra_features(texts, recipe.extra))
    return np.hstack(parts) if parts else np.zeros((len(texts), 0))
