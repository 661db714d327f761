"""Removes credentials from text before it is recorded or shown.

Providers, proxies and SDKs sometimes quote a request back in an error: its headers, its
URL, the key itself. Every error message evalgate keeps (a call's error, a grader's error
or reason) passes through :func:`redact` before it reaches results.jsonl, the reports,
the terminal or a log. It removes:

* every secret evalgate read (:func:`remember` is called with each API key taken from the
  environment for a tier), wherever it appears;
* the values of ``Authorization``, ``Proxy-Authorization``, ``api-key``, ``x-api-key``
  and similar headers or fields, and ``Bearer``/``Basic`` credentials;
* common key shapes: ``sk-...`` (OpenAI, Anthropic), ``AIza...`` (Google), ``AKIA...``
  (AWS access key ids), ``gsk_...``, ``xai-...``, ``hf_...`` tokens, and ``key=``/
  ``api_key=``/``token=`` query parameters.

Standard library only, cheap to import: the runtime may use it too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

REDACTED = "[redacted]"

# Shorter strings are not treated as secrets: placeholders such as "local" or "no-key"
# are no credential, and replacing a common short word would garble messages.
MIN_SECRET_LENGTH = 8

_secrets: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None

_HEADER_NAMES = (
    r"(?:proxy-)?authorization|x-api-key|api[-_]?key|x-goog-api-key|openai[-_]api[-_]key"
    r"|anthropic[-_]api[-_]key|access[-_]token|secret[-_]key|client[-_]secret|password"
)
_SHAPES = (
    # "Authorization: Bearer x", "'api-key': 'x'", "api_key=x", "\"x-api-key\":\"x\"".
    # (Longer alternatives first: the scheme is kept and only the credential replaced.)
    rf"(?i:(?P<name>\b(?:{_HEADER_NAMES})\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?P<scheme>bearer|basic|token)\s+)?(?P<value>[^\s\"',;}&)\]]+))",
    r"(?i:(?P<scheme2>\b(?:bearer|basic)\s+)(?P<value2>[A-Za-z0-9._~+/=-]{8,}))",
    r"(?i:(?P<qname>[?&](?:key|api_key|apikey|token|access_token|sig)=)(?P<qvalue>[^&\s\"']+))",
    r"\bsk-[A-Za-z0-9_-]{16,}",
    r"\bAIza[0-9A-Za-z_-]{30,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\b(?:gsk|hf|xai|ghp|github_pat)[_-][A-Za-z0-9_]{16,}",
)


def remember(secret: str | None) -> None:
    """Redact ``secret`` from every message from now on (ignored when short or empty)."""
    if not secret:
        return
    secret = secret.strip()
    if len(secret) < MIN_SECRET_LENGTH:
        return
    global _pattern
    with _lock:
        if secret not in _secrets:
            _secrets.add(secret)
            _pattern = None


_SECRET_ENV_NAME = re.compile(r"(?i)(?:api_?key|token|secret|password|access_key)$")


def remember_environment(environ: Mapping[str, str]) -> None:
    """Remembers every environment value whose name says it is a credential.

    litellm reads provider keys (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``...) from the
    environment on evalgate's behalf, so they are redacted like the keys evalgate reads.
    """
    for name, value in environ.items():
        if _SECRET_ENV_NAME.search(name):
            remember(value)


def _compiled() -> re.Pattern[str]:
    global _pattern
    pattern = _pattern
    if pattern is None:
        with _lock:
            # Known secrets first and longest first, so one that contains another goes whole.
            known = [re.escape(s) for s in sorted(_secrets, key=len, reverse=True)]
            pattern = re.compile("|".join([*(f"(?:{k})" for k in known), *_SHAPES]))
            _pattern = pattern
    return pattern


def _replace(match: re.Match[str]) -> str:
    groups = match.groupdict()
    if groups.get("value") is not None:
        scheme = match.group("scheme")
        return match.group("name") + (f"{scheme} " if scheme else "") + REDACTED
    if groups.get("value2") is not None:
        return match.group("scheme2") + REDACTED
    if groups.get("qvalue") is not None:
        return match.group("qname") + REDACTED
    return REDACTED


def redact(text: str) -> str:
    """``text`` without credentials (see the module docstring for what is removed)."""
    if not text:
        return text
    return _compiled().sub(_replace, text)


def redact_optional(text: str | None) -> str | None:
    """:func:`redact` for a message that may be absent."""
    return None if text is None else redact(text)
