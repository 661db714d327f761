"""YAML suite file -> validated, frozen :class:`Suite`, or one :class:`SuiteError`.

Validation happens here, once, at the edge; everything inward trusts the types. Each
error names ``file:line``, the key path, what was expected and what was found, and the
closest valid key when a key looks misspelt.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalgate.suite.errors import SuiteError, did_you_mean
from evalgate.suite.model import (
    TRANSPORTS,
    Case,
    Config,
    Derivation,
    Gate,
    GraderSpec,
    Message,
    Price,
    Slo,
    Suite,
    Tier,
    TrimSpec,
    frozen_mapping,
)
from evalgate.suite.yamlpos import Path_, Positions, dotted, load_with_positions

_SUITE_DECLARATION = re.compile(r"^suite\s*:", re.MULTILINE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Ids end up inside pytest node ids (`suite::case[config]`): no brackets or spaces, and a
# ':' never next to another one ('::' separates the parts of a node id).
_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.\-+/]|:(?!:))*$")
ID_RULE = "an id of letters, digits, '.', '_', '-', '+', '/' and single ':' (never '::')"
# The item name of repeat N is `case[config-rN]`: a config named like that is refused.
_REPEAT_SUFFIX = re.compile(r"^(?P<base>.+)-r(?P<n>[0-9]+)$")
# Cluster, tenant and near-miss labels: short printable text, no control characters or
# line breaks (C0, C1, U+2028/9), no blank edges (" acme" and "acme" would be two tenants
# shown alike). Patterns are applied with fullmatch: `$` alone also matches before a
# trailing newline, which a YAML block scalar adds.
_LABEL = re.compile(r"^(?!\s)[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,200}(?<!\s)$")
LABEL_RULE = "a label of 1 to 200 printable characters, not starting or ending with a space"
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TOP_KEYS = (
    "suite",
    "feature",
    "description",
    "tiers",
    "prompt",
    "dataset",
    "cases",
    "assert",
    "threshold",
    "defaults",
    "configs",
    "baseline",
    "gate",
    "trim",
    "vars",
)
TIER_KEYS = ("model", "price", "api_base", "api_key_env", "rpm", "tpm", "timeout_s", "transport")
PRICE_KEYS = ("input_per_mtok", "output_per_mtok")
CONFIG_KEYS = (
    "id",
    "tier",
    "context_trim",
    "max_tokens",
    "cache",
    "temperature",
    "stream",
    "repeats",
    "gate",
    "batch",
)
DERIVED_KEYS = ("id", "router", "cascade", "gate")
ROUTER_KEYS = ("small", "large", "max_loss", "alpha", "folds")
CASCADE_KEYS = ("first", "then", "accept")
CACHE_KEYS = ("mode",)
SEMANTIC_KEYS = ("mode", "max_wrong_hit", "alpha", "of", "folds", "lookup_ms")
# Cross-fitting folds of a router or semantic cache: more than this only shrinks each
# fold's calibration set and stores a threshold per fold in the report (folds: 100000
# loaded and wrote 100,000 of them).
MAX_FOLDS = 50
CACHE_MODES = ("off", "exact", "semantic")
# A semantic cache config's settings: those its measured twin must share.
TWIN_SETTINGS = ("tier", "context_trim", "max_tokens", "temperature", "stream", "repeats", "batch")
# The latency a semantic cache lookup is counted as adding (embedding included): the
# runtime's target (benchmarks/semantic_cache.py measures the real figure).
DEFAULT_LOOKUP_MS = 10.0
# Graders that call a model: too dear to decide a cascade's escalation.
MODEL_GRADERS = ("llm-judge",)
CASE_KEYS = ("id", "vars", "assert", "must_pass", "group", "cluster", "tenant", "near_miss")
# Traffic labels of a case (see Case): plain strings, read by semantic cache configs.
TRAFFIC_KEYS = ("cluster", "tenant", "near_miss")
DATASET_KEYS = ("path", "limit")
GATE_KEYS = ("margin", "alpha", "slo", "force")
SLO_KEYS = ("p95_latency_ms", "cost_per_case")
TRIM_KEYS = ("variable", "query")
MESSAGE_KEYS = ("role", "content")
ROLES = ("system", "user", "assistant")
# Columns of a dataset row that are not template variables.
ROW_RESERVED = ("id", "group", "must_pass", "assert", *TRAFFIC_KEYS)


def declares_suite(path: Path) -> bool:
    """True when a YAML file declares a suite (a top-level ``suite:`` key).

    A cheap text check, so collection never parses unrelated YAML (CI configs, k8s...).
    A byte-order mark is allowed, and a file that is not UTF-8 but declares a suite still
    counts (Latin-1 decodes any bytes), so :func:`load_suite` reports it as a collection
    error instead of the suite silently leaving the gate. An unreadable file counts too,
    for the same reason.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return True
    return bool(_SUITE_DECLARATION.search(head.removeprefix(codecs.BOM_UTF8).decode("latin-1")))


