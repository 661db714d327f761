"""``evalgate usage``: live figures per feature from the ledger, beside the evals' predictions.

Pure aggregation (:func:`summarise`) over :class:`~evalgate.runtime.ledger.UsageRecord`s,
plus the command's reading and printing. Conventions:

- cost, tokens, latency and TTFT describe completed calls (no error); a cache hit is a
  completed call that cost 0 and has the latency the caller saw;
- percentiles interpolate linearly between order statistics (as the eval report does);
- **drift**: a feature is flagged when its live cost per call or p95 latency exceeds the
  policy evidence's prediction by more than ``tolerance`` (default 20%), once it has at
  least :data:`MIN_CALLS_FOR_DRIFT` completed calls (fewer say nothing about a p95).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalgate.runtime.ledger import UsageRecord

MIN_CALLS_FOR_DRIFT = 20
DEFAULT_TOLERANCE = 0.2
TOP_USERS = 3
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(ValueError):
    """Bad command input (one line)."""


def parse_since(text: str, now: float | None = None) -> float | None:
    """``30m``, ``24h``, ``7d`` -> the Unix time that long ago; ``all`` -> None."""
    if text.strip().lower() == "all":
        return None
    match = _SPAN.match(text)
    if not match:
        raise UsageError(f"--since {text!r}: expected a span like 30m, 24h, 7d, or 'all'")
    now = time.time() if now is None else now
    return now - float(match.group(1)) * _UNIT_S[match.group(2)]


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation quantile (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _expected(policy_features: Mapping[str, Any], name: str) -> dict[str, Any]:
    feature = policy_features.get(name)
    evidence = getattr(feature, "evidence", None) or {}
    expected = evidence.get("expected") or {}
    return {
        "cost_per_call_usd": expected.get("cost_per_call_usd"),
        "latency_p95_ms": expected.get("latency_p95_ms"),
        "ttft_p95_ms": expected.get("ttft_p95_ms"),
        "suite_hash": evidence.get("suite_hash"),
        "small_share": _evaluated_share(feature),
        "escalation_share": getattr(getattr(feature, "router", None), "escalation_rate", None),
        "semantic_hit_rate": _evaluated_hit_rate(evidence),
        "cache_mode": getattr(getattr(feature, "cache", None), "mode", None),
        "semantic_config": isinstance(evidence.get("semantic_cache"), Mapping),
    }


def _evaluated_hit_rate(evidence: Mapping[str, Any]) -> float | None:
    """A semantic cache's cross-fitted hit rate in the evals (export's evidence)."""
    semantic = evidence.get("semantic_cache")
    rate = semantic.get("hit_rate") if isinstance(semantic, Mapping) else None
    return float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) else None


def _small_share(rows: list[UsageRecord]) -> float | None:
    routed = [r.route for r in rows if r.route in ("small", "large")]
    return sum(r == "small" for r in routed) / len(routed) if routed else None


def _escalation_share(rows: list[UsageRecord]) -> float | None:
    routed = [r.route for r in rows if r.route in ("first", "escalated")]
    return sum(r == "escalated" for r in routed) / len(routed) if routed else None


def _evaluated_share(feature: Any) -> float | None:
    """The share the router sent small on its calibration cases (the evals' figure)."""
    router = getattr(feature, "router", None)
    if getattr(router, "model", None) is None:  # no router, or a cascade
        return None
    share = router.model.evidence.get("calibration_small_share")
    return float(share) if isinstance(share, int | float) else None


def summarise(
    records: Iterable[UsageRecord],
    policy_features: Mapping[str, Any] | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, dict[str, Any]]:
    """Per feature: calls, errors, cost, tokens, latency/TTFT p50/p95, hit rate,
    fallbacks, top users by cost, the prediction and drift flags."""
    by_feature: dict[str, list[UsageRecord]] = defaultdict(list)
    for record in records:
        by_feature[record.feature].append(record)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(by_feature):
        rows = by_feature[name]
        ok = [r for r in rows if r.error is None]
        costs = [r.cost_usd for r in ok]
        cost_known = all(c is not None for c in costs)
        cost_total = sum(c for c in costs if c is not None)
        # What failed calls are known to have cost is spent too (an escalated cascade's
        # billed, rejected first answer when its second route failed); unknown is none.
        spent = cost_total + sum(r.cost_usd or 0.0 for r in rows if r.error is not None)
        latencies = [r.latency_ms for r in ok if r.latency_ms is not None]
        ttfts = [r.ttft_ms for r in ok if r.ttft_ms is not None]
        by_user: dict[str, float] = defaultdict(float)
        for r in ok:
            by_user[r.user] += r.cost_usd or 0.0
        top = sorted(by_user.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_USERS]
        figures: dict[str, Any] = {
            "calls": len(rows),
            "completed": len(ok),
            "errors": len(rows) - len(ok),
            "cost_usd": spent if cost_known else None,
            "cost_per_call_usd": cost_total / len(ok) if ok and cost_known else None,
            "saved_usd": sum(r.saved_usd or 0.0 for r in ok),
            "tokens_in": sum(r.tokens_in or 0 for r in ok),
            "tokens_out": sum(r.tokens_out or 0 for r in ok),
            "latency_p50_ms": percentile(latencies, 0.5),
            "latency_p95_ms": percentile(latencies, 0.95),
            "ttft_p50_ms": percentile(ttfts, 0.5),
            "ttft_p95_ms": percentile(ttfts, 0.95),
            "cache_hit_rate": sum(r.cached for r in ok) / len(ok) if ok else None,
            "fallbacks": sum(1 for r in ok if r.fallback > 0),
            "top_users": [{"user": u, "cost_usd": c} for u, c in top],
            # A learned router's live share to the small route (None: nothing routed).
            "small_share": _small_share(rows),
            # A cascade's live share of escalated calls.
            "escalation_share": _escalation_share(rows),
            # Semantic cache hits (a hit records its similarity; identical turns score 1).
            "semantic_hits": sum(r.similarity is not None for r in ok),
        }
        expected = _expected(policy_features or {}, name)
        drift: list[str] = []
        if len(ok) >= MIN_CALLS_FOR_DRIFT:
            for live_key, exp_key, what in (
                ("cost_per_call_usd", "cost_per_call_usd", "cost/call"),
                ("latency_p95_ms", "latency_p95_ms", "p95 latency"),
            ):
                live, predicted = figures[live_key], expected[exp_key]
                if live is not None and predicted and live > predicted * (1 + tolerance):
                    drift.append(f"{what} {live / predicted:.2f}x the eval's prediction")
        figures["expected"] = expected
        figures["drift"] = drift
        out[name] = figures
    return out


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(summary: Mapping[str, Mapping[str, Any]], window: str) -> str:
    if not summary:
        return f"no calls in the ledger ({window})\n"
    lines = [
        f"usage ({window}); pred = what the policy's evidence predicted",
        f"{'feature':<16} {'calls':>6} {'errors':>6} {'cost $':>10} {'$/call':>9} "
        f"{'pred':>9} {'tok in':>8} {'tok out':>8} {'p50 ms':>7} {'p95 ms':>7} {'pred':>7} "
        f"{'ttft50':>7} {'ttft95':>7} {'hits':>5} {'fallbk':>6}",
    ]
    for name, f in summary.items():
        exp = f["expected"]
        lines.append(
            f"{name[:16]:<16} {f['calls']:>6} {f['errors']:>6} {_fmt(f['cost_usd'], '.4g'):>10} "
            f"{_fmt(f['cost_per_call_usd'], '.2e'):>9} {_fmt(exp['cost_per_call_usd'], '.2e'):>9} "
            f"{f['tokens_in']:>8} {f['tokens_out']:>8} {_fmt(f['latency_p50_ms'], '.0f'):>7} "
            f"{_fmt(f['latency_p95_ms'], '.0f'):>7} {_fmt(exp['latency_p95_ms'], '.0f'):>7} "
            f"{_fmt(f['ttft_p50_ms'], '.0f'):>7} {_fmt(f['ttft_p95_ms'], '.0f'):>7} "
            f"{_fmt(f['cache_hit_rate'], '.0%'):>5} {f['fallbacks']:>6}"
        )
        if f["top_users"]:
            users = ", ".join(f"{u['user'] or '-'} ${u['cost_usd']:.4g}" for u in f["top_users"])
            lines.append(f"    top users by cost: {users}")
        if f["small_share"] is not None or exp.get("small_share") is not None:
            lines.append(
                f"    router: {_fmt(f['small_share'], '.0%')} of calls to the small route "
                f"(evals: {_fmt(exp.get('small_share'), '.0%')})"
            )
        if f["escalation_share"] is not None or exp.get("escalation_share") is not None:
            lines.append(
                f"    cascade: {_fmt(f['escalation_share'], '.0%')} of calls escalated "
                f"(evals: {_fmt(exp.get('escalation_share'), '.0%')})"
            )
        if f.get("semantic_hits") or exp.get("semantic_hit_rate") is not None:
            mode = exp.get("cache_mode")
            # A semantic cache config exported as exact (nothing certified, or --cache):
            # the line names what the policy runs, not what the suite asked for. Hits by
            # similarity under another mode are an earlier policy's in the window: the
            # export is named only when the evidence says it was a semantic cache config.
            head = "semantic cache"
            if mode not in (None, "semantic"):
                head = "cache off" if mode == "off" else f"{mode} cache"
                if exp.get("semantic_config"):
                    head += " (exported for a semantic cache config)"
            lines.append(
                f"    {head}: {_fmt(f['cache_hit_rate'], '.0%')} of calls served from "
                f"the cache, {f['semantic_hits']} by similarity (evals: "
                f"{_fmt(exp.get('semantic_hit_rate'), '.0%')})"
            )
        for flag in f["drift"]:
            lines.append(f"    DRIFT: {flag}")
    return "\n".join(lines) + "\n"


def usage_main(args: Any) -> str:
    """The ``evalgate usage`` command's output (see ``evalgate usage --help``)."""
    from evalgate.runtime.backends import open_backend
    from evalgate.runtime.backends.sqlite import sqlite_path
    from evalgate.runtime.callpath import default_backend_url
    from evalgate.runtime.errors import PolicyError
    from evalgate.runtime.ledger import Ledger
    from evalgate.runtime.policy_file import load_policy_file

    since = parse_since(args.since)
    features: Mapping[str, Any] = {}
    try:
        if args.policy is not None:
            features = load_policy_file(Path(args.policy)).features
        url = args.backend or default_backend_url()
        if url.startswith("sqlite:") and not sqlite_path(url).exists():
            raise UsageError(f"{url}: no ledger there (pass --backend URL)")
        with open_backend(url, prefix=args.prefix) as backend:
            try:
                records = [
                    r
                    for r in Ledger(backend).read(since)
                    if args.feature is None or r.feature == args.feature
                ]
            except backend.errors as exc:  # a Redis that is down, a damaged file
                what = " ".join(str(exc).split()) or "no detail"
                raise UsageError(
                    f"{url}: cannot read the ledger: {type(exc).__name__}: {what}"
                ) from None
    except PolicyError as exc:
        raise UsageError(str(exc)) from None
    summary = summarise(records, features, tolerance=args.tolerance)
    if args.format == "json":
        return json.dumps({"since": since, "features": summary}, indent=1) + "\n"
    window = "all time" if since is None else f"last {args.since}"
    return format_table(summary, window)
