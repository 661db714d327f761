"""``json-schema``: the output is JSON (code fence allowed) and validates against a schema.

The schema is given inline (``schema: {...}``) or by file (``schema_file: path``, relative
to the suite file; JSON, or YAML for ``.yaml``/``.yml``). Both are checked at collection:
the file must exist and parse, and the schema must be a valid JSON Schema of its declared
(``$schema``) or the latest draft. jsonschema is imported only when the grader is used.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evalgate.graders.builtin import NotJSON, extract_json
from evalgate.graders.registry import Grade, grader


class SchemaError(ValueError):
    """The schema (or its file) is unusable."""


def _plain(value: Any) -> Any:
    """A deep plain-dict/list copy (YAML mappings may arrive as read-only proxies)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_schema_file(path: Path) -> Any:
    """Reads a schema file: YAML for ``.yaml``/``.yml``, JSON otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"schema file not found: {path}") from None
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SchemaError(f"schema file {path} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"schema file {path} is not valid JSON: {exc}") from None


def _bounded_keywords() -> dict[str, Any]:
    """``pattern`` and ``patternProperties`` matched on the ``regex`` engine within the
    grade's time limit (jsonschema's own use the stdlib ``re``, which cannot be stopped)."""
    from jsonschema.exceptions import ValidationError

    from evalgate.graders.deadline import search

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Any:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for key, value in instance.items():
                if search(patrn, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    return {"pattern": pattern, "patternProperties": pattern_properties}


@functools.lru_cache(maxsize=256)
def _validator_for(schema_json: str) -> Any:
    """A compiled validator for a schema (given as canonical JSON text), with formats."""
    from jsonschema import exceptions, validators

    schema = json.loads(schema_json)
    if not isinstance(schema, dict | bool):
        raise SchemaError(f"a JSON Schema is an object or a boolean, found {type(schema).__name__}")
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise SchemaError(f"invalid JSON Schema at {where}: {exc.message}") from None
    bounded = validators.extend(cls, _bounded_keywords())
    return bounded(schema, format_checker=cls.FORMAT_CHECKER)


@functools.lru_cache(maxsize=64)
def _file_schema(path: str, mtime_ns: int) -> str:
    return json.dumps(load_schema_file(Path(path)), sort_keys=True)


def _schema_text(schema: Any, schema_file: str | None) -> str:
    if schema_file is not None:
        path = Path(schema_file)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise SchemaError(f"schema file not found: {schema_file}") from None
        return _file_schema(str(path), mtime)
    try:
        return json.dumps(_plain(schema), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"the schema is not JSON data: {exc}") from None


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is below it, else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _validate(params: Mapping[str, Any], suite_dir: str) -> str | None:
    """Collection-time check: exactly one of schema/schema_file, an existing file, a valid
    schema.

    A relative ``schema_file`` is resolved against the suite's folder and written back as an
    absolute path (when the loader hands over a mutable mapping), so the grader finds the
    file whatever the working directory of the process that grades.
    """
    has_inline, has_file = "schema" in params, "schema_file" in params
    if has_inline == has_file:
        return (
            "expected exactly one of `schema` (inline mapping) or "
            "`schema_file` (path relative to the suite file)"
        )
    schema_file = None
    if has_file:
        raw = str(params["schema_file"])
        if not raw.strip():
            return "schema_file: expected a path, found an empty string"
        path = Path(suite_dir, os.path.expanduser(raw))
        if not path.is_file():
            return f"schema_file: expected an existing schema file, found no file at {_shown(path)}"
        schema_file = str(path.resolve())
    try:
        _validator_for(_schema_text(params.get("schema"), schema_file))
    except SchemaError as exc:
        return str(exc)
    if schema_file is not None and isinstance(params, dict):
        params["schema_file"] = schema_file
    return None


def _pointer(path: Any) -> str:
    parts = list(path)
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


@grader(
    "json-schema",
    params={"schema": dict, "schema_file": str},
    templated=(),
    validate=_validate,
)
def json_schema(
    output: str, case: Any, schema: Any = None, schema_file: str | None = None
) -> Grade:
    """Passes when the output parses as JSON and validates against the schema.

    Params:
        schema: the JSON Schema, inline as a YAML mapping.
        schema_file: or a JSON/YAML file holding it, relative to the suite file.

    Score 1 or 0. Invalid JSON and schema violations are misses with the first (most
    relevant) violation and its location as the reason; an unusable schema is an error.
    """
    if schema is None and schema_file is None:
        raise SchemaError("json-schema needs `schema` or `schema_file`")
    validator = _validator_for(_schema_text(schema, schema_file))
    try:
        instance = extract_json(output)
    except NotJSON as exc:
        return Grade(0.0, False, f"not valid JSON ({exc})")
    from jsonschema.exceptions import best_match

    try:
        error = best_match(validator.iter_errors(instance))
    except RecursionError:
        # The output's nesting, not the schema, is at fault: a miss, never a grader error.
        return Grade(0.0, False, "the JSON is nested too deeply to validate")
    if error is None:
        return Grade(1.0, True, "valid JSON matching the schema")
    message = error.message if len(error.message) <= 160 else error.message[:159] + "…"
    return Grade(0.0, False, f"schema violation at {_pointer(error.absolute_path)}: {message}")
