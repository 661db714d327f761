"""Statistics per suite and the quality gate's verdict for the whole run.

Pure: results + suites + settings in, a JSON-safe document and blocking reasons out. The
session writes the document and turns blocking reasons into the exit status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalgate.report.batch_notes import batch_notes
from evalgate.results import CaseResult
from evalgate.suite.model import Suite


@dataclass(frozen=True, slots=True)
class GateSettings:
    """Command-line overrides of the suites' gate settings.

    Attributes:
        margin, alpha: override every suite's ``gate.margin`` / ``gate.alpha`` when set.
        mode: "marked" (configs with ``gate: true``), "all" candidates, or "none".
        allow_inconclusive: INCONCLUSIVE does not block.
        force: gate underpowered suites too.
        seed: seeds every resampling.
    """

    margin: float | None = None
    alpha: float | None = None
    mode: str = "marked"
    allow_inconclusive: bool = False
    force: bool = False
    seed: int = 0


@dataclass(slots=True)
class RunGate:
    """Per-suite statistics sections and the reasons the run is blocked (if any)."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocking: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_stored_baseline(document: Any) -> dict[str, Any]:
    """The stored evalgate.json for ``--evalgate-baseline``, checked for the shape the
    comparison reads; ValueError with one line naming the first thing that is wrong."""
    if not isinstance(document, dict):
        raise ValueError(f"not an evalgate.json report (a {type(document).__name__})")
    suites = document.get("suites")
    if not isinstance(suites, dict):
        raise ValueError("not an evalgate.json report: no 'suites' mapping")
    for name, suite in suites.items():
        if not isinstance(suite, dict):
            raise ValueError(f"suites.{name} is not a mapping")
        cases = suite.get("cases", [])
        if not isinstance(cases, list):
            raise ValueError(f"suites.{name}.cases is not a list")
        for i, row in enumerate(cases):
            missing = (
                ["case_id", "config_id", "score"]
                if not isinstance(row, dict)
                else [k for k in ("case_id", "config_id", "score") if k not in row]
            )
            if missing:
                raise ValueError(f"suites.{name}.cases[{i}] lacks {', '.join(missing)}")
    return document


def gated_configs(suite: Suite, mode: str) -> list[str]:
    candidates = [c.id for c in suite.configs if c.id != suite.baseline]
    if mode == "all":
        return candidates
    if mode == "none":
        return []
    return [c.id for c in suite.configs if c.gate and c.id != suite.baseline]


def _frame(results: Iterable[CaseResult]) -> Any:
    """The statistics' input: only the columns they read (outputs and grades stay out of
    the frame, which would otherwise be a large part of a big run's peak memory)."""
    from evalgate.report.tables import suite_table
    from evalgate.stats.analysis import INPUT_COLUMNS

    return suite_table(results, INPUT_COLUMNS)


def analyze_run(
    results: Iterable[CaseResult],
    suites: Mapping[str, Suite],
    settings: GateSettings,
    stored_baseline: Mapping[str, Any] | None = None,
) -> RunGate:
    """Statistics for every suite with results, and the gate over all of them."""
    by_suite: dict[str, list[CaseResult]] = {}
    for result in results:
        by_suite.setdefault(result.suite, []).append(result)
    return analyze_suites(by_suite, suites, settings, stored_baseline)


def analyze_suites(
    by_suite: Mapping[str, Sequence[CaseResult]],
    suites: Mapping[str, Suite],
    settings: GateSettings,
    stored_baseline: Mapping[str, Any] | None = None,
) -> RunGate:
    """:func:`analyze_run` of results grouped by suite; each suite's results are read
    once for its statistics (twice against a stored baseline), never held whole."""
    from evalgate.stats import analyze_suite

    gate = RunGate()
    for name, suite_results in sorted(by_suite.items()):
        suite = suites.get(name)
        if suite is None:
            gate.notes.append(f"{name}: not among this session's suites; no statistics")
            continue
        margin = settings.margin if settings.margin is not None else suite.gate.margin
        alpha = settings.alpha if settings.alpha is not None else suite.gate.alpha
        gated = gated_configs(suite, settings.mode)
        slo = {
            k: v
            for k, v in (
                ("p95_latency_ms", suite.gate.slo.p95_latency_ms),
                ("cost_per_case", suite.gate.slo.cost_per_case),
            )
            if v is not None
        }
        frame = _frame(suite_results)
        present = set(frame["config_id"])
        if suite.baseline not in present:
            gate.notes.append(
                f"{name}: baseline {suite.baseline!r} was not run (deselected?); no comparisons"
            )
            continue
        gate.blocking += _gated_without_results(name, suite, gated, present)
        try:
            analysis = analyze_suite(
                frame,
                baseline=suite.baseline,
                margin=margin,
                alpha=alpha,
                gated=[g for g in gated if g in present],
                force_gate=settings.force or suite.gate.force,
                slo=slo or None,
                seed=settings.seed,
                offline=[c.id for c in suite.configs if c.batch],
            )
            gate.notes.extend(batch_notes(name, suite, frame))
        except ValueError as exc:  # input the statistics cannot use: said, not a crash
            gate.notes.append(f"{name}: statistics skipped: {exc}")
            continue
        except Exception as exc:  # a defect: the report and the results stay intact
            line = f"{name}: statistics failed ({type(exc).__name__}: {exc})"
            gate.notes.append(line)
            if gated:  # the gate promised a verdict it cannot give
                gate.blocking.append(f"{line}; the gate cannot pass this suite")
            continue
        section = analysis.to_dict()
        section["gated_configs"] = gated
        recommendation = section.get("recommendation")
        if recommendation and not section["gate"]["gating"]:
            # A verdict on a handful of cases is a hint, not evidence enough to ship on.
            recommendation["reason"] += (
                "; UNDERPOWERED: fewer than 100 paired cases, not a basis to ship"
            )
        gate.sections[name] = section
        blocking = analysis.gate.blocking(inconclusive_blocks=not settings.allow_inconclusive)
        gate.blocking += [f"{name}: {reason.message}" for reason in blocking]
        if stored_baseline is not None:
            _compare_with_stored(
                gate, name, suite, suite_results, stored_baseline, settings, margin, alpha, gated
            )
    return gate


