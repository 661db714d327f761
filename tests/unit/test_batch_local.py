"""The local batch proxy: OpenAI's batch protocol in front of a chat server without one.

The chat server here is the fake server's ``/v1/chat/completions`` (its own Batches API is
never used); the suites' demo runs the proxy in front of the real llama.cpp servers.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from evalgate.engine.batch import BatchQueue, BatchSettings
from evalgate.engine.batch_local import LocalBatchServer
from tests.unit.test_batch_hostile import _spec, _target
from tests.unit.test_fake_batches import _lines, _submit, _wait


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def proxy(fake_server):
    server = LocalBatchServer(f"{fake_server.base_url}/chat/completions", parallel=2).start()
    yield server
    server.stop()


def test_batch_calls_to_a_local_endpoint_run_through_its_proxy(fake_server, proxy, key) -> None:
    from evalgate.testing.fake_openai import make_model

    model = make_model("fake", key=key)
    chat_base = fake_server.base_url

    async def main() -> list:
        queue = BatchQueue(
            None,
            BatchSettings(send_delay_s=0.05, poll_s=0.05, max_poll_s=0.1),
            batch_base=lambda base: proxy.base_url if base == chat_base else base,
        )
        try:
            target = _target(chat_base, model)
            return await asyncio.gather(*(queue.call(_spec(i, model), target) for i in range(8)))
        finally:
            await queue.aclose()

    results = asyncio.run(asyncio.wait_for(main(), 60))
    assert [r.output for r in results] == [f"echo: n{i}" for i in range(8)]
    assert all(r.input_tokens and r.output_tokens for r in results)
    assert proxy.service.submission_count() == 1  # one batch, on the proxy
    assert fake_server.batch_submissions(key) == 0  # the chat server's own batches unused
    assert fake_server.request_count(key) == 8  # each line answered by the chat endpoint


def test_per_line_errors_and_cancel(fake_server, proxy, key) -> None:
    from evalgate.testing.fake_openai import make_model

    with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
        model = make_model("fake", key=key, fail="500:1")
        batch = _wait(client, _submit(client, _jsonl(model, 3))["id"])
        assert batch["status"] == "completed"
        out, err = _lines(client, batch["output_file_id"]), _lines(client, batch["error_file_id"])
        assert len(out) == 2 and len(err) == 1
        (bad,) = err.values()
        assert bad["response"]["status_code"] == 500

        slow = make_model("fake", key=key + "s", latency_ms=300)
        created = _submit(client, _jsonl(slow, 12))
        time.sleep(0.2)
        assert client.post(f"/batches/{created['id']}/cancel").json()["status"] == "cancelled"
        done = _wait(client, created["id"])
        assert done["status"] == "cancelled"
        time.sleep(1.0)  # lines already running finish; no new ones start
        assert fake_server.request_count(key + "s") < 12
        listed = client.get("/batches?limit=100").json()["data"]
        assert {b["id"] for b in listed} >= {batch["id"], created["id"]}


def _jsonl(model: str, n: int) -> bytes:
    from tests.unit.test_fake_batches import _jsonl as lines

    return lines(model, n)


def test_halt_cancels_running_batches_so_the_model_server_can_stop(fake_server, key) -> None:
    from evalgate.testing.fake_openai import make_model

    proxy = LocalBatchServer(f"{fake_server.base_url}/chat/completions", parallel=1).start()
    with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
        created = _submit(client, _jsonl(make_model("fake", key=key, latency_ms=200), 20))
    time.sleep(0.3)
    proxy.halt()  # what the llama.cpp server process does on SIGTERM
    assert proxy.service.snapshot()["batches"][created["id"]] == "cancelled"
    time.sleep(0.5)
    assert fake_server.request_count(key) < 5  # the lines after the halt never started


def test_batch_lines_wait_while_the_model_server_answers_online_calls() -> None:
    # A llama.cpp-like server: /slots says "processing" for its first 0.6 s (an online
    # call), and the chat endpoint notes when each batch line arrives.
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from evalgate.engine.batch_local import forwarder

    started = time.monotonic()
    arrived: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, obj: object) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != "/slots":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send([{"id": 0, "is_processing": time.monotonic() - started < 0.6}])

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            arrived.append(time.monotonic() - started)
            self._send({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        answer = forwarder(f"{base}/v1/chat/completions", f"{base}/slots")
        status, body = answer({"model": "m", "messages": []})
        assert status == 200 and body["choices"][0]["message"]["content"] == "ok"
        assert arrived and arrived[0] >= 0.6  # sent only once the online call was done
        # A server without /slots (the fake server, other OpenAI-compatible servers):
        # lines go at once.
        plain = forwarder(f"{base}/v1/chat/completions", f"{base}/no-such-endpoint")
        assert plain({"model": "m", "messages": []})[0] == 200
    finally:
        server.shutdown()
        server.server_close()
