"""A report's chosen config per suite -> the feature entries of a runtime policy.

Works from evalgate.json alone: each suite's ``settings`` (what every config ran with)
and ``stats`` (verdicts, the recommendation, per-config figures). Pure except for
:func:`export_policy`, which reads the report (and any existing policy) and writes the
module atomically.

Keys read from a suite's ``stats`` (defensively: a missing one becomes None):
``recommendation.config_id``, ``notes``, ``baseline``, ``gate.gating``;
``comparisons.<config>.{verdict, delta.{estimate, low, high}, n_paired, p_adjusted,
savings_pct.{estimate, low, high}}``; ``configs.<config>.{quality.estimate,
cost_per_case.estimate, latency_p50.estimate, latency_p95.estimate, ttft_p50.estimate,
ttft_p95.estimate}``. Without ``stats``, the per-config summary (``configs.<config>.
{cost_per_case_usd, latency_p50_ms, ...}``) gives the expected figures.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalgate.policy.render import render_policy
from evalgate.runtime.policy_file import POLICY_VERSION, read_policy_data, validate_policy

DEFAULT_CACHE_TTL_S = 86400.0
CACHE_CHOICES = ("auto", "exact", "off")


class ExportError(ValueError):
    """An export that cannot be done; the message is one line."""


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _num(value: Any, digits: int = 6) -> float | None:
    """A readable, stable float (6 significant digits); None for missing or non-finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def _interval(data: Any) -> dict[str, float | None] | None:
    if not isinstance(data, Mapping):
        return None
    return {k: _num(data.get(k)) for k in ("estimate", "low", "high")}


def _route(config: Mapping[str, Any], tiers: Mapping[str, Any]) -> dict[str, Any]:
    tier = tiers.get(str(config.get("tier")), {}) if isinstance(tiers, Mapping) else {}
    price = config.get("price")
    return {
        "model": config["model"],
        "api_base": config.get("api_base"),
        "api_key_env": tier.get("api_key_env"),
        "price": None
        if not isinstance(price, Mapping)
        else {
            "input_per_mtok": price["input_per_mtok"],
            "output_per_mtok": price["output_per_mtok"],
        },
        "timeout_s": float(tier.get("timeout_s") or 120.0),
    }


def _expected(section: Mapping[str, Any], config_id: str) -> dict[str, float | None]:
    stats = _get(section, f"stats.configs.{config_id}")
    summary = _get(section, f"configs.{config_id}") or {}
    if isinstance(stats, Mapping):
        return {
            "quality": _num(_get(stats, "quality.estimate")),
            "cost_per_call_usd": _num(_get(stats, "cost_per_case.estimate")),
            "latency_p50_ms": _num(_get(stats, "latency_p50.estimate"), 4),
            "latency_p95_ms": _num(_get(stats, "latency_p95.estimate"), 4),
            "ttft_p50_ms": _num(_get(stats, "ttft_p50.estimate"), 4),
            "ttft_p95_ms": _num(_get(stats, "ttft_p95.estimate"), 4),
        }
    return {
        "quality": _num(summary.get("quality_mean")),
        "cost_per_call_usd": _num(summary.get("cost_per_case_usd")),
        "latency_p50_ms": _num(summary.get("latency_p50_ms"), 4),
        "latency_p95_ms": _num(summary.get("latency_p95_ms"), 4),
        "ttft_p50_ms": _num(summary.get("ttft_p50_ms"), 4),
        "ttft_p95_ms": _num(summary.get("ttft_p95_ms"), 4),
    }


def _cache(config: Mapping[str, Any], mode: str, ttl_s: float | None) -> dict[str, Any]:
    if mode == "auto":
        # An exact hit replays the answer to an identical request: quality-neutral when
        # the evals measured the cache, or when sampling is deterministic (temperature 0).
        deterministic = config.get("temperature") in (0, 0.0)
        mode = "exact" if config.get("cache") or deterministic else "off"
    return {"mode": mode, "ttl_s": ttl_s if mode != "off" else None}


