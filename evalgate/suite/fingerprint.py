"""Hashes of everything that decides a result, so an edit is never mistaken for no change.

Two hashes matter on resume and in the report:

- a case's *grading hash*: its graders and the suite's, as written, plus the content of
  every file they read (a json-schema ``schema_file``) and the source of the module a
  ``python`` grader lives in and of the project modules that module uses, plus the pass
  threshold. When only this changes, a stored
  output is regraded, not called again.
- the *suite hash*: the definition (tiers and their settings, prompt templates, configs,
  defaults, gate, trim), every case's variables and its grading hash. A stored result
  counts in the report only under the current suite hash.

What a call sends is hashed per item by :func:`evalgate.plan.request_hash`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import sys
import sysconfig
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalgate.suite.model import Case, GraderSpec

# Grader parameters that name a file the grader reads (relative to the suite's folder).
_FILE_PARAM_SUFFIX = "_file"


def _canonical(value: Any) -> Any:
    # YAML keys may mix types ({1: a, b: c}), which json's sort_keys cannot order.
    if isinstance(value, Mapping):
        return {f"{type(k).__name__}:{k}": _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _digest(parts: Iterable[Any]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        text = json.dumps(_canonical(part), sort_keys=True, default=str, ensure_ascii=False)
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    # Dataset rows often name the same schema file: read it once per version of the file.
    return _digest_of(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _python_source(function: str, base_dir: Path) -> str:
    """Digest of a ``python`` grader's code: its module and the project modules it uses.

    Editing a helper module that the grader's module imports (``import scoring`` or
    ``from scoring import rubric``) changes grades as surely as editing the grader, so the
    digest covers every module reachable through the grader module's globals whose file
    lies outside the standard library and installed packages ("" if not found). A constant
    imported by value (``from scoring import LIMIT``) is not traceable to its module.
    """
    from evalgate.graders.custom import ImportPathError, resolve

    try:
        fn = resolve(function, (str(base_dir.resolve()),))
    except ImportPathError:
        return ""
    target = inspect.unwrap(fn)
    module = inspect.getmodule(target)
    if module is None:
        try:
            source = inspect.getsourcefile(target) or inspect.getfile(target)
        except TypeError:  # a builtin or a callable instance without a file
            return ""
        return _file_digest(Path(source)) if source else ""
    files = _project_module_files(module.__name__)
    return _digest([[path, _file_digest(Path(path))] for path in sorted(files)])


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(str(Path(root).resolve()) + os.sep for root in roots)


@functools.lru_cache(maxsize=64)
def _project_module_files(start_name: str, limit: int = 200) -> frozenset[str]:
    """Files of a module and of the project (not installed) modules it reaches.

    Cached per module name: a process imports a module once, so what it reaches by its
    globals cannot change within a run (the files' contents are digested afresh).
    """
    start = sys.modules[start_name]
    installed = _installed_roots()
    evalgate_root = str(Path(__file__).resolve().parents[1]) + os.sep
    seen: set[str] = set()
    files: set[str] = set()
    pending = [start]
    while pending and len(files) < limit:
        module = pending.pop()
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        path = getattr(module, "__file__", None)
        if not path:
            continue
        resolved = str(Path(path).resolve())
        if resolved.startswith(installed) or resolved.startswith(evalgate_root):
            continue
        files.add(resolved)
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType):
                pending.append(value)
            else:
                owner = getattr(value, "__module__", None)
                if isinstance(owner, str) and owner in sys.modules:
                    pending.append(sys.modules[owner])
    return frozenset(files)


def _inputs(spec: GraderSpec, base_dir: Path) -> list[Any]:
    """The files and code a grader reads besides its parameters."""
    inputs: list[Any] = []
    for key, value in sorted(spec.params.items()):
        if key.endswith(_FILE_PARAM_SUFFIX) and isinstance(value, str):
            inputs.append([key, _file_digest(base_dir / value)])
    if spec.type.removeprefix("not-") == "python" and isinstance(spec.params.get("function"), str):
        inputs.append(["source", _python_source(spec.params["function"], base_dir)])
    return inputs


def fingerprint_graders(specs: Iterable[GraderSpec], extra: Any, base_dir: Path) -> str:
    """One hash of graders as written, the files and code they read, and ``extra``."""
    return _digest(
        [
            extra,
            *(
                [spec.type, dict(spec.params), spec.weight, _inputs(spec, base_dir)]
                for spec in specs
            ),
        ]
    )


def suite_hash_of(top: Mapping[str, Any], cases: Iterable[Case]) -> str:
    """The suite hash: the definition and every case (variables and grading hash)."""
    definition = {k: v for k, v in top.items() if k not in ("description", "dataset", "cases")}
    return _digest(
        [
            definition,
            *(
                [case.id, dict(case.vars), case.group, case.must_pass, case.grading_hash]
                # Traffic labels only when a case has any: older suites keep their hash.
                + (labels if any(labels := [case.cluster, case.tenant, case.near_miss]) else [])
                for case in cases
            ),
        ]
    )
