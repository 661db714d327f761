"""Suite -> the items to run: one :class:`ItemPlan` per (case, config, repeat).

Pure: rendering templates and trimming contexts depend only on the suite, so every
xdist worker plans exactly the same items with exactly the same ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from evalgate.engine.calls import CallSpec
from evalgate.nodeid import item_name
from evalgate.results import ItemKey
from evalgate.suite.errors import SuiteError
from evalgate.suite.model import Case, Config, Suite
from evalgate.suite.templates import render
from evalgate.trim import trim_context, trim_passages


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """One item: what to call and how to grade it.

    Attributes:
        key: the item's identity (suite, case, config, repeat): structured, never parsed.
        label: ``suite::case[config]`` (``[config-rN]`` with several repeats, N 1-based),
            for people: pytest output and the ``item_key`` of a results line.
        name: the pytest item name, ``case[config]`` / ``case[config-rN]``.
        suite, case, config, repeat: what it runs (repeat is 0-based).
        unrendered: the call without its messages (``messages=()``); :attr:`spec` is the
            call to send.
        request_hash: :func:`request_hash` of ``spec`` (a resumed run calls again when the
            stored result's differs).

    The rendered messages are not kept: a plan lives for the whole run and a prompt holds
    the case's text (a retrieved context is kilobytes), so every item of a 20,000-item
    suite holding its prompt would cost tens of MiB. Planning renders each one once (a
    template that fails for a case is an error at collection) to take its hash, and
    :attr:`spec` renders it again when the call is made.
    """

    key: ItemKey
    label: str
    name: str
    suite: Suite
    case: Case
    config: Config
    repeat: int
    unrendered: CallSpec
    request_hash: str = ""

    @property
    def spec(self) -> CallSpec:
        """The call to send, messages rendered and context trimmed (on each access)."""
        return dataclasses.replace(
            self.unrendered, messages=render_messages(self.suite, self.case, self.config)
        )

    @property
    def model(self) -> str:
        """The tier's model string (without rendering anything)."""
        return self.unrendered.model


def render_messages(suite: Suite, case: Case, config: Config) -> tuple[dict[str, str], ...]:
    """The case's chat messages under ``config`` (its context trimmed).

    Raises:
        SuiteError: a template fails for this case (``{{ doc.titel }}``), located to the
            case's line.
    """
    variables: dict[str, Any] = dict(case.vars)
    if config.context_trim < 1:
        context = variables[suite.trim.variable]
        query = str(variables.get(suite.trim.query, ""))
        # The loader allows text or a list of texts; a list keeps its shape (a template
        # may loop over the passages), each passage trimmed to its most relevant units.
        if isinstance(context, list):
            kept = trim_passages(context, query, config.context_trim).passages
            variables[suite.trim.variable] = list(kept or ())
        else:
            variables[suite.trim.variable] = trim_context(
                str(context), query, config.context_trim
            ).text
    messages = []
    for index, message in enumerate(suite.prompt):
        try:
            content = render(message.content, variables)
        except Exception as exc:  # jinja2's errors, imported lazily
            file, _, line = case.source.rpartition(":")
            raise SuiteError(
                file,
                int(line or 1),
                f"case {case.id!r}",
                f"prompt[{index}]: template error: {type(exc).__name__}: {exc}",
            ) from None
        messages.append({"role": message.role, "content": content})
    return tuple(messages)


def request_hash(spec: CallSpec) -> str:
    """Digest of everything a call sends and how it is measured (resume reruns on change)."""
    payload = dataclasses.asdict(spec)
    text = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
        if config.derived is None  # routed and cascade configs make no calls of their own
        for r in range(config.repeats)
    )
    # Rendered once per (case, config), not per repeat; held only while planning.
    rendered: dict[tuple[int, int], tuple[dict[str, str], ...]] = {}
    for repeat, _, j, i in grid:
        case, config = suite.cases[i], suite.configs[j]
        tier = suite.tier_of(config)
        if (i, j) not in rendered:
            rendered[i, j] = render_messages(suite, case, config)
        name = item_name(case.id, config.id, repeat, config.repeats)
        unrendered = CallSpec(
            model=tier.model,
            messages=(),
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
            batch=config.batch,
        )
        messages = rendered[i, j]
        yield ItemPlan(
            key=ItemKey(suite.name, case.id, config.id, repeat),
            label=f"{suite.name}::{name}",
            name=name,
            suite=suite,
            case=case,
            config=config,
            repeat=repeat,
            unrendered=unrendered,
            request_hash=request_hash(dataclasses.replace(unrendered, messages=messages)),
        )
