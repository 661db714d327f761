"""A suite's case inputs and rendered prompts as stored in evalgate.json.

The report's drill-down shows what each config actually sent, and ``evalgate html``
re-renders a report from stored results alone, so evalgate.json records, once per suite:

- ``vars``: each case's template variables (once per case, not per result row);
- ``messages``: each distinct rendered prompt (the chat messages sent), keyed by a short
  content hash. Configs without ``context_trim`` send the same messages, so a case
  usually stores one prompt plus one per distinct trim ratio;
- ``prompt``: case id -> config id -> the hash of the messages that config sent.

Case variables and prompts are the suite's own data; no API key is ever part of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection
from typing import Any

from evalgate.suite.model import Suite

INPUTS_VERSION = 1
HASH_CHARS = 12


def _json_safe(value: Any) -> Any:
    """Builtins only: YAML dates and other scalars become strings; NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def messages_hash(messages: Any) -> str:
    """The key of one rendered prompt: a hash of its JSON form (stable across runs)."""
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    # surrogatepass: a lone surrogate in a dataset (json.loads of "\ud800") must not
    # fail the whole report; valid text hashes as before.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def suite_inputs(suite: Suite, case_ids: Collection[str] | None = None) -> dict[str, Any]:
    """The ``inputs`` section of one suite in evalgate.json.

    Args:
        suite: the suite the run used.
        case_ids: only these cases (those with results); None for every case.

    Shape::

        {"version": 1,
         "vars": {case_id: {name: value}},
         "messages": {hash: [{"role": ..., "content": ...}]},
         "prompt": {case_id: {config_id: hash}}}
    """
    from evalgate.plan import render_messages

    wanted = None if case_ids is None else set(case_ids)
    variables: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    prompt: dict[str, dict[str, str]] = {}
    for case in suite.cases:
        if wanted is not None and case.id not in wanted:
            continue
        variables[case.id] = _json_safe(dict(case.vars))
        by_config: dict[str, str] = {}
        # Configs with the same trim ratio send the same messages: render each ratio once.
        by_ratio: dict[float, str] = {}
        for config in suite.configs:
            key = by_ratio.get(config.context_trim)
            if key is None:
                rendered = [dict(m) for m in render_messages(suite, case, config)]
                key = messages_hash(rendered)
                messages.setdefault(key, rendered)
                by_ratio[config.context_trim] = key
            by_config[config.id] = key
        prompt[case.id] = by_config
    return {"version": INPUTS_VERSION, "vars": variables, "messages": messages, "prompt": prompt}
