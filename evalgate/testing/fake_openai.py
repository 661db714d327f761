"""A real, fault-injecting OpenAI-compatible chat-completions server for tests and benchmarks.

It speaks HTTP/1.1 (keep-alive, chunked streaming) on 127.0.0.1 so that code under test can
be driven through real clients (litellm, the openai SDK, httpx, aiohttp).  It is a small raw
``asyncio.Protocol`` implementation using only the standard library, which keeps the CPU
cost per request low and lets the module run as a standalone script in a child process.

Behaviour is chosen per request by the ``model`` field, so parallel tests never interfere::

    fake?reply=hello%20world&latency_ms=200&fail=429:2&retry_after=1&key=t1

``name`` is followed by optional ``?k=v&k=v`` directives (values URL-encoded):

``reply=TEXT``        content to return (default ``"echo: " + last user message``)
``latency_ms=N``      wait before sending the response headers / first chunk
``jitter_ms=N``       add a random wait, uniform in [0, N) ms, to ``latency_ms`` per request
``chunk_delay_ms=N``  delay between streamed content chunks
``fail=STATUS[:N]``   the first N requests of this key answer HTTP STATUS (no ``:N``: always)
``retry_after=S``     ``Retry-After: S`` header on failures
``hang_ms=N``         wait N ms before answering, for the first ``hang_times`` requests
``hang_times=N``      (default: all requests)
``cut_after=N``       streaming: send N content chunks then close the connection abruptly
                      (no terminating chunk, no ``[DONE]``) for the first ``cut_times`` requests
``cut_times=N``       (default: all requests)
``chunks=N``          split the reply into at most N content chunks (default: one per word)
``key=K``             counter namespace (default: the whole model string)
``tool_call=NAME``    answer with a call of tool NAME (arguments ``{}``), no content, finish
                      reason ``tool_calls`` (streamed as one tool-call delta)
``refusal=TEXT``      refuse: content null, ``refusal`` TEXT, finish reason ``stop`` (streamed
                      as one refusal delta), as OpenAI answers what it declines
``echo_headers=1``    failures (``fail=``) quote the request's headers in the error message,
                      as some proxies do: for testing that credentials never reach a report

"The first N requests" refers to the request's 1-based ordinal among all requests received
with the same key, shared by every fault (``fail=500:1&hang_ms=50&hang_times=2``: request 1
hangs then fails, request 2 hangs then succeeds, request 3 is normal).  Faults are applied in
the order hang -> latency -> fail -> (stream) cut.

Tokens are whitespace-separated words: ``prompt_tokens`` counts the words of all message
contents, ``completion_tokens`` the words of the reply after truncation to ``max_tokens`` (or
``max_completion_tokens``) words; ``finish_reason`` is ``"length"`` when that truncation
removed words, else ``"stop"``.

Control endpoints (used by ``FakeOpenAIServer`` in process mode): ``GET /_control/counts``,
``GET /_control/times`` (each key's request arrival times, unix seconds),
``POST /_control/reset``, ``GET /_control/stats`` (process CPU from ``os.times()`` and the
serving thread's CPU from ``time.thread_time()``).

Command line: ``python -m evalgate.testing.fake_openai --port 0`` prints ``PORT <n>`` as its
first stdout line, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import random
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote

if __package__:
    from evalgate.testing.fake_batches import BatchError, BatchService
else:  # run as a script (process mode): the sibling module, without the evalgate package
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fake_batches import BatchError, BatchService  # type: ignore[no-redef]

__all__ = ["Behaviour", "FakeOpenAIServer", "main", "make_model", "parse_model"]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024
_WORD_RE = re.compile(r"\S+\s*")
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
_BATCH_DIRECTIVES = frozenset({"batch_ms", "batch_expire", "expire_keep", "batch_fail"})


# --------------------------------------------------------------------------- behaviour


@dataclass(frozen=True, slots=True)
class Behaviour:
    """The parsed ``model`` string of one request."""

    name: str
    key: str
    reply: str | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    fail_status: int | None = None
    fail_times: int | None = None  # None: every request fails
    retry_after: str | None = None
    hang_ms: float = 0.0
    hang_times: int | None = None  # None: every request hangs
    cut_after: int | None = None
    cut_times: int | None = None  # None: every request is cut
    chunks: int | None = None
    echo_headers: bool = False
    tool_call: str | None = None
    refusal: str | None = None

    def fails(self, ordinal: int) -> bool:
        return self.fail_status is not None and (
            self.fail_times is None or ordinal <= self.fail_times
        )

    def hangs(self, ordinal: int) -> bool:
        return self.hang_ms > 0 and (self.hang_times is None or ordinal <= self.hang_times)

    def cuts(self, ordinal: int) -> bool:
        return self.cut_after is not None and (self.cut_times is None or ordinal <= self.cut_times)


def _nonneg_int(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"directive {name!r} needs an integer, got {value!r}") from None
    if n < 0:
        raise ValueError(f"directive {name!r} must be >= 0, got {n}")
    return n


def _nonneg_float(name: str, value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"directive {name!r} needs a number, got {value!r}") from None
    if not x >= 0:
        raise ValueError(f"directive {name!r} must be >= 0, got {value!r}")
    return x


@lru_cache(maxsize=4096)
def parse_model(model: str) -> Behaviour:
    """Parse ``name?k=v&k=v`` into a :class:`Behaviour`; raises ``ValueError`` when invalid."""
    name, sep, query = model.partition("?")
    fields: dict[str, Any] = {}
    key = model
    for k, v in parse_qsl(query, keep_blank_values=True) if sep else ():
        if k == "reply":
            fields["reply"] = v
        elif k == "key":
            key = v
        elif k in ("latency_ms", "jitter_ms", "chunk_delay_ms", "hang_ms"):
            fields[k] = _nonneg_float(k, v)
        elif k in ("hang_times", "cut_after", "cut_times"):
            fields[k] = _nonneg_int(k, v)
        elif k == "chunks":
            n = _nonneg_int(k, v)
            if n < 1:
                raise ValueError("directive 'chunks' must be >= 1")
            fields["chunks"] = n
        elif k == "fail":
            status, _, times = v.partition(":")
            code = _nonneg_int("fail", status)
            if not 400 <= code <= 599:
                raise ValueError(f"directive 'fail' needs a 4xx/5xx status, got {code}")
            fields["fail_status"] = code
            fields["fail_times"] = _nonneg_int("fail", times) if times else None
        elif k in _BATCH_DIRECTIVES:
            pass  # read by the batch endpoints (fake_batches.batch_faults)
        elif k == "tool_call":
            if not v:
                raise ValueError("directive 'tool_call' needs a tool name")
            fields["tool_call"] = v
        elif k == "refusal":
            if not v:
                raise ValueError("directive 'refusal' needs a text")
            fields["refusal"] = v
        elif k == "echo_headers":
            fields["echo_headers"] = v not in ("", "0", "false")
        elif k == "retry_after":
            if not v or any(c in v for c in "\r\n"):
                raise ValueError(f"directive 'retry_after' is invalid: {v!r}")
            fields["retry_after"] = v
        else:
            raise ValueError(f"unknown directive {k!r} in model {model!r}")
    return Behaviour(name=name, key=key, **fields)


def _tool_calls(beh: Behaviour) -> list[dict[str, Any]]:
    return [
        {
            "id": "call_fake1",
            "type": "function",
            "function": {"name": beh.tool_call, "arguments": "{}"},
        }
    ]


def _message(beh: Behaviour, reply: str) -> dict[str, Any]:
    if beh.tool_call is not None:
        return {"role": "assistant", "content": None, "tool_calls": _tool_calls(beh)}
    if beh.refusal is not None:
        return {"role": "assistant", "content": None, "refusal": beh.refusal}
    return {"role": "assistant", "content": reply, "refusal": None}


def make_model(name: str = "fake", **directives: Any) -> str:
    """Build a model string, URL-encoding the values: ``make_model(reply="a b", fail="429:1")``."""
    if not directives:
        return name
    parts = [f"{k}={quote(str(v), safe=':')}" for k, v in directives.items() if v is not None]
    return f"{name}?{'&'.join(parts)}"


# --------------------------------------------------------------------------- state


class _State:
    """Counters shared between the serving loop and the owning thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}
        self.total = 0
        self.connections_opened = 0
        self.protocols: set[_HTTPProtocol] = set()
        self.ids = itertools.count(1)
        self.batches = BatchService(self.complete)

    def complete(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The non-streamed answer to ``payload`` (faults counted, no waits): batch lines."""
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return 400, json.loads(_error_body(400, "'model' is required"))
        try:
            beh = parse_model(model)
        except ValueError as exc:
            return 400, json.loads(_error_body(400, str(exc)))
        messages = payload.get("messages")
        if not isinstance(messages, list):
            return 400, json.loads(_error_body(400, "'messages' must be a list"))
        ordinal = self.hit(beh.key)
        if beh.fails(ordinal):
            assert beh.fail_status is not None
            msg = f"injected failure {beh.fail_status} (request {ordinal} of key {beh.key!r})"
            return beh.fail_status, json.loads(_error_body(beh.fail_status, msg))
        reply, finish, usage = _reply(beh, payload, messages)
        return 200, _completion(f"chatcmpl-fake{next(self.ids):08d}", beh, reply, finish, usage)

    def hit(self, key: str) -> int:
        with self.lock:
            n = self.counts.get(key, 0) + 1
            self.counts[key] = n
            self.times.setdefault(key, []).append(time.time())
            self.total += 1
            return n

    def count(self, key: str | None) -> int:
        with self.lock:
            return self.total if key is None else self.counts.get(key, 0)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"total": self.total, "counts": dict(self.counts)}

    def arrival_times(self) -> dict[str, list[float]]:
        with self.lock:
            return {k: list(v) for k, v in self.times.items()}

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.times.clear()
            self.total = 0
        self.batches.reset()

    def stats(self) -> dict[str, Any]:
        t = os.times()
        with self.lock:
            total = self.total
        return {
            "pid": os.getpid(),
            "cpu_user_s": t.user,
            "cpu_system_s": t.system,
            "cpu_total_s": time.process_time(),  # user + system, finer-grained than os.times
            # CPU of the thread running the event loop (this function runs on it).
            "loop_thread_cpu_s": time.thread_time(),
            "requests_total": total,
            "connections_opened": self.connections_opened,
            "connections_open": len(self.protocols),
        }


# --------------------------------------------------------------------------- helpers


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}, ...]
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _error_type(status: int) -> tuple[str, str]:
    if status == 429:
        return "rate_limit_error", "rate_limit_exceeded"
    if status == 401:
        return "authentication_error", "invalid_api_key"
    if status == 404:
        return "not_found_error", "model_not_found"
    if status < 500:
        return "invalid_request_error", "invalid_request"
    if status == 503:
        return "server_error", "service_unavailable"
    return "server_error", "server_error"


def _error_body(status: int, message: str) -> bytes:
    etype, code = _error_type(status)
    return _DUMPS(
        {"error": {"message": message, "type": etype, "param": None, "code": code}}
    ).encode()


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _head(status: int, headers: list[tuple[str, str]], close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if close:
        lines.append("Connection: close")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def _split_chunks(text: str, max_chunks: int | None) -> list[str]:
    """Split into word pieces whose concatenation is ``text``; at most ``max_chunks`` of them."""
    pieces = _WORD_RE.findall(text)
    if not pieces:
        return [text] if text else []
    lead = len(text) - len(text.lstrip())
    if lead:
        pieces[0] = text[:lead] + pieces[0]
    if max_chunks is not None and len(pieces) > max_chunks:
        q, r = divmod(len(pieces), max_chunks)
        out, i = [], 0
        for j in range(max_chunks):
            n = q + (1 if j < r else 0)
            out.append("".join(pieces[i : i + n]))
            i += n
        pieces = out
    return pieces


def _sse(obj: Any) -> bytes:
    data = b"data: " + _DUMPS(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


_SSE_DONE = b"%x\r\ndata: [DONE]\n\n\r\n" % len(b"data: [DONE]\n\n")
_CHUNKED_END = b"0\r\n\r\n"


def _reply(
    beh: Behaviour, payload: dict[str, Any], messages: list[Any]
) -> tuple[str, str, dict[str, int]]:
    """The answer's text, finish reason and usage: one function for online and batch calls."""
    prompt_tokens = 0
    last_user = ""
    for m in messages:
        if isinstance(m, dict):
            text = _text_of(m.get("content"))
            prompt_tokens += len(text.split())
            if m.get("role") == "user":
                last_user = text
    if beh.tool_call is not None or beh.refusal is not None:  # no text: a call or a refusal
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 1}
        finish = "tool_calls" if beh.tool_call is not None else "stop"
        return "", finish, {**usage, "total_tokens": prompt_tokens + 1}
    reply = beh.reply if beh.reply is not None else "echo: " + last_user
    pieces = _split_chunks(reply, None)
    finish = "stop"
    limit = payload.get("max_tokens", payload.get("max_completion_tokens"))
    if isinstance(limit, int) and not isinstance(limit, bool) and len(pieces) > limit >= 0:
        pieces = pieces[:limit]
        if pieces:
            pieces[-1] = pieces[-1].rstrip()
        reply = "".join(pieces)
        finish = "length"
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(pieces),
        "total_tokens": prompt_tokens + len(pieces),
    }
    return reply, finish, usage


