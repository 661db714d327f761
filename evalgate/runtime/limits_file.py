"""The policy file's optional ``limits`` section, validated into :class:`LimitRules`.

Shape (every part optional; ``"*"`` is every user or tenant the section does not name)::

    "limits": {
        "users": {"*": {"requests_per_minute": 60, "tokens_per_day": 200000,
                        "cost_per_day_usd": 2.0, "count_cache_hits": True},
                  "u42": {"cost_per_day_usd": 10.0}},
        "tenants": {"acme": {"cost_per_day_usd": 100.0}},
        "features": {"doc-qa": {"*": {"requests_per_minute": 10}}},
    }

Users the file does not name (and no ``"*"`` covers) can be given limits in code:
``LimitOptions(user_limits=...)``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection
from typing import Any

from evalgate.runtime.limits import METRICS, LimitRules, Limits

SECTIONS = ("users", "tenants", "features")
LIMIT_KEYS = (*METRICS, "count_cache_hits")

Fail = Callable[[str, str], Exception]


def _unknown(fail: Fail, key: str, name: Any, allowed: Collection[str]) -> Exception:
    close = difflib.get_close_matches(str(name), list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return fail(f"{key}.{name}", f"unknown key, expected one of {', '.join(allowed)}{hint}")


def _limits(fail: Fail, raw: Any, key: str) -> Limits:
    if not isinstance(raw, dict):
        raise fail(key, f"expected a dict of limits, found {raw!r}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in LIMIT_KEYS:
            raise _unknown(fail, key, name, LIMIT_KEYS)
        where = f"{key}.{name}"
        if name == "count_cache_hits":
            if not isinstance(value, bool):
                raise fail(where, f"expected True or False, found {value!r}")
        elif value is not None:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise fail(where, f"expected a finite number >= 0 or None, found {value!r}")
            if name != "cost_per_day_usd" and value != int(value):
                raise fail(where, f"expected a whole number, found {value!r}")
            value = float(value) if name == "cost_per_day_usd" else int(value)
        values[name] = value
    return Limits(**values)


def _named(fail: Fail, raw: Any, key: str) -> dict[str, Limits]:
    if not isinstance(raw, dict):
        raise fail(key, f"expected a dict of name -> limits, found {raw!r}")
    out = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not name:
            raise fail(key, f"names must be non-empty strings, found {name!r}")
        out[name] = _limits(fail, entry, f"{key}.{name}")
    return out


def parse_limits(raw: Any, fail: Fail, features: Collection[str]) -> LimitRules:
    """The ``limits`` section (None: no limits) as rules.

    Raises:
        what ``fail(key, message)`` builds (a PolicyError naming the file, line and key).
    """
    if raw is None:
        return LimitRules()
    if not isinstance(raw, dict):
        raise fail("limits", f"expected a dict, found {type(raw).__name__}")
    for name in raw:
        if name not in SECTIONS:
            raise _unknown(fail, "limits", name, SECTIONS)
    per_feature = raw.get("features", {})
    if not isinstance(per_feature, dict):
        raise fail("limits.features", f"expected a dict of feature -> users, found {per_feature!r}")
    for name in per_feature:
        if name not in features:
            raise _unknown(fail, "limits.features", name, sorted(features))
    return LimitRules(
        users=_named(fail, raw.get("users", {}), "limits.users"),
        tenants=_named(fail, raw.get("tenants", {}), "limits.tenants"),
        features={
            name: _named(fail, users, f"limits.features.{name}")
            for name, users in per_feature.items()
        },
    )
