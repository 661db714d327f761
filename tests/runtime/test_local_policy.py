"""The policy against the real SmolLM2 server (llama.cpp), started by serve_local_models."""

from __future__ import annotations

from pathlib import Path

import litellm
import pytest

from evalgate.policy.render import render_policy
from evalgate.runtime import Policy, serve_local_models
from tests.integration.test_local_model import requires_smol

pytestmark = pytest.mark.integration

CONTEXT = (
    "The museum opens at ten. The cafe closes at four. Tickets cost twelve euros. "
    "The capital of France is Paris. Photography is allowed without flash."
)


@requires_smol
def test_trimmed_capped_cached_calls_on_smollm2(tmp_path: Path) -> None:
    entry = {
        "model": "local/smollm2-135m",
        "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4},
        "context_trim": {"ratio": 0.3, "variable": "context", "query": "question"},
        "max_tokens": 6,
        "temperature": 0.0,
        "cache": {"mode": "exact", "ttl_s": 600.0},
        "evidence": {"suite_hash": "local"},
    }
    path = tmp_path / "policy.py"
    path.write_text(render_policy({"version": 1, "features": {"geo": entry}}))
    messages = [
        {"role": "system", "content": "Answer with only the answer."},
        {"role": "user", "content": "Context: {context}\nQuestion: What is the capital of France?"},
    ]
    with (
        Policy.load(path, backend=f"sqlite:///{tmp_path / 's.sqlite3'}") as policy,
        serve_local_models(policy),
    ):
        first = policy.completion(
            feature="geo", tenant="a", messages=messages, context=CONTEXT, max_tokens=100
        )
        assert isinstance(first, litellm.ModelResponse)
        assert 0 < first.usage.completion_tokens <= 6  # capped from 100
        assert "Paris" in first.choices[0].message.content
        streamed = list(
            policy.completion(
                feature="geo", tenant="a", messages=messages, context=CONTEXT, stream=True
            )
        )
        replay = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert replay == first.choices[0].message.content
        policy.completion(feature="geo", tenant="b", messages=messages, context=CONTEXT)
        records = list(policy.ledger.read())
    assert [(r.cached, r.tenant) for r in records] == [(False, "a"), (True, "a"), (False, "b")]
    assert records[0].trimmed_tokens[1] < records[0].trimmed_tokens[0]
    assert records[0].cost_usd > 0 and records[1].cost_usd == 0
