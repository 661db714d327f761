"""What a resumed run does with each stored result: reuse it, regrade it, or call again.

The one rule, used by the runner (per item) and by the controller (for the one-line
summary it prints), so the two never disagree:

- no stored result, or a failed one: run the item;
- the call the item would send changed (prompt, case variables, config, tier settings):
  call again;
- only the grading changed (graders, a schema file, a python grader's source, the
  threshold): regrade the stored output, without a model call;
- otherwise reuse it (recorded again under the current suite hash when that changed, so
  the report, which reads only results of the current suite hash, counts it).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Mapping

from evalgate.plan import ItemPlan
from evalgate.results import CaseResult, ItemKey, ReadStats
from evalgate.suite.model import Suite


class Action(enum.Enum):
    RUN = "not run yet"
    RETRY = "failed before"
    RERUN = "call changed"
    REGRADE = "graders changed"
    REUSE = "reused"


def decide(plan: ItemPlan, stored: CaseResult | None) -> Action:
    """What to do with an item's stored result on resume."""
    if stored is None:
        return Action.RUN
    if stored.errored:
        return Action.RETRY
    if stored.request_hash != plan.request_hash:
        return Action.RERUN
    if stored.grading_hash != plan.case.grading_hash:
        return Action.REGRADE
    return Action.REUSE


def summary_line(plans: Iterable[ItemPlan], stored: Mapping[ItemKey, CaseResult]) -> str:
    """One line: how many items are reused, regraded, called again, and why."""
    counts = dict.fromkeys(Action, 0)
    for plan in plans:
        counts[decide(plan, stored.get(plan.key))] += 1
    parts = [f"{counts[Action.REUSE]} result(s) reused"]
    if counts[Action.REGRADE]:
        parts.append(f"{counts[Action.REGRADE]} regraded without a call (graders changed)")
    if counts[Action.RERUN]:
        parts.append(f"{counts[Action.RERUN]} called again (prompt, case, config or tier changed)")
    if counts[Action.RETRY]:
        parts.append(f"{counts[Action.RETRY]} called again (failed before)")
    if counts[Action.RUN]:
        parts.append(f"{counts[Action.RUN]} not run yet")
    return "evalgate: resume: " + ", ".join(parts)


class DefinedItems:
    """Every item the current suites define (each case x config x repeat), as a position
    in flat arrays: the one rule of which stored results the report may use."""

    def __init__(self, suites: Mapping[str, Suite]) -> None:
        # suite -> (first position, case index, config -> (slot, repeats), slots per case)
        self.layout: dict[str, tuple[int, dict[str, int], dict[str, tuple[int, int]], int]] = {}
        size = 0
        for name, suite in suites.items():
            configs: dict[str, tuple[int, int]] = {}
            slots = 0
            for config in suite.configs:
                configs[config.id] = (slots, config.repeats)
                slots += config.repeats
            cases = {case.id: i for i, case in enumerate(suite.cases)}
            self.layout[name] = (size, cases, configs, slots)
            size += len(cases) * slots
        self.size = size
        self._names = list(self.layout)
        self._starts = [self.layout[name][0] for name in self._names]

    def position(self, key: ItemKey) -> int | None:
        """The item's position, or None when the current suites do not define it."""
        layout = self.layout.get(key.suite)
        if layout is None:
            return None
        start, cases, configs, slots = layout
        case, config = cases.get(key.case), configs.get(key.config)
        if case is None or config is None:
            return None
        slot, repeats = config
        if key.repeat not in range(repeats):
            return None
        return start + case * slots + slot + int(key.repeat)

    def suite_of(self, position: int) -> str:
        """The suite whose items hold ``position`` (suites own consecutive ranges)."""
        return self._names[bisect.bisect_right(self._starts, position) - 1]


def current_results(
    latest: Mapping[ItemKey, CaseResult],
    suites: Mapping[str, Suite],
    stats: ReadStats | None = None,
) -> tuple[list[CaseResult], str | None]:
    """The stored results the report may use, and a one-line note on the rest.

    A result counts only when the current suites define its item (a removed case or
    config drops out) and it was made under the current suite hash (results of an edited
    suite are called again or regraded on resume, and recorded under the new hash).
    """
    defined = DefinedItems(suites)
    kept: list[CaseResult] = []
    gone = stale = 0
    for key, result in latest.items():
        if defined.position(key) is None:
            gone += 1
        elif result.suite_hash != suites[key.suite].suite_hash:
            stale += 1
        else:
            kept.append(result)
    return kept, ignored_note(gone, stale, stats)


def ignored_note(gone: int, stale: int, stats: ReadStats | None) -> str | None:
    """The one line on stored results the report leaves out (None when none is)."""
    reasons = []
    if gone:
        reasons.append(f"{gone} for items the current suites do not define (removed or renamed)")
    if stale:
        reasons.append(f"{stale} made with an earlier version of the suite (edited since)")
    torn = stats.torn if stats else 0
    if stats and stats.unreadable:
        reasons.append(f"{stats.unreadable} line(s) in a format this version cannot read")
    if torn:
        reasons.append(f"{torn} torn line(s) cut short by an interrupted writer")
    if not reasons:
        return None
    ignored = gone + stale + torn + (stats.unreadable if stats else 0)
    return f"evalgate: {ignored} stored result(s) ignored: " + "; ".join(reasons)
