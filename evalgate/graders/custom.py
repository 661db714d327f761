"""``python``: grade with a user function named by its dotted path.

```yaml
assert:
  - {type: python, function: mychecks.graders:is_polite}
  - {type: python, function: mychecks.graders.within_budget, args: {words: 50}}
```

The function is imported at collection, so a bad path fails collection with one readable
line. Exceptions raised by the function at grading time become a grader error naming the
case (the item fails and shows it); they never crash the run.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from evalgate.graders import deadline
from evalgate.graders.registry import Grade, grader, normalise
from evalgate.suite.errors import did_you_mean


class ImportPathError(ValueError):
    """A dotted path that does not lead to a callable."""


def _import_module(name: str, search: tuple[str, ...]) -> Any:
    """Imports ``name``; when its top-level package is not importable, retries with the
    folders in ``search`` (the suite's folder, the working directory) on ``sys.path``."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.split(".", 1)[0]
        if exc.name != top:
            raise
        added = [d for d in search if d not in sys.path]
        if not added:
            raise
        sys.path.extend(added)  # kept: the grader imports the same module when grading
        importlib.invalidate_caches()
        return importlib.import_module(name)


def resolve(path: str, search: tuple[str, ...] = ()) -> Callable[..., Any]:
    """The callable at ``package.module.func`` or ``package.module:func``.

    After a colon, the rest is an attribute path (``module:Class.method``). Without one,
    the longest importable module prefix is taken and the rest looked up on it.

    Raises:
        ImportPathError: with a one-line explanation of what was not found.
    """
    path = path.strip()
    if ":" in path:
        module_part, _, attr_part = path.partition(":")
        if not module_part or not attr_part or ":" in attr_part:
            raise ImportPathError(f"expected 'package.module:function', found {path!r}")
        candidates = [(module_part, attr_part.split("."))]
    else:
        parts = path.split(".")
        if len(parts) < 2 or not all(parts):
            raise ImportPathError(
                f"expected a dotted path 'package.module.function' or "
                f"'package.module:function', found {path!r}"
            )
        candidates = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    first_error: BaseException | None = None
    for module_name, attrs in candidates:
        try:
            module = _import_module(module_name, search)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (
                exc.name == module_name or module_name.startswith(exc.name + ".")
            ):
                first_error = first_error or exc
                continue  # a shorter prefix may be the module
            raise ImportPathError(
                f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
            ) from None
        except Exception as exc:  # the module itself fails to import (syntax, runtime)
            raise ImportPathError(
                f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
            ) from None
        target: Any = module
        where = module_name
        for attr in attrs:
            if not hasattr(target, attr):
                names = [n for n in dir(target) if not n.startswith("_")]
                raise ImportPathError(
                    f"{where!r} has no attribute {attr!r}" + did_you_mean(attr, names)
                )
            target = getattr(target, attr)
            where = f"{where}.{attr}"
        if not callable(target):
            raise ImportPathError(f"{path!r} is not callable (it is {type(target).__name__})")
        return target  # type: ignore[no-any-return]
    assert first_error is not None
    raise ImportPathError(f"cannot import {path!r}: {type(first_error).__name__}: {first_error}")


def _search_dirs(suite_dir: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((os.path.abspath(suite_dir), os.getcwd())))


def _validate(params: Mapping[str, Any], suite_dir: str) -> str | None:
    threshold = params.get("threshold", 1.0)
    if not 0 <= threshold <= 1:
        return f"threshold: expected a number in [0, 1], found {threshold!r}"
    try:
        fn = resolve(str(params.get("function", "")), _search_dirs(suite_dir))
    except ImportPathError as exc:
        return f"function: {exc}"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # builtins without a signature: trust them
    args = dict(params.get("args") or {})
    extra = {"call": None} if "call" in signature.parameters else {}
    try:
        signature.bind("output", "case", **args, **extra)
    except TypeError as exc:
        return (
            f"function: {params['function']!r} cannot be called as (output, case"
            + (", " + ", ".join(f"{k}=..." for k in args) if args else "")
            + f"): {exc}"
        )
    return None


@grader(
    "python",
    params={"function": str, "args": dict, "threshold": (int, float)},
    required=("function",),
    templated=(),
    validate=_validate,
)
def python(
    output: str,
    case: Any,
    function: str,
    args: Mapping[str, Any] | None = None,
    threshold: float = 1.0,
    *,
    call: Any = None,
) -> Grade:
    """Calls ``function(output, case, **args)`` and reads its verdict.

    Params:
        function: ``package.module.func`` or ``package.module:func`` (importable from
            ``sys.path``, the suite's folder or the working directory).
        args: extra keyword arguments for the function.
        threshold: the pass mark when the function returns a float score (default 1:
            only full marks pass, like the built-ins' partial credit).

    The function (``def`` or ``async def``) may return a bool, a score in [0, 1] or an
    :class:`evalgate.Grade` (numpy bools and numbers too); if
    it declares a ``call`` parameter it also gets the call's
    :class:`~evalgate.results.CallResult`. ``case`` is the :class:`~evalgate.suite.model.Case`
    (``case.id``, ``case.vars``).
    """
    fn = resolve(function, _search_dirs("."))
    kwargs = dict(args or {})
    try:
        wants_call = "call" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        wants_call = False
    if wants_call:
        kwargs["call"] = call
    result = fn(output, case, **kwargs)
    if inspect.isawaitable(result):
        # An `async def` grader: run it to completion on a loop of its own (graders run in
        # evalgate's grading threads, never on the engine's loop).
        result = deadline.run_coroutine(_awaited(result))
    return normalise(result, threshold=threshold, source=function)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
