"""Suite -> the items to run: one :class:`ItemPlan` per (case, config, repeat).

Pure: rendering templates and trimming contexts depend only on the suite, so every
xdist worker plans exactly the same items with exactly the same ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from evalgate.engine.calls import CallSpec
from evalgate.suite.model import Case, Config, Suite
from evalgate.suite.templates import render
from evalgate.trim import trim_context


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """One item: what to call and how to grade it.

    Attributes:
        key: ``suite::case[config]`` (``[config-rN]`` with several repeats, N 1-based).
        name: the pytest item name, ``case[config]`` / ``case[config-rN]``.
        suite, case, config, repeat: what it runs (repeat is 0-based).
        spec: the call, messages rendered and context trimmed.
    """

    key: str
    name: str
    suite: Suite
    case: Case
    config: Config
    repeat: int
    spec: CallSpec


def item_name(case_id: str, config: Config, repeat: int) -> str:
    suffix = f"-r{repeat + 1}" if config.repeats > 1 else ""
    return f"{case_id}[{config.id}{suffix}]"


def render_messages(suite: Suite, case: Case, config: Config) -> tuple[dict[str, str], ...]:
    variables = dict(case.vars)
    if config.context_trim < 1:
        trimmed = trim_context(
            str(variables[suite.trim.variable]),
            str(variables.get(suite.trim.query, "")),
            config.context_trim,
        )
        variables[suite.trim.variable] = trimmed.text
    return tuple(
        {"role": message.role, "content": render(message.content, variables)}
        for message in suite.prompt
    )


def plan_items(suite: Suite) -> Iterator[ItemPlan]:
    """The suite's items, in a stable order along diagonals of the case x config grid.

    Repeat 0 of every item first, then repeat 1, and so on; within a repeat, item (case i,
    config j) runs at position i + j, ties by config. A case's configs still run within a
    few items of each other, so paired latencies are measured under the same machine load;
    but with two cases or more, two consecutive items never share a case, so a model
    server that reuses the cached prefix of the previous prompt (llama.cpp does) cannot
    serve one config's prompt from the config run just before it, which would make a
    config look faster for its place in the order.
    """
    grid = sorted(
        (r, i + j, j, i)
        for i in range(len(suite.cases))
        for j, config in enumerate(suite.configs)
        for r in range(config.repeats)
    )
    rendered: dict[tuple[int, int], tuple[dict[str, str], ...]] = {}
    for repeat, _, j, i in grid:
        case, config = suite.cases[i], suite.configs[j]
        tier = suite.tier_of(config)
        if (i, j) not in rendered:
            rendered[i, j] = render_messages(suite, case, config)
        messages = rendered[i, j]
        name = item_name(case.id, config, repeat)
        yield ItemPlan(
            key=f"{suite.name}::{name}",
            name=name,
            suite=suite,
            case=case,
            config=config,
            repeat=repeat,
            spec=CallSpec(
                model=tier.model,
                messages=messages,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                stream=config.stream,
                repeat=repeat,
                tier=tier.name,
                use_cache=config.cache,
                price=tier.price,
                api_base=tier.api_base,
                api_key_env=tier.api_key_env,
                timeout_s=tier.timeout_s,
                transport=tier.transport,
            ),
        )
