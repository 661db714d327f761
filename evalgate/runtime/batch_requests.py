"""A ``policy.batch`` request's way in and out of storage: checked and prepared through
the feature's policy, admitted under its limits for the batch window, dumped into the
handle's state (JSON), turned into a batch file line, grouped under a provider's caps,
and rebuilt (call and reservation) in whichever process collects its answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from evalgate.runtime.batch_provider import ENDPOINT
from evalgate.runtime.cache import CacheRequest
from evalgate.runtime.errors import PolicyError
from evalgate.runtime.limits import LimitError, Limits, Need, _Applied, _Reservation
from evalgate.runtime.messages import bad_output_cap
from evalgate.runtime.policy_file import FeaturePolicy, Route

if TYPE_CHECKING:
    from evalgate.runtime.callpath import Admission, Policy, PreparedCall

RESERVATION_TTL_S = 26 * 3600.0
"""How long a batch request's limit reservation holds (the 24 h window, plus margin)."""
MAX_REQUESTS_PER_BATCH = 50_000
"""OpenAI's cap on requests per batch: more are split into several batches."""
MAX_BATCH_BYTES = int(200 * 1024 * 1024 * 0.95)
"""OpenAI's 200 MB input-file cap, less a 5% margin (as Inspect AI keeps)."""
_NOT_SENT = frozenset(
    {"timeout", "max_retries", "api_base", "api_key", "stream_options", "metadata"}
)
_REQUEST_KEYS = frozenset({"messages", "user", "tenant", "context", "query"})


def prepare(policy: Policy, feature: str, index: int, req: Mapping[str, Any]) -> PreparedCall:
    where = f"requests[{index}]"
    if not isinstance(req, Mapping) or "messages" not in req:
        raise PolicyError(f"{where}: expected a mapping with 'messages', found {req!r}"[:300])
    kwargs = {k: v for k, v in req.items() if k not in _REQUEST_KEYS}
    if kwargs.get("stream"):
        raise PolicyError(f"{where}.stream: a batch request cannot stream")
    kwargs.pop("stream", None)
    bad_cap = bad_output_cap(kwargs)
    if bad_cap is not None:
        name, value = bad_cap
        raise PolicyError(f"{where}.{name}: expected an integer >= 1, found {value!r}"[:300])
    # The request is stored as JSON (the handle's state, the batch file): a value that is
    # not JSON fails here, before anything is reserved, not in the middle of submitting.
    for name, value in (("messages", req["messages"]), *kwargs.items()):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"{where}.{name}: not JSON ({describe(exc)})"[:300]) from None
    return policy._prepare(
        feature,
        req["messages"],
        str(req.get("user") or ""),
        str(req.get("tenant") or ""),
        req.get("context"),
        req.get("query"),
        kwargs,
    )


def admit(policy: Policy, call: PreparedCall) -> list[Admission]:
    """The call's admissions; the limiter reserves for the batch window, not a call's."""
    admitted: list[Admission] = []
    try:
        for guard in policy.guards:
            if guard is policy.limiter:
                admitted.append(policy.limiter.admit(call, ttl_s=RESERVATION_TTL_S))
            else:
                admitted.append(guard.admit(call))
    except Exception as exc:
        policy._settle_unused(admitted)
        if isinstance(exc, LimitError):
            policy.ledger.append(policy._record(call, attempts=0, error=describe(exc)))
        raise
    return admitted


def dump_call(call: PreparedCall, admitted: list[Admission]) -> dict[str, Any]:
    reservation = next((a for a in admitted if isinstance(a, _Reservation)), None)
    dumped = None
    if reservation is not None:
        dumped = {
            "rid": reservation.rid,
            "tokens": reservation.tokens,
            "cost": reservation.cost,
            "now": reservation.now,
            "applied": [
                [
                    e.scope,
                    e.subject,
                    e.limits.count_cache_hits,
                    metric,
                    n.key,
                    n.amount,
                    n.limit,
                    n.expires_in_s,
                ]
                for e, metric, n in reservation.applied
            ],
        }
    return {
        "user": call.user,
        "tenant": call.tenant,
        "messages": call.messages,
        "params": call.params,
        "trimmed": list(call.trimmed_tokens) if call.trimmed_tokens else None,
        "route": call.route,
        "route_score": call.route_score,
        "ts": call.ts,
        "cache": None
        if call.cache_request is None
        else [call.cache_request.model, call.cache_request.api_base],
        "submissions": 0,
        "reservation": dumped,
        "result": None,
    }


def line_of(request: dict[str, Any], index: int, model: str) -> str:
    """The request's line of the batch input file (JSONL)."""
    sent = {k: v for k, v in request["params"].items() if k not in _NOT_SENT}
    body = {"model": model, "messages": request["messages"], **sent}
    line = {"custom_id": f"r{index}", "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def split(requests: list[dict[str, Any]], indices: list[int], where: str) -> list[list[int]]:
    """``indices`` in chunks a provider takes as one batch (requests and file bytes under
    its caps). Sizes are measured with the route's name as the model (the upstream name
    sent is no longer) and a margin of 5% is kept below the byte cap."""
    chunks: list[list[int]] = []
    size = 0
    for index in indices:
        line = len(line_of(requests[index], index, where).encode()) + 1 + len(where)
        if not chunks or len(chunks[-1]) >= MAX_REQUESTS_PER_BATCH or size + line > MAX_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(index)
        size += line
    return chunks


def call_of(
    policy: Policy, feature: FeaturePolicy, route: Route, request: dict[str, Any]
) -> PreparedCall:
    from evalgate.runtime.callpath import PreparedCall

    trimmed = request.get("trimmed")
    call = PreparedCall(
        feature,
        request["user"],
        request["tenant"],
        request["messages"],
        request["params"],
        False,
        routes=(route,),
        trimmed_tokens=tuple(trimmed) if trimmed else None,
        route=request.get("route"),
        route_score=request.get("route_score"),
        ts=request["ts"],
    )
    if request.get("cache"):
        model, api_base = request["cache"]
        call.cache_request = CacheRequest(
            model=model,
            messages=call.messages,
            params=call.params,
            api_base=api_base,
            namespace=call.tenant,
        )
    return call


def restored_admissions(policy: Policy, request: dict[str, Any]) -> list[Admission]:
    """The limit reservation stored with ``request`` (see :func:`dump_call`), as an
    admission another process can settle (custom guards' admissions cannot be stored)."""
    limiter = policy.limiter
    stored = request.get("reservation")
    if limiter is None or not stored:
        return []
    planned = [
        (
            _Applied(scope, subject, Limits(count_cache_hits=hits)),
            metric,
            Need(key, amount, limit, expires),
        )
        for scope, subject, hits, metric, key, amount, limit, expires in stored["applied"]
    ]
    return [
        _Reservation(
            limiter, stored["rid"], planned, stored["tokens"], stored["cost"], stored["now"]
        )
    ]


def describe(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_REQUESTS_PER_BATCH",
    "RESERVATION_TTL_S",
    "admit",
    "call_of",
    "describe",
    "dump_call",
    "line_of",
    "prepare",
    "restored_admissions",
    "split",
]
