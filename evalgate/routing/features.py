"""What the router sees of a request: its text, embedded, plus length and structure.

The same code computes the features offline (from a case's rendered messages) and at
runtime (from the prepared call's messages), so an exported router scores a live request
exactly as its evaluation scored the cases. A :class:`FeatureRecipe` names what goes in,
including the embedding model's identity, and travels with the exported weights: a
runtime with a different embedding model refuses the router instead of mis-scoring.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RECIPE_VERSION = 1
EMBEDDING_DIM = 384
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

    @property
    def width(self) -> int:
        return (EMBEDDING_DIM if self.embedding else 0) + len(self.extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "embedding_model": self.embedding_model,
            "embedding": self.embedding,
            "extra": list(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "recipe") -> FeatureRecipe:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        version = data.get("version")
        # type(): True == 1 in Python, and a JSON ``true`` is no version number.
        if type(version) is not int or version != RECIPE_VERSION:
            raise ValueError(
                f"{where}.version: {version!r} is not a recipe version this evalgate reads "
                f"({RECIPE_VERSION})"
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
        return cls(embedding_model=model, embedding=embedding, extra=tuple(extra))


def default_recipe() -> FeatureRecipe:
    """MiniLM embedding plus every length/structure feature, naming the installed model."""
    return FeatureRecipe(embedding_model=embedding_model_identity())


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
    """(n, recipe.width) float64: the embedding (unit length), then the extra features.

    One request at runtime costs one encoder call (the encoder's LRU makes a repeated
    text nearly free); the extra features are pure Python on the string.
    """
    if isinstance(texts, str):
        raise TypeError("feature_matrix() takes a sequence of texts, not a single string")
    parts = []
    if recipe.embedding:
        if encoder is None:
            from evalgate.embeddings import get_encoder

            encoder = get_encoder()
        vectors = np.asarray(encoder.encode(list(texts)), dtype=np.float64)
        parts.append(vectors.reshape(len(texts), EMBEDDING_DIM))
    parts.append(extra_features(texts, recipe.extra))
    return np.hstack(parts) if parts else np.zeros((len(texts), 0))
