"""The near-miss guard: requests that differ in a number, a quoted string or a negation
never share an answer, however close their embeddings.

Embeddings mislead exactly there ("refund 30 dollars" vs "refund 300 dollars", "is X
safe" vs "is X not safe"). The guard reduces a user turn to a *signature* (its numbers,
its quoted strings, whether it negates); two requests may share an answer only when
their signatures are equal. The runtime stores the signature beside each entry and
filters candidates by equality before comparing vectors, so the rule costs one string
comparison per candidate. Pure and dependency-free: the runtime imports it.
"""

from __future__ import annotations

import re

GUARD_VERSION = 1
"""Bumped when the signature changes (an exported policy names the version it was
evaluated with; entries stored under another version never match)."""

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
# A single quote opens only after a non-word character and closes before one, so the
# apostrophes of "don't ... isn't" or "alice's" are not read as a quoted string.
_QUOTED = re.compile(
    r"\"([^\"]{1,200})\"|(?<!\w)'([^']{1,200})'(?!\w)|`([^`]{1,200})`|“([^”]{1,200})”"
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nobody|nothing|neither|nor|without|cannot|isn't|aren't|"
    r"wasn't|weren't|don't|doesn't|didn't|won't|wouldn't|shouldn't|can't|couldn't|"
    r"mustn't|hasn't|haven't|hadn't)\b|n't\b",
    re.IGNORECASE,
)


def signature(text: str) -> str:
    """The part of ``text`` two requests must share to share an answer.

    Numbers are compared by value as written (thousands separators dropped, so "1,000"
    equals "1000"); quoted strings exactly; negation as present or absent (the count is
    too brittle: "no, it's not" vs "it's not").
    """
    without_quotes = _QUOTED.sub(" ", text)
    quoted = sorted(next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text))
    numbers = sorted(n.replace(",", "").lstrip("+") for n in _NUMBER.findall(without_quotes))
    negated = bool(_NEGATION.search(without_quotes.replace("’", "'")))
    return "|".join(
        ["n:" + ",".join(numbers), "q:" + "\x1f".join(quoted), "neg" if negated else "pos"]
    )


def may_share(a: str, b: str) -> bool:
    """Whether requests with user turns ``a`` and ``b`` may share an answer."""
    return signature(a) == signature(b)
