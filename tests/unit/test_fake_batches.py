"""The fake server's Files and Batches endpoints follow the OpenAI protocol."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from evalgate.testing.fake_openai import FakeOpenAIServer, make_model


def _jsonl(model: str, n: int) -> bytes:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"q {i}"}]},
        }
        for i in range(n)
    ]
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def _submit(client: httpx.Client, content: bytes) -> dict:
    f = client.post("/files", data={"purpose": "batch"}, files={"file": ("b.jsonl", content)})
    f.raise_for_status()
    b = client.post(
        "/batches",
        json={
            "input_file_id": f.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    b.raise_for_status()
    return b.json()


def _wait(client: httpx.Client, batch_id: str) -> dict:
    for _ in range(500):
        b = client.get(f"/batches/{batch_id}").json()
        if b["status"] in ("completed", "expired", "failed", "cancelled"):
            return b
        time.sleep(0.01)
    raise AssertionError("batch never finished")


def _lines(client: httpx.Client, file_id: str | None) -> dict[str, dict]:
    if file_id is None:
        return {}
    text = client.get(f"/files/{file_id}/content").text
    return {x["custom_id"]: x for x in map(json.loads, text.splitlines())}


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def test_batch_answers_equal_online_answers_usage_included(server) -> None:
    model = make_model("fake", key="equal")
    with httpx.Client(base_url=server.base_url) as client:
        created = _submit(client, _jsonl(model, 5))
        assert created["status"] == "validating"
        done = _wait(client, created["id"])
        assert done["status"] == "completed"
        assert done["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
        out = _lines(client, done["output_file_id"])
        for i in range(5):
            online = client.post(
                "/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": f"q {i}"}]},
            ).json()
            body = out[f"r{i}"]["response"]["body"]
            assert body["choices"] == online["choices"]
            assert body["usage"] == online["usage"]
    assert server.batch_submissions("equal") == 1


def test_turnaround_expiry_and_partial_failure(server) -> None:
    model = make_model(
        "fake", key="faults", batch_ms=50, batch_expire=1, expire_keep=2, fail="500:1"
    )
    with httpx.Client(base_url=server.base_url) as client:
        created = _submit(client, _jsonl(model, 5))
        assert client.get(f"/batches/{created['id']}").json()["status"] == "in_progress"
        done = _wait(client, created["id"])
        assert done["status"] == "expired"
        out = _lines(client, done["output_file_id"])
        err = _lines(client, done["error_file_id"])
        assert set(out) == {"r1"}  # r0 failed with the injected 500
        assert err["r0"]["response"]["status_code"] == 500
        assert {k for k, v in err.items() if v["error"]} == {"r2", "r3", "r4"}
        assert err["r2"]["error"]["code"] == "batch_expired"
        again = _wait(client, _submit(client, _jsonl(model, 2))["id"])
        assert again["status"] == "completed"  # only the first batch of the key expires
    assert server.batch_submissions("faults") == 2


def test_cancel_and_bad_input(server) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        created = _submit(client, _jsonl(make_model("fake", key="c", batch_ms=60000), 2))
        assert client.post(f"/batches/{created['id']}/cancel").json()["status"] == "cancelled"
        bad = client.post("/files", data={"purpose": "fine-tune"}, files={"file": ("b", b"x")})
        assert bad.status_code == 400
        dup = _jsonl("fake", 1) * 2
        fid = client.post("/files", data={"purpose": "batch"}, files={"file": ("b", dup)}).json()
        r = client.post(
            "/batches",
            json={
                "input_file_id": fid["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        assert r.status_code == 400 and "duplicate custom_id" in r.text
    assert server.batches()["cancelled"] == 1


def test_process_mode_counts_submissions() -> None:
    with FakeOpenAIServer(mode="process") as srv, httpx.Client(base_url=srv.base_url) as client:
        _wait(client, _submit(client, _jsonl(make_model("fake", key="p"), 3))["id"])
        assert srv.batch_submissions("p") == 1
