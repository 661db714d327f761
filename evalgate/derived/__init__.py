"""Derived configs: configs whose results are composed from measured configs' results.

A routed config (``router:``), a cascade (``cascade:``) and a semantic cache (``cache:
{mode: semantic}``) make no model calls: after the run, each case's result is taken from
one of two measured configs (or, for a cascade's escalation, from both, their costs and
latencies added; for a semantic cache, from its twin's answer to this or an earlier
request, :mod:`evalgate.derived.semcache`), and the composed results then
enter the statistics, the Pareto table, the recommendation and the gate exactly as
measured results do. Composition happens where the report is written
(:func:`evalgate.report.write.write_run_report`), from the stored results, so a run, a
resumed run and a merge of shards compose the same way.

A new kind is one module with ``derive(suite, config, results) -> (results, record)`` and
``describe(config_id, record) -> str`` (one line for the report), registered in
:func:`_kinds`; ``record`` lands in the report under
``suites.<name>.derivations.<config id>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalgate.results import CaseResult, ItemKey
    from evalgate.suite.model import Config, Suite

Derive = Callable[
    ["Suite", "Config", "Mapping[ItemKey, CaseResult]"], "tuple[list[CaseResult], dict[str, Any]]"
]


def _kinds() -> dict[str, tuple[Derive, Callable[[str, Mapping[str, Any]], str]]]:
    from evalgate.derived import cascade, router, semcache

    return {
        "router": (router.derive, router.describe),
        "cascade": (cascade.derive, cascade.describe),
        "semantic": (semcache.derive, semcache.describe),
    }


def derive_results(
    suites: Mapping[str, Suite], results: Iterable[CaseResult]
) -> tuple[list[CaseResult], dict[str, dict[str, Any]]]:
    """The measured results plus every derived config's, and per suite the derivations."""
    measured = list(results)
    wanted = [
        (suite, config)
        for suite in suites.values()
        for config in suite.configs
        if config.derived is not None
    ]
    if not wanted:
        return measured, {}
    by_key = {r.key: r for r in measured}
    kinds = _kinds()
    composed: list[CaseResult] = []
    derivations: dict[str, dict[str, Any]] = {}
    for suite, config in wanted:
        assert config.derived is not None
        derive, describe = kinds[config.derived.kind]
        try:
            made, record = derive(suite, config, by_key)
        except Exception as exc:  # a defect must not lose the measured configs' report
            error = f"{type(exc).__name__}: {exc}"
            made, record = [], {"kind": config.derived.kind, "error": error}
        record["composed"] = len(made)
        missing = len(suite.cases) - sum(1 for _ in pairs(suite, config, by_key))
        if missing:
            record["missing_cases"] = missing
        record["line"] = _line(config, record, describe, bool(made))
        composed.extend(made)
        derivations.setdefault(suite.name, {})[config.id] = record
    return measured + composed, derivations


def _line(
    config: Config,
    record: Mapping[str, Any],
    describe: Callable[[str, Mapping[str, Any]], str],
    has_results: bool,
) -> str:
    """The report's one line for a derived config, saying first when it has no results
    (its kind's own description would read as if it had routed or escalated something)."""
    assert config.derived is not None
    small, large = config.derived.small, config.derived.large
    if not has_results and "error" not in record:
        return (
            f"{config.id}: NO RESULTS: no case has results of both {small!r} and {large!r} "
            "(not run, deselected, or a shard missing), so it has no statistics"
        )
    line = describe(config.id, record)
    if record.get("missing_cases"):
        line += (
            f"; {record['missing_cases']} case(s) lack a result of {small!r} or {large!r} "
            "(left out)"
        )
    return line


def pairs(
    suite: Suite, config: Config, results: Mapping[ItemKey, CaseResult]
) -> Iterable[tuple[Any, list[tuple[CaseResult, CaseResult]]]]:
    """Per case with both configs measured in every repeat: [(first, second) per repeat]."""
    from evalgate.results import ItemKey

    assert config.derived is not None
    first, second = config.derived.small, config.derived.large
    for case in suite.cases:
        rows = []
        for repeat in range(config.repeats):
            a = results.get(ItemKey(suite.name, case.id, first, repeat))
            b = results.get(ItemKey(suite.name, case.id, second, repeat))
            if a is None or b is None:
                break
            rows.append((a, b))
        else:
            yield case, rows


def as_config(result: CaseResult, config: Config, **changes: Any) -> CaseResult:
    """``result`` recorded under the derived config (its own figures unless changed)."""
    import dataclasses

    from evalgate.nodeid import item_name

    name = item_name(result.case_id, config.id, result.repeat, config.repeats)
    return dataclasses.replace(
        result, config_id=config.id, item_key=f"{result.suite}::{name}", **changes
    )
