"""The OpenAI Files and Batches endpoints of the fake server (standard library only).

Served by :mod:`evalgate.testing.fake_openai` under ``/v1/files`` and ``/v1/batches``:

- ``POST /v1/files`` (multipart, ``purpose=batch``, field ``file``): stores the JSONL;
- ``GET /v1/files/{id}/content``: a stored file (input, output or error file);
- ``POST /v1/batches`` ``{input_file_id, endpoint: "/v1/chat/completions",
  completion_window: "24h"}``: a batch, ``validating`` when created;
- ``GET /v1/batches/{id}``: ``in_progress`` until its turnaround has passed, then
  ``completed`` (or ``expired`` / ``failed`` as injected), with ``output_file_id`` and
  ``error_file_id``;
- ``GET /v1/batches?limit=N&after=ID``: the batches, newest first (with ``metadata``);
- ``POST /v1/batches/{id}/cancel``: ``cancelled``.

Each request line is answered by the same function that answers an online, non-streamed
call (faults included: ``fail=STATUS:N`` counts batch lines like online requests), so a
batch gives exactly the online answers, usage included. Output order is reversed on
purpose: clients must match lines by ``custom_id``, as OpenAI documents.

Batch faults are directives of the model string of the batch's first request line (one
model per batch, as OpenAI requires), counted per ``key``:

``batch_ms=N``         turnaround: the batch completes N ms after it was created (default 0)
``batch_expire=K``     the first K batches of this key expire: only the first
                       ``expire_keep`` requests are answered, the rest get ``batch_expired``
``expire_keep=N``      (default: half the batch, rounded down)
``batch_fail=K``       the first K batches of this key fail validation (no output)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
"""Answers one chat-completions request body: (HTTP status, response body)."""

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
BATCH_ENDPOINT = "/v1/chat/completions"


class BatchError(Exception):
    """A client error: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class BatchFaults:
    key: str
    turnaround_ms: float = 0.0
    expire_times: int = 0
    expire_keep: int | None = None
    fail_times: int = 0


def batch_faults(model: str) -> BatchFaults:
    """The ``batch_*`` directives of a model string (others are the online directives)."""
    _, sep, query = model.partition("?")
    key = model
    fields: dict[str, Any] = {}
    for k, v in parse_qsl(query, keep_blank_values=True) if sep else ():
        try:
            if k == "key":
                key = v
            elif k == "batch_ms":
                fields["turnaround_ms"] = max(0.0, float(v))
            elif k == "batch_expire":
                fields["expire_times"] = max(0, int(v))
            elif k == "expire_keep":
                fields["expire_keep"] = max(0, int(v))
            elif k == "batch_fail":
                fields["fail_times"] = max(0, int(v))
        except ValueError:
            raise BatchError(400, f"directive {k!r} needs a number, got {v!r}") from None
    return BatchFaults(key=key, **fields)


def strip_batch_directives(model: str) -> str:
    """The model string without ``batch_*``/``expire_keep`` (which online parsing rejects)."""
    name, sep, query = model.partition("?")
    if not sep:
        return model
    kept = [
        part
        for part in query.split("&")
        if part.partition("=")[0] not in ("batch_ms", "batch_expire", "expire_keep", "batch_fail")
    ]
    return f"{name}?{'&'.join(kept)}" if kept else name


@dataclass
class _Batch:
    id: str
    input_file_id: str
    completion_window: str
    created_at: float
    due: float
    faults: BatchFaults
    ordinal: int
    lines: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed_at: float | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    errors: list[dict[str, Any]] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": BATCH_ENDPOINT,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "completed_at": None if self.completed_at is None else int(self.completed_at),
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
        }