def feature_entry(
    document: Mapping[str, Any],
    suite_name: str,
    config_id: str,
    *,
    fallbacks: Sequence[str] | None = None,
    cache: str = "auto",
    cache_ttl_s: float | None = DEFAULT_CACHE_TTL_S,
) -> dict[str, Any]:
    """One feature's policy entry for ``config_id`` of ``suite_name``."""
    section = document["suites"][suite_name]
    settings = section.get("settings")
    if not isinstance(settings, Mapping) or not isinstance(settings.get("configs"), Mapping):
        raise ExportError(
            f"suite {suite_name!r}: the report records no config settings; "
            "re-run the evals with this evalgate version"
        )
    configs, tiers = settings["configs"], settings.get("tiers") or {}
    for cid in (config_id, *(fallbacks or ())):
        if cid not in configs:
            raise ExportError(
                f"suite {suite_name!r}: no config {cid!r}; configs: {', '.join(configs)}"
            )
    chosen = configs[config_id]
    derived = chosen.get("derived")
    router = None
    semantic: tuple[dict[str, Any], dict[str, Any]] | None = None
    if isinstance(derived, Mapping) and derived.get("kind") == "semantic":
        semantic = _semantic_section(section, suite_name, config_id, cache, cache_ttl_s)
    elif isinstance(derived, Mapping):
        router = _router_section(section, suite_name, config_id, derived, configs, tiers)
    baseline = section.get("baseline") or _get(section, "stats.baseline")
    if fallbacks is None:
        # Default fallback: the baseline, the config the chosen one was measured against,
        # when it is served by another model or endpoint.
        fallbacks = [
            b
            for b in [baseline]
            if b in configs
            and (configs[b]["model"], configs[b].get("api_base"))
            != (chosen["model"], chosen.get("api_base"))
        ]
    trim_ratio = chosen.get("context_trim")
    trim = settings.get("trim") or {}
    comparison = _get(section, f"stats.comparisons.{config_id}") or {}
    verdict = "BASELINE" if config_id == baseline else comparison.get("verdict")
    entry: dict[str, Any] = {
        **_route(chosen, tiers),
        "fallbacks": [_route(configs[f], tiers) for f in fallbacks if f != config_id],
        "context_trim": None
        if trim_ratio is None or float(trim_ratio) >= 1
        else {
            "ratio": float(trim_ratio),
            "variable": trim.get("variable", "context"),
            "query": trim.get("query", "question"),
        },
        "max_tokens": chosen.get("max_tokens"),
        "temperature": chosen.get("temperature"),
        "stream": bool(chosen.get("stream", False)),
        "cache": _cache(chosen, cache, cache_ttl_s) if semantic is None else semantic[0],
        "evidence": {
            "suite": suite_name,
            "suite_path": settings.get("path"),
            "suite_hash": settings.get("suite_hash") or section.get("suite_hash"),
            "run_id": document.get("run_id"),
            "date": document.get("created"),
            "config": config_id,
            "baseline": baseline,
            "verdict": verdict,
            "delta": _interval(comparison.get("delta")),
            "n_paired": comparison.get("n_paired"),
            # False: fewer cases than the gate needs; the choice is a hint, not evidence.
            "gating": _get(section, "stats.gate.gating"),
            "p_value": _num(comparison.get("p_adjusted")),
            "savings_pct": _interval(comparison.get("savings_pct")),
            "expected": _expected(section, config_id),
        },
    }
    if router is not None:
        entry["router"] = router
    if semantic is not None:
        entry["evidence"]["semantic_cache"] = semantic[1]
    return entry


