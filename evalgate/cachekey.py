"""The one response-cache key, shared by the eval engine and the runtime policy.

A key is a digest of everything that decides what a model answers: the model, the
endpoint it is served from, the normalised messages and every generation parameter.
Parameters that only change how the answer travels (streaming, timeouts, keys, retries,
metadata) are left out, so a streamed and a non-streamed request share an entry. A
parameter this module does not know is kept in the key: an unknown parameter may change
the answer, and a needless miss is cheaper than a wrong hit.

Two callers add their own dimension:

- ``namespace`` separates tenants at runtime (two tenants never share an entry);
- ``sample`` is the eval-only repeat index (repeats are independent samples). The runtime
  never passes it, so its keys carry no eval-only field.

Imports only the standard library: applications import it through ``evalgate.runtime``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

KEY_VERSION = 3
"""Bump when the key's payload changes shape, so old entries miss instead of colliding.

3: ``mock_response`` joined the key; the bump also retires entries that version 2 stored
from mocked calls under the real request's key."""

TRANSPORT_PARAMS = frozenset(
    {
        "stream",
        "stream_options",
        "timeout",
        "request_timeout",
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "organization",
        "extra_headers",
        "headers",
        "num_retries",
        "max_retries",
        "metadata",
        "user",
        "caching",
        "cache",
        "drop_params",
    }
)
"""Parameters that change how a request travels, not what the model answers.

``mock_response`` is deliberately not here: litellm answers a mocked call with the mock
itself, so the mock decides the answer and is part of the request's identity. Keyed by it,
a mocked answer can only ever be served to a call with the same mock, never to a real one
(left out, a test's canned text was cached under the real request's key and replayed to
real users). Keeping it in the key, rather than refusing to cache mocked calls, keeps the
rule in this one function, which the eval cache and the runtime both call."""


def normalise_base(api_base: str | None) -> str | None:
    """An endpoint's identity: no trailing slash, scheme and host lower-cased."""
    if not api_base:
        return None
    base = api_base.strip().rstrip("/")
    scheme, sep, rest = base.partition("://")
    if not sep:
        return base
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def _normalise_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name in TRANSPORT_PARAMS or value is None:
            continue
        if name == "stop" and isinstance(value, str):
            value = [value]  # "x" and ["x"] stop generation at the same place
        out[name] = value
    return out


def _normalise_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # Fields set to None are the same request as fields left out (SDKs differ here).
    return [{k: v for k, v in message.items() if v is not None} for message in messages]


def request_key(
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    api_base: str | None = None,
    namespace: str = "",
    sample: int | None = None,
) -> str:
    """A stable sha256 hex digest of one request's identity.

    Args:
        model: the model string as configured (a tier's ``model``), not a resolved alias.
        messages: chat messages as sent.
        params: generation parameters; transport-only ones are ignored (see
            :data:`TRANSPORT_PARAMS`), ``None`` values are treated as absent.
        api_base: the endpoint as configured (None for the provider's default, and for
            evalgate's embedded local tiers, whose port changes every run).
        namespace: a tenant's namespace at runtime ("" for none).
        sample: the eval repeat index; None at runtime.

    Raises:
        TypeError: a message or parameter value that JSON cannot represent.
    """
    payload: dict[str, Any] = {
        "v": KEY_VERSION,
        "model": model,
        "api_base": normalise_base(api_base),
        "messages": _normalise_messages(messages),
        "params": _normalise_params(params),
        "namespace": namespace,
    }
    if sample is not None:
        payload["sample"] = sample
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
