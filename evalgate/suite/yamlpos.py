"""YAML loading that remembers where every value came from.

Validation errors must name ``file:line``; PyYAML's plain ``safe_load`` forgets lines, so
this walks the composed node tree and records the line of every key path.
"""

from __future__ import annotations

from typing import Any

import yaml

from evalgate.suite.errors import SuiteError

Path_ = tuple[str | int, ...]


class Positions:
    """Maps a key path such as ``("configs", 1, "tier")`` to a 1-based line number."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._lines: dict[Path_, int] = {}

    def set(self, path: Path_, line: int) -> None:
        self._lines[path] = line

    def line(self, path: Path_) -> int:
        """Line of ``path``, or of its nearest recorded ancestor."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get((), 1)


def load_with_positions(text: str, file: str) -> tuple[Any, Positions]:
    """Parses YAML text into builtin values plus the line of every key path.

    Raises:
        SuiteError: on YAML syntax errors and on duplicate mapping keys (which plain
            PyYAML silently resolves to the last one, hiding a user's mistake).
    """
    positions = Positions(file)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, positions
        positions.set((), node.start_mark.line + 1)
        return _convert(loader, node, (), positions), positions
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise SuiteError(file, line, "", f"invalid YAML: {exc.problem or exc}") from None
    finally:
        loader.dispose()


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, pos: Positions) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            child = (*path, str(key))
            if key in out:
                raise SuiteError(
                    pos.file,
                    key_node.start_mark.line + 1,
                    _dotted(child),
                    "duplicate key (each key may appear once in a mapping)",
                )
            pos.set(child, key_node.start_mark.line + 1)
            out[key] = _convert(loader, value_node, child, pos)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item_node in enumerate(node.value):
            child = (*path, index)
            pos.set(child, item_node.start_mark.line + 1)
            items.append(_convert(loader, item_node, child, pos))
        return items
    return loader.construct_object(node, deep=True)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted = _dotted