def read_text(path: Path, file: str) -> str:
    """A text file's content as UTF-8 (a leading BOM dropped), or a located SuiteError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(file, 1, "", f"cannot read file: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SuiteError(
            file,
            line,
            "",
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8",
        ) from None


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


class _Checker:
    """Type checks against one file's positions, raising located SuiteErrors."""

    def __init__(self, positions: Positions, base_dir: Path | None = None) -> None:
        self.pos = positions
        self.base_dir = base_dir  # the suite file's folder: relative paths start there

    def fail(self, path: Path_, message: str) -> SuiteError:
        return SuiteError(self.pos.file, self.pos.line(path), dotted(path), message)

    def mapping(
        self, value: Any, path: Path_, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, found {_kind(value)}")
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                raise self.fail(
                    (*path, str(key)),
                    f"unknown key, expected one of {', '.join(allowed)}; found {key!r}"
                    + did_you_mean(str(key), allowed),
                )
        for key in required:
            if key not in value:
                raise self.fail(path, f"missing required key {key!r}")
        return value

    def string(
        self,
        value: Any,
        path: Path_,
        pattern: re.Pattern[str] | None = None,
        what: str = "a string",
    ) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(path, f"expected {what}, found {_kind(value)}")
        text = str(value)
        if pattern is not None and not pattern.fullmatch(text):
            raise self.fail(path, f"expected {what}, found {text!r}")
        return text

    def number(
        self,
        value: Any,
        path: Path_,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, found {_kind(value)}")
        if not math.isfinite(value):  # NaN passes every comparison below as False
            raise self.fail(path, f"expected a finite number, found {value!r}")
        bad_low = low is not None and (value <= low if low_open else value < low)
        if bad_low or (high is not None and value > high):
            lo = "(" if low_open else "["
            raise self.fail(path, f"expected a number in {lo}{low}, {high}], found {value!r}")
        return float(value)

    def integer(self, value: Any, path: Path_, *, low: int = 0, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, found {_kind(value)}")
        if value < low or (high is not None and value > high):
            wanted = f">= {low}" if high is None else f"from {low} to {high}"
            raise self.fail(path, f"expected an integer {wanted}, found {value}")
        return value

    def boolean(self, value: Any, path: Path_) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, found {_kind(value)}")
        return value

    def sequence(self, value: Any, path: Path_, *, non_empty: bool = True) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, found {_kind(value)}")
        if non_empty and not value:
            raise self.fail(path, "expected a non-empty list, found []")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) < 40 else "a string"
    return f"{type(value).__name__} ({value!r})"


def load_suite(path: Path) -> Suite:
    """Loads and validates one suite file.

    Raises:
        SuiteError: the first problem found, located to a file and line.
    """
    file = _display(path)
    text = read_text(path, file)
    raw, positions = load_with_positions(text, file)
    check = _Checker(positions, path.parent)
    top = check.mapping(raw, (), TOP_KEYS, required=("suite", "tiers", "prompt", "configs"))

    name = check.string(top["suite"], ("suite",), _NAME, "a name of letters, digits, '.', '_', '-'")
    feature = check.string(top.get("feature", name), ("feature",), _NAME, "a feature name")
    description = check.string(top.get("description", ""), ("description",))
    tiers = _tiers(check, top["tiers"])
    prompt = _prompt(check, top["prompt"])
    graders = _graders(check, top.get("assert", []), ("assert",))
    threshold = None
    if top.get("threshold") is not None:
        threshold = check.number(top["threshold"], ("threshold",), low=0, high=1)
    gate = _gate(check, top.get("gate", {}))
    trim = _trim(check, top.get("trim", {}))
    configs = _configs(check, top, tiers)
    baseline = configs[0].id
    if "baseline" in top:
        baseline = check.string(top["baseline"], ("baseline",))
        ids = [c.id for c in configs]
        if baseline not in ids:
            raise check.fail(
                ("baseline",),
                f"expected the id of a config ({', '.join(ids)}), found {baseline!r}"
                + did_you_mean(baseline, ids),
            )
    if next(c for c in configs if c.id == baseline).derived is not None:
        raise check.fail(
            ("baseline",) if "baseline" in top else ("configs", 0),
            f"the baseline {baseline!r} is a derived (routed, cascade or semantic cache) "
            "config; the baseline must be "
            "measured (name one with `baseline:`)",
        )

    defaults = _variables(check, top.get("vars", {}), ("vars",))
    cases: list[Case] = []
    if "dataset" in top:
        cases.extend(_dataset(check, top["dataset"], path.parent))
    for index, entry in enumerate(
        check.sequence(top.get("cases", []), ("cases",), non_empty=False)
    ):
        cases.append(_inline_case(check, entry, ("cases", index)))
    if not cases:
        raise check.fail((), "the suite has no cases: add `cases:` or `dataset:`")
    _check_unique([c.id for c in cases], [c.source for c in cases], "case id")
    if defaults:
        cases = [_with_defaults(case, defaults) for case in cases]

    _check_variables(check, prompt, graders, cases, configs, trim)
    _check_semantic_graders(check, configs, graders, cases)
    from evalgate.suite.fingerprint import fingerprint_graders, suite_hash_of

    suite_graders = fingerprint_graders(graders, threshold, path.parent)
    cases = [
        replace(
            case,
            grading_hash=fingerprint_graders(
                case.graders, [suite_graders, case.must_pass], path.parent
            ),
        )
        for case in cases
    ]
    suite_hash = suite_hash_of(top, cases)
    return Suite(
        name=name,
        feature=feature,
        path=file,
        tiers=frozen_mapping(tiers),
        prompt=prompt,
        cases=tuple(cases),
        graders=graders,
        configs=configs,
        baseline=baseline,
        threshold=threshold,
        gate=gate,
        trim=trim,
        description=description,
        suite_hash=suite_hash,
    )


def _tiers(check: _Checker, raw: Any) -> dict[str, Tier]:
    if not isinstance(raw, dict) or not raw:
        raise check.fail(("tiers",), f"expected a mapping of tier names, found {_kind(raw)}")
    tiers: dict[str, Tier] = {}
    for tier_name, spec in raw.items():
        path: Path_ = ("tiers", str(tier_name))
        check.string(tier_name, path, _NAME, "a tier name")
        if isinstance(spec, str):  # shorthand: `small: openai/gpt-4o-mini`
            spec = {"model": spec}
        spec = check.mapping(spec, path, TIER_KEYS, required=("model",))
        price = None
        if spec.get("price") is not None:
            p = check.mapping(spec["price"], (*path, "price"), PRICE_KEYS, required=PRICE_KEYS)
            price = Price(
                check.number(p["input_per_mtok"], (*path, "price", "input_per_mtok"), low=0),
                check.number(p["output_per_mtok"], (*path, "price", "output_per_mtok"), low=0),
            )
        key_env = spec.get("api_key_env")
        if key_env is not None:
            key_env = check.string(
                key_env,
                (*path, "api_key_env"),
                _ENV_VAR,
                "the NAME of an environment variable (never the key itself)",
            )
        transport = spec.get("transport", "auto")
        if transport not in TRANSPORTS:
            raise check.fail(
                (*path, "transport"),
                f"expected one of {', '.join(TRANSPORTS)}, found {transport!r}"
                + did_you_mean(str(transport), TRANSPORTS),
            )
        tiers[str(tier_name)] = Tier(
            name=str(tier_name),
            model=check.string(spec["model"], (*path, "model"), what="a litellm model string"),
            price=price,
            api_base=check.string(spec["api_base"], (*path, "api_base"))
            if spec.get("api_base")
            else None,
            api_key_env=key_env,
            rpm=check.integer(spec["rpm"], (*path, "rpm"), low=1) if "rpm" in spec else None,
            tpm=check.integer(spec["tpm"], (*path, "tpm"), low=1) if "tpm" in spec else None,
            timeout_s=check.number(
                spec.get("timeout_s", 120.0), (*path, "timeout_s"), low=0, low_open=True
            ),
            transport=transport,
        )
    return tiers


def _prompt(check: _Checker, raw: Any) -> tuple[Message, ...]:
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    messages = []
    for index, entry in enumerate(check.sequence(raw, ("prompt",))):
        path: Path_ = ("prompt", index)
        entry = check.mapping(entry, path, MESSAGE_KEYS, required=MESSAGE_KEYS)
        role = check.string(entry["role"], (*path, "role"))
        if role not in ROLES:
            raise check.fail(
                (*path, "role"),
                f"expected one of {', '.join(ROLES)}, found {role!r}" + did_you_mean(role, ROLES),
            )
        content = check.string(entry["content"], (*path, "content"))
        _syntax_check(check, content, (*path, "content"))
        messages.append(Message(role, content))
    return tuple(messages)


def _syntax_check(check: _Checker, template: str, path: Path_) -> None:
    from evalgate.suite.templates import variables_used

    try:
        variables_used(template)
    except Exception as exc:  # jinja2.TemplateSyntaxError, imported lazily
        raise check.fail(path, f"invalid template: {exc}") from None


def _graders(check: _Checker, raw: Any, path: Path_) -> tuple[GraderSpec, ...]:
    from evalgate.graders.registry import known_names, lookup

    specs = []
    for index, entry in enumerate(check.sequence(raw, path, non_empty=False)):
        here: Path_ = (*path, index)
        if not isinstance(entry, dict) or "type" not in entry:
            raise check.fail(here, f"expected a grader mapping with a 'type', found {_kind(entry)}")
        type_name = check.string(entry["type"], (*here, "type"))
        found = lookup(type_name)
        if found is None:
            names = known_names()
            raise check.fail(
                (*here, "type"),
                f"unknown grader {type_name!r}; known graders: "
                f"{', '.join(names)}" + did_you_mean(type_name, names),
            )
        definition, _ = found
        allowed = ("type", "weight", *definition.params)
        check.mapping(entry, here, allowed, required=("type", *sorted(definition.required)))
        params = {}
        for key, value in entry.items():
            if key in ("type", "weight"):
                continue
            expected = definition.params[key]
            kinds = expected if isinstance(expected, tuple) else (expected,)
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                type_names = " or ".join(k.__name__ for k in kinds)
                raise check.fail((*here, key), f"expected {type_names}, found {_kind(value)}")
            bad = _non_finite(value)
            if bad is not None:
                raise check.fail((*here, key), f"expected finite numbers, found {bad!r}")
            if key in definition.templated:
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str):
                        _syntax_check(check, text, (*here, key))
            params[key] = value
        if definition.validate is not None:
            problem = definition.validate(params, str(check.base_dir or "."))
            if problem:
                raise check.fail(here, problem)
        weight = check.number(entry.get("weight", 1.0), (*here, "weight"), low=0)
        specs.append(GraderSpec(type_name, frozen_mapping(params), weight, check.pos.line(here)))
    return tuple(specs)


def _non_finite(value: Any) -> float | None:
    """A NaN or infinity anywhere in a parameter value (lists and mappings included)."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict | list):
        for child in children:
            found = _non_finite(child)
            if found is not None:
                return found
    return None


def _gate(check: _Checker, raw: Any) -> Gate:
    raw = check.mapping(raw, ("gate",), GATE_KEYS)
    slo_raw = check.mapping(raw.get("slo", {}), ("gate", "slo"), SLO_KEYS)
    slo = Slo(
        **{
            key: check.number(value, ("gate", "slo", key), low=0, low_open=True)
            for key, value in slo_raw.items()
        }
    )
    return Gate(
        slo=slo,
        force=check.boolean(raw.get("force", False), ("gate", "force")),
        margin=check.number(
            raw.get("margin", 0.05), ("gate", "margin"), low=0, high=1, low_open=True
        ),
        alpha=check.number(
            raw.get("alpha", 0.05), ("gate", "alpha"), low=0, high=0.5, low_open=True
        ),
    )


def _trim(check: _Checker, raw: Any) -> TrimSpec:
    raw = check.mapping(raw, ("trim",), TRIM_KEYS)
    spec = TrimSpec(
        variable=check.string(raw.get("variable", "context"), ("trim", "variable")),
        query=check.string(raw.get("query", "question"), ("trim", "query")),
    )
    if spec.variable == spec.query:
        raise check.fail(
            ("trim", "query"),
            f"expected a variable other than the trimmed one ({spec.variable!r}): the "
            "question would be trimmed away with the context",
        )
    return spec


_CONFIG_FIELDS: dict[str, Callable[[_Checker, Any, Path_], Any]] = {
    "tier": lambda c, v, p: c.string(v, p),
    "context_trim": lambda c, v, p: c.number(v, p, low=0, high=1, low_open=True),
    "max_tokens": lambda c, v, p: c.integer(v, p, low=1),
    "cache": lambda c, v, p: _cache_flag(c, v, p),
    "temperature": lambda c, v, p: c.number(v, p, low=0, high=2),
    "stream": lambda c, v, p: c.boolean(v, p),
    "repeats": lambda c, v, p: c.integer(v, p, low=1),
    "gate": lambda c, v, p: c.boolean(v, p),
    "batch": lambda c, v, p: c.boolean(v, p),
}


def _is_semantic(entry: Any) -> bool:
    cache = entry.get("cache") if isinstance(entry, dict) else None
    return isinstance(cache, dict) and cache.get("mode") == "semantic"


def _cache_flag(check: _Checker, value: Any, path: Path_) -> bool:
    """``cache: true/false`` or ``cache: {mode: exact|off}``: the response cache on or off.

    ``{mode: semantic, ...}`` makes a derived config (see :func:`_semantic_config`); it
    never reaches here from a config, only from ``defaults``, where it is refused.
    """
    if not isinstance(value, dict):
        return check.boolean(value, path)
    value = check.mapping(value, path, SEMANTIC_KEYS, required=CACHE_KEYS)
    # YAML 1.1 reads a bare `off` as false.
    mode = "off" if value["mode"] is False else value["mode"]
    if mode not in CACHE_MODES:
        raise check.fail(
            (*path, "mode"),
            f"expected one of {', '.join(CACHE_MODES)}, found {mode!r}"
            + did_you_mean(str(mode), CACHE_MODES),
        )
    if mode == "semantic":
        raise check.fail(
            (*path, "mode"),
            "a semantic cache is a config of its own (it is composed from a measured twin), "
            "so it cannot be a default: set it on one config",
        )
    extra = [k for k in value if k != "mode"]
    if extra:
        raise check.fail((*path, extra[0]), f"only a semantic cache takes {extra[0]!r}")
    return mode == "exact"


def _check_batch(check: _Checker, tier: Tier, where: Path_) -> None:
    from evalgate.engine.batch import batch_unsupported

    reason = batch_unsupported(tier.model, tier.api_base, tier.transport)
    if reason is not None:
        raise check.fail(where, reason)


def _configs(
    check: _Checker, top: Mapping[str, Any], tiers: Mapping[str, Tier]
) -> tuple[Config, ...]:
    defaults_allowed = tuple(k for k in CONFIG_KEYS if k != "id")
    defaults = check.mapping(top.get("defaults", {}), ("defaults",), defaults_allowed)
    checked_defaults = {
        k: _CONFIG_FIELDS[k](check, v, ("defaults", k)) for k, v in defaults.items()
    }
    configs: list[Config] = []
    deferred: list[tuple[int, Any]] = []  # derived configs name others: resolved after
    for index, entry in enumerate(check.sequence(top["configs"], ("configs",))):
        path: Path_ = ("configs", index)
        if isinstance(entry, dict) and ("router" in entry or "cascade" in entry):
            deferred.append((index, entry))
            continue
        if _is_semantic(entry):
            deferred.append((index, entry))
            continue
        entry = check.mapping(entry, path, CONFIG_KEYS, required=("id",))
        values = dict(checked_defaults)
        for key, value in entry.items():
            if key != "id":
                values[key] = _CONFIG_FIELDS[key](check, value, (*path, key))
        if "tier" not in values:
            raise check.fail(path, "missing required key 'tier' (in the config or defaults)")
        if values["tier"] not in tiers:
            where = (*path, "tier") if "tier" in entry else ("defaults", "tier")
            raise check.fail(
                where,
                f"expected one of the tiers {', '.join(tiers)}, found "
                f"{values['tier']!r}" + did_you_mean(values["tier"], tiers),
            )
        config_id = check.string(entry["id"], (*path, "id"), _ID, ID_RULE)
        if values.get("batch"):
            _check_batch(
                check,
                tiers[values["tier"]],
                (*path, "batch") if "batch" in entry else ("defaults", "batch"),
            )
        configs.append(Config(id=config_id, **values))
    if not configs:
        raise check.fail(("configs",), "no measured config: routed and cascade configs need two")
    measured = {c.id: c for c in configs}
    positions = [i for i in range(len(configs) + len(deferred)) if i not in dict(deferred)]
    for index, entry in deferred:
        if _is_semantic(entry):
            made = _semantic_config(check, entry, ("configs", index), measured, checked_defaults)
        else:
            made = _derived_config(check, entry, ("configs", index), measured)
        configs.append(made)
        positions.append(index)
    _check_unique(
        [c.id for c in configs],
        [f"{check.pos.file}:{check.pos.line(('configs', i, 'id'))}" for i in positions],
        "config id",
    )
    # File order, derived configs where they were written.
    configs = [c for _, c in sorted(zip(positions, configs, strict=True), key=lambda p: p[0])]
    ids = {c.id for c in configs}
    for index, config in enumerate(configs):
        # `a` with repeats names its items `case[a-r1]`...: a config `a-r1` would share them.
        match = _REPEAT_SUFFIX.match(config.id)
        if match and match["base"] in ids:
            raise check.fail(
                ("configs", index, "id"),
                f"config id {config.id!r} reads as repeat {match['n']} of config "
                f"{match['base']!r} (items of repeated configs are named "
                f"'case[{match['base']}-rN]'); rename it",
            )
    return tuple(configs)


def _derived_config(
    check: _Checker, entry: dict[str, Any], path: Path_, measured: Mapping[str, Config]
) -> Config:
    """A routed (``router:``) or cascade (``cascade:``) config, checked against the others."""
    entry = check.mapping(entry, path, DERIVED_KEYS, required=("id",))
    config_id = check.string(entry["id"], (*path, "id"), _ID, ID_RULE)
    if "router" in entry and "cascade" in entry:
        raise check.fail((*path, "cascade"), "a config is a `router:` or a `cascade:`, not both")

    def base(key_path: Path_, value: Any) -> Config:
        name = check.string(value, key_path)
        if name not in measured:
            raise check.fail(
                key_path,
                f"expected the id of a measured config ({', '.join(measured)}), found "
                f"{name!r}" + did_you_mean(name, list(measured)),
            )
        return measured[name]

    if "router" in entry:
        here: Path_ = (*path, "router")
        raw = check.mapping(entry["router"], here, ROUTER_KEYS, required=ROUTER_KEYS[:4])
        small = base((*here, "small"), raw["small"])
        large = base((*here, "large"), raw["large"])
        derivation = Derivation(
            "router",
            small.id,
            large.id,
            max_loss=check.number(
                raw["max_loss"], (*here, "max_loss"), low=0, high=0.5, low_open=True
            ),
            alpha=check.number(raw["alpha"], (*here, "alpha"), low=0, high=0.5, low_open=True),
            folds=check.integer(raw.get("folds", 5), (*here, "folds"), low=2, high=MAX_FOLDS),
        )
    else:
        here = (*path, "cascade")
        raw = check.mapping(entry["cascade"], here, CASCADE_KEYS, required=CASCADE_KEYS)
        small = base((*here, "first"), raw["first"])
        large = base((*here, "then"), raw["then"])
        accept = _graders(check, raw["accept"], (*here, "accept"))
        if not accept:
            raise check.fail((*here, "accept"), "expected at least one check of the first answer")
        for index, spec in enumerate(accept):
            if spec.type.removeprefix("not-") in MODEL_GRADERS:
                raise check.fail(
                    (*here, "accept", index, "type"),
                    f"{spec.type!r} calls a model; a cascade's checks must be cheap (json-valid, "
                    "json-schema, regex, contains, a length bound, python)",
                )
        derivation = Derivation("cascade", small.id, large.id, accept=accept)
    if small.id == large.id:
        raise check.fail(here, f"the two configs must differ, both are {small.id!r}")
    keys = ("small", "large") if "router" in entry else ("first", "then")
    for side, key in zip((small, large), keys, strict=True):
        if side.batch:
            raise check.fail(
                (*here, key),
                f"{side.id!r} is a batch config (answers within 24 h); a routed or cascade "
                "config answers each request live: name configs without `batch: true`",
            )
    if small.repeats != large.repeats:
        raise check.fail(
            here,
            f"{small.id!r} has {small.repeats} repeat(s) and {large.id!r} {large.repeats}: "
            "a derived config pairs them case by case and repeat by repeat",
        )
    gate = check.boolean(entry.get("gate", False), (*path, "gate"))
    return replace(large, id=config_id, gate=gate, derived=derivation)


def _semantic_config(
    check: _Checker,
    entry: dict[str, Any],
    path: Path_,
    measured: Mapping[str, Config],
    defaults: Mapping[str, Any],
) -> Config:
    """A semantic cache config: its twin (the measured config it caches, named by
    ``cache.of`` or implied by equal settings) replayed as traffic through the cache."""
    entry = check.mapping(entry, path, CONFIG_KEYS, required=("id",))
    config_id = check.string(entry["id"], (*path, "id"), _ID, ID_RULE)
    here: Path_ = (*path, "cache")
    raw = check.mapping(
        entry["cache"], here, SEMANTIC_KEYS, required=("mode", "max_wrong_hit", "alpha")
    )
    values = dict(defaults)
    for key, value in entry.items():
        if key not in ("id", "cache", "gate"):
            values[key] = _CONFIG_FIELDS[key](check, value, (*path, key))
    shown = {k: values[k] for k in TWIN_SETTINGS if k in values}
    if "of" in raw:
        name = check.string(raw["of"], (*here, "of"))
        if name not in measured:
            raise check.fail(
                (*here, "of"),
                f"expected the id of a measured config ({', '.join(measured)}), found "
                f"{name!r}" + did_you_mean(name, list(measured)),
            )
        twin = measured[name]
        for key in entry:
            if key in TWIN_SETTINGS and getattr(twin, key) != values[key]:
                raise check.fail(
                    (*path, key),
                    f"the cache replays {name!r}, whose {key} is {getattr(twin, key)!r}, "
                    f"found {values[key]!r}; drop the key or name another config",
                )
    else:
        same = [
            c
            for c in measured.values()
            if all(getattr(c, k) == v for k, v in shown.items()) and "tier" in shown
        ]
        if len(same) > 1:
            same = [c for c in same if not c.cache] or same
        if len(same) != 1:
            settings = ", ".join(f"{k}={v!r}" for k, v in shown.items()) or "no settings"
            found = (
                f"several ({', '.join(c.id for c in same)})" if same else f"none with {settings}"
            )
            raise check.fail(
                here,
                "a semantic cache replays the results of a measured config with the same "
                f"settings (its twin), found {found}; name it with `of:`",
            )
        twin = same[0]
    if twin.batch:
        # The runtime's semantic cache sits in front of live calls; batch requests never
        # reach it, so a cache composed over batch answers has no policy to become.
        raise check.fail(
            (*here, "of") if "of" in raw else here,
            f"{twin.id!r} is a batch config (answers within 24 h); a semantic cache serves "
            "live requests: name a config without `batch: true`",
        )
    max_wrong_hit = check.number(
        raw["max_wrong_hit"], (*here, "max_wrong_hit"), low=0, high=0.5, low_open=True
    )
    derivation = Derivation(
        "semantic",
        twin.id,
        twin.id,
        alpha=check.number(raw["alpha"], (*here, "alpha"), low=0, high=0.5, low_open=True),
        folds=check.integer(raw.get("folds", 5), (*here, "folds"), low=2, high=MAX_FOLDS),
        max_wrong_hit=max_wrong_hit,
        lookup_ms=check.number(
            raw.get("lookup_ms", DEFAULT_LOOKUP_MS), (*here, "lookup_ms"), low=0
        ),
    )
    gate = check.boolean(entry.get("gate", False), (*path, "gate"))
    return replace(twin, id=config_id, gate=gate, derived=derivation)


def _check_semantic_graders(
    check: _Checker, configs: tuple[Config, ...], graders: tuple[GraderSpec, ...], cases: list[Case]
) -> None:
    """A semantic cache grades a served answer against the new request's graders, offline
    and without model calls: graders that call a model (or are async) cannot do that."""
    from evalgate.graders.registry import lookup

    index = next((i for i, c in enumerate(configs) if _kind_of(c) == "semantic"), None)
    if index is None:
        return
    for where, specs in [("the suite's assert", graders)] + [
        (f"case {case.id!r} ({case.source})", case.graders) for case in cases
    ]:
        for spec in specs:
            found = lookup(spec.type)
            if spec.type.removeprefix("not-") in MODEL_GRADERS or (found and found[0].is_async):
                raise check.fail(
                    ("configs", index, "cache", "mode"),
                    f"a semantic cache regrades served answers offline, but {where} uses "
                    f"{spec.type!r}, which calls a model; grade this suite with checks that "
                    "do not (contains, regex, numeric, semantic, python, ...)",
                )


def _kind_of(config: Config) -> str | None:
    return None if config.derived is None else config.derived.kind


def _check_unique(ids: list[str], sources: list[str], what: str) -> None:
    seen: dict[str, str] = {}
    for ident, source in zip(ids, sources, strict=True):
        if ident in seen:
            file, _, line = source.rpartition(":")
            raise SuiteError(
                file,
                int(line or 1),
                "id",
                f"duplicate {what} {ident!r} (first defined at {seen[ident]})",
            )
        seen[ident] = source


def _variables(check: _Checker, raw: Any, path: Path_) -> dict[str, Any]:
    """A mapping of template variable names to values."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise check.fail(path, f"expected a mapping of variable names, found {_kind(raw)}")
    for key in raw:
        if not isinstance(key, str) or not _VAR_NAME.fullmatch(key):
            raise check.fail(
                (*path, str(key)),
                f"expected a variable name (letters, digits, '_'), found {key!r}",
            )
    return dict(raw)


def _with_defaults(case: Case, defaults: Mapping[str, Any]) -> Case:
    """The suite's `vars:` under the case's own: a missing or null value takes the default."""
    merged = dict(defaults)
    merged.update({k: v for k, v in case.vars.items() if v is not None or k not in defaults})
    return replace(case, vars=frozen_mapping(merged))


def _inline_case(check: _Checker, entry: Any, path: Path_) -> Case:
    entry = check.mapping(entry, path, CASE_KEYS, required=("id",))
    variables = _variables(check, entry.get("vars", {}), (*path, "vars"))
    return Case(
        id=check.string(entry["id"], (*path, "id"), _ID, ID_RULE),
        vars=frozen_mapping(variables),
        graders=_graders(check, entry.get("assert", []), (*path, "assert")),
        must_pass=check.boolean(entry.get("must_pass", False), (*path, "must_pass")),
        group=check.string(entry["group"], (*path, "group"))
        if entry.get("group") is not None
        else None,
        source=f"{check.pos.file}:{check.pos.line(path)}",
        **{
            key: check.string(entry[key], (*path, key), _LABEL, LABEL_RULE)
            for key in TRAFFIC_KEYS
            if entry.get(key) is not None
        },
    )


def _dataset(check: _Checker, raw: Any, base: Path) -> list[Case]:
    where: Path_ = ("dataset",)
    if isinstance(raw, str):
        raw = {"path": raw}
    else:
        where = ("dataset", "path")
    raw = check.mapping(raw, ("dataset",), DATASET_KEYS, required=("path",))
    rel = check.string(raw["path"], where)
    limit = check.integer(raw["limit"], ("dataset", "limit"), low=1) if "limit" in raw else None
    data_path = (base / rel).resolve()
    if not data_path.is_file():
        raise check.fail(
            where, f"expected an existing JSONL or CSV file, found no file at {_display(data_path)}"
        )
    suffix = data_path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise check.fail(where, f"expected a .jsonl or .csv file, found {data_path.name!r}")
    file = _display(data_path)
    rows = _jsonl_rows(data_path, file) if suffix == ".jsonl" else _csv_rows(data_path, file)
    cases: list[Case] = []
    for line, row in rows:
        if limit is not None and len(cases) >= limit:
            break
        cases.append(_row_case(row, file, line, base))
    return cases


def _jsonl_rows(path: Path, file: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for line_no, line in enumerate(read_text(path, file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SuiteError(file, line_no, "", f"invalid JSON: {exc}") from None
        except RecursionError:
            raise SuiteError(file, line_no, "", "invalid JSON: nested too deeply") from None
        if not isinstance(row, dict):
            raise SuiteError(
                file, line_no, "", f"expected a JSON object per line, found {_kind(row)}"
            )
        rows.append((line_no, row))
    return rows


# Long-context datasets hold fields far over csv's default limit of 131,072 characters.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def _csv_rows(path: Path, file: str) -> list[tuple[int, dict[str, Any]]]:
    import io

    text = read_text(path, file)
    previous = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = reader.fieldnames or []
        if "assert" in fields:
            raise SuiteError(
                file,
                1,
                "assert",
                "per-case graders need a JSONL dataset; a CSV column cannot hold a list of graders",
            )
        rows = []
        start = 2
        for row in reader:
            line = start
            start = reader.line_num + 1
            if None in row:  # DictReader files surplus fields under the key None
                raise SuiteError(
                    file,
                    line,
                    "",
                    f"row has {len(fields) + len(row[None])} fields, the header has "
                    f"{len(fields)} ({', '.join(fields)})",
                )
            rows.append((line, dict(row)))
        return rows
    except csv.Error as exc:
        raise SuiteError(file, reader.line_num or 1, "", f"invalid CSV: {exc}") from None
    finally:
        csv.field_size_limit(previous)


def _row_case(row: dict[str, Any], file: str, line: int, suite_dir: Path) -> Case:
    def fail(key: str, message: str) -> SuiteError:
        return SuiteError(file, line, key, message)

    if row.get("id") in (None, ""):
        raise fail("id", "missing required key 'id' (every case needs a stable id)")
    case_id = str(row["id"])
    if (
        isinstance(row["id"], bool)
        or not isinstance(row["id"], str | int)
        or not _ID.fullmatch(case_id)
    ):
        raise fail("id", f"expected {ID_RULE}, found {case_id!r}")
    must_pass = row.get("must_pass", False)
    if isinstance(must_pass, str):  # CSV cells are strings
        must_pass = must_pass.strip().lower() in ("1", "true", "yes", "y")
    if not isinstance(must_pass, bool):
        raise fail("must_pass", f"expected true or false, found {_kind(must_pass)}")
    graders: tuple[GraderSpec, ...] = ()
    if "assert" in row:
        positions = Positions(file)
        positions.set((), line)
        graders = _graders(_Checker(positions, suite_dir), row["assert"], ("assert",))
    group = row.get("group")
    labels = {}
    for key in TRAFFIC_KEYS:
        value = row.get(key)
        if value in (None, ""):
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, str | int)
            or not _LABEL.fullmatch(str(value))
        ):
            raise fail(key, f"expected {LABEL_RULE}, found {_kind(value)}")
        labels[key] = str(value)
    for key in row:
        if key not in ROW_RESERVED and not _VAR_NAME.fullmatch(key):
            raise fail(key, f"expected a variable name (letters, digits, '_'), found {key!r}")
    return Case(
        id=case_id,
        vars=frozen_mapping({k: v for k, v in row.items() if k not in ROW_RESERVED}),
        graders=graders,
        must_pass=must_pass,
        group=str(group) if group not in (None, "") else None,
        source=f"{file}:{line}",
        **labels,
    )


def _check_variables(
    check: _Checker,
    prompt: tuple[Message, ...],
    graders: tuple[GraderSpec, ...],
    cases: list[Case],
    configs: tuple[Config, ...],
    trim: TrimSpec,
) -> None:
    """Every variable a template reads must be defined, and not null, by every case."""
    from evalgate.graders.registry import lookup
    from evalgate.suite.templates import variables_used

    def grader_vars(specs: tuple[GraderSpec, ...]) -> set[str]:
        used: set[str] = set()
        for spec in specs:
            found = lookup(spec.type)
            templated = found[0].templated if found else frozenset()
            for key, value in spec.params.items():
                if key in templated:
                    for text in value if isinstance(value, list) else [value]:
                        if isinstance(text, str):
                            used |= variables_used(text)
        return used

    prompt_vars: set[str] = set()
    for message in prompt:
        prompt_vars |= variables_used(message.content)
    shared = prompt_vars | grader_vars(graders)
    trimming = any(c.context_trim < 1 for c in configs)
    if trimming and trim.variable not in prompt_vars:
        index = next(i for i, c in enumerate(configs) if c.context_trim < 1)
        raise check.fail(
            ("configs", index, "context_trim"),
            f"context_trim needs the prompt to use the variable "
            f"{trim.variable!r} (set `trim.variable` to the one to shorten)",
        )
    for case in cases:
        file, _, line = case.source.rpartition(":")

        def fail(message: str, case: Case = case, file: str = file, line: str = line) -> SuiteError:
            return SuiteError(file, int(line), f"case {case.id!r}", message)

        needed = shared | grader_vars(case.graders)
        if trimming:
            needed |= {trim.variable, trim.query}
        missing = sorted(needed - set(case.vars))
        if missing:
            have = ", ".join(sorted(case.vars)) or "none"
            raise fail(
                f"templates use undefined variable {missing[0]!r}; the case defines: {have}"
                + did_you_mean(missing[0], case.vars)
            )
        nulls = sorted(k for k in needed if case.vars[k] is None)
        if nulls:
            # A JSON null or a short CSV row would render as the text "None".
            raise fail(
                f"variable {nulls[0]!r} has no value (null, or missing from the row); give "
                f"it one, or declare a default under the suite's `vars:`"
            )
        if trimming:
            context = case.vars[trim.variable]
            if not isinstance(context, str) and not (
                isinstance(context, list) and all(isinstance(p, str) for p in context)
            ):
                raise fail(
                    f"context_trim shortens {trim.variable!r}, which must be text or a list "
                    f"of texts; found {_kind(context)}"
                )
