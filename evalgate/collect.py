"""pytest collection nodes: suite file -> suite -> one item per (case, config, repeat)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from evalgate.plan import ItemPlan, plan_items
from evalgate.results import CaseResult
from evalgate.suite.errors import SuiteError
from evalgate.suite.loader import load_suite
from evalgate.suite.model import Suite

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr


class SuiteFile(pytest.File):
    """A YAML file that declares a suite."""

    def collect(self) -> Iterator[SuiteNode]:
        suite = load_suite(self.path)
        yield SuiteNode.from_parent(self, name=suite.name, suite=suite)

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, SuiteError):
            return str(excinfo.value)  # one line, no traceback: the user's file is at fault
        return super().repr_failure(excinfo)


class SuiteNode(pytest.Collector):
    """One suite; its children are the items."""

    def __init__(self, *, suite: Suite, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, SuiteError):
            return str(excinfo.value)  # a template that fails for one case: one line
        return super().repr_failure(excinfo)

    def collect(self) -> Iterator[EvalItem]:
        from evalgate.session import shard_option

        shard = shard_option(self.config)
        for plan in plan_items(self.suite):
            # A shard takes whole cases: every config and repeat of a case, or none.
            if shard is None or shard.holds(self.suite.name, plan.case.id):
                yield EvalItem.from_parent(self, name=plan.name, plan=plan)


class EvalFailure(Exception):
    """An item failed: its call errored after retries, or a must-pass case missed."""

    def __init__(self, result: CaseResult, headline: str) -> None:
        super().__init__(headline)
        self.result = result
        self.headline = headline

    def explain(self) -> str:
        r = self.result
        lines = [self.headline]
        if r.call.error is None:
            lines.append(f"expected: {r.expected or '(no graders)'}")
            output = r.call.output if len(r.call.output) < 500 else r.call.output[:499] + "…"
            lines.append(f"output:   {output!r}")
            for grade in r.grades:
                mark = "pass" if grade.passed else "MISS"
                lines.append(f"  [{mark}] {grade.grader} (score {grade.score:.2f}): {grade.reason}")
        return "\n".join(lines)


class EvalItem(pytest.Item):
    """One call of one case under one config; passes unless the call fails or a must-pass misses."""

    def __init__(self, *, plan: ItemPlan, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.add_marker(pytest.mark.evalgate)

    def runtest(self) -> None:
        from evalgate.session import session_of

        result, _ = session_of(self.config).run_item(self)
        self.user_properties.append(("evalgate", self.plan.label))
        if result.call.error is not None:
            raise EvalFailure(
                result, f"call failed after {result.call.attempts} attempt(s): {result.call.error}"
            )
        grade_errors = [g for g in result.grades if g.error]
        if grade_errors:
            raise EvalFailure(result, f"grader error: {grade_errors[0].reason}")
        if result.must_pass and not result.passed:
            raise EvalFailure(
                result,
                f"must-pass case {self.plan.case.id!r} missed under "
                f"config {self.plan.config.id!r} (score {result.score:.2f})",
            )

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, EvalFailure):
            return excinfo.value.explain()
        if isinstance(excinfo.value, SuiteError):
            return str(excinfo.value)  # the prompt failed to render when called: one line
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.plan.label
