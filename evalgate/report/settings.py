"""A suite's settings as stored in evalgate.json: what each config ran with.

The report, ``evalgate html`` and ``evalgate export`` work from stored results alone, so
evalgate.json records every config's settings (tier, model, endpoint, trim, output cap,
sampling, streaming, cache) once per suite. Keys and key variable names are recorded,
never key values.
"""

from __future__ import annotations

from typing import Any

from evalgate.suite.model import Derivation, Price, Suite

SETTINGS_VERSION = 1


def _price(price: Price | None) -> dict[str, float] | None:
    if price is None:
        return None
    return {"input_per_mtok": price.input_per_mtok, "output_per_mtok": price.output_per_mtok}


def _derived_settings(d: Derivation) -> dict[str, Any]:
    if d.kind == "router":
        return {"max_loss": d.max_loss, "alpha": d.alpha, "folds": d.folds}
    if d.kind == "semantic":
        return {
            "max_wrong_hit": d.max_wrong_hit,
            "alpha": d.alpha,
            "folds": d.folds,
            "lookup_ms": d.lookup_ms,
        }
    return {"accept": [{"type": g.type, **g.params} for g in d.accept]}


def suite_settings(suite: Suite) -> dict[str, Any]:
    """The ``settings`` section of one suite in evalgate.json (JSON-safe builtins only).

    Shape::

        {"version": 1, "path": "suites/qa.yaml", "suite_hash": "...",
         "trim": {"variable": "context", "query": "question"},
         "gate": {"margin": 0.05, "alpha": 0.05},
         "tiers": {name: {"model", "api_base", "api_key_env", "price", "timeout_s"}},
         "configs": {id: {"tier", "model", "api_base", "price", "context_trim",
                          "max_tokens", "temperature", "stream", "cache", "repeats",
                          "gate"}}}
    """
    tiers = {
        name: {
            "model": tier.model,
            "api_base": tier.api_base,
            "api_key_env": tier.api_key_env,
            "price": _price(tier.price),
            "timeout_s": tier.timeout_s,
        }
        for name, tier in suite.tiers.items()
    }
    configs = {}
    for config in suite.configs:
        tier = suite.tier_of(config)
        configs[config.id] = {
            "tier": config.tier,
            "model": tier.model,
            "api_base": tier.api_base,
            "price": _price(tier.price),
            "context_trim": config.context_trim,
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "stream": config.stream,
            "cache": config.cache,
            "repeats": config.repeats,
            "gate": config.gate,
        }
        if config.derived is not None:
            d = config.derived
            configs[config.id]["derived"] = {
                "kind": d.kind,
                "small": d.small,
                "large": d.large,
                **_derived_settings(d),
            }
    return {
        "version": SETTINGS_VERSION,
        "path": suite.path,
        "suite_hash": suite.suite_hash,
        "trim": {"variable": suite.trim.variable, "query": suite.trim.query},
        "gate": {"margin": suite.gate.margin, "alpha": suite.gate.alpha},
        "tiers": tiers,
        "configs": configs,
    }
