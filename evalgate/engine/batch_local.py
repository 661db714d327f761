"""The Files and Batches endpoints for a local model (llama.cpp has no Batches API).

A small HTTP server on 127.0.0.1 that speaks OpenAI's batch protocol (upload a JSONL,
create, poll, download the output and error files, cancel, list) and runs each batch's
lines against the local model's own ``/v1/chat/completions``, ``parallel`` at a time (the
server's slots). So a ``batch: true`` config on a ``local/`` tier, and
``policy.batch()`` on a local route, exercise the same protocol as a provider batch.
Lines run when the model server is idle (llama.cpp's ``/slots``), so a batch never
delays the online calls whose latency the same run measures.

It runs inside the llama.cpp server's child process (``--batch-port``), so it lives and
dies with the model server; ``servers.json`` names it as the model's ``batch_url``.
The protocol bookkeeping (files, batches, listing, cancellation) is the fake server's
:class:`~evalgate.testing.fake_batches.BatchService` (standard library only), here with a
real model answering the lines.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from evalgate.testing.fake_batches import BatchError, BatchService

LINE_TIMEOUT_S = 600.0
"""One line's request to the model server at most (a long answer on a loaded CPU)."""
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
"""OpenAI's input-file cap: a larger body is refused before a byte of it is read (the
proxy holds files in memory, inside the model server's process)."""
IDLE_CHECK_S = 0.05
"""Batch lines wait for two readings of an idle server this far apart (see ``idle``)."""


def idle(slots_url: str) -> bool | None:
    """Whether no slot of the llama.cpp server is processing (None: it cannot say)."""
    try:
        with urllib.request.urlopen(slots_url, timeout=5) as reply:
            slots = json.loads(reply.read())
        return not any(slot.get("is_processing") for slot in slots)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def wait_until_idle(slots_url: str) -> bool:
    """Blocks while the server answers online calls: a batch is work that can wait, and a
    line sent beside an online call would queue that call behind it (one slot) and inflate
    the latency the eval measures. Returns False when the server cannot say (no wait)."""
    quiet = 0
    while quiet < 2:
        state = idle(slots_url)
        if state is None:
            return False
        quiet = quiet + 1 if state else 0
        time.sleep(IDLE_CHECK_S)
    return True


def forwarder(chat_url: str, slots_url: str | None = None) -> Any:
    """Answers one batch line by POSTing its body to ``chat_url``: (status, body); with
    ``slots_url`` (llama.cpp's ``/slots``), each line first waits for an idle server."""
    polite = [slots_url]

    def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if polite[0] and not wait_until_idle(polite[0]):
            polite[0] = None  # no /slots there: never ask again
        payload = {k: v for k, v in body.items() if k != "stream"}
        request = urllib.request.Request(
            chat_url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=LINE_TIMEOUT_S) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, {"error": {"message": raw[:300].decode(errors="replace")}}

    return answer


class LocalBatchServer(ThreadingHTTPServer):
    """Serves the batch endpoints of one OpenAI-compatible chat server."""

    daemon_threads = True

    def __init__(
        self,
        chat_url: str,
        port: int = 0,
        parallel: int = 2,
        slots_url: str | None = None,
        model: str | None = None,
    ) -> None:
        answer = forwarder(chat_url, slots_url)
        self.service = BatchService(answer, workers=max(1, parallel))
        # The one model the chat server serves (its alias): llama.cpp answers any model
        # name with its own model, so a batch naming another is refused here.
        self.model = model
        super().__init__(("127.0.0.1", port), _Handler)

    def check_model(self, body: bytes) -> None:
        """Refuses a batch whose lines name a model this server does not serve (malformed
        bodies and files are left to the service, which names what is wrong)."""
        if self.model is None:
            return
        try:
            file_id = str(json.loads(body)["input_file_id"])
        except (ValueError, TypeError, KeyError):
            return
        for raw in self.service.content(file_id).splitlines():
            if raw.strip():
                try:
                    named = json.loads(raw)["body"]["model"]
                except (ValueError, TypeError, KeyError):
                    return
                if named != self.model:
                    raise BatchError(
                        400, f"this batch endpoint serves model {self.model!r}, not {named!r}"[:300]
                    )
                return

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> LocalBatchServer:
        threading.Thread(target=self.serve_forever, name="evalgate-batch", daemon=True).start()
        return self

    def halt(self) -> None:
        """Cancels every running batch (no new line starts), then stops serving."""
        self.service.cancel_all()
        self.stop()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: LocalBatchServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # the model server's log is enough
        pass

    def _reply(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        parts = path.rstrip("/").split("/")[2:]  # after "/v1"
        service = self.server.service
        try:
            body = self._body()
            if path.rstrip("/") == "/health":
                obj: Any = {"status": "ok"}
            elif parts == ["files"] and method == "POST":
                obj = service.upload(self.headers.get("Content-Type", ""), body)
            elif len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
                return self._reply(200, service.content(parts[1]), "application/jsonl")
            elif parts == ["batches"] and method == "POST":
                self.server.check_model(body)
                obj = service.create(body)
            elif parts == ["batches"] and method == "GET":
                obj = service.list(query)
            elif len(parts) == 2 and parts[0] == "batches" and method == "GET":
                obj = service.retrieve(parts[1])
            elif len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
                obj = service.cancel(parts[1])
            else:
                raise BatchError(404, f"no route for {method} {self.path}")
        except BatchError as exc:
            error = {"error": {"message": str(exc), "type": "invalid_request_error"}}
            return self._reply(exc.status, json.dumps(error).encode())
        self._reply(200, json.dumps(obj).encode())

    def _body(self) -> bytes:
        """The request body, read only when its declared length is sane and under the cap
        (a negative length would read until the client hangs up; a huge one, into memory)."""
        raw = self.headers.get("Content-Length") or "0"
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True  # the body's end is unknown: drop the connection
            raise BatchError(400, f"Content-Length must be a byte count, got {raw[:40]!r}")
        if length > MAX_UPLOAD_BYTES:
            self.close_connection = True
            raise BatchError(
                413, f"Content-Length {length} is over the {MAX_UPLOAD_BYTES}-byte upload cap"
            )
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


__all__ = ["LocalBatchServer", "forwarder"]
