"""Context trimming: keep the part of a long context that matters to the question.

This is the one implementation of the "trim the context sent" lever: the eval harness
uses it for a config's ``context_trim`` and the runtime policy reuses it, so what was
measured is exactly what ships.

How it works:

1. The context is split into units: sentences (ending in ``.``, ``!`` or ``?``) and
   lines. A unit is never cut in half, so the model never sees a broken sentence.
2. Each unit is scored for relevance to the question with BM25 (k1=1.2, b=0.75), the
   standard lexical ranking function, where the "documents" are the context's own units:
   a question word that appears in few units (a name, a number) weighs more than one that
   appears everywhere. Words are lower-cased; a few very common English words are ignored.
3. Units are taken from the most relevant down while they fit in the budget of
   ``ratio`` x the context's token count (the top unit is always kept, so the result is
   never empty); ties go to the earlier unit.
4. The kept units are joined back **in their original order**, because reordering facts
   changes their meaning (a later sentence often refers to an earlier one).

Token counts here are approximate and provider-independent: a token is a run of word
characters or a single punctuation mark. That is what "fraction of the context's tokens
kept" means; the provider's real token counts are measured separately, on the call.
Pure standard library: cheap to import, deterministic, no model needed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WORD = re.compile(r"\w+", re.UNICODE)
# A unit ends after sentence punctuation followed by whitespace, or at a line break.
_UNIT_END = re.compile(r"(?<=[.!?])\s+|\n+")

_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "a an and are as at be by did do does for from had has have how i in is it its of on "
        "or that the their there these this to was were what when where which who whom whose "
        "why will with you your"
    ).split()
)

BM25_K1 = 1.2
BM25_B = 0.75


def count_tokens(text: str) -> int:
    """Approximate token count: word runs and punctuation marks."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True, slots=True)
class TrimResult:
    """The trimmed text and what was kept (for reports and the runtime ledger)."""

    text: str
    tokens_before: int
    tokens_after: int
    units_total: int
    units_kept: int


def _terms(text: str) -> list[str]:
    return [w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOPWORDS]


def _split_units(context: str) -> list[tuple[str, str]]:
    """(unit, separator that followed it) pairs, so joins keep line structure."""
    units: list[tuple[str, str]] = []
    pos = 0
    for match in _UNIT_END.finditer(context):
        unit = context[pos : match.start()]
        if unit.strip():
            units.append((unit, "\n" if "\n" in match.group() else " "))
        pos = match.end()
    tail = context[pos:]
    if tail.strip():
        units.append((tail, ""))
    return units


def _bm25_scores(unit_terms: list[list[str]], query_terms: list[str]) -> list[float]:
    n_units = len(unit_terms)
    avg_len = sum(len(t) for t in unit_terms) / n_units or 1.0
    doc_freq: Counter[str] = Counter()
    for terms in unit_terms:
        doc_freq.update(set(terms))
    query = set(query_terms)
    scores = []
    for terms in unit_terms:
        tf = Counter(terms)
        score = 0.0
        for term in query:
            if term not in tf:
                continue
            idf = math.log(1 + (n_units - doc_freq[term] + 0.5) / (doc_freq[term] + 0.5))
            f = tf[term]
            norm = f + BM25_K1 * (1 - BM25_B + BM25_B * len(terms) / avg_len)
            score += idf * f * (BM25_K1 + 1) / norm
        scores.append(score)
    return scores


def trim_context(context: str, query: str, ratio: float) -> TrimResult:
    """Keeps about ``ratio`` of ``context``'s tokens, the units most relevant to ``query``.

    Args:
        context: the long text to shorten.
        query: what the text will be used for (usually the user's question).
        ratio: fraction of tokens to keep, 0 < ratio <= 1; 1 returns the text unchanged.

    Raises:
        ValueError: if ratio is outside (0, 1].
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"context_trim ratio must be in (0, 1], got {ratio!r}")
    total = count_tokens(context)
    units = _split_units(context)
    if ratio == 1 or len(units) <= 1:
        return TrimResult(context, total, total, len(units), len(units))

    unit_tokens = [count_tokens(u) for u, _ in units]
    scores = _bm25_scores([_terms(u) for u, _ in units], _terms(query))
    budget = ratio * total
    ranked = sorted(range(len(units)), key=lambda i: (-scores[i], i))
    kept: set[int] = {ranked[0]}
    used = unit_tokens[ranked[0]]
    for i in ranked[1:]:
        if used + unit_tokens[i] <= budget:
            kept.add(i)
            used += unit_tokens[i]

    parts: list[str] = []
    order = sorted(kept)
    for pos, i in enumerate(order):
        unit, sep = units[i]
        parts.append(unit.strip())
        if pos < len(order) - 1:
            parts.append("\n" if sep == "\n" else " ")
    text = "".join(parts)
    return TrimResult(text, total, count_tokens(text), len(units), len(kept))
