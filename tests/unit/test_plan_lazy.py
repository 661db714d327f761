"""Plans do not keep rendered prompts: each is rendered when its call is made."""

from __future__ import annotations

import dataclasses
import gc
import types
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.plan import plan_items, render_messages, request_hash
from evalgate.suite.errors import SuiteError
from evalgate.suite.loader import load_suite
from evalgate.suite.model import Suite
from tests.unit.test_engine_prefetch import make_runner, suite_file

SUITE = """\
suite: lazy
tiers: {t: {model: openai/fake, api_base: "http://127.0.0.1:9/v1"}}
prompt:
  - {role: system, content: "Answer from the context."}
  - {role: user, content: "Context: {{ context }}\\nQuestion: {{ question }}"}
configs:
  - {id: full, tier: t, repeats: 2}
  - {id: half, tier: t, context_trim: 0.5}
cases:
  - id: c1
    vars:
      question: where is paris
      context: "Cats purr all day. Paris is in France. Dogs bark at night. Fish swim."
  - id: c2
    vars: {question: what do dogs do, context: "Dogs bark at night. The sea is blue."}
"""


def _suite(tmp_path: Path) -> Suite:
    (tmp_path / "s.yaml").write_text(SUITE)
    return load_suite(tmp_path / "s.yaml")


def _strings_reachable(root: object) -> set[str]:
    """Every str reachable from ``root`` through the data it references (classes,
    modules and functions are code, not data: not entered)."""
    seen: set[int] = set()
    found: set[str] = set()
    stack: list[Any] = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found.add(obj)
            continue
        stack.extend(gc.get_referents(obj))
    return found


def test_a_plan_does_not_hold_its_rendered_prompt(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    plans = list(plan_items(suite))
    for plan in plans:
        prompt = render_messages(suite, plan.case, plan.config)[1]["content"]
        assert prompt.startswith("Context: ")
        # The suite holds the templates and case variables, never a rendered prompt.
        assert prompt not in _strings_reachable(plan)
        assert plan.spec.messages[1]["content"] == prompt


def test_the_call_made_is_the_call_hashed(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    plans = list(plan_items(suite))
    assert len(plans) == 6  # 2 cases x (2 repeats of full + 1 of half)
    for plan in plans:
        spec = plan.spec
        assert spec.messages == render_messages(suite, plan.case, plan.config)
        assert request_hash(spec) == plan.request_hash  # resume compares this hash
        assert spec.repeat == plan.repeat and plan.model == spec.model == "openai/fake"
    full, half = (
        next(p for p in plans if p.config.id == c and p.case.id == "c1") for c in ("full", "half")
    )
    trimmed, whole = half.spec.messages[1]["content"], full.spec.messages[1]["content"]
    assert "Paris is in France." in trimmed and len(trimmed) < len(whole)  # trimmed at call


def test_a_template_error_is_still_a_collection_error(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SUITE.replace("{{ question }}", "{{ question.titel }}"))
    with pytest.raises(SuiteError, match=r"case 'c1': prompt\[1\]: template error"):
        list(plan_items(load_suite(tmp_path / "s.yaml")))


def test_a_prompt_that_fails_when_called_fails_that_item_alone(tmp_path, fake_server) -> None:
    # A plan whose case changed after planning (no suite does this; the runner must still
    # say which case and line, and the other items run).
    key = uuid.uuid4().hex[:8]
    plans = list(plan_items(load_suite(suite_file(tmp_path, fake_server.base_url, key, 3))))
    bad_case = dataclasses.replace(plans[1].case, vars={})  # {{ question }} is undefined
    plans[1] = dataclasses.replace(plans[1], case=bad_case)
    runner = make_runner(tmp_path, concurrency=2)
    try:
        runner.prefetch(plans)
        first, _ = runner.result_for(plans[0])
        with pytest.raises(SuiteError) as raised:
            runner.result_for(plans[1])
        third, _ = runner.result_for(plans[2])
    finally:
        runner.close()
        runner.engine.close()
    assert first.call.error is None and third.call.error is None
    assert str(raised.value).startswith(f"{bad_case.source}: case 'q1': prompt[0]: template error")
    assert fake_server.request_count(key) == 2