def _gated_without_results(
    name: str, suite: Suite, gated: Iterable[str], present: set[str]
) -> list[str]:
    """A blocking line per gated derived config with no results: its base configs were
    not run (deselected, a shard missing) or its derivation failed. The statistics leave
    out a config without rows, so the gate would otherwise pass it without a verdict."""
    configs = {c.id: c for c in suite.configs}
    lines = []
    for config_id in gated:
        derived = configs[config_id].derived
        if config_id in present or derived is None:
            continue
        lines.append(
            f"{name}: {config_id}: no results to gate: no case has results of both "
            f"{derived.small!r} and {derived.large!r} (or its derivation failed, see the "
            "report's derivations); the gate cannot pass it"
        )
    return lines


def _compare_with_stored(
    gate: RunGate,
    name: str,
    suite: Suite,
    head: Sequence[CaseResult],
    stored: Mapping[str, Any],
    settings: GateSettings,
    margin: float,
    alpha: float,
    gated: list[str],
) -> None:
    """Each config of this run against the same config in a stored run (e.g. main's)."""
    import pandas as pd

    from evalgate.stats import analyze_suite

    old = stored.get("suites", {}).get(name)
    section: dict[str, Any] = {"run_id": stored.get("run_id")}
    gate.sections[name]["vs_stored"] = section
    if old is None:
        section["note"] = "suite not in the stored run: nothing to compare"
        gate.notes.append(f"{name}: not in the stored baseline run; new suite")
        return
    section["suite_hash_changed"] = old.get("suite_hash") != suite.suite_hash
    old_rows = pd.DataFrame(old.get("cases", []))
    head_rows = _frame(head)
    old_cases = set(old_rows["case_id"]) if not old_rows.empty else set()
    head_cases = set(head_rows["case_id"])
    section["new_cases"] = sorted(head_cases - old_cases)
    section["missing_cases"] = sorted(old_cases - head_cases)
    if section["suite_hash_changed"]:
        gate.notes.append(
            f"{name}: the suite changed since the stored run (hash "
            f"{old.get('suite_hash')} -> {suite.suite_hash})"
        )
    if section["new_cases"]:
        gate.notes.append(
            f"{name}: {len(section['new_cases'])} case(s) not in the stored run "
            "(reported, not compared)"
        )
    if section["missing_cases"]:
        gate.notes.append(f"{name}: {len(section['missing_cases'])} stored case(s) not in this run")
    configs: dict[str, Any] = {}
    for config_id in sorted(set(head_rows["config_id"])):
        before = old_rows[old_rows["config_id"] == config_id] if not old_rows.empty else None
        if before is None or before.empty:
            continue
        after = head_rows[head_rows["config_id"] == config_id]
        frame = pd.concat(
            [before.assign(config_id="stored"), after.assign(config_id="head")], ignore_index=True
        )
        frame = frame[frame["case_id"].isin(old_cases & head_cases)]
        try:
            analysis = analyze_suite(
                frame,
                baseline="stored",
                margin=margin,
                alpha=alpha,
                gated=["head"],
                force_gate=settings.force or suite.gate.force,
                seed=settings.seed,
            )
        except Exception as exc:  # bad stored rows: said, not a crash
            configs[config_id] = {"note": f"skipped: {type(exc).__name__}: {exc}"}
            gate.notes.append(f"{name}: {config_id} vs stored run skipped: {exc}")
            continue
        comparison = analysis.to_dict()["comparisons"]["head"]
        configs[config_id] = comparison
        if config_id not in gated and config_id != suite.baseline:
            continue
        for reason in analysis.gate.blocking(inconclusive_blocks=not settings.allow_inconclusive):
            message = reason.message.removeprefix("head: ")
            gate.blocking.append(f"{name}: {config_id} vs stored run: {message}")
    section["configs"] = configs
