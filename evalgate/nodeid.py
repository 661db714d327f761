"""The one home of evalgate's pytest node id format: ``file::suite::case[config]``.

An item of config ``c`` is named ``case[c]``, or ``case[c-rN]`` (N 1-based) when ``c``
has several repeats. Suite names and ids never contain ``::`` or ``[`` (the loader refuses
them) and no config id reads as a repeat of another, so a node id parses one way only.
Standard library only: the plugin imports this in every pytest run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

SUITE_SUFFIXES = (".yaml", ".yml")
"""File suffixes collected as suites (when the file declares ``suite:``)."""

_ITEM = re.compile(r"^(?P<case>[^\[\]]+)\[(?P<label>[^\[\]]+)\]$")
_REPEAT = re.compile(r"^(?P<config>.+)-r(?P<n>[1-9][0-9]*)$")


class _ConfigLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def repeats(self) -> int: ...


C = TypeVar("C", bound=_ConfigLike)


def item_name(case_id: str, config_id: str, repeat: int, repeats: int) -> str:
    """The pytest item name: ``case[config]``, or ``case[config-rN]`` with repeats."""
    suffix = f"-r{repeat + 1}" if repeats > 1 else ""
    return f"{case_id}[{config_id}{suffix}]"


@dataclass(frozen=True, slots=True)
class EvalNodeId:
    """The parts of an evalgate item's node id (``label`` is ``config`` or ``config-rN``)."""

    path: str
    suite: str
    case: str
    label: str


def parse_nodeid(nodeid: str) -> EvalNodeId | None:
    """The parts of an evalgate item's node id, or None for any other test."""
    parts = nodeid.split("::")
    if len(parts) != 3 or not parts[0].endswith(SUITE_SUFFIXES):
        return None
    match = _ITEM.match(parts[2])
    if match is None:
        return None
    return EvalNodeId(parts[0], parts[1], match["case"], match["label"])


def is_eval_nodeid(nodeid: str) -> bool:
    return parse_nodeid(nodeid) is not None


def resolve_label(configs: Iterable[C], label: str) -> tuple[C, int] | None:
    """(config, 0-based repeat) named by an item label, or None if no config matches."""
    candidates = list(configs)
    for config in candidates:
        if config.repeats == 1 and config.id == label:
            return config, 0
    match = _REPEAT.match(label)
    if match is not None:
        for config in candidates:
            if config.repeats > 1 and config.id == match["config"]:
                repeat = int(match["n"]) - 1
                return (config, repeat) if repeat < config.repeats else None
    return None
