"""Context trimming: keep the part of a long context that matters to the question.

This is the one implementation of the "trim the context sent" lever: the eval harness
uses it for a config's ``context_trim`` and the runtime policy reuses it, so what was
measured is exactly what ships.

How it works:

1. The context is split into units: sentences and lines. Sentences end in ``.``, ``!``
   or ``?`` followed by a space, or in the sentence marks of other scripts (CJK ``。！？``,
   Devanagari ``।`` ``॥``, Arabic ``؟`` ``۔``, and others), which need no space after
   them. A unit is never cut in half, so the model never sees a broken sentence. A unit
   longer than :data:`MAX_UNIT_TOKENS` tokens with no sentence mark (a single line of
   unpunctuated text) is split into runs of about that many tokens at spaces, so it can
   still be trimmed.
2. Each unit is scored for relevance to the question with BM25 (k1=1.2, b=0.75), the
   standard lexical ranking function, where the "documents" are the context's own units:
   a question word that appears in few units (a name, a number) weighs more than one that
   appears everywhere. Words are lower-cased; a few very common English words are ignored.
   Chinese and Japanese are written without spaces, so their text is matched by
   character pairs (bigrams) instead of words.
3. Units are taken from the most relevant down while they fit in the budget of
   ``ratio`` x the context's token count (the top unit is always kept, so the result is
   never empty); ties go to the earlier unit.
4. The kept units are joined back **in their original order**, because reordering facts
   changes their meaning (a later sentence often refers to an earlier one).

A list of passages (``context: [passage, ...]``) is trimmed as one context whose units
never cross a passage; each passage keeps its most relevant units and a passage with
none left is dropped (:func:`trim_passages`), so a template looping over the passages
still loops over passages.

Token counts here are approximate and provider-independent: a token is a run of word
characters, a single CJK character or a single punctuation mark. That is what "fraction
of the context's tokens kept" means; the provider's real token counts are measured
separately, on the call.
Pure standard library: cheap to import, deterministic, no model needed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# Scripts written without spaces between words: Han, kana, and their punctuation blocks.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# Combining marks (Devanagari vowel signs, Arabic and Hebrew points, accents) belong to
# their word, but Python's \w does not match them: without this, "गंगा" splits in three.
_MARKS = (
    "\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670"
    "\u06d6-\u06ed\u0900-\u0963\u0966-\u0dff\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff"
    "\ufe20-\ufe2f"
)
_WORD_RUN = rf"(?:(?![{_CJK}])[\w{_MARKS}])+"
_TOKEN = re.compile(rf"[{_CJK}]|{_WORD_RUN}|[^\w\s{_MARKS}]", re.UNICODE)
_WORD = re.compile(rf"[{_CJK}]+|{_WORD_RUN}", re.UNICODE)
_CJK_RUN = re.compile(rf"^[{_CJK}]+$")
_CJK_END = re.compile(rf"[{_CJK}。！？｡．]\s*$")
# A unit ends after sentence punctuation followed by whitespace, after a sentence mark of
# a script that puts no space after it, or at a line break.
_UNIT_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？｡．।॥؟۔።፧])\s*|\n+")

MAX_UNIT_TOKENS = 40
"""Longest unit, in tokens, before text with no sentence marks is split at spaces."""

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
    """Approximate token count: word runs, CJK characters and punctuation marks."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True, slots=True)
class TrimResult:
    """The trimmed text and what was kept (for reports and the runtime ledger)."""

    text: str
    tokens_before: int
    tokens_after: int
    units_total: int
    units_kept: int
    passages: tuple[str, ...] | None = None
    """The kept passages, when a list of passages was trimmed (else None)."""


def _terms(text: str) -> list[str]:
    terms: list[str] = []
    for word in (m.lower() for m in _WORD.findall(text)):
        if _CJK_RUN.match(word):
            # No spaces between words: overlapping character pairs stand in for words.
            terms.extend(word[i : i + 2] for i in range(max(1, len(word) - 1)))
        elif word not in _STOPWORDS:
            terms.append(word)
    return terms