def _completion(
    cid: str, beh: Behaviour, reply: str, finish: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": beh.name,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": _message(beh, reply),
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }


# --------------------------------------------------------------------------- HTTP protocol


class _Request:
    __slots__ = ("body", "close", "headers", "method", "path", "query")

    def __init__(
        self, method: str, target: str, headers: dict[str, str], body: bytes, close: bool
    ) -> None:
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.headers = headers
        self.body = body
        self.close = close


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _HTTPProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection; requests on it are handled one at a time, in order."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.eof = False
        self.continue_sent = False
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.state.protocols.add(self)
        self.state.connections_opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.protocols.discard(self)
        if self.task is not None:
            self.task.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self._next()

    def eof_received(self) -> bool | None:
        # Client half-closed: finish the request in flight (if any), then close.
        self.eof = True
        return True if self.task is not None else None

    # -- request framing
    def _next(self) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        try:
            req = self._parse()
        except _BadRequest as exc:
            self._write_now(exc.status, _error_body(exc.status, str(exc)), close=True)
            return
        if req is not None:
            self.task = asyncio.get_running_loop().create_task(self._handle(req))
            self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        if not task.cancelled() and task.exception() is not None:
            self.abort()
        elif self.buf and not self.closed:
            self._next()
        if self.eof and self.task is None:
            self.close()

    def _parse(self) -> _Request | None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEADER_BYTES:
                raise _BadRequest(431, "request headers too large")
            return None
        try:
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise _BadRequest(400, "malformed request line") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parsed = self._parse_chunked(start)
            if parsed is None:
                self._maybe_continue(headers)
                return None
            body, consumed = parsed
        else:
            try:
                n = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadRequest(400, "bad Content-Length") from None
            if n > _MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
            if len(buf) < start + n:
                self._maybe_continue(headers)
                return None
            body, consumed = bytes(buf[start : start + n]), start + n
        del buf[:consumed]
        self.continue_sent = False
        conn = headers.get("connection", "").lower()
        close = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
        return _Request(method, target, headers, body, close)

    def _parse_chunked(self, pos: int) -> tuple[bytes, int] | None:
        buf = self.buf
        parts: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size") from None
            pos = eol + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", pos - 2)
                if trailer_end < 0:
                    return None
                return b"".join(parts), trailer_end + 4
            if len(buf) < pos + size + 2:
                return None
            parts.append(bytes(buf[pos : pos + size]))
            pos += size + 2
            if pos > _MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")

    def _maybe_continue(self, headers: dict[str, str]) -> None:
        if not self.continue_sent and headers.get("expect", "").lower() == "100-continue":
            self.continue_sent = True
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- writing
    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def _drain(self) -> None:
        if self._paused and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def _write_now(
        self,
        status: int,
        body: bytes,
        *,
        close: bool,
        extra: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> None:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if extra:
            headers.extend(extra)
        self._write(_head(status, headers, close) + body)
        if close:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # -- routing
    async def _handle(self, req: _Request) -> None:
        try:
            await self._route(req)
        except _BadRequest as exc:
            self._write_now(exc.status, _error_body(exc.status, str(exc)), close=req.close)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # pragma: no cover - a bug in the fake server
            msg = f"fake server error: {type(exc).__name__}: {exc}"
            self._write_now(500, _error_body(500, msg), close=True)
            return

    async def _route(self, req: _Request) -> None:
        path, method = req.path.rstrip("/") or "/", req.method
        if path in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                raise _BadRequest(405, "use POST")
            await self._chat(req)
        elif path.startswith(("/v1/files", "/v1/batches")):
            self._batch_route(req, path, method)
        elif path in ("/v1/models", "/models") and method == "GET":
            models = {
                "object": "list",
                "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "evalgate"}],
            }
            self._json(200, models, req)
        elif path == "/health" and method == "GET":
            self._json(200, {"status": "ok"}, req)
        elif path == "/_control/counts" and method == "GET":
            self._json(200, self.state.snapshot(), req)
        elif path == "/_control/times" and method == "GET":
            self._json(200, self.state.arrival_times(), req)
        elif path == "/_control/reset" and method in ("POST", "GET"):
            self.state.reset()
            self._json(200, {"ok": True}, req)
        elif path == "/_control/batches" and method == "GET":
            self._json(200, self.state.batches.snapshot(), req)
        elif path == "/_control/stats" and method == "GET":
            self._json(200, self.state.stats(), req)
        else:
            raise _BadRequest(404, f"no route for {method} {req.path}")

    def _batch_route(self, req: _Request, path: str, method: str) -> None:
        service = self.state.batches
        parts = path.split("/")[2:]  # ["files", id, "content"] or ["batches", id, "cancel"]
        try:
            if parts == ["files"] and method == "POST":
                obj = service.upload(req.headers.get("content-type", ""), req.body)
            elif len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
                if method != "GET":
                    raise BatchError(405, "use GET")
                content = service.content(parts[1])
                self._write_now(200, content, close=req.close, content_type="application/jsonl")
                return
            elif parts == ["batches"] and method == "POST":
                obj = service.create(req.body)
            elif parts == ["batches"] and method == "GET":
                obj = service.list(req.query)
            elif len(parts) == 2 and parts[0] == "batches" and method == "GET":
                obj = service.retrieve(parts[1])
            elif len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
                obj = service.cancel(parts[1])
            else:
                raise BatchError(404, f"no route for {method} {req.path}")
        except BatchError as exc:
            raise _BadRequest(exc.status, str(exc)) from None
        self._json(200, obj, req)

    def _json(self, status: int, obj: Any, req: _Request) -> None:
        self._write_now(status, _DUMPS(obj).encode(), close=req.close)

    # -- chat completions
    async def _chat(self, req: _Request) -> None:
        try:
            payload = json.loads(req.body)
        except ValueError:
            raise _BadRequest(400, "request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise _BadRequest(400, "request body must be a JSON object")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest(400, "'model' is required")
        try:
            beh = parse_model(model)
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        messages = payload.get("messages")
        if not isinstance(messages, list):
            raise _BadRequest(400, "'messages' must be a list")

        ordinal = self.state.hit(beh.key)
        if beh.hangs(ordinal):
            await asyncio.sleep(beh.hang_ms / 1000)
        if beh.latency_ms or beh.jitter_ms:
            await asyncio.sleep((beh.latency_ms + random.random() * beh.jitter_ms) / 1000)
        if beh.fails(ordinal):
            extra = [("Retry-After", beh.retry_after)] if beh.retry_after else None
            msg = f"injected failure {beh.fail_status} (request {ordinal} of key {beh.key!r})"
            if beh.echo_headers:
                msg += f"; request headers: {req.headers!r}"
            assert beh.fail_status is not None
            self._write_now(
                beh.fail_status, _error_body(beh.fail_status, msg), close=req.close, extra=extra
            )
            return

        reply, finish, usage = _reply(beh, payload, messages)
        pieces = _split_chunks(reply, None)
        cid = f"chatcmpl-fake{next(self.state.ids):08d}"
        created = int(time.time())

        if not payload.get("stream"):
            self._json(200, _completion(cid, beh, reply, finish, usage), req)
            return

        opts = payload.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        chunks = _split_chunks(reply, beh.chunks) if beh.chunks else pieces
        cut = beh.cut_after if beh.cuts(ordinal) else None
        if cut is not None:
            chunks = chunks[:cut]
        base: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": beh.name,
            "system_fingerprint": "fp_fake",
        }
        if include_usage:
            base["usage"] = None

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return _sse({**base, "choices": [choice]})

        # Content chunks are the bulk of the work: splice them into a pre-encoded template
        # (same bytes as event({"content": piece}), a third of the cost).
        prefix = "data: " + _DUMPS(base)[:-1] + ',"choices":[{"index":0,"delta":{"content":'
        suffix = '},"logprobs":null,"finish_reason":null}]}\n\n'

        def content_event(piece: str) -> bytes:
            data = (prefix + _DUMPS(piece) + suffix).encode()
            return b"%x\r\n%s\r\n" % (len(data), data)

        head = _head(
            200,
            [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                ("Transfer-Encoding", "chunked"),
            ],
            req.close,
        )
        out = [head, event({"role": "assistant", "content": ""})]
        if beh.tool_call is not None:
            calls = [{"index": 0, **call} for call in _tool_calls(beh)]
            out.append(event({"tool_calls": calls}))
            chunks = []
        elif beh.refusal is not None:
            out.append(event({"refusal": beh.refusal}))
            chunks = []
        delay = beh.chunk_delay_ms / 1000
        for i, piece in enumerate(chunks):
            if delay and i:
                self._write(b"".join(out))
                out.clear()
                await self._drain()
                await asyncio.sleep(delay)
            out.append(content_event(piece))
        if cut is not None:
            # Abrupt end: no finish chunk, no usage, no [DONE], no terminating zero chunk.
            self._write(b"".join(out))
            self.close()
            return
        out.append(event({}, finish))
        if include_usage:
            out.append(_sse({**base, "choices": [], "usage": usage}))
        out.append(_SSE_DONE)
        out.append(_CHUNKED_END)
        self._write(b"".join(out))
        if req.close:
            self.close()


# --------------------------------------------------------------------------- serving


class _Core:
    """A listening server plus its state, living on one event loop."""

    def __init__(self) -> None:
        self.state = _State()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _HTTPProtocol(self.state), host, port, backlog=2048, reuse_address=True
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for proto in list(self.state.protocols):
            proto.abort()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _serve_until_signalled(host: str, port: int, parent_pid: int | None) -> None:
    core = _Core()
    actual = await core.start(host, port)
    print(f"PORT {actual}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_parent() -> None:  # don't outlive a parent that died without stopping us
        while True:
            await asyncio.sleep(1.0)
            if os.getppid() != parent_pid:
                stop.set()
                return

    watcher = loop.create_task(watch_parent()) if parent_pid else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    await core.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fault-injecting fake OpenAI server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    asyncio.run(_serve_until_signalled(args.host, args.port, args.parent_pid))


# --------------------------------------------------------------------------- client-side handle


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


class FakeOpenAIServer:
    """Context manager. Runs the server in a background thread with its own event loop
    (``mode="thread"``, default) or in a child process (``mode="process"``, for benchmarks:
    its CPU does not compete with the client's event loop or GIL).

    >>> with FakeOpenAIServer() as srv:
    ...     litellm.completion(model="openai/fake?reply=hi", api_base=srv.base_url, api_key="x")
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, mode: str = "thread") -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
        self.host = host
        self.port = port
        self.mode = mode
        self._core: _Core | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- addresses
    @property
    def _connect_host(self) -> str:
        h = self.host
        if h in ("", "0.0.0.0"):
            return "127.0.0.1"
        if h == "::":
            return "::1"
        return h

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the ``api_base`` to hand to litellm / the openai SDK."""
        h = self._connect_host
        h = f"[{h}]" if ":" in h else h
        return f"http://{h}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._thread is not None or self._proc is not None

    # -- lifecycle
    def start(self) -> FakeOpenAIServer:
        if self.running:
            raise RuntimeError("server already started")
        if self.mode == "thread":
            self._start_thread()
        else:
            self._start_process()
        return self

    def _start_thread(self) -> None:
        ready = threading.Event()
        box: dict[str, Any] = {}
        core = _Core()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                box["port"] = loop.run_until_complete(core.start(self.host, self.port))
            except BaseException as exc:
                box["error"] = exc
                loop.close()
                ready.set()
                return
            box["loop"] = loop
            ready.set()
            try:
                loop.run_forever()
                loop.run_until_complete(core.close())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="fake-openai-server", daemon=True)
        thread.start()
        ready.wait()
        if "error" in box:
            thread.join()
            raise box["error"]
        self._core, self._loop, self._thread = core, box["loop"], thread
        self.port = box["port"]

    def _start_process(self, timeout: float = 30.0) -> None:
        # Run this file as a script (-P: don't put its directory on sys.path) so the child
        # needs only the standard library and never imports the (heavier) evalgate package.
        cmd = [sys.executable, "-P", os.path.abspath(__file__)]
        cmd += ["--host", self.host, "--port", str(self.port), "--parent-pid", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    _terminate(proc)
                    raise RuntimeError("fake OpenAI server process did not report its port")
                byte = os.read(proc.stdout.fileno(), 1)
                if not byte:
                    _terminate(proc)
                    raise RuntimeError(f"fake OpenAI server process exited ({proc.returncode})")
                line += byte
        word, _, value = line.decode().strip().partition(" ")
        if word != "PORT":
            _terminate(proc)
            raise RuntimeError(f"unexpected first line from fake OpenAI server: {line!r}")
        self.port = int(value)
        self._proc = proc
        self._finalizer = weakref.finalize(self, _terminate, proc)

    def stop(self) -> None:
        if self._thread is not None:
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = self._loop = self._core = None
        if self._proc is not None:
            if self._finalizer is not None:
                self._finalizer()
            self._proc = self._finalizer = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- counters
    def _control(self, method: str, path: str) -> Any:
        conn = http.client.HTTPConnection(self._connect_host, self.port, timeout=10)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {data!r}")
            return json.loads(data)
        finally:
            conn.close()

    def request_count(self, key: str | None = None) -> int:
        """Chat-completion requests received with behaviour ``key`` (all keys when None)."""
        if self._core is not None:
            return self._core.state.count(key)
        if self._proc is None:
            raise RuntimeError("server is not running")
        snap = self._control("GET", "/_control/counts")
        return int(snap["total"] if key is None else snap["counts"].get(key, 0))

    def request_times(self, key: str) -> list[float]:
        """Arrival times (unix seconds, in order) of the requests with behaviour ``key``."""
        if self._core is not None:
            return self._core.state.arrival_times().get(key, [])
        return [float(t) for t in self._control("GET", "/_control/times").get(key, [])]

    def counts(self) -> dict[str, int]:
        """Per-key chat-completion request counts."""
        if self._core is not None:
            return dict(self._core.state.snapshot()["counts"])
        return dict(self._control("GET", "/_control/counts")["counts"])

    def reset(self) -> None:
        """Clear all counters (fail/hang/cut ordinals start again from 1)."""
        if self._core is not None:
            self._core.state.reset()
        elif self._proc is not None:
            self._control("POST", "/_control/reset")
        else:
            raise RuntimeError("server is not running")

    def batch_submissions(self, key: str | None = None) -> int:
        """Batches created (``POST /v1/batches``) with behaviour ``key`` (all when None)."""
        if self._core is not None:
            return self._core.state.batches.submission_count(key)
        snap = self._control("GET", "/_control/batches")
        return int(snap["submissions"] if key is None else snap["per_key"].get(key, 0))

    def batches(self) -> dict[str, Any]:
        """Every batch's status and size, submissions per key and the cancelled count."""
        if self._core is not None:
            return self._core.state.batches.snapshot()
        return dict(self._control("GET", "/_control/batches"))

    def stats(self) -> dict[str, Any]:
        """Server process CPU (``os.times()``), serving-thread CPU and connection counters."""
        return dict(self._control("GET", "/_control/stats"))


if __name__ == "__main__":
    main()
