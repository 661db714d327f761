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
and "false"/"untrue" ("is it false that X is a mammal?") negate. Found by a hostile
review before release, also in version 2: a leading decimal point is kept (".5" was 5),
commas are dropped only between thousands ("1,5" and "1,2" were 15 and 12), a hyphenated
or comma-separated answer format ("a yes-or-no question", "yes, or no") is no negation,
and contractions typed without an apostrophe ("isnt", "doesnt") or with another
apostrophe character ("isnʼt", "isn＇t") negate.
"""
GUARD_VERSIONS = (1, 2)

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
# Version 2: ".5" is a number of its own, and commas go only where they group thousands.
_NUMBER_V2 = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
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
# Version 2: what a request asks the answer to look like is not what it asks about
# ("yes or no", "yes/no", "yes-or-no", "yes, or no").
_OR = r"[\s,-]*(?:or|/)[\s-]*"
_ANSWER_FORMAT = re.compile(
    rf"\b(?:yes{_OR}no|true{_OR}false|no{_OR}yes|false{_OR}true)\b",
    re.IGNORECASE,
)
_NEGATION_V2 = re.compile(
    r"\b(?:false|untrue|isnt|arent|wasnt|werent|dont|doesnt|didnt|wouldnt|shouldnt|"
    r"couldnt|mustnt|hasnt|havent|hadnt)\b",
    re.IGNORECASE,
)
# Apostrophes other than ' and ’ that keyboards and converters write in "isn't".
_APOSTROPHES_V2 = str.maketrans(dict.fromkeys("ʼ‘＇′", "'"))


def signature(text: str, version: int = GUARD_VERSION) -> str:
    """The part of ``text`` two requests must share to share an answer.

    Numbers are compared by value as written (thousands separators dropped, so "1,000"
    equals "1000"); quoted strings exactly; negation as present or absent (the count is
    too brittle: "no, it's not" vs "it's not"). ``version``: the guard an exported policy
    was certified with (see :data:`GUARD_VERSION`).
    """
    if isinstance(version, bool) or version not in GUARD_VERSIONS:  # True == 1
        raise ValueError(f"unknown guard version {version!r} (known: {GUARD_VERSIONS})")
    without_quotes = _QUOTED.sub(" ", text)
    quoted = sorted(next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text))
    if version >= 2:
        numbers = sorted(_number_v2(n) for n in _NUMBER_V2.findall(without_quotes))
    else:
        numbers = sorted(n.replace(",", "").lstrip("+") for n in _NUMBER.findall(without_quotes))
    words = without_quotes.replace("’", "'")
    if version >= 2:
        words = _ANSWER_FORMAT.sub(" ", words.translate(_APOSTROPHES_V2))
    negated = bool(_NEGATION.search(words)) or (version >= 2 and bool(_NEGATION_V2.search(words)))
    return "|".join(
        ["n:" + ",".join(numbers), "q:" + "\x1f".join(quoted), "neg" if negated else "pos"]
    )


def _number_v2(token: str) -> str:
    """A number as written, thousands separators dropped ("1,000" is 1000; "1,5" stays)."""
    token = token.rstrip(",").lstrip("+")
    return token.replace(",", "") if _THOUSANDS.fullmatch(token) else token


def may_share(a: str, b: str, version: int = GUARD_VERSION) -> bool:
    """Whether requests with user turns ``a`` and ``b`` may share an answer."""
    return signature(a, version) == signature(b, version)
