"""YAML loading that remembers where every value came from.

Validation errors must name ``file:line``; PyYAML's plain ``safe_load`` forgets lines, so
this walks the composed node tree and records the line of every key path.

Hostile files stay cheap: an alias is converted once and shared (never copied), and the
size a document would have with every alias expanded is capped, so a few hundred bytes
of nested aliases (a "billion laughs" file) is one error line instead of minutes and
gigabytes. Self-referencing anchors and absurd nesting are errors too.
"""

from __future__ import annotations

from typing import Any

import yaml

from evalgate.suite.errors import SuiteError

Path_ = tuple[str | int, ...]

MAX_EXPANDED_VALUES = 1_000_000
"""Values a document may hold with every alias expanded (real suites hold far fewer)."""
MAX_DEPTH = 100
"""Nesting depth of mappings and lists (real suites nest a handful of levels)."""


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
        SuiteError: on YAML syntax errors, on duplicate mapping keys (which plain PyYAML
            silently resolves to the last one, hiding a user's mistake), on keys that are
            not scalars, on alias bombs, self-referencing anchors and absurd nesting.
    """
    positions = Positions(file)
    try:
        loader = yaml.SafeLoader(text)  # checks every character: may raise ReaderError
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from None
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            line = loader.get_mark().line + 1
            raise SuiteError(
                file, line, "", f"invalid YAML: nested deeper than {MAX_DEPTH} levels"
            ) from None
        if node is None:
            return None, positions
        positions.set((), node.start_mark.line + 1)
        return _Converter(loader, positions).convert(node, (), 0), positions
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise SuiteError(file, line, "", f"invalid YAML: {exc.problem or exc}") from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from None
    except yaml.YAMLError as exc:
        raise SuiteError(file, 1, "", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: str) -> SuiteError:
    """A control character (or other character YAML refuses), located to its line."""
    line = text.count("\n", 0, exc.position) + 1
    character = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return SuiteError(file, line, "", f"invalid YAML: unacceptable character #x{character:04x}")


class _Converter:
    """Node tree -> builtin values, one object per node (aliases share their target)."""

    def __init__(self, loader: yaml.SafeLoader, positions: Positions) -> None:
        self.loader = loader
        self.pos = positions
        self.done: dict[int, Any] = {}  # id(node) -> converted value
        self.sizes: dict[int, int] = {}  # id(node) -> values it holds, aliases expanded
        self.active: set[int] = set()  # nodes being converted (a cycle comes back here)
        self.total = 0

    def fail(self, node: yaml.Node, path: Path_, message: str) -> SuiteError:
        return SuiteError(self.pos.file, node.start_mark.line + 1, dotted(path), message)

    def convert(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        key = id(node)
        if key in self.active:
            raise self.fail(node, path, "an anchor refers to itself (a value cannot hold itself)")
        if key in self.done:
            self._count(node, path, self.sizes[key])
            return self.done[key]
        if depth > MAX_DEPTH:
            raise self.fail(node, path, f"nested deeper than {MAX_DEPTH} levels")
        self.active.add(key)
        start = self.total
        try:
            if isinstance(node, yaml.MappingNode):
                value: Any = self._mapping(node, path, depth)
            elif isinstance(node, yaml.SequenceNode):
                value = []
                for index, item_node in enumerate(node.value):
                    child = (*path, index)
                    self.pos.set(child, item_node.start_mark.line + 1)
                    value.append(self.convert(item_node, child, depth + 1))
            else:
                value = self.loader.construct_object(node, deep=True)
        finally:
            self.active.discard(key)
        self._count(node, path, 1)
        self.done[key] = value
        self.sizes[key] = self.total - start
        return value

    def _count(self, node: yaml.Node, path: Path_, size: int) -> None:
        self.total += size
        if self.total > MAX_EXPANDED_VALUES:
            raise self.fail(
                node,
                path,
                f"aliases expand to more than {MAX_EXPANDED_VALUES:,} values (a YAML alias bomb?)",
            )

    def _mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[Any, Any]:
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self.loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
        out: dict[Any, Any] = {}
        from_merge: set[Any] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(
                    key_node, path, "a mapping key must be a plain value, found a list or mapping"
                )
            key = self.loader.construct_object(key_node, deep=True)
            child = (*path, str(key))
            merged = id(key_node) not in own
            # Merged pairs come first (PyYAML's order); a later pair overrides a merged
            # one, as in YAML's merge semantics. Two pairs written in the mapping itself
            # are a duplicate: plain PyYAML would silently keep the last.
            if key in out and key not in from_merge:
                raise SuiteError(
                    self.pos.file,
                    key_node.start_mark.line + 1,
                    dotted(child),
                    "duplicate key (each key may appear once in a mapping)",
                )
            if merged:
                from_merge.add(key)
            else:
                from_merge.discard(key)
            self.pos.set(child, key_node.start_mark.line + 1)
            out[key] = self.convert(value_node, child, depth + 1)
        return out


def dotted(path: Path_) -> str:
    """``configs[1].tier`` for ``("configs", 1, "tier")``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
