"""A semantic cache config: the suite's cases replayed as traffic through a certified cache.

``cache: {mode: semantic, max_wrong_hit: 0.02, alpha: 0.05}`` makes no calls. After the
run its **twin** (the measured config with the same settings, cache off) is replayed in
case order, which is the traffic's arrival order (:mod:`evalgate.semcache.replay`):

* the key (what must match exactly) is the rendered prompt with the last user turn
  blanked, the repeat and the case's ``tenant`` (model and parameters are the twin's, one
  per config), as the runtime scopes it; only the user turn is compared, by MiniLM;
* a request whose twin call errored is a miss that stores nothing (errors are never
  cached), so it neither serves nor is served;
* a served answer is graded with the **new** request's graders, offline (the loader
  refuses graders that call a model);
* the threshold and the near-miss guard are chosen by :func:`evalgate.semcache.certify.
  evaluate` (Learn-then-Test, the guard kept by its fixed rule), and every request is
  scored at the threshold certified on the folds without its cluster (cross-fitting), so
  the composed results, and the statistics and gate that read them, are held-out figures.

A hit's row is the served answer with the new request's grades, cost 0 (``saved_usd`` is
what the fresh call cost) and the declared lookup latency (``cache.lookup_ms``); a miss is
the twin's row with the lookup added to its latency and TTFT. Everything is a function of
the stored results, so a resumed run and a merge of shards compose the same rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from evalgate.derived import as_config

if TYPE_CHECKING:
    from evalgate.results import CallResult, CaseResult, GradeResult, ItemKey
    from evalgate.semcache.certify import Certification
    from evalgate.semcache.replay import Replay
    from evalgate.suite.model import Case, Config, Suite

SEED = 0

Graded = tuple["tuple[GradeResult, ...]", float, bool]


def _requests(
    suite: Suite, config: Config, results: Mapping[ItemKey, CaseResult]
) -> list[tuple[Case, CaseResult]]:
    """(case, twin result) in arrival order: cases in file order, every repeat measured."""
    from evalgate.results import ItemKey

    assert config.derived is not None
    twin = config.derived.small
    requests = []
    for case in suite.cases:
        rows = [results.get(ItemKey(suite.name, case.id, twin, r)) for r in range(config.repeats)]
        if all(row is not None for row in rows):
            requests.extend((case, row) for row in rows if row is not None)
    return requests


def _keys_and_turns(
    suite: Suite, twin: Config, requests: Sequence[tuple[Case, CaseResult]]
) -> tuple[list[str], list[str]]:
    from evalgate.plan import render_messages
    from evalgate.runtime.semantic_cache import user_turn

    keys, turns = [], []
    for index, (case, row) in enumerate(requests):
        messages = render_messages(suite, case, twin)
        found = user_turn(messages)
        if found is None or row.call.error is not None:
            # Errors are never cached, and a turn that is not text is never compared.
            keys.append(f"alone:{index}")
            turns.append("" if found is None else found[1])
            continue
        at, turn = found
        blanked = [dict(m) for m in messages]
        blanked[at]["content"] = ""
        keys.append(json.dumps([case.tenant or "", row.repeat, blanked], ensure_ascii=False))
        turns.append(turn)
    return keys, turns


def _cross_fitted(replay: Replay, cert: Certification, groups: Sequence[str], k: int) -> np.ndarray:
    """Per request, the entry it was served from (-1: a miss) at its fold's threshold.

    Rebuilds the folds :func:`evalgate.semcache.certify.certify` scored (same units, same
    seed) and checks the result against its figures, so the rows never disagree with the
    certification they are reported with.
    """
    from evalgate.semcache.certify import fold_labels
    from evalgate.semcache.replay import EXACT

    units: Sequence[Any] = groups if len(set(groups)) >= k else list(range(replay.n))
    folds = fold_labels(units, k, SEED)
    served = np.full(replay.n, -1, dtype=int)
    for f, threshold in enumerate(cert.fold_thresholds):
        held = folds == f
        if held.any():
            served[held] = replay.run(EXACT if threshold is None else threshold).served_from[held]
    if int((served >= 0).sum()) != cert.figures.hits:
        raise RuntimeError(
            f"the cross-fitted replay serves {int((served >= 0).sum())} requests, the "
            f"certification {cert.figures.hits}: evalgate.semcache.certify changed its folds"
        )
    return served


def _call_cost(call: CallResult) -> float | None:
    """What the call costs without the response cache (a twin served from it records cost
    0 and the original's cost as ``saved_usd``); None when unpriced."""
    if call.cost_usd is None:
        return None
    return call.cost_usd + (call.saved_usd if call.cached else 0.0)


def _hit_row(
    config: Config, fresh: CaseResult, served: CaseResult, graded: Graded, lookup_ms: float
) -> CaseResult:
    grades, score, passed = graded
    cost = _call_cost(fresh.call)
    call = dataclasses.replace(
        served.call,
        cost_usd=None if cost is None else 0.0,
        saved_usd=cost or 0.0,
        latency_ms=lookup_ms,
        ttft_ms=None if fresh.call.ttft_ms is None else lookup_ms,
        cached=True,
        hit_latency_ms=lookup_ms,
        attempts=0,
    )
    return as_config(fresh, config, call=call, grades=grades, score=score, passed=passed)


def _miss_row(config: Config, fresh: CaseResult, lookup_ms: float) -> CaseResult:
    call = dataclasses.replace(
        fresh.call,
        latency_ms=fresh.call.latency_ms + lookup_ms,
        ttft_ms=None if fresh.call.ttft_ms is None else fresh.call.ttft_ms + lookup_ms,
    )
    return as_config(fresh, config, call=call)


def _interval(triple: Sequence[float]) -> dict[str, float]:
    return {"estimate": triple[0], "low": triple[1], "high": triple[2]}


def _total_cost(costs: Sequence[float | None]) -> float | None:
    return None if any(c is None for c in costs) else float(sum(costs))  # type: ignore[arg-type]


def derive(
    suite: Suite, config: Config, results: Mapping[ItemKey, CaseResult]
) -> tuple[list[CaseResult], dict[str, Any]]:
    from evalgate.embeddings import get_encoder
    from evalgate.graders.grading import grade_output
    from evalgate.routing.features import embedding_model_identity
    from evalgate.semcache.certify import FIXED_THRESHOLDS, evaluate
    from evalgate.semcache.guard import GUARD_VERSION
    from evalgate.semcache.replay import EXACT, Replay

    d = config.derived
    assert d is not None and d.kind == "semantic"
    twin = next(c for c in suite.configs if c.id == d.small)
    record: dict[str, Any] = {
        "kind": "semantic",
        "twin": twin.id,
        "max_wrong_hit": d.max_wrong_hit,
        "alpha": d.alpha,
        "folds": d.folds,
        "lookup_ms": d.lookup_ms,
        "embedding_model": embedding_model_identity(),
        "guard_version": GUARD_VERSION,
    }
    requests = _requests(suite, config, results)
    record["requests"] = len(requests)
    total = len(suite.cases) * config.repeats
    record["missing"] = total - len(requests)
    if not requests:
        record["note"] = f"no results of {twin.id!r} to replay"
        return [], record
    # Fewer requests, fewer paraphrases that find an earlier one: said, not hidden.
    partial = (
        f"{record['missing']} of {total} requests have no results of {twin.id!r} "
        f"(deselected, not run, or in another shard): replayed over the other {len(requests)}"
        if record["missing"]
        else None
    )
    keys, turns = _keys_and_turns(suite, twin, requests)
    vectors = get_encoder().encode(turns)
    graded: dict[tuple[int, int], Graded] = {}

    def grade(i: int, j: int) -> Graded:
        if (i, j) not in graded:
            case, served = requests[i][0], requests[j][1]
            if served.call.error is not None:
                graded[(i, j)] = ((), 0.0, False)
            else:
                graders = (*suite.graders, *case.graders)
                graded[(i, j)] = grade_output(
                    served.call.output, case, graders, suite.threshold, call=served.call
                )
        return graded[(i, j)]

    memo: dict[tuple[int, int], bool] = {}
    common: dict[str, Any] = {
        "cost": [_call_cost(r.call) or 0.0 for _, r in requests],
        "latency_ms": [r.call.latency_ms for _, r in requests],
        "lookup_ms": d.lookup_ms,
        "memo": memo,
    }
    fresh = [None if r.errored else r.passed for _, r in requests]
    replays = [
        Replay(keys, turns, vectors, fresh, lambda i, j: grade(i, j)[2], guard=g, **common)
        for g in (False, True)
    ]
    groups = [case.cluster or f"case:{case.id}" for case, _ in requests]
    near = [case.near_miss is not None for case, _ in requests]
    choice = evaluate(
        *replays,
        fixed=FIXED_THRESHOLDS,
        max_wrong_hit=d.max_wrong_hit,
        alpha=d.alpha,
        groups=groups,
        near_miss=near,
        k=d.folds,
        seed=SEED,
    )
    cert = choice.chosen
    other = choice.without_guard if cert.guard else choice.with_guard
    replay = replays[1] if cert.guard else replays[0]
    served = _cross_fitted(replay, cert, groups, d.folds)

    composed: list[CaseResult] = []
    wrong = np.zeros(len(requests), dtype=bool)
    for i, (_, row) in enumerate(requests):
        j = int(served[i])
        if j < 0:
            composed.append(_miss_row(config, row, d.lookup_ms))
            continue
        wrong[i] = replay.is_wrong(i, j)
        composed.append(_hit_row(config, row, requests[j][1], grade(i, j), d.lookup_ms))

    figures = cert.figures
    # Costs without the response cache, so a twin served from it saves the same calls.
    fresh_costs = [_call_cost(r.call) for _, r in requests]
    twin_cost = _total_cost(fresh_costs)
    cost = _total_cost([0.0 if served[i] >= 0 else c for i, c in enumerate(fresh_costs)])
    kinds: dict[str, dict[str, int]] = {}
    for i, (case, _) in enumerate(requests):
        if case.near_miss is not None:
            row = kinds.setdefault(case.near_miss, {"requests": 0, "hits": 0, "wrong_hits": 0})
            row["requests"] += 1
            row["hits"] += int(served[i] >= 0)
            row["wrong_hits"] += int(wrong[i])
    record.update(
        {
            "tenants": len({case.tenant for case, _ in requests}),
            "clusters": len({case.cluster for case, _ in requests if case.cluster is not None}),
            "threshold": cert.threshold,
            "certified": cert.certified,
            "guard": cert.guard,
            "guard_rule": "kept unless the unguarded cache's cross-fitted hit rate is higher",
            "other": {
                "guard": other.guard,
                "threshold": other.threshold,
                "certified": other.certified,
                "hit_rate": other.figures.hit_rate,
            },
            "fold_thresholds": list(cert.fold_thresholds),
            "hits": figures.hits,
            "hit_rate": figures.hit_rate,
            # What exact caching alone serves (identical turns): the evaluated hit rate of
            # an export that falls back to it.
            "exact_hit_rate": float(replays[0].run(EXACT).hit.mean()),
            "wrong_hits": figures.wrong_hits,
            "wrong_hit_rate": _interval(figures.wrong_hit_rate),
            "wrong_among_hits": _interval(figures.wrong_among_hits),
            "near_miss_wrong_rate": figures.near_miss_wrong_rate,
            "near_miss": kinds,
            "cost_saved_pct": None
            if not twin_cost or cost is None
            else 100.0 * (1.0 - cost / twin_cost),
            "latency_p50_ms": {
                "cached": float(np.median([r.call.latency_ms for r in composed])),
                "twin": float(np.median([r.call.latency_ms for _, r in requests])),
            },
            "quality": _quality(requests, composed, served),
            "fixed": [
                {
                    "threshold": t,
                    "hit_rate": f.hit_rate,
                    "wrong_hit_rate": _interval(f.wrong_hit_rate),
                    "wrong_among_hits": _interval(f.wrong_among_hits),
                    "near_miss_wrong_rate": f.near_miss_wrong_rate,
                }
                # As other caches run them: no guard, on the same traffic.
                for t, f in zip(FIXED_THRESHOLDS, choice.without_guard.fixed, strict=True)
            ],
            "notes": list(cert.notes),
        }
    )
    notes = [partial] if partial else []
    if not cert.certified:
        notes.append(
            f"no threshold certified at max_wrong_hit {d.max_wrong_hit}, alpha {d.alpha} on "
            f"{len(requests)} requests: falls back to exact caching"
        )
    if notes:
        record["note"] = "; ".join(notes)
    return composed, record


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _quality(
    requests: Sequence[tuple[Case, CaseResult]],
    composed: Sequence[CaseResult],
    served: np.ndarray,
) -> dict[str, Any]:
    """Mean score of the hits (the served answers, graded for the new request) beside what
    fresh calls scored on those same requests, and of the misses (fresh calls).

    Means are over completed rows, as a config's quality is (``evalgate.stats``): an
    errored row's score 0 is no grade. A hit is left out on both sides when either its
    served answer or its fresh call errored (a grader can fail on either), so the two
    means stay paired; ``errored`` counts the requests left out.
    """
    hit = [i for i in range(len(requests)) if served[i] >= 0]
    miss = [i for i in range(len(requests)) if served[i] < 0]
    paired = [i for i in hit if not composed[i].errored and not requests[i][1].errored]
    completed = [i for i in miss if not composed[i].errored]
    return {
        "hits": len(hit),
        "hit_score": _mean([composed[i].score for i in paired]),
        "fresh_score_on_hits": _mean([requests[i][1].score for i in paired]),
        "misses": len(miss),
        "miss_score": _mean([composed[i].score for i in completed]),
        "errored": len(hit) - len(paired) + len(miss) - len(completed),
    }


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{100 * value:.1f}%"


def describe(config_id: str, record: Mapping[str, Any]) -> str:
    """One line: the threshold and its bound, what the cache served, and fixed thresholds."""
    if "error" in record:
        return f"{config_id}: semantic cache failed: {record['error']}"
    head = f"{config_id}: semantic cache over {record.get('twin')}"
    if "threshold" not in record:
        return f"{head}: {record.get('note', 'nothing to replay')}"
    bound = f"wrong hits <= {_pct(record['max_wrong_hit'])} @ alpha {record['alpha']}"
    guard = "guard kept" if record["guard"] else "guard dropped"
    if record["certified"]:
        line = f"{head}: threshold {record['threshold']:.3f} certified ({bound}, {guard})"
    else:
        line = f"{head}: nothing certified ({bound}): falls back to exact caching"
    wrong, among = record["wrong_hit_rate"], record["wrong_among_hits"]
    line += (
        f"; cross-fitted k={record['folds']} on {record['requests']} requests: hits "
        f"{_pct(record['hit_rate'])}, wrong hits {_pct(wrong['estimate'])} "
        f"[{_pct(wrong['low'])}, {_pct(wrong['high'])}] of requests, "
        f"{_pct(among['estimate'])} of hits"
    )
    if record.get("near_miss_wrong_rate") is not None:
        line += f", {_pct(record['near_miss_wrong_rate'])} of near-misses"
    quality = record.get("quality") or {}
    parts = []
    if quality.get("hit_score") is not None:
        parts.append(
            f"hits {quality['hit_score']:.3f} (fresh calls on the same requests "
            f"{quality['fresh_score_on_hits']:.3f})"
        )
    if quality.get("miss_score") is not None:
        parts.append(f"{'of ' if parts else ''}misses {quality['miss_score']:.3f}")
    if parts:
        line += "; quality of " + ", ".join(parts)
        if quality.get("errored"):
            line += f" ({quality['errored']} errored rows left out)"
    if record.get("cost_saved_pct") is not None:
        line += f"; cost saved {record['cost_saved_pct']:.0f}%"
    fixed = ", ".join(
        f"{f['threshold']:.2f} hits {_pct(f['hit_rate'])} wrong "
        f"{_pct(f['wrong_hit_rate']['estimate'])}"
        for f in record.get("fixed", [])
    )
    if fixed:
        line += f"; fixed thresholds (no guard): {fixed}"
    if record.get("missing"):
        line += f"; {record['note'].split('; ')[0]}"
    return line
