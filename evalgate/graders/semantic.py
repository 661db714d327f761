"""``similar``: cosine similarity of sentence embeddings to the expected text(s).

Embeddings come from all-MiniLM-L6-v2 (:mod:`evalgate.embeddings`, torch-free); numpy and
the model are loaded on the first grade, never at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalgate.graders.registry import Grade, grader

DEFAULT_THRESHOLD = 0.55
"""Measured with ``benchmarks/similar_threshold.py`` (65 labelled QA-style pairs).

Cosine distributions (min / median / max): paraphrases and same facts in other words
(n=28) 0.577 / 0.815 / 0.966; on-topic answers that do not give the fact (n=12)
0.295 / 0.482 / 0.683; unrelated answers and refusals (n=12) -0.044 / 0.016 / 0.135;
near misses, same wording with a wrong fact (n=13) 0.570 / 0.816 / 0.989. The threshold
maximising accuracy (averaged over a +-0.03 window) is 0.55: accuracy 0.769 on all 65
pairs (best single cut 0.785), 0.962 without the near misses: every paraphrase and
unrelated answer is right, 10 of 12 on-topic non-answers are rejected, and no near miss
is (no cosine threshold can tell "Paris" from "Lyon": use ``contains``, ``numeric`` or
``llm-judge`` for facts).
"""


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _validate(params: Mapping[str, Any], suite_dir: str) -> str | None:
    threshold = params.get("threshold", DEFAULT_THRESHOLD)
    if not -1 <= threshold <= 1:
        return f"threshold: expected a cosine in [-1, 1], found {threshold!r}"
    value = params.get("value")
    if isinstance(value, list) and not value:
        return "value: expected a text or a non-empty list of texts"
    from evalgate import embeddings

    try:
        embeddings.model_dir()
    except embeddings.MissingModelError as exc:
        return f"similar needs the embedding model: {exc}"
    return None


@grader(
    "similar",
    params={"value": (str, list), "threshold": (int, float)},
    required=("value",),
    validate=_validate,
)
def similar(output: str, case: Any, value: Any, threshold: float = DEFAULT_THRESHOLD) -> Grade:
    """Passes when the output's cosine similarity to an expected text reaches ``threshold``.

    Params:
        value: the expected text, or a list of acceptable texts (the closest one counts);
            templates over the case's variables.
        threshold: pass mark on the cosine; default 0.55, see :data:`DEFAULT_THRESHOLD`.

    The score is the best cosine, clipped to [0, 1]. An empty output scores 0 (an
    embedding of nothing is not an answer). An output longer than the model's 256 word
    pieces is embedded in overlapping windows and scored by its best window; the reason
    says so. The default encoder (all-MiniLM-L6-v2) is English: other languages score low
    even when right.
    """
    wanted = _as_list(value)
    if not output.strip():
        return Grade(0.0, False, "empty output")
    from evalgate import embeddings

    # The model reads 256 word pieces: a longer output is scored by overlapping windows,
    # and its score is the best window's (an answer after a long preamble is found).
    pieces = embeddings.windows(output)
    matrix = embeddings.similarities(pieces, wanted)
    window, best = divmod(int(matrix.argmax()), len(wanted))
    cosine = float(matrix[window, best])
    passed = cosine >= threshold - 1e-9
    sign = ">=" if passed else "<"
    note = (
        f" (best of {len(pieces)} windows of a long output, window {window + 1})"
        if len(pieces) > 1
        else ""
    )
    return Grade(
        min(1.0, max(0.0, cosine)),
        passed,
        f"cosine {cosine:.3f} {sign} {threshold:g} to {_short(wanted[best])}{note}",
    )