def _semantic_section(
    section: Mapping[str, Any],
    suite_name: str,
    config_id: str,
    cache: str,
    ttl_s: float | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A semantic cache config's policy cache (the certified threshold, the embedding model
    it was certified with, the guard; exact caching when nothing was certified, or what
    ``--cache`` asks for) and its evidence (what the evaluation measured)."""
    record = (section.get("derivations") or {}).get(config_id)
    where = f"suite {suite_name!r}: config {config_id!r}"
    if not isinstance(record, Mapping) or "threshold" not in record:
        why = record.get("error") or record.get("note") if isinstance(record, Mapping) else None
        raise ExportError(
            f"{where}: the report holds no certified semantic cache (derivations.{config_id})"
            + (f": {why}" if why else "")
        )
    threshold, model = record.get("threshold"), record.get("embedding_model")
    if not isinstance(threshold, int | float) or not isinstance(model, str):
        raise ExportError(f"{where}: derivations.{config_id} lacks its threshold or model")
    wrong = record.get("wrong_hit_rate") or {}
    evidence = {
        "certified": bool(record.get("certified")),
        "threshold": float(threshold),
        "guard": bool(record.get("guard")),
        "max_wrong_hit": _num(record.get("max_wrong_hit")),
        "alpha": _num(record.get("alpha")),
        "requests": record.get("requests"),
        # The certified cache's cross-fitted hit rate; "hit_rate" below is the exported
        # mode's, which `evalgate usage` shows beside the live one.
        "semantic_hit_rate": _num(record.get("hit_rate")),
        "hit_rate": _num(record.get("hit_rate")),
        "wrong_hit_rate": _interval(wrong),
    }
    # Exact caching exported (asked for, or nothing certified): live hits are exact hits,
    # so the evals' exact hit rate is the one to compare them with (None in older reports).
    exact = {**evidence, "hit_rate": _num(record.get("exact_hit_rate"))}
    if cache != "auto":  # `--cache exact|off`
        chosen = _cache({}, cache, ttl_s)
        kept = exact if chosen["mode"] == "exact" else {**evidence, "hit_rate": None}
        return chosen, {**kept, "reason": f"--cache {cache}"}
    if not record.get("certified"):
        # Why the policy holds exact caching, in the policy itself.
        reason = record.get("note") or "no threshold certified: exact caching"
        return {"mode": "exact", "ttl_s": ttl_s}, {**exact, "reason": reason}
    version = _guard_version(record, where, config_id)  # only a semantic cache applies it
    return {
        "mode": "semantic",
        "ttl_s": ttl_s,
        "threshold": float(threshold),
        "embedding_model": model,
        "guard": bool(record.get("guard")),
        # The runtime applies the guard the threshold was certified with.
        "guard_version": version,
    }, evidence


def _guard_version(record: Mapping[str, Any], where: str, config_id: str) -> int:
    """The guard version a report's threshold was certified with (reports from before
    versions were recorded used version 1); one this evalgate's runtime cannot apply is
    refused here rather than written into a policy it would refuse to load."""
    from evalgate.semcache.guard import GUARD_VERSIONS

    version = record.get("guard_version")
    if version is None:
        return 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(
            f"{where}: derivations.{config_id}.guard_version: expected an integer >= 1, "
            f"found {version!r}"
        )
    if version not in GUARD_VERSIONS:
        known = ", ".join(map(str, GUARD_VERSIONS))
        raise ExportError(
            f"{where}: derivations.{config_id}.guard_version: certified with guard version "
            f"{version}, this evalgate applies {known}: export with the evalgate that ran it"
        )
    return version


# What a route cannot carry: a routed config's two configs must agree on these.
_SHARED_SETTINGS = ("context_trim", "max_tokens", "temperature", "stream")


def _router_section(
    section: Mapping[str, Any],
    suite_name: str,
    config_id: str,
    derived: Mapping[str, Any],
    configs: Mapping[str, Any],
    tiers: Mapping[str, Any],
) -> dict[str, Any]:
    """The policy's ``router`` entry for a routed or cascade config (refusing what it
    cannot carry)."""
    where = f"suite {suite_name!r}: config {config_id!r}"
    if derived.get("kind") not in ("router", "cascade"):
        raise ExportError(f"{where} is a {derived.get('kind')!r} config, unknown to this export")
    small, large = configs.get(derived.get("small")), configs.get(derived.get("large"))
    if not isinstance(small, Mapping) or not isinstance(large, Mapping):
        raise ExportError(f"{where}: the report lacks the settings of its small or large config")
    differ = [k for k in _SHARED_SETTINGS if small.get(k) != large.get(k)]
    if differ:
        raise ExportError(
            f"{where}: its small and large configs differ in {', '.join(differ)}, which a "
            "policy applies to the whole feature; route between configs that differ in tier only"
        )
    record = (section.get("derivations") or {}).get(config_id)
    if isinstance(record, Mapping) and (
        record.get("error") or record.get("composed") == 0 or record.get("results") == 0
    ):
        # No evaluation stands behind it (its derivation failed or had no results): a
        # policy must not carry a router or cascade the evals never measured.
        raise ExportError(
            f"{where}: the report holds no evaluation of it ({record.get('line') or 'no results'})"
        )
    if derived.get("kind") == "cascade":
        return _cascade_section(where, config_id, derived, record, small, large, tiers)
    model = record.get("router") if isinstance(record, Mapping) else None
    if not isinstance(model, Mapping):
        raise ExportError(f"{where}: the report holds no fitted router (derivations.{config_id})")
    return {
        "kind": "learned",
        "small": _route(small, tiers),
        "large": _route(large, tiers),
        "model": dict(model),
    }


def _cascade_section(
    where: str,
    config_id: str,
    derived: Mapping[str, Any],
    record: Any,
    first: Mapping[str, Any],
    then: Mapping[str, Any],
    tiers: Mapping[str, Any],
) -> dict[str, Any]:
    """A cascade's ``router`` entry: its routes and the accept checks the runtime runs."""
    from evalgate.runtime.cascade import check_spec

    accept = record.get("accept") if isinstance(record, Mapping) else None
    if not isinstance(accept, list):
        accept = derived.get("accept")
    if not isinstance(accept, list) or not accept:
        raise ExportError(f"{where}: the report holds no accept checks (derivations.{config_id})")
    checks = []
    for i, spec in enumerate(accept):
        # The grade's time limit is the evals' business; the runtime check has its own.
        spec = {k: v for k, v in dict(spec).items() if k != "timeout_s"}
        problem = check_spec(spec)
        if problem is not None:
            name, why = problem
            raise ExportError(
                f"{where}: cascade.accept[{i}]{'.' + name if name else ''}: {why}; a runtime "
                "cascade runs only checks of the answer alone"
            )
        checks.append(spec)
    rate = record.get("escalation_rate") if isinstance(record, Mapping) else None
    return {
        "kind": "cascade",
        "first": _route(first, tiers),
        "then": _route(then, tiers),
        "accept": checks,
        # The evals' escalation share, shown beside the live one by `evalgate usage`.
        "evidence": {"escalation_rate": rate if isinstance(rate, int | float) else None},
    }