class BatchService:
    """Files and batches held in memory; thread-safe (the server's loop and test threads).

    Args:
        answer: answers one request line's body.
        workers: 0 (the fake server): a batch's lines are answered when it is polled after
            its turnaround. N > 0 (the local batch proxy, :mod:`evalgate.engine.batch_local`,
            whose ``answer`` calls a real model): a batch runs in the background from its
            creation, N lines at a time, and is ``completed`` once every line is answered.
    """

    def __init__(self, answer: Answer, workers: int = 0) -> None:
        self._answer = answer
        self._workers = workers
        # One pool of line slots for every batch: concurrent batches share the model
        # server's ``workers`` slots rather than each taking that many.
        self._slots = threading.BoundedSemaphore(max(1, workers))
        self._lock = threading.Lock()
        self._files: dict[str, tuple[str, bytes]] = {}  # id -> (purpose, content)
        self._batches: dict[str, _Batch] = {}
        self._ids = itertools.count(1)
        self._per_key: dict[str, int] = {}
        self.submissions = 0  # batches created, all keys
        self.cancelled = 0

    # -- counters for tests
    def submission_count(self, key: str | None = None) -> int:
        with self._lock:
            return self.submissions if key is None else self._per_key.get(key, 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "submissions": self.submissions,
                "per_key": dict(self._per_key),
                "cancelled": self.cancelled,
                "batches": {b.id: b.status for b in self._batches.values()},
                "requests": {b.id: len(b.lines) for b in self._batches.values()},
            }

    def reset(self) -> None:
        with self._lock:
            self._files.clear()
            self._batches.clear()
            self._per_key.clear()
            self.submissions = self.cancelled = 0

    # -- files
    def upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        fields = _multipart(content_type, body)
        purpose = fields.get("purpose", b"").decode()
        if purpose != "batch":
            raise BatchError(400, f"'purpose' must be 'batch', got {purpose!r}")
        if "file" not in fields:
            raise BatchError(400, "multipart field 'file' is required")
        with self._lock:
            fid = f"file-fake{next(self._ids):06d}"
            self._files[fid] = (purpose, fields["file"])
        return self._file_json(fid, fields["file"], purpose)

    def content(self, file_id: str) -> bytes:
        with self._lock:
            entry = self._files.get(file_id)
        if entry is None:
            raise BatchError(404, f"no file {file_id!r}")
        return entry[1]

    @staticmethod
    def _file_json(fid: str, content: bytes, purpose: str) -> dict[str, Any]:
        return {
            "id": fid,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": "batch.jsonl",
            "purpose": purpose,
        }

    # -- batches
    def create(self, body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except ValueError:
            raise BatchError(400, "request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise BatchError(400, "request body must be a JSON object")
        if payload.get("endpoint") != BATCH_ENDPOINT:
            raise BatchError(400, f"'endpoint' must be {BATCH_ENDPOINT!r}")
        window = payload.get("completion_window")
        if window != "24h":
            raise BatchError(400, f"'completion_window' must be '24h', got {window!r}")
        content = self.content(str(payload.get("input_file_id")))
        lines = _parse_lines(content)
        faults = batch_faults(str(lines[0]["body"].get("model", "")))
        now = time.time()
        with self._lock:
            ordinal = self._per_key.get(faults.key, 0) + 1
            self._per_key[faults.key] = ordinal
            self.submissions += 1
            batch = _Batch(
                id=f"batch_fake{next(self._ids):06d}",
                input_file_id=str(payload["input_file_id"]),
                completion_window=window,
                created_at=now,
                due=now + faults.turnaround_ms / 1000,
                faults=faults,
                ordinal=ordinal,
                lines=lines,
                metadata=payload.get("metadata"),
            )
            batch.counts["total"] = len(lines)
            self._batches[batch.id] = batch
            if self._workers:
                batch.status = "in_progress"
                threading.Thread(target=self._run, args=(batch,), daemon=True).start()
            return batch.as_json()

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        with self._lock:
            if self._workers:
                pass  # the background run moves it on
            elif batch.status == "validating":
                batch.status = "in_progress"
            elif batch.status == "in_progress" and time.time() >= batch.due:
                self._finish(batch)
            return batch.as_json()

    def list(self, query: str) -> dict[str, Any]:
        """``GET /v1/batches?limit=N&after=ID``: newest first, as OpenAI lists them."""
        params = dict(parse_qsl(query))
        try:
            limit = min(100, max(1, int(params.get("limit", "20"))))
        except ValueError:
            raise BatchError(400, f"'limit' must be an integer, got {params['limit']!r}") from None
        with self._lock:
            ordered = sorted(self._batches.values(), key=lambda b: b.id, reverse=True)
            after = params.get("after")
            if after:
                ordered = [b for b in ordered if b.id < after]
            page = [b.as_json() for b in ordered[:limit]]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(ordered) > limit,
        }

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self._get(batch_id)
        with self._lock:
            if batch.status in ("validating", "in_progress"):
                batch.status = "cancelled"
                batch.completed_at = time.time()
                self.cancelled += 1
            return batch.as_json()

    def cancel_all(self) -> int:
        """Cancels every batch still running; returns how many."""
        with self._lock:
            running = [
                b.id for b in self._batches.values() if b.status in ("validating", "in_progress")
            ]
        for batch_id in running:
            self.cancel(batch_id)
        return len(running)

    def _get(self, batch_id: str) -> _Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise BatchError(404, f"no batch {batch_id!r}")
        return batch

    def _run(self, batch: _Batch) -> None:
        """Answers a batch's lines in the background (``workers`` at a time); a cancelled
        batch stops taking new lines and keeps the answers it has."""
        from concurrent.futures import ThreadPoolExecutor

        def one(line: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
            with self._slots:
                if batch.status == "cancelled":
                    return None
                try:
                    return self._answer(line["body"])
                except OSError:
                    # The model server could not be reached (stopped mid-batch): the line
                    # was never run, so it stays unanswered and the client sends it again.
                    return None
                except Exception as exc:  # the model server failed on it: its error
                    return 502, {"error": {"message": f"{type(exc).__name__}: {exc}"[:300]}}

        with ThreadPoolExecutor(self._workers) as pool:
            answers = list(pool.map(one, batch.lines))
        with self._lock:
            self._publish(batch, answers, keep=len(batch.lines), expired=False)
            if batch.status != "cancelled":
                batch.status = "completed"
                batch.completed_at = time.time()

    def _finish(self, batch: _Batch) -> None:
        faults = batch.faults
        if batch.ordinal <= faults.fail_times:
            batch.status = "failed"
            batch.errors = [{"code": "injected_failure", "message": "injected validation failure"}]
            return
        expired = batch.ordinal <= faults.expire_times
        keep = len(batch.lines) // 2 if faults.expire_keep is None else faults.expire_keep
        answers = [
            self._answer(line["body"]) if not expired or i < keep else None
            for i, line in enumerate(batch.lines)
        ]
        self._publish(batch, answers, keep=keep if expired else len(batch.lines), expired=expired)
        batch.status = "expired" if expired else "completed"
        batch.completed_at = time.time()

    def _publish(
        self,
        batch: _Batch,
        answers: list[tuple[int, dict[str, Any]] | None],
        keep: int,
        expired: bool,
    ) -> None:
        """Writes the output and error files (lines from ``keep`` on expired when
        ``expired``; a line without an answer is left out, as a cancelled batch does)."""
        out: list[bytes] = []
        err: list[bytes] = []
        for i, (line, answer) in enumerate(zip(batch.lines, answers, strict=True)):
            rid = f"batch_req_{batch.id}_{i}"
            if expired and i >= keep:
                message = "This request could not be executed before the completion window expired."
                err.append(
                    _line(
                        rid, line["custom_id"], None, {"code": "batch_expired", "message": message}
                    )
                )
                continue
            if answer is None:
                continue
            status, body = answer
            response = {"status_code": status, "request_id": rid, "body": body}
            if status == 200:
                out.append(_line(rid, line["custom_id"], response, None))
                batch.counts["completed"] += 1
            else:
                err.append(_line(rid, line["custom_id"], response, None))
                batch.counts["failed"] += 1
        if expired:
            batch.counts["failed"] += len(batch.lines) - keep
        out.reverse()  # order is not guaranteed by OpenAI: clients must use custom_id
        for lines, attr in ((out, "output_file_id"), (err, "error_file_id")):
            if lines:
                fid = f"file-fake{next(self._ids):06d}"
                self._files[fid] = ("batch_output", b"".join(lines))
                setattr(batch, attr, fid)


def _line(rid: str, custom_id: str, response: Any, error: Any) -> bytes:
    obj = {"id": rid, "custom_id": custom_id, "response": response, "error": error}
    return _DUMPS(obj).encode() + b"\n"


def _parse_lines(content: bytes) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            raise BatchError(400, f"line {number} of the input file is not JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("body"), dict):
            raise BatchError(400, f"line {number}: needs an object with a 'body' object")
        cid = obj.get("custom_id")
        if not isinstance(cid, str) or not cid:
            raise BatchError(400, f"line {number}: 'custom_id' is required")
        if cid in seen:
            raise BatchError(400, f"line {number}: duplicate custom_id {cid!r}")
        seen.add(cid)
        if obj.get("method") != "POST" or obj.get("url") != BATCH_ENDPOINT:
            raise BatchError(400, f"line {number}: needs method POST and url {BATCH_ENDPOINT}")
        if obj["body"].get("stream"):
            raise BatchError(400, f"line {number}: streaming is not supported in batches")
        line_model = obj["body"].get("model")
        if model is not None and line_model != model:
            raise BatchError(
                400, f"line {number}: one model per batch ({line_model!r} != {model!r})"
            )
        model = line_model
        lines.append(obj)
    if not lines:
        raise BatchError(400, "the input file has no requests")
    return lines


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a ``multipart/form-data`` body (name -> content)."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params.get("boundary", "").strip('"')
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise BatchError(400, "expected multipart/form-data with a boundary")
    fields: dict[str, bytes] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.partition(b"\r\n\r\n")
        name = None
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-disposition"):
                for item in line.split(";"):
                    k, _, v = item.strip().partition("=")
                    if k == "name":
                        name = v.strip('"')
        if name is not None:
            fields[name] = content[:-2] if content.endswith(b"\r\n") else content
    return fields
