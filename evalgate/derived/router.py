"""A routed config: per case, the small or the large config's result, as a router decides.

The router (:mod:`evalgate.routing`) is cross-fitted: each case is decided by a
fit-then-calibrate pipeline trained on the other folds, so the routed config's quality,
cost and latency are measured on cases its router never saw. The exported router is fit
and calibrated on all cases (disjoint halves) and recorded with its evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from evalgate.derived import as_config, pairs

if TYPE_CHECKING:
    from evalgate.results import CaseResult, ItemKey
    from evalgate.suite.model import Config, Suite

SEED = 0
BOOTSTRAP = 2000


def _interval(values: np.ndarray, seed: int = SEED) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean (seeded: the report is reproducible)."""
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability a case where small suffices scores above one where it does not."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return None
    order = np.concatenate([pos, neg]).argsort().argsort().astype(float) + 1  # ranks
    # Average ranks over ties (Mann-Whitney U).
    values = np.concatenate([pos, neg])
    for v in np.unique(values):
        tie = values == v
        order[tie] = order[tie].mean()
    u = order[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _total(results: list[CaseResult], field: str) -> float | None:
    values = [getattr(r.call, field) for r in results]
    return None if any(v is None for v in values) else float(sum(values))


def derive(
    suite: Suite, config: Config, results: Mapping[ItemKey, CaseResult]
) -> tuple[list[CaseResult], dict[str, Any]]:
    from evalgate.plan import render_messages
    from evalgate.routing.features import default_recipe, feature_matrix, request_text
    from evalgate.routing.fit import cross_fit, fit_router, small_loss

    d = config.derived
    assert d is not None and d.kind == "router"
    small_config = next(c for c in suite.configs if c.id == d.small)
    composed: list[CaseResult] = []
    fitted: list[tuple[Any, list[tuple[CaseResult, CaseResult]]]] = []
    errored = 0
    for case, rows in pairs(suite, config, results):
        if any(a.errored or b.errored for a, b in rows):
            # No quality to learn from; the routed config errs where a config it may pick did.
            errored += 1
            for a, b in rows:
                composed.append(as_config(a if a.errored else b, config))
            continue
        fitted.append((case, rows))
    record: dict[str, Any] = {
        "kind": "router",
        "small": d.small,
        "large": d.large,
        "max_loss": d.max_loss,
        "alpha": d.alpha,
        "cases": len(fitted),
    }
    if errored:
        record["errored_cases"] = errored
    groups = {case.group for case, _ in fitted if case.group is not None}
    if groups:
        # The folds and the fit/calibration split draw cases, not groups (evalgate.routing
        # assumes independent cases): say so rather than let grouped cases look covered.
        record["groups"] = len(groups)
    if len(fitted) < 2 * d.folds:
        for _, rows in fitted:
            composed.extend(as_config(b, config) for _, b in rows)
        record["note"] = (
            f"{len(fitted)} usable cases cannot be cross-fitted in {d.folds} folds: routes "
            f"everything to {d.large}"
        )
        record["cross_fit"] = {"small_share": 0.0, "certified_folds": 0, "k": d.folds}
        return composed, record
    q_small = np.array([np.mean([a.score for a, _ in rows]) for _, rows in fitted])
    q_large = np.array([np.mean([b.score for _, b in rows]) for _, rows in fitted])
    recipe = default_recipe()
    texts = [request_text(render_messages(suite, case, small_config)) for case, _ in fitted]
    x = feature_matrix(texts, recipe)
    crossed = cross_fit(
        x, q_small, q_large, max_loss=d.max_loss, alpha=d.alpha, recipe=recipe, k=d.folds, seed=SEED
    )
    chosen: list[CaseResult] = []
    large_rows: list[CaseResult] = []
    for (_, rows), small in zip(fitted, crossed.route_small, strict=True):
        chosen.extend(a if small else b for a, b in rows)
        large_rows.extend(b for _, b in rows)
    composed.extend(as_config(r, config) for r in chosen)
    exported = fit_router(
        x, q_small, q_large, max_loss=d.max_loss, alpha=d.alpha, recipe=recipe, seed=SEED
    )
    losses = small_loss(q_small, q_large)
    realised = losses * crossed.route_small
    low, high = _interval(realised)
    share = crossed.small_share
    routed_rows = [
        r for (_, rows), s in zip(fitted, crossed.route_small, strict=True) for r in rows
    ]
    chosen = [
        a if s else b
        for (_, rows), s in zip(fitted, crossed.route_small, strict=True)
        for a, b in rows
    ]
    large_rows = [b for _, b in routed_rows]
    cost_routed, cost_large = _total(chosen, "cost_usd"), _total(large_rows, "cost_usd")
    latency_routed = float(np.median([r.call.latency_ms for r in chosen]))
    latency_large = float(np.median([r.call.latency_ms for r in large_rows]))
    record.update(
        {
            "router": exported.to_dict(),
            "cross_fit": {
                "small_share": share,
                "certified_folds": crossed.certified_folds,
                "k": d.folds,
            },
            "realised_loss": {"estimate": float(realised.mean()), "low": low, "high": high},
            "random_router_loss": share * float(losses.mean()),
            "beats_random": bool(realised.mean() < share * float(losses.mean())),
            "auc": _auc(crossed.scores, losses <= 0.0),
            "always_small_loss": float(losses.mean()),
            "cost_saved_pct": None
            if not cost_large or cost_routed is None
            else 100.0 * (1.0 - cost_routed / cost_large),
            "latency_p50_ms": {"routed": latency_routed, "large": latency_large},
        }
    )
    if crossed.certified_folds == 0:
        record["note"] = (
            f"no threshold could be certified on {len(fitted)} cases (max_loss {d.max_loss}, "
            f"alpha {d.alpha}): routes everything to {d.large}"
        )
    return composed, record


def describe(config_id: str, record: Mapping[str, Any]) -> str:
    """One line for the report: what the router did and what it is bound to."""
    if "error" in record:
        return f"{config_id}: router failed: {record['error']}"
    cross = record.get("cross_fit") or {}
    line = (
        f"{config_id}: routed small={record['small']} large={record['large']}, "
        f"{100 * float(cross.get('small_share', 0)):.0f}% small, bound {record['max_loss']} "
        f"@ alpha {record['alpha']}, cross-fitted k={cross.get('k')} "
        f"({cross.get('certified_folds', 0)} fold(s) certified)"
    )
    loss = record.get("realised_loss")
    if loss:
        line += (
            f"; realised loss {loss['estimate']:.3f} [{loss['low']:.3f}, {loss['high']:.3f}] vs "
            f"{record['random_router_loss']:.3f} for a random router at the same share"
        )
    if cross.get("small_share"):
        # The rows are the base configs' calls: the decision's own time is not in them.
        line += "; its latency excludes the routing decision (benchmarks/router.py)"
        if not record.get("beats_random", True) and cross.get("small_share"):
            auc = record.get("auc")
            shown = "-" if auc is None else f"{auc:.2f}"
            line += (
                f"; it does NOT beat a random router at this share (cross-fitted AUC {shown}: "
                "the request's features barely predict where the small config suffices on "
                "these cases)"
            )
    if record.get("note"):
        line += f"; {record['note']}"
    if record.get("groups"):
        line += (
            f"; the cases form {record['groups']} group(s), but the router's folds and its "
            "calibration split cases, not groups: its bound and cross-fitted figures assume "
            "independent cases"
        )
    if record.get("errored_cases"):
        line += (
            f"; {record['errored_cases']} case(s) where {record['small']!r} or "
            f"{record['large']!r} errored count as errors (losses), not routed"
        )
    return line