def _skip_reason(section: Mapping[str, Any]) -> str:
    notes = _get(section, "stats.notes") or []
    for note in notes:
        if isinstance(note, str) and note.startswith("no recommendation"):
            return note
    if not section.get("stats"):
        return "no statistics in the report (was the baseline run?)"
    return "no recommendation"


def build_features(
    document: Mapping[str, Any],
    *,
    suite: str | None = None,
    config: str | None = None,
    fallbacks: Sequence[str] | None = None,
    cache: str = "auto",
    cache_ttl_s: float | None = DEFAULT_CACHE_TTL_S,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Feature entries for the report's suites, and one line per suite skipped.

    Raises:
        ExportError: an unknown suite or config, a config given for several suites, or
            two suites of one feature.
    """
    suites = document.get("suites")
    if not isinstance(suites, Mapping) or not suites:
        raise ExportError("the report has no suites")
    if suite is not None and suite not in suites:
        raise ExportError(f"no suite {suite!r} in the report; suites: {', '.join(suites)}")
    names = [suite] if suite is not None else sorted(suites)
    if config is not None and len(names) > 1:
        raise ExportError("--config needs --suite when the report has several suites")
    features: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for name in names:
        section = suites[name]
        chosen = config or _get(section, "stats.recommendation.config_id")
        if not chosen:
            skipped.append(f"{name}: skipped: {_skip_reason(section)}")
            continue
        feature = str(section.get("feature") or name)
        if feature in features:
            raise ExportError(
                f"suites {features[feature]['evidence']['suite']!r} and {name!r} are both "
                f"feature {feature!r}; export one with --suite"
            )
        try:
            features[feature] = feature_entry(
                document, name, chosen, fallbacks=fallbacks, cache=cache, cache_ttl_s=cache_ttl_s
            )
        except ExportError as exc:
            # A recommended router or cascade the policy cannot carry (a check that needs
            # the case, configs that differ beyond the tier) skips its suite, with why;
            # one asked for with --config fails the export.
            derived = (_get(section, "settings.configs") or {}).get(chosen, {}).get("derived")
            if config is not None or not isinstance(derived, Mapping):
                raise
            skipped.append(f"{name}: skipped: {exc}; export a measured config with --config")
    return features, skipped


def check_suite_hash(
    document: Mapping[str, Any], suite_name: str, suite_file: Path, *, explicit: bool
) -> None:
    """Refuses a report made from another version of the suite file."""
    if not suite_file.exists():
        if explicit:
            raise ExportError(f"{suite_file}: no such suite file")
        return
    from evalgate.suite.errors import SuiteError
    from evalgate.suite.loader import load_suite

    try:
        current = load_suite(suite_file).suite_hash
    except SuiteError as exc:
        raise ExportError(f"{suite_file}: cannot check the suite hash: {exc}") from None
    section = document["suites"][suite_name]
    recorded = _get(section, "settings.suite_hash") or section.get("suite_hash")
    if current != recorded:
        raise ExportError(
            f"{suite_file} has changed since run {document.get('run_id')} (suite hash "
            f"{current} != the report's {recorded}): re-run the evals before exporting"
        )


def read_limits(path: Path, features: Mapping[str, Any]) -> dict[str, Any]:
    """The ``limits`` section from a JSON file, validated (see
    :mod:`evalgate.runtime.limits_file`).

    Raises:
        ExportError: unreadable JSON or an invalid section, naming the file and key.
    """
    from evalgate.runtime.limits_file import parse_limits

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExportError(f"{path}: cannot read the limits: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ExportError(f"{path}: the limits are not valid JSON: {exc}") from None

    def fail(key: str, message: str) -> ExportError:
        return ExportError(f"{path}: {key}: {message}")

    parse_limits(raw, fail, features)
    return raw


def export_policy(
    report: Path | Mapping[str, Any],
    out: Path,
    *,
    suite: str | None = None,
    config: str | None = None,
    fallbacks: Sequence[str] | None = None,
    cache: str = "auto",
    cache_ttl_s: float | None = DEFAULT_CACHE_TTL_S,
    match: Path | None = None,
    check_suites: bool = True,
    limits: Path | None = None,
) -> tuple[list[str], list[str]]:
    """Writes (or updates) the policy module at ``out``; returns (exported, skipped).

    Args:
        report: evalgate.json (a path or the loaded document).
        out: the policy module; its other features are kept when it exists.
        suite, config: export only this suite, with this config (default: each suite's
            recommended config).
        fallbacks: config ids tried in order on an error (default: the baseline when it
            is served by another model).
        cache: "auto" (exact when the config measured the cache or samples at
            temperature 0), "exact" or "off".  cache_ttl_s: the entries' lifetime.
        match: the suite file the report must have been made from (refused otherwise).
        check_suites: also check each suite file recorded in the report, where it exists.
        limits: a JSON file holding the policy's ``limits`` section (per-user limits);
            it replaces the existing policy's section (default: that section is kept,
            or there is none and limits are left to code).

    Raises:
        ExportError: with a one-line message; nothing is written then.
    """
    if cache not in CACHE_CHOICES:
        raise ExportError(f"cache must be one of {', '.join(CACHE_CHOICES)} (got {cache!r})")
    if isinstance(report, Path):
        from evalgate.report.html import ReportSourceError, load_document

        try:  # the report's one loader: a foreign JSON fails here, in one line
            document: Mapping[str, Any] = load_document(report)
        except ReportSourceError as exc:
            raise ExportError(str(exc)) from None
    else:
        document = report
    features, skipped = build_features(
        document,
        suite=suite,
        config=config,
        fallbacks=fallbacks,
        cache=cache,
        cache_ttl_s=cache_ttl_s,
    )
    for entry in features.values():
        name = entry["evidence"]["suite"]
        if match is not None:
            check_suite_hash(document, name, match, explicit=True)
        elif check_suites and entry["evidence"]["suite_path"]:
            check_suite_hash(document, name, Path(entry["evidence"]["suite_path"]), explicit=False)
    if not features:
        return [], skipped

    data: dict[str, Any] = {"version": POLICY_VERSION, "features": {}}
    if out.exists():
        existing, lines = read_policy_data(out)
        validate_policy(existing, str(out), lines)  # never merge into a broken policy
        data["features"] = dict(existing.get("features", {}))
        if "limits" in existing:
            data["limits"] = existing["limits"]
    data["features"].update(features)
    if limits is not None:
        data["limits"] = read_limits(limits, data["features"])
    text = render_policy(data)
    validate_policy(data, str(out))  # what we write, we can read
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return sorted(features), skipped