def _split_long(unit: str) -> list[str]:
    """A unit with no sentence mark, cut into runs of about MAX_UNIT_TOKENS tokens."""
    tokens = list(_TOKEN.finditer(unit))
    if len(tokens) <= MAX_UNIT_TOKENS:
        return [unit]
    pieces: list[str] = []
    start = 0
    for index in range(MAX_UNIT_TOKENS, len(tokens), MAX_UNIT_TOKENS):
        # Cut at the space before the token when there is one (between words), else
        # between two characters (CJK).
        cut = tokens[index].start()
        pieces.append(unit[start:cut])
        start = cut
    pieces.append(unit[start:])
    return [p for p in pieces if p.strip()]


def _split_units(context: str) -> list[tuple[str, str]]:
    """(unit, separator that followed it) pairs, so joins keep line structure."""
    units: list[tuple[str, str]] = []
    pos = 0
    ends = [
        (m.start(), m.end(), "\n" if "\n" in m.group() else (" " if m.group() else ""))
        for m in _UNIT_END.finditer(context)
    ]
    ends.append((len(context), len(context), ""))
    for start, end, sep in ends:
        unit = context[pos:start]
        pos = end
        if not unit.strip():
            continue
        pieces = _split_long(unit)
        for piece in pieces[:-1]:
            units.append((piece, " " if piece[-1:].isspace() else ""))
        units.append((pieces[-1], sep))
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
        ValueError: if ratio is outside (0, 1] (NaN included).
    """
    _check_ratio(ratio)
    total = count_tokens(context)
    units = _split_units(context)
    if ratio == 1 or len(units) <= 1:
        return TrimResult(context, total, total, len(units), len(units))
    kept = _select([u for u, _ in units], query, ratio, total)
    text = _join([units[i] for i in sorted(kept)])
    return TrimResult(text, total, count_tokens(text), len(units), len(kept))


def trim_passages(passages: Sequence[str], query: str, ratio: float) -> TrimResult:
    """Keeps about ``ratio`` of the tokens of a list of passages, the most relevant units.

    The passages are ranked as one context whose units never cross a passage; each
    passage keeps its selected units, in order, and passages with none are dropped.
    ``passages`` of the result holds the kept passages; ``text`` joins them with blank
    lines.

    Raises:
        ValueError: if ratio is outside (0, 1], or a passage is not a string.
    """
    _check_ratio(ratio)
    if any(not isinstance(p, str) for p in passages):
        raise ValueError("trim_passages needs a list of strings")
    units: list[tuple[int, tuple[str, str]]] = [
        (index, unit) for index, passage in enumerate(passages) for unit in _split_units(passage)
    ]
    total = sum(count_tokens(p) for p in passages)
    if ratio == 1 or len(units) <= 1:
        return TrimResult(
            "\n\n".join(passages), total, total, len(units), len(units), tuple(passages)
        )
    kept = _select([u for _, (u, _) in units], query, ratio, total)
    out: list[str] = []
    for index in range(len(passages)):
        mine = [units[i][1] for i in sorted(kept) if units[i][0] == index]
        if mine:
            out.append(_join(mine))
    tokens_after = sum(count_tokens(p) for p in out)
    return TrimResult("\n\n".join(out), total, tokens_after, len(units), len(kept), tuple(out))


def _check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:  # False for NaN too
        raise ValueError(f"context_trim ratio must be in (0, 1], got {ratio!r}")


def _select(units: list[str], query: str, ratio: float, total: int) -> set[int]:
    """Indexes of the units kept: most relevant first while they fit the budget."""
    unit_tokens = [count_tokens(u) for u in units]
    scores = _bm25_scores([_terms(u) for u in units], _terms(query))
    budget = ratio * total
    ranked = sorted(range(len(units)), key=lambda i: (-scores[i], i))
    kept: set[int] = {ranked[0]}
    used = unit_tokens[ranked[0]]
    for i in ranked[1:]:
        if used + unit_tokens[i] <= budget:
            kept.add(i)
            used += unit_tokens[i]
    return kept


def _join(units: list[tuple[str, str]]) -> str:
    """Kept units in order, each followed by the separator that followed it."""
    parts: list[str] = []
    for pos, (unit, sep) in enumerate(units):
        parts.append(unit.strip())
        if pos < len(units) - 1:
            parts.append("\n" if sep == "\n" else sep or ("" if _CJK_END.search(unit) else " "))
    return "".join(parts)
