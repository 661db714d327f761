"""evalgate usage: figures recomputed from the ledger, predictions and drift flags."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from pathlib import Path

import pytest

from evalgate.cli import main as cli
from evalgate.policy.render import render_policy
from evalgate.runtime import Policy
from evalgate.runtime.backends import open_backend
from evalgate.runtime.ledger import Ledger, UsageRecord
from evalgate.runtime.usage import parse_since, percentile
from evalgate.testing.fake_openai import make_model
from tests.runtime.test_policy_calls import feature, route


def usage_json(url: str, prefix: str, *args: str, capsys) -> dict:
    assert cli(["usage", "--backend", url, "--prefix", prefix, "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_usage_figures_match_the_ledger_of_real_calls(
    tmp_path: Path, backend_spec, fake_server, capsys
) -> None:
    url, prefix = backend_spec
    key = uuid.uuid4().hex[:8]
    features = {
        "qa": feature(
            make_model(key=key + "a", fail="500:2"),
            fake_server.base_url,
            fallbacks=[route(make_model(key=key + "b", reply="fine answer"), fake_server.base_url)],
            evidence={
                "suite_hash": "h",
                "expected": {"cost_per_call_usd": 1e-9, "latency_p95_ms": 1e6},
            },
        ),
        "chat": feature(make_model(key=key + "c", latency_ms=5), fake_server.base_url),
    }
    path = tmp_path / "policy.py"
    path.write_text(render_policy({"version": 1, "features": features}))
    with Policy.load(path, backend=url, prefix=prefix) as policy:
        for i in range(24):
            policy.completion(
                feature="qa", user=f"u{i % 3}", messages=[{"role": "user", "content": f"q{i % 12}"}]
            )
        for i in range(5):
            list(
                policy.completion(
                    feature="chat",
                    user="solo",
                    messages=[{"role": "user", "content": f"x{i}"}],
                    stream=True,
                )
            )
        records = list(policy.ledger.read())
    out = usage_json(url, prefix, "--policy", str(path), "--since", "1h", capsys=capsys)["features"]
    qa = [r for r in records if r.feature == "qa"]
    assert out["qa"]["calls"] == 24 and out["qa"]["errors"] == 0
    assert out["qa"]["fallbacks"] == sum(r.fallback > 0 for r in qa) == 2  # 2 first 500s
    assert out["qa"]["cache_hit_rate"] == pytest.approx(0.5)
    assert out["qa"]["cost_usd"] == pytest.approx(sum(r.cost_usd for r in qa))
    lat = sorted(r.latency_ms for r in qa)
    assert out["qa"]["latency_p50_ms"] == pytest.approx(statistics.median(lat))
    assert out["qa"]["latency_p95_ms"] == pytest.approx(
        statistics.quantiles(lat, n=20, method="inclusive")[-1]
    )
    top = out["qa"]["top_users"]
    spent = {u: sum(r.cost_usd for r in qa if r.user == u) for u in ("u0", "u1", "u2")}
    assert [u["user"] for u in top] == sorted(spent, key=lambda u: (-spent[u], u))
    assert out["qa"]["drift"][0].startswith("cost/call ")  # 1e-9 predicted: drifted
    chat = out["chat"]
    assert chat["calls"] == 5 and chat["ttft_p50_ms"] is not None and chat["drift"] == []
    assert usage_json(url, prefix, "--feature", "chat", capsys=capsys)["features"].keys() == {
        "chat"
    }
    # the table names the features, the predictions and the drift
    assert cli(["usage", "--backend", url, "--prefix", prefix, "--policy", str(path)]) == 0
    table = capsys.readouterr().out
    assert "qa" in table and "DRIFT: cost/call" in table and "top users by cost: u" in table


def test_since_window_and_errors(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    with open_backend(url) as backend:
        ledger = Ledger(backend)
        now = time.time()
        ledger.append(UsageRecord(ts=now - 3 * 86400, feature="old", cost_usd=1.0, latency_ms=5))
        ledger.append(UsageRecord(ts=now, feature="new", error="Timeout: x", latency_ms=5))
    out = usage_json(url, "evalgate:", capsys=capsys)["features"]
    assert set(out) == {"new"} and out["new"]["errors"] == 1 and out["new"]["cost_usd"] == 0
    assert set(usage_json(url, "evalgate:", "--since", "7d", capsys=capsys)["features"]) == {
        "new",
        "old",
    }
    with pytest.raises(SystemExit, match=r"--since 'yesterday': expected a span like 30m"):
        cli(["usage", "--backend", url, "--since", "yesterday"])
    with pytest.raises(SystemExit, match=r"^sqlite:///.*none\.sqlite3: no ledger there"):
        cli(["usage", "--backend", f"sqlite:///{tmp_path / 'none.sqlite3'}"])


def test_percentile_and_since_helpers() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)
    assert parse_since("all") is None
    assert parse_since("90m", now=10_000.0) == pytest.approx(10_000.0 - 5400)
