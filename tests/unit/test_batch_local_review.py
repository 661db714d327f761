"""The local batch proxy under attack: oversized and lying uploads, path-shaped file ids,
malformed JSONL, concurrent batches, a model server that goes away mid-batch."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from evalgate.engine import batch_local
from evalgate.engine.batch_local import LocalBatchServer
from tests.unit.test_fake_batches import _jsonl, _lines, _submit


class _Chat(ThreadingHTTPServer):
    """A chat server that notes how many requests it holds at once (each for 0.1 s)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ChatHandler)
        self.lock = threading.Lock()
        self.now = self.most = self.total = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/chat/completions"


class _ChatHandler(BaseHTTPRequestHandler):
    server: _Chat

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.now += 1
            self.server.total += 1
            self.server.most = max(self.server.most, self.server.now)
        time.sleep(0.1)
        with self.server.lock:
            self.server.now -= 1
        data = json.dumps(
            {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def chat() -> Iterator[_Chat]:
    server = _Chat()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(chat: _Chat) -> Iterator[LocalBatchServer]:
    server = LocalBatchServer(chat.url, parallel=2).start()
    yield server
    server.stop()


def _raw(proxy: LocalBatchServer, method: str, path: str, headers: dict, body: bytes = b""):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.server_address[1], timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def test_the_proxy_listens_on_loopback_only(proxy) -> None:
    assert proxy.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize(
    ("length", "status"),
    [(str(10**12), 413), (str(batch_local.MAX_UPLOAD_BYTES + 1), 413), ("-5", 400), ("x", 400)],
)
def test_an_upload_too_big_or_with_a_lying_length_is_refused_unread(proxy, length, status) -> None:
    """Nothing is read into memory past the cap; the proxy keeps serving."""
    headers = {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": length}
    got, body = _raw(proxy, "POST", "/v1/files", headers, b"--b--")
    assert got == status and b"Content-Length" in body
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        assert client.get("/batches").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/../../../etc/passwd/content",
        "/v1/files/..%2F..%2Fetc%2Fpasswd/content",
        "/v1/files/%2Fetc%2Fpasswd/content",
        "/v1/batches/..%2F..%2Fetc",
    ],
)
def test_path_shaped_ids_name_nothing(proxy, path) -> None:
    """Files live in the proxy's memory under ids it issued: a path is just an unknown id."""
    status, body = _raw(proxy, "GET", path, {})
    assert status == 404 and b"root:" not in body


def test_a_malformed_jsonl_is_refused_naming_its_line(proxy) -> None:
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        bad = _jsonl("m", 2) + b"{not json\n"
        with pytest.raises(httpx.HTTPStatusError) as raised:
            _submit(client, bad)
        assert raised.value.response.status_code == 400
        assert "line 3" in raised.value.response.json()["error"]["message"]


def test_concurrent_batches_share_the_model_servers_slots(chat, proxy) -> None:
    """Three batches at once still send at most ``parallel`` lines to the model at a time
    (more would queue online calls behind them, or overload a CPU server)."""
    with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
        created = [_submit(client, _jsonl("m", 3)) for _ in range(3)]
        done = [_wait_long(client, b["id"]) for b in created]
    assert [b["status"] for b in done] == ["completed"] * 3
    assert chat.total == 9 and chat.most <= 2


def test_lines_the_model_server_never_received_are_left_for_resubmission(chat) -> None:
    """A model server gone mid-batch: lines that could not reach it carry no answer (as a
    cancelled batch's), so the client sends them again, rather than a permanent error."""
    proxy = LocalBatchServer(chat.url, parallel=1).start()
    try:
        with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
            created = _submit(client, _jsonl("m", 6))
            while chat.total < 2:
                time.sleep(0.01)
            chat.shutdown()
            chat.server_close()
            done = _wait_long(client, created["id"])
            answered = _lines(client, done["output_file_id"])
            failed = _lines(client, done["error_file_id"])
    finally:
        proxy.stop()
    assert done["status"] == "completed" and 2 <= len(answered) < 6
    assert failed == {}  # none marked as a per-request error


def _wait_long(client: httpx.Client, batch_id: str) -> dict:
    for _ in range(3000):
        b = client.get(f"/batches/{batch_id}").json()
        if b["status"] in ("completed", "expired", "failed", "cancelled"):
            return b
        time.sleep(0.01)
    raise AssertionError("batch never finished")


def test_a_batch_for_a_model_the_proxy_does_not_serve_is_refused(chat) -> None:
    """llama.cpp answers whatever model a request names: the proxy must refuse a batch for
    another model rather than have its own model answer it."""
    proxy = LocalBatchServer(chat.url, parallel=1, model="smollm2-135m").start()
    try:
        with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
            with pytest.raises(httpx.HTTPStatusError) as raised:
                _submit(client, _jsonl("qwen2.5-0.5b", 2))
            assert raised.value.response.status_code == 400
            assert "smollm2-135m" in raised.value.response.json()["error"]["message"]
            done = _wait_long(client, _submit(client, _jsonl("smollm2-135m", 2))["id"])
            assert done["status"] == "completed"
    finally:
        proxy.stop()
    assert chat.total == 2  # only the served model's lines ran
