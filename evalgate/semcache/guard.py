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

GUARD_VERSION = 2
"""Bumped when the signature changes. An exported policy names the version it was
evaluated with (``guard_version``; a policy without one was exported with version 1) and
the runtime applies that version, so a policy keeps the guard its threshold was certified
with; entries stored under another version never match.

Version 2 (after a held-out traffic set): an answer-format phrase ("answer yes or no",
"true or false") no longer reads as a negation, which had made "is X a mammal? answer yes
or no" and "is X not a mammal? answer yes or no" both negated and so allowed to share;
and "false"/"untrue" ("is it false that X is a mammal?") negate.
"""
GUARD_VERSIONS = (1, 2)

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
# Version 2: what a request asks the answer to look like is not what it asks about.
_ANSWER_FORMAT = re.compile(
    r"\b(?:yes\s*(?:or|/)\s*no|true\s*(?:or|/)\s*false|no\s*(?:or|/)\s*yes|"
    r"false\s*(?:or|/)\s*true)\b",
    re.IGNORECASE,
)
_NEGATION_V2 = re.compile(r"\b(?:false|untrue)\b", re.IGNORECASE)


def signature(text: str, version: int = GUARD_VERSION) -> str:
    """The part of ``text`` two requests must share to share an answer.

    Numbers are compared by value as written (thousands separators dropped, so "1,000"
    equals "1000"); quoted strings exactly; negation as present or absent (the count is
    too brittle: "no, it's not" vs "it's not"). ``version``: the guard an exported policy
    was certified with (see :data:`GUARD_VERSION`).
    """
    if version not in GUARD_VERSIONS:
        raise ValueError(f"unknown guard version {version!r} (known: {GUARD_VERSIONS})")
    without_quotes = _QUOTED.sub(" ", text)
    quoted = sorted(next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text))
    numbers = sorted(n.replace(",", "").lstrip("+") for n in _NUMBER.findall(without_quotes))
    words = without_quotes.replace("’", "'")
    if version >= 2:
        words = _ANSWER_FORMAT.sub(" ", words)
    negated = bool(_NEGATION.search(words)) or (version >= 2 and bool(_NEGATION_V2.search(words)))
    return "|".join(
        ["n:" + ",".join(numbers), "q:" + "\x1f".join(quoted), "neg" if negated else "pos"]
    )


def may_share(a: str, b: str, version: int = GUARD_VERSION) -> bool:
    """Whether requests with user turns ``a`` and ``b`` may share an answer."""
    return signature(a, version) == signature(b, version)
