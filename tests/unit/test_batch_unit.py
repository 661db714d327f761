"""Batch pieces that need no server: statistics of offline configs, prices, limits, store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evalgate.engine.batch import (
    BatchSettings,
    BatchStore,
    StoredBatch,
    batch_cost,
    batch_rates,
    batch_unsupported,
)
from evalgate.engine.calls import CallSpec
from evalgate.engine.native import NativeTarget
from evalgate.stats.analysis import analyze_suite
from evalgate.suite.model import Price


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        rows.append(
            {
                "case_id": f"c{i}",
                "config_id": "base",
                "score": 1.0,
                "cost_usd": 2e-6,
                "latency_ms": float(rng.uniform(400, 600)),
            }
        )
        # The batch twin: same quality, half the cost, a turnaround of an hour.
        rows.append(
            {
                "case_id": f"c{i}",
                "config_id": "batch",
                "score": 1.0,
                "cost_usd": 1e-6,
                "latency_ms": 3.6e6,
            }
        )
    return pd.DataFrame(rows)


def test_offline_configs_are_not_ranked_on_latency() -> None:
    plain = analyze_suite(_frame(), baseline="base", n_boot=200, n_frontier_boot=50)
    assert plain.configs["batch"].latency_p95 is not None  # its turnaround, read as latency
    offline = analyze_suite(
        _frame(), baseline="base", n_boot=200, n_frontier_boot=50, offline=["batch"]
    )
    assert offline.configs["batch"].latency_p95 is None
    assert offline.configs["batch"].cost_per_case.estimate == pytest.approx(1e-6)
    assert offline.configs["base"].latency_p95 is not None


def test_batch_price_is_half_the_tier_price_and_litellms_batch_price_otherwise() -> None:
    spec = CallSpec(
        model="openai/x",
        messages=(),
        max_tokens=8,
        temperature=0,
        stream=False,
        repeat=0,
        tier="t",
        price=Price(input_per_mtok=1.0, output_per_mtok=2.0),
    )
    target = NativeTarget("http://h/v1/chat/completions", "x", "openai/x")
    assert batch_cost(spec, target, 1000, 500) == pytest.approx((1000 * 1 + 500 * 2) / 1e6 / 2)
    rates = batch_rates("openai/gpt-4o-mini")
    assert rates is not None  # litellm's map has batch prices for it
    unpriced = CallSpec(
        model="openai/gpt-4o-mini",
        messages=(),
        max_tokens=8,
        temperature=0,
        stream=False,
        repeat=0,
        tier="t",
    )
    mini = NativeTarget(
        "https://api.openai.com/v1/chat/completions",
        "gpt-4o-mini",
        "openai/gpt-4o-mini",
        official=True,
    )
    assert batch_cost(unpriced, mini, 1000, 500) == pytest.approx(1000 * rates[0] + 500 * rates[1])


def test_which_models_can_batch() -> None:
    assert batch_unsupported("openai/gpt-4o-mini", None, "auto") is None
    assert batch_unsupported("hosted_vllm/m", "http://h/v1", "auto") is None
    assert "batch not supported for anthropic/m" in (
        batch_unsupported("anthropic/m", None, "auto") or ""
    )
    assert batch_unsupported("openai/x", "http://h/v1", "litellm") is not None


def test_settings_from_env_reject_nonsense(monkeypatch) -> None:
    monkeypatch.setenv("EVALGATE_BATCH_MAX_REQUESTS", "7")
    assert BatchSettings.from_env().max_requests == 7
    for bad in ("0", "-1", "nan", "x", "inf"):
        monkeypatch.setenv("EVALGATE_BATCH_POLL_S", bad)
        with pytest.raises(ValueError, match="EVALGATE_BATCH_POLL_S"):
            BatchSettings.from_env()


def test_store_survives_a_torn_file_and_forgets_collected_batches(tmp_path) -> None:
    store = BatchStore(tmp_path / "batches")
    store.record(StoredBatch("batch_1", "http://h/v1", "m", ("k1", "k2"), 1.0))
    store.record(StoredBatch("batch_2", "http://h/v1", "m", ("k3",), 1.0))
    store.record(StoredBatch("batch_2", "http://h/v1", "m", ("k3",), 1.0, collected=True))
    (tmp_path / "batches" / "torn.json").write_text('{"batch_id": "b')
    assert [b.batch_id for b in store.pending()] == ["batch_1"]
    assert store.pending()[0].keys == ("k1", "k2")


@pytest.mark.parametrize(
    "line",
    [
        {"custom_id": "k", "response": {"status_code": 500, "body": {"error": "a string"}}},
        {"custom_id": "k", "response": {"status_code": 500, "body": "not json"}},
        {"custom_id": "k", "response": {"status_code": 200, "body": {"choices": []}}},
        {"custom_id": "k", "response": {"status_code": 200, "body": None}},
        {"custom_id": "k", "response": None, "error": {"code": "invalid", "message": "x" * 9000}},
    ],
)
def test_hostile_output_lines_become_error_results(line) -> None:
    from evalgate.engine.batch import _result_of, _Waiting

    spec = CallSpec(
        model="openai/x", messages=(), max_tokens=8, temperature=0, stream=False, repeat=0, tier="t"
    )
    item = _Waiting(spec, NativeTarget("http://h/v1/chat/completions", "x", "openai/x"), b"")
    result = _result_of(line, item, 1.0)
    assert result is not None and result.error is not None and len(result.error) <= 400


def test_expired_and_unanswered_lines_are_submitted_again() -> None:
    from evalgate.engine.batch import _result_of, _Waiting

    spec = CallSpec(
        model="openai/x", messages=(), max_tokens=8, temperature=0, stream=False, repeat=0, tier="t"
    )
    item = _Waiting(spec, NativeTarget("http://h/v1/chat/completions", "x", "openai/x"), b"")
    expired = {"custom_id": "k", "response": None, "error": {"code": "batch_expired"}}
    assert _result_of(expired, item, 1.0) is None
    assert _result_of(None, item, 1.0) is None


def _notes_suite(tmp_path, twin: bool):
    from evalgate.suite.loader import load_suite

    online = "  - {id: online, tier: t, max_tokens: 8}\n" if twin else ""
    (tmp_path / "s.yaml").write_text(
        "suite: s\n"
        "tiers:\n  t: {model: openai/x, api_base: 'http://h/v1',"
        " price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
        "prompt:\n  - {role: user, content: '{{ q }}'}\n"
        "assert:\n  - {type: contains, value: a}\n"
        f"configs:\n{online}  - {{id: batched, tier: t, max_tokens: 8, batch: true}}\n"
        "cases:\n  - {id: c0, vars: {q: a}}\n  - {id: c1, vars: {q: b}}\n"
    )
    return load_suite(tmp_path / "s.yaml")


def test_the_report_says_what_a_batch_config_saved(tmp_path) -> None:
    from evalgate.report.batch_notes import batch_notes

    frame = pd.DataFrame(
        [
            {"case_id": c, "config_id": k, "cost_usd": cost, "latency_ms": 1e3, "error": err}
            for c in ("c0", "c1")
            for k, cost, err in (("online", 4e-6, False), ("batched", 2e-6, False))
        ]
        + [
            {
                "case_id": "c2",
                "config_id": "batched",
                "cost_usd": None,
                "latency_ms": None,
                "error": True,
            }
        ]
    )
    (note,) = batch_notes("s", _notes_suite(tmp_path, twin=True), frame)
    assert "batched is a batch config (offline)" in note
    assert "saved $4e-06 (50%) against its online twin online on 2 cases" in note
    alone = frame[frame["config_id"] == "batched"]
    (note,) = batch_notes("s", _notes_suite(tmp_path, twin=False), alone)
    assert "saved $4e-06 (50%) against the online price of its 2 cases" in note


def test_local_models_can_batch() -> None:
    # Their batches go to the Files/Batches proxy beside each llama.cpp server.
    assert batch_unsupported("local/smollm2-135m", None, "auto") is None
