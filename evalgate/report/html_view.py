"""evalgate.json -> what the HTML page shows: headline, Pareto table, plots, cost breakdown.

Pure and defensive: the document may come from an older or newer evalgate, a run killed
before its statistics, or a hand-edited file, so every key is optional and a missing or
malformed figure is shown as "—", never an exception. Strings stay raw here; the template
escapes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalgate.report.html_plots import Plot, PlotPoint, scatter_plot

DASH = "—"
WEAK_BASELINE = 0.5
"""Below this absolute quality a baseline is called weak: "non-inferior" to it is no comfort."""


# -- safe access and formatting -----------------------------------------------------------


def dig(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` or None when any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def num(value: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN, inf are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value: Any, spec: str) -> str:
    x = num(value)
    return DASH if x is None else format(x, spec)


def fmt_usd(value: Any) -> str:
    x = num(value)
    if x is None:
        return DASH
    if x == 0:
        return "$0"
    if abs(x) >= 1:
        return f"${x:,.2f}"
    # Three significant digits however small: per-case costs are often fractions of a cent.
    decimals = min(12, 2 - math.floor(math.log10(abs(x))))
    return f"${x:.{decimals}f}"


def fmt_ms(value: Any) -> str:
    x = num(value)
    return DASH if x is None else f"{x:,.0f} ms"


def fmt_int(value: Any) -> str:
    x = num(value)
    return DASH if x is None else f"{x:,.0f}"


def fmt_p(value: Any) -> str:
    x = num(value)
    if x is None:
        return DASH
    return "<0.0001" if x < 1e-4 else f"{x:.2g}" if x < 0.01 else f"{x:.3f}"


def fmt_change(new: Any, old: Any) -> str:
    """Relative change in % ("−42%"), or — when either side is unknown or old is 0."""
    a, b = num(new), num(old)
    if a is None or b is None or b == 0:
        return DASH
    return f"{100 * (a / b - 1):+.0f}%".replace("-", "−")


def interval(data: Any) -> tuple[float | None, float | None, float | None]:
    """(estimate, low, high) of an interval dict (stats' Interval or QuantileCI)."""
    if not isinstance(data, Mapping):
        return num(data), None, None
    return num(data.get("estimate")), num(data.get("low")), num(data.get("high"))


def fmt_interval(data: Any, spec: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
    est, low, high = interval(data)
    if est is None:
        return DASH
    text = format(est * scale, spec) + unit
    if low is None or high is None:
        return text
    return f"{text} [{format(low * scale, spec)}, {format(high * scale, spec)}]"


# -- the view ----------------------------------------------------------------------------


@dataclass(slots=True)
class Cell:
    """One table cell: main text, optional second line (the CI), the value sorted on."""

    text: str
    sub: str = ""
    sort: float | str | None = None
    css: str = ""


@dataclass(slots=True)
class Column:
    key: str
    label: str
    numeric: bool = True
    title: str = ""


@dataclass(slots=True)
class TableRow:
    config: str
    cells: list[Cell]
    frontier: bool = False
    baseline: bool = False
    recommended: bool = False


@dataclass(slots=True)
class Candidate:
    """One candidate's line in the headline."""

    config: str
    verdict: str
    delta: str
    quality: str
    savings: str
    n: str
    plan: str
    reason: str


@dataclass(slots=True)
class Headline:
    gate: str  # "BLOCKED", "passes", "not gated"
    gate_note: str
    blocking: list[str]
    recommended: str | None
    reason: str
    facts: list[tuple[str, str]]  # (label, value) of the recommendation's evidence
    warnings: list[str]
    candidates: list[Candidate]


@dataclass(slots=True)
class CostSplit:
    config: str
    input_usd: float | None
    output_usd: float | None
    tokens_in: int
    tokens_out: int
    input_pct: float
    output_pct: float
    total_text: str
    levers: str
    note: str = ""


@dataclass(slots=True)
class StoredRow:
    """One config of this run against the same config in a stored run (``--evalgate-baseline``)."""

    config: str
    verdict: str
    delta: str
    n: str
    method: str
    note: str


@dataclass(slots=True)
class StoredComparison:
    run_id: str
    notes: list[str]
    rows: list[StoredRow]


@dataclass(slots=True)
class SuiteView:
    name: str
    anchor: str
    feature: str
    baseline: str
    baseline_known: bool
    n_cases: str
    headline: Headline
    columns: list[Column]
    rows: list[TableRow]
    plots: list[Plot]
    costs: list[CostSplit]
    notes: list[str]
    vs_stored: StoredComparison | None = None


@dataclass(slots=True)
class FeatureRow:
    feature: str
    suites: str
    calls: str
    cost: str
    tokens_in: str
    tokens_out: str
    p50: str
    p95: str


@dataclass(slots=True)
class View:
    run_id: str
    created: str
    blocked: bool | None
    reasons: list[str]
    notes: list[str]
    suites: list[SuiteView] = field(default_factory=list)
    features: list[FeatureRow] = field(default_factory=list)


def build_view(document: Mapping[str, Any]) -> View:
    """Everything the template shows, from an evalgate.json document."""
    gate = _mapping(document.get("gate"))
    blocked = gate.get("blocked") if isinstance(gate.get("blocked"), bool) else None
    reasons = [str(r) for r in _list(gate.get("reasons"))]
    notes = [str(n) for n in _list(gate.get("notes")) + _list(document.get("notes"))]
    if gate.get("skipped"):  # one shard of a matrix: shown as not gated, with the reason
        blocked = None
        notes.insert(0, str(gate["skipped"]))
    suites = _mapping(document.get("suites"))
    view = View(
        run_id=str(document.get("run_id") or DASH),
        created=str(document.get("created") or DASH),
        blocked=blocked,
        reasons=reasons,
        notes=notes,
    )
    for index, (name, suite) in enumerate(suites.items()):
        if isinstance(suite, Mapping):
            view.suites.append(_suite_view(str(name), suite, reasons, index))
    view.features = _features(suites)
    return view


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _cases(suite: Mapping[str, Any]) -> Iterable[Any]:
    """The suite's case rows as a stream, not a copy: the writer makes them as iterated
    (report.tables.CaseRows), and a list of them would hold a dict per item."""
    cases = suite.get("cases")
    return cases if isinstance(cases, list | tuple) else ()


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _suite_view(name: str, suite: Mapping[str, Any], reasons: list[str], index: int) -> SuiteView:
    stats = _mapping(suite.get("stats"))
    configs = _mapping(suite.get("configs"))
    baseline = str(suite.get("baseline") or stats.get("baseline") or DASH)
    ids = [str(c) for c in configs] or [str(c) for c in _mapping(stats.get("configs"))]
    recommended = dig(stats, "recommendation", "config_id")
    frontier = {str(c) for c in _list(dig(stats, "pareto", "frontier"))}
    columns, rows = _table(ids, suite, stats, baseline, recommended, frontier)
    notes = [str(n) for n in _list(stats.get("notes"))]
    if not stats:
        notes.append("No statistics for this suite (too few results, or a report without them).")
    return SuiteView(
        name=name,
        anchor=f"suite-{index}",
        feature=str(suite.get("feature") or name),
        baseline=baseline,
        baseline_known=baseline != DASH,
        n_cases=fmt_int(stats.get("n_cases") or _cases_count(suite)),
        headline=_headline(name, suite, stats, baseline, reasons),
        columns=columns,
        rows=rows,
        plots=_plots(ids, suite, stats, baseline, recommended, frontier),
        costs=_costs(ids, suite),
        notes=notes,
        vs_stored=_vs_stored(stats.get("vs_stored")),
    )


def _vs_stored(data: Any) -> StoredComparison | None:
    """The comparison with a stored run (main's), config by config, paired by case id."""
    if not isinstance(data, Mapping):
        return None
    notes = []
    if data.get("note"):
        notes.append(str(data["note"]))
    if data.get("suite_hash_changed"):
        notes.append("the suite changed since the stored run")
    for key, text in (
        ("new_cases", "case(s) not in the stored run (reported, not compared)"),
        ("missing_cases", "stored case(s) not in this run"),
    ):
        if count := len(_list(data.get(key))):
            notes.append(f"{count} {text}")
    rows = []
    for config, cmp in sorted(_mapping(data.get("configs")).items()):
        cmp = _mapping(cmp)
        rows.append(
            StoredRow(
                config=str(config),
                verdict=str(cmp.get("verdict") or DASH),
                delta=fmt_interval(cmp.get("delta"), "+.3f"),
                n=fmt_int(cmp.get("n_paired")),
                method=str(dig(cmp, "noninferiority", "method") or DASH),
                note=str(cmp.get("note") or ""),
            )
        )
    return StoredComparison(run_id=str(data.get("run_id") or DASH), notes=notes, rows=rows)


def _cases_count(suite: Mapping[str, Any]) -> int | None:
    rows = _cases(suite)
    return len({str(r.get("case_id")) for r in rows if isinstance(r, Mapping)}) or None


# -- per config figures: the statistics when present, else the plain figures ------------


def _figure(suite: Mapping[str, Any], config: str, stat_key: str, plain_key: str) -> Any:
    """An interval dict from ``stats.configs`` or, failing that, the plain point figure."""
    value = dig(suite, "stats", "configs", config, stat_key)
    if isinstance(value, Mapping) and num(value.get("estimate")) is not None:
        return value
    return {"estimate": dig(suite, "configs", config, plain_key)}


def _quality(suite: Mapping[str, Any], config: str) -> Any:
    return _figure(suite, config, "quality", "quality_mean")


def _headline(
    name: str,
    suite: Mapping[str, Any],
    stats: Mapping[str, Any],
    baseline: str,
    reasons: list[str],
) -> Headline:
    blocking = [r for r in reasons if r.startswith(f"{name}:")]
    gating = dig(stats, "gate", "gating")
    gate = "BLOCKED" if blocking else "passes" if gating else "not gated"
    gate_note = str(dig(stats, "gate", "note") or "")
    rec = _mapping(stats.get("recommendation"))
    comparisons = _mapping(stats.get("comparisons"))
    base_quality = _quality(suite, baseline)
    warnings: list[str] = []
    base_q = num(interval(base_quality)[0])
    if base_q is not None and base_q < WEAK_BASELINE:
        warnings.append(
            f"The baseline scores only {base_q:.1%}: a candidate non-inferior to it can still "
            "be poor. Judge the absolute quality, not only the deltas."
        )
    if stats and gating is False:
        warnings.append(f"Underpowered: {gate_note or 'too few paired cases to gate'}.")
    facts: list[tuple[str, str]] = []
    recommended = str(rec["config_id"]) if rec.get("config_id") is not None else None
    if recommended is not None:
        cmp = _mapping(comparisons.get(recommended))
        facts = [
            ("cost", _savings_text(rec.get("savings_pct") or cmp.get("savings_pct"))),
            ("latency p50", _latency_change(suite, recommended, baseline, "latency_p50")),
            ("latency p95", _latency_change(suite, recommended, baseline, "latency_p95")),
            ("TTFT p50", _latency_change(suite, recommended, baseline, "ttft_p50")),
            ("TTFT p95", _latency_change(suite, recommended, baseline, "ttft_p95")),
            ("quality Δ", fmt_interval(rec.get("delta") or cmp.get("delta"), "+.3f")),
            (
                "quality",
                f"{fmt_interval(_quality(suite, recommended), '.3f')} "
                f"(baseline {fmt_interval(base_quality, '.3f')})",
            ),
            ("N", fmt_int(rec.get("n_paired") or cmp.get("n_paired"))),
            ("verdict", str(rec.get("verdict") or cmp.get("verdict") or DASH)),
        ]
    candidates = [
        _candidate(suite, str(c), _mapping(comparisons[c])) for c in comparisons if c != baseline
    ]
    if recommended is None:
        reason = (
            "No candidate passes non-inferiority within the SLOs: keep the baseline."
            if stats
            else "No statistics: nothing can be recommended."
        )
    else:
        reason = str(rec.get("reason") or "")
    return Headline(
        gate=gate,
        gate_note=gate_note,
        blocking=blocking,
        recommended=recommended,
        reason=reason,
        facts=facts,
        warnings=warnings,
        candidates=candidates,
    )


def _savings_text(savings: Any) -> str:
    est, low, high = interval(savings)
    if est is None:
        return DASH
    word = "saves" if est >= 0 else "costs more by"
    text = f"{word} {abs(est):.1f}%"
    if low is not None and high is not None:
        text += f" [95% CI {low:.1f}, {high:.1f}]"
    return text


def _latency_change(suite: Mapping[str, Any], config: str, baseline: str, key: str) -> str:
    new = interval(_figure(suite, config, key, key + "_ms"))[0]
    old = interval(_figure(suite, baseline, key, key + "_ms"))[0]
    if new is None or old is None:
        return DASH
    return f"{fmt_change(new, old)} ({fmt_ms(old)} → {fmt_ms(new)})"


def _candidate(suite: Mapping[str, Any], config: str, cmp: Mapping[str, Any]) -> Candidate:
    verdict = str(cmp.get("verdict") or DASH)
    ni = _mapping(cmp.get("noninferiority"))
    plan = ""
    if verdict == "INCONCLUSIVE":
        needed = num(ni.get("n_needed"))
        margin = num(ni.get("min_detectable_margin"))
        plan = (
            f"needs N≈{needed:,.0f} to settle" if needed is not None else "needs more cases"
        ) + (f"; this N can show δ ≥ {margin:.3f}" if margin is not None else "")
    return Candidate(
        config=config,
        verdict=verdict,
        delta=fmt_interval(cmp.get("delta"), "+.3f"),
        quality=fmt_interval(_quality(suite, config), ".3f"),
        savings=_savings_text(cmp.get("savings_pct")),
        n=fmt_int(cmp.get("n_paired")),
        plan=plan,
        reason=str(cmp.get("reason") or ""),
    )


# -- the Pareto table ---------------------------------------------------------------------

_COLUMNS = (
    Column("config", "config", numeric=False),
    Column("verdict", "verdict", numeric=False),
    Column("quality", "quality (0\u20111)", title="mean case score, 95% CI"),
    Column("delta", "Δ quality vs baseline", title="paired mean difference, 95% CI"),
    Column("p", "p (Δ≠0)", title="two-sided difference test"),
    Column("p_ni", "p (non-inf., Holm)", title="one-sided non-inferiority p, Holm-adjusted"),
    Column("frontier", "P(frontier)", title="share of joint resamples on the Pareto frontier"),
    Column("cost", "cost / case (USD)", title="mean cost of a case, 95% CI"),
    Column("total", "total cost (USD)"),
    Column("p50", "latency p50 (ms)", title="order-statistic 95% CI"),
    Column("p95", "latency p95 (ms)", title="order-statistic 95% CI"),
    Column("ttft50", "TTFT p50 (ms)"),
    Column("ttft95", "TTFT p95 (ms)"),
    Column("model", "tier / model", numeric=False),
    Column("trim", "context trim", title="fraction of the context kept"),
    Column("max_tokens", "max tokens"),
    Column("cache", "cache", numeric=False),
    Column("tin", "tokens in"),
    Column("tout", "tokens out"),
    Column("hits", "cache hits"),
    Column("saved", "cache saving (USD)"),
    Column("errors", "errors"),
)
_VERDICT_ORDER = {"PASS": 0, "INCONCLUSIVE": 1, "FAIL": 2}


def _ci_text(data: Any, spec: str, scale: float = 1.0) -> str:
    _, low, high = interval(data)
    if low is None or high is None:
        return "CI undefined" if isinstance(data, Mapping) and data.get("n") else ""
    return f"[{format(low * scale, spec)}, {format(high * scale, spec)}]"


def _num_cell(data: Any, spec: str, scale: float = 1.0, unit: str = "") -> Cell:
    est = interval(data)[0]
    text = DASH if est is None else format(est * scale, spec) + unit
    return Cell(text, _ci_text(data, spec, scale), est)


def _ms_cell(data: Any) -> Cell:
    est = interval(data)[0]
    _, low, high = interval(data)
    sub = f"[{low:,.0f}, {high:,.0f}]" if low is not None and high is not None else ""
    if not sub and isinstance(data, Mapping) and data.get("bounds_defined") is False:
        sub = "CI undefined (n too small)"
    return Cell(fmt_ms(est).removesuffix(" ms"), sub, est)


def _usd_cell(data: Any) -> Cell:
    est, low, high = interval(data)
    sub = f"[{fmt_usd(low)}, {fmt_usd(high)}]" if low is not None and high is not None else ""
    return Cell(fmt_usd(est), sub, est)


def _table(
    ids: Sequence[str],
    suite: Mapping[str, Any],
    stats: Mapping[str, Any],
    baseline: str,
    recommended: Any,
    frontier: set[str],
) -> tuple[list[Column], list[TableRow]]:
    rows = []
    probability = _mapping(dig(stats, "pareto", "probability"))
    for config in ids:
        plain = _mapping(dig(suite, "configs", config))
        cstats = _mapping(dig(stats, "configs", config))
        setting = _mapping(dig(suite, "settings", "configs", config))
        cmp = _mapping(dig(stats, "comparisons", config))
        is_base = config == baseline
        verdict = "baseline" if is_base else str(cmp.get("verdict") or DASH)
        trim = num(setting.get("context_trim"))
        max_tokens = num(setting.get("max_tokens"))
        cache = setting.get("cache")
        tier = str(setting.get("tier") or plain.get("tier") or DASH)
        model = str(setting.get("model") or plain.get("model") or "")
        prob = num(probability.get(config))
        delta = cmp.get("delta")
        errors = num(cstats.get("n_errors"))
        if errors is None:
            errors = num(plain.get("errors"))
        cells = [
            Cell(config, sort=config),
            Cell(
                verdict,
                "error rate flagged" if cmp.get("error_flag") else "",
                sort=_VERDICT_ORDER.get(verdict, -1 if is_base else 3),
                css=f"verdict v-{verdict.lower()}",
            ),
            _num_cell(_quality(suite, config), ".3f"),
            Cell("baseline", sort=0.0) if is_base else _num_cell(delta, "+.3f"),
            Cell(fmt_p(cmp.get("p_value")), sort=num(cmp.get("p_value"))),
            Cell(fmt_p(cmp.get("p_adjusted")), sort=num(cmp.get("p_adjusted"))),
            Cell(DASH if prob is None else f"{prob:.0%}", sort=prob),
            _usd_cell(_figure(suite, config, "cost_per_case", "cost_per_case_usd")),
            Cell(
                fmt_usd(cstats.get("total_cost_usd", plain.get("cost_total_usd"))),
                sort=num(cstats.get("total_cost_usd", plain.get("cost_total_usd"))),
            ),
            _ms_cell(_figure(suite, config, "latency_p50", "latency_p50_ms")),
            _ms_cell(_figure(suite, config, "latency_p95", "latency_p95_ms")),
            _ms_cell(_figure(suite, config, "ttft_p50", "ttft_p50_ms")),
            _ms_cell(_figure(suite, config, "ttft_p95", "ttft_p95_ms")),
            Cell(tier, model, sort=f"{tier} {model}", css="model"),
            Cell(DASH if trim is None else f"{trim:g}", sort=trim),
            Cell(fmt_int(max_tokens), sort=max_tokens),
            Cell(DASH if cache is None else "on" if cache else "off", sort=str(cache)),
            Cell(fmt_int(plain.get("tokens_in")), sort=num(plain.get("tokens_in"))),
            Cell(fmt_int(plain.get("tokens_out")), sort=num(plain.get("tokens_out"))),
            Cell(fmt_int(plain.get("cache_hits")), sort=num(plain.get("cache_hits"))),
            Cell(fmt_usd(plain.get("saved_usd")), sort=num(plain.get("saved_usd"))),
            Cell(fmt_int(errors), sort=errors, css="bad" if errors else ""),
        ]
        rows.append(
            TableRow(
                config=config,
                cells=cells,
                frontier=config in frontier,
                baseline=is_base,
                recommended=config == recommended,
            )
        )
    return list(_COLUMNS), rows


# -- plots --------------------------------------------------------------------------------


def _plots(
    ids: Sequence[str],
    suite: Mapping[str, Any],
    stats: Mapping[str, Any],
    baseline: str,
    recommended: Any,
    frontier: set[str],
) -> list[Plot]:
    plots = []
    for key, plain, label, kind in (
        ("cost_per_case", "cost_per_case_usd", "cost per case (USD)", "usd"),
        ("latency_p95", "latency_p95_ms", "p95 latency (ms)", "ms"),
    ):
        points = []
        for config in ids:
            q, q_low, q_high = interval(_quality(suite, config))
            x, x_low, x_high = interval(_figure(suite, config, key, plain))
            if q is None or x is None:
                continue
            points.append(
                PlotPoint(
                    label=config,
                    x=x,
                    y=q,
                    x_low=x_low,
                    x_high=x_high,
                    y_low=q_low,
                    y_high=q_high,
                    baseline=config == baseline,
                    recommended=config == recommended,
                    frontier=config in frontier,
                )
            )
        title = f"Quality vs {label.split(' (')[0]}"
        plots.append(scatter_plot(title, points, x_label=label, x_kind=kind))
    return plots


# -- where the money goes -----------------------------------------------------------------


def _costs(ids: Sequence[str], suite: Mapping[str, Any]) -> list[CostSplit]:
    """Each config's spend split into input and output tokens (priced when prices are known)."""
    totals: dict[str, list[float]] = {c: [0.0, 0.0] for c in ids}
    for row in _cases(suite):
        if not isinstance(row, Mapping) or row.get("cached") or row.get("error"):
            continue
        t = totals.get(str(row.get("config_id")))
        if t is not None:
            t[0] += num(row.get("input_tokens")) or 0.0
            t[1] += num(row.get("output_tokens")) or 0.0
    for t in totals.values():  # absurd stored counts must not overflow int()
        t[:] = [v if math.isfinite(v) else 0.0 for v in t]
    splits = []
    priced: dict[str, tuple[float, float] | None] = {}
    for config in ids:
        price = _mapping(dig(suite, "settings", "configs", config, "price"))
        pin, pout = num(price.get("input_per_mtok")), num(price.get("output_per_mtok"))
        t_in, t_out = totals[config]
        priced[config] = (
            (t_in * pin / 1e6, t_out * pout / 1e6) if pin is not None and pout is not None else None
        )
    scale = max((a + b for v in priced.values() if v for a, b in [v]), default=0.0)
    for config in ids:
        setting = _mapping(dig(suite, "settings", "configs", config))
        t_in, t_out = totals[config]
        value = priced[config]
        levers = ", ".join(
            part
            for part in (
                f"context trim {num(setting.get('context_trim')):g}"
                if num(setting.get("context_trim")) is not None
                else "",
                f"max_tokens {fmt_int(setting.get('max_tokens'))}"
                if setting.get("max_tokens") is not None
                else "",
            )
            if part
        )
        if value is not None and scale > 0:
            in_usd, out_usd = value
            splits.append(
                CostSplit(
                    config=config,
                    input_usd=in_usd,
                    output_usd=out_usd,
                    tokens_in=int(t_in),
                    tokens_out=int(t_out),
                    input_pct=100 * in_usd / scale,
                    output_pct=100 * out_usd / scale,
                    total_text=f"{fmt_usd(in_usd)} in + {fmt_usd(out_usd)} out",
                    levers=levers,
                )
            )
        else:
            tokens = t_in + t_out
            splits.append(
                CostSplit(
                    config=config,
                    input_usd=None,
                    output_usd=None,
                    tokens_in=int(t_in),
                    tokens_out=int(t_out),
                    input_pct=100 * t_in / tokens if tokens else 0.0,
                    output_pct=100 * t_out / tokens if tokens else 0.0,
                    total_text=f"{fmt_int(t_in)} tokens in + {fmt_int(t_out)} out",
                    levers=levers,
                    note="no stored price: split by tokens",
                )
            )
    return splits


def _percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated quantile (pandas' default), so the figures match evalgate.json."""
    if not values:
        return None
    values = sorted(values)
    pos = q * (len(values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


def _features(suites: Mapping[str, Any]) -> list[FeatureRow]:
    """Cost, tokens and latency of every call of the run, by feature."""
    acc: dict[str, dict[str, Any]] = {}
    for name, suite in suites.items():
        if not isinstance(suite, Mapping):
            continue
        feature = str(suite.get("feature") or name)
        a = acc.setdefault(
            feature,
            {"suites": [], "calls": 0, "cost": 0.0, "unknown": False, "in": 0.0, "out": 0.0},
        )
        a["suites"].append(str(name))
        a.setdefault("lat", [])
        for row in _cases(suite):
            if not isinstance(row, Mapping):
                continue
            a["calls"] += 1
            cost = num(row.get("cost_usd"))
            if cost is None and not row.get("error"):
                a["unknown"] = True
            a["cost"] += cost or 0.0
            a["in"] += num(row.get("input_tokens")) or 0.0
            a["out"] += num(row.get("output_tokens")) or 0.0
            latency = num(row.get("latency_ms"))
            if latency is not None and not row.get("error"):
                a["lat"].append(latency)
    return [
        FeatureRow(
            feature=feature,
            suites=", ".join(a["suites"]),
            calls=fmt_int(a["calls"]),
            cost=fmt_usd(a["cost"]) + (" + unknown" if a["unknown"] else ""),
            tokens_in=fmt_int(a["in"]),
            tokens_out=fmt_int(a["out"]),
            p50=fmt_ms(_percentile(a["lat"], 0.5)),
            p95=fmt_ms(_percentile(a["lat"], 0.95)),
        )
        for feature, a in sorted(acc.items())
    ]
