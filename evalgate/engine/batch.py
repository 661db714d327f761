"""Calls of ``batch: true`` configs, sent as OpenAI-protocol batches (Files + Batches APIs).

Why a queue: a pytest item waits on one call, but a batch needs all of its requests
submitted together. So a batch call is not made when its item asks for it: the engine
hands it to :class:`BatchQueue`, which holds it with a future, groups the queued calls
per endpoint and model (one model per batch file, as OpenAI requires), and submits a
group once no call has joined it for :attr:`BatchSettings.send_delay_s` or it reaches a
provider limit. The runner submits every batch item of the run at once, inside
:meth:`Engine.batches_held <evalgate.engine.engine.Engine.batches_held>`, so no group is
sent before the last of them has joined it. Each call's future resolves when its batch is
collected. This is Inspect AI's design (queue + background worker, grouped by count,
bytes and delay).

Nothing paid twice: before a batch is created, an intent (its requests' keys and a random
tag, sent as the batch's ``metadata.evalgate_tag``) is written to
``<run dir>/batches/intent-<tag>.json``; once created, the batch's id and keys go to
``<id>.json`` (atomically, fsync'd) before the first poll. A resumed run reads those files:
a call whose key is in a stored, uncollected batch waits on that batch (polled again)
instead of being submitted; an intent left by a process killed between creating a batch
and storing its id is resolved by listing the endpoint's batches for its tag. Choosing
what to submit and recording it happen under ``batches/.lock`` (flock), and a request
another process already put in a batch waits on that batch, so two processes resuming one
run pay once. Requests a batch did not answer (expired, failed, cancelled, or missing
from its output) are submitted again, alone. Per-request errors (an HTTP error status in
the error file) become error results, like any other error. A batch that has not ended
after ``max_wait_s`` ends its calls with an error and stays recorded for a later resume.

The custom_id is the request's cache key (:meth:`CallSpec.cache_key`), not the item key:
the engine sees requests, not items; the key names the request exactly (model, endpoint,
messages, parameters, repeat), so identical requests share one line, and it survives a
resume unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.results import CallResult
from evalgate.runtime.batch_provider import batch_rates

if TYPE_CHECKING:
    import aiohttp

    from evalgate.engine.native import NativeTarget

OPENAI_MAX_REQUESTS = 50_000
"""OpenAI's documented limit of requests per batch."""
OPENAI_MAX_BYTES = 200 * 1024 * 1024
"""OpenAI's documented limit of a batch input file (200 MB)."""
BATCH_DISCOUNT = 0.5
"""OpenAI's and Anthropic's documented batch discount: half the online price."""
MAX_SUBMISSIONS = 3
"""Times one request is submitted before its error stands (expired, failed batches)."""
ENDPOINT = "/v1/chat/completions"
_TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def batch_unsupported(model: str, api_base: str | None, transport: str) -> str | None:
    """Why ``model`` cannot run as batches (None: it can), in one phrase.

    Batches go over the native OpenAI-protocol transport: an ``openai/``-style model with
    an endpoint (its api_base, or OpenAI's API), or ``transport: native`` with an api_base;
    a ``local/`` model's batches go to its server's batch proxy (``batch_local``).
    """
    from evalgate.engine.native import OPENAI_PROTOCOL_PREFIXES

    prefix, slash, _ = model.partition("/")
    if prefix == "local" and slash:
        return None
    if transport == "litellm":
        return f"batch not supported for {model} with transport: litellm"
    if slash and prefix in OPENAI_PROTOCOL_PREFIXES and (api_base or prefix == "openai"):
        return None
    if transport == "native" and api_base:
        return None
    return (
        f"batch not supported for {model}: batches need an OpenAI-protocol endpoint "
        "(an openai/ model, or a tier with api_base)"
    )


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How batches are made.

    Attributes:
        max_requests: requests per batch at most (a larger group is split).
        max_bytes: input file size at most, in bytes (a larger group is split).
        send_delay_s: a group is submitted once no call has joined it for this long.
        poll_s: first wait between polls; it grows by half each poll up to ``max_poll_s``.
        max_poll_s: longest wait between polls.
        max_wait_s: longest wait for one batch to end (default 26 h: OpenAI's window is
            24 h); past it the calls end with an error naming the batch, which stays
            recorded for a resumed run to collect.
    """

    max_requests: int = OPENAI_MAX_REQUESTS
    max_bytes: int = OPENAI_MAX_BYTES
    send_delay_s: float = 0.5
    poll_s: float = 1.0
    max_poll_s: float = 60.0
    max_wait_s: float = 26 * 3600.0

    @classmethod
    def from_env(cls) -> BatchSettings:
        """Defaults, overridden by ``EVALGATE_BATCH_MAX_REQUESTS``, ``..._MAX_BYTES``,
        ``..._SEND_DELAY_S``, ``..._POLL_S``, ``..._MAX_POLL_S`` and ``..._MAX_WAIT_S``."""
        values: dict[str, Any] = {}
        for name, kind in (
            ("max_requests", int),
            ("max_bytes", int),
            ("send_delay_s", float),
            ("poll_s", float),
            ("max_poll_s", float),
            ("max_wait_s", float),
        ):
            env = f"EVALGATE_BATCH_{name.upper()}"
            raw = os.environ.get(env, "").strip()
            if not raw:
                continue
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{env} must be a number, got {raw!r}") from None
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{env} must be a finite number > 0, got {raw!r}")
            values[name] = value
        return cls(**values)


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A submitted batch as the run directory records it."""

    batch_id: str
    base_url: str
    model: str
    keys: tuple[str, ...]
    submitted_at: float
    collected: bool = False
    tag: str = ""
    """Sent as the batch's ``metadata.evalgate_tag``: finds a batch whose id was never
    stored (the process died between creating it and recording it)."""

    @property
    def is_intent(self) -> bool:
        """Recorded before submission: the batch may or may not exist on the server."""
        return not self.batch_id


class BatchStore:
    """One JSON file per submitted batch under the run directory's ``batches/``.

    Written atomically (temporary file, fsync, rename, directory fsync): a kill at any
    point leaves the previous state or the new one, never half a file. One file per batch
    means several processes (xdist workers) never write the same file.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, batch: StoredBatch) -> Path:
        name = batch.batch_id or f"intent-{batch.tag}"
        return self.directory / f"{_safe(name)}.json"

    def record(self, batch: StoredBatch) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(batch)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        data = {
            "batch_id": batch.batch_id,
            "base_url": batch.base_url,
            "model": batch.model,
            "keys": list(batch.keys),
            "submitted_at": batch.submitted_at,
            "collected": batch.collected,
            "tag": batch.tag,
        }
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def forget(self, batch: StoredBatch) -> None:
        """Removes a record (an intent once its batch is recorded, or found never made)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(batch).unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes (``flock`` on ``batches/.lock``): deciding whether a
        request still needs a batch and recording the batch made for it is one step, so
        two processes resuming one run never both pay for the same request."""
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def pending(self) -> list[StoredBatch]:
        """Stored batches not collected yet (unreadable files are skipped)."""
        return [batch for batch in self.records() if not batch.collected]

    def records(self) -> list[StoredBatch]:
        """Every stored batch and intent, collected or not (unreadable files skipped)."""
        found: list[StoredBatch] = []
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else ():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                batch = StoredBatch(
                    batch_id=str(raw["batch_id"]),
                    base_url=str(raw["base_url"]),
                    model=str(raw["model"]),
                    keys=tuple(str(k) for k in raw["keys"]),
                    submitted_at=float(raw["submitted_at"]),
                    collected=bool(raw["collected"]),
                    tag=str(raw.get("tag") or ""),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
            found.append(batch)
        return found


def _safe(batch_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in batch_id)[:200]


# --------------------------------------------------------------------------- protocol


class BatchProtocolError(RuntimeError):
    """The endpoint answered the Files/Batches protocol with an error (``status``: HTTP)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Client:
    """The Files and Batches endpoints of one OpenAI-protocol server."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with self._session.request(method, self.base_url + path, **kwargs) as reply:
            raw = await reply.read()
            if reply.status >= 400:
                raise BatchProtocolError(
                    f"{method} {path}: HTTP {reply.status}: {raw[:300].decode(errors='replace')}",
                    reply.status,
                )
        try:
            obj = json.loads(raw)
        except ValueError:
            raise BatchProtocolError(f"{method} {path}: reply is not JSON") from None
        if not isinstance(obj, dict):
            raise BatchProtocolError(f"{method} {path}: reply is not a JSON object")
        return obj

    async def submit(self, content: bytes, tag: str = "") -> str:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename="batch.jsonl", content_type="application/jsonl")
        uploaded = await self._json("POST", "/files", data=form)
        created = await self._json(
            "POST",
            "/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": ENDPOINT,
                "completion_window": "24h",
                **({"metadata": {"evalgate_tag": tag}} if tag else {}),
            },
        )
        return str(created["id"])

    async def find(self, tag: str, pages: int = 20) -> str | None:
        """The id of the batch created with ``metadata.evalgate_tag == tag`` among the
        newest ``pages`` x 100 batches (``GET /batches``, newest first), else None."""
        after = ""
        for _ in range(pages):
            listing = await self._json("GET", f"/batches?limit=100{after}")
            data = listing.get("data")
            if not isinstance(data, list):
                return None
            for batch in data:
                meta = batch.get("metadata") if isinstance(batch, dict) else None
                if isinstance(meta, dict) and meta.get("evalgate_tag") == tag:
                    return str(batch["id"])
            if not listing.get("has_more") or not data:
                return None
            after = f"&after={data[-1].get('id')}"
        return None

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._json("POST", f"/batches/{batch_id}/cancel")

    async def content(self, file_id: str) -> bytes:
        async with self._session.get(f"{self.base_url}/files/{file_id}/content") as reply:
            raw = await reply.read()
            if reply.status >= 400:
                raise BatchProtocolError(
                    f"GET /files/{file_id}/content: HTTP {reply.status}", reply.status
                )
            return raw


# --------------------------------------------------------------------------- pricing
# litellm's batch price lookup has one home, shared with the runtime's policy.batch.


def batch_cost(
    spec: CallSpec, target: NativeTarget, input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """A batch call's USD cost: litellm's batch price for the model where it has one (and
    the tier sets no price), else the online price with the documented 50% discount."""
    from evalgate.engine.native import native_cost

    if input_tokens is None or output_tokens is None:
        return None
    if spec.price is None and (rates := batch_rates(target.price_model)) is not None:
        return input_tokens * rates[0] + output_tokens * rates[1]
    online = native_cost(spec, target, input_tokens, output_tokens)
    return None if online is None else online * BATCH_DISCOUNT


def price_source(model: str, has_tier_price: bool) -> str:
    """How a batch config is priced, for the report: litellm's batch price or the discount."""
    if not has_tier_price and batch_rates(model) is not None:
        return "litellm batch price"
    return "online price x 0.5 (documented batch discount)"


# --------------------------------------------------------------------------- the queue


@dataclass
class _Waiting:
    """One distinct request in the queue and every call waiting for its answer."""

    spec: CallSpec
    target: NativeTarget
    line: bytes
    futures: list[asyncio.Future[CallResult]] = field(default_factory=list)
    submissions: int = 0
    # Batches already collected for this request: never waited on again for it.
    tried: set[str] = field(default_factory=set)


@dataclass
class _Group:
    waiting: dict[str, _Waiting] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class BatchStillRunning(RuntimeError):
    """A batch did not end within :attr:`BatchSettings.max_wait_s`."""


class BatchQueue:
    """Queues batch calls, submits them in groups, polls, and resolves each call's future.

    Lives on the engine's event loop, with its own HTTP sessions (per endpoint and key): the
    chat transport's sessions send ``Content-Type: application/json`` on every request,
    which a multipart upload must not carry.
    """

    def __init__(
        self,
        store: BatchStore | None,
        settings: BatchSettings | None = None,
        batch_base: Callable[[str], str] | None = None,
    ) -> None:
        # A chat endpoint's base URL -> where its batches go (a local model's batch proxy).
        self._batch_base = batch_base or (lambda base: base)
        self._sessions: dict[tuple[str, str | None], aiohttp.ClientSession] = {}
        self._store = store
        self.settings = settings or BatchSettings()
        self._groups: dict[tuple[str, str], _Group] = {}
        # Batches in flight: id -> (client, stored record); what close() cancels.
        self._live: dict[str, tuple[_Client, StoredBatch]] = {}
        # Batches being created (tag -> client): close() finds and cancels them by tag.
        self._creating: dict[str, _Client] = {}
        # A resumed run's stored batches, by request key; their pollers start on demand.
        self._stored: dict[str, StoredBatch] = {}
        self._recovering: dict[str, dict[str, _Waiting]] = {}
        # Collected batches of earlier processes: a call whose result was never written
        # (killed after collection) takes its answer from there; errors are asked again.
        self._answered_in: dict[str, StoredBatch] = {}
        if store is not None:
            for batch in store.records():
                for key in batch.keys:
                    (self._answered_in if batch.collected else self._stored)[key] = batch
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = time.time()
        self._submit_lock: asyncio.Lock | None = None
        self.submitted = 0  # batches this process created
        # While held (the runner is submitting a run's batch calls), groups wait: a pause
        # in the submitting thread must not cut a batch in two.
        self._holds = 0

    def hold(self) -> None:
        self._holds += 1

    def release(self) -> None:
        self._holds = max(0, self._holds - 1)
        if not self._holds:
            for group_key, group in list(self._groups.items()):
                self._arm(group_key, group)

    async def call(self, spec: CallSpec, target: NativeTarget) -> CallResult:
        """The call's result, once the batch that carries it is collected; never raises."""
        key = spec.cache_key()
        future: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        stored = self._stored.get(key) or self._answered_in.get(key)
        if stored is not None:
            recovering = self._recovering.setdefault(_ident(stored), {})
            first = not recovering
            waiting = recovering.setdefault(key, _Waiting(spec, target, b"", submissions=1))
            waiting.futures.append(future)
            if first:
                self._spawn(self._recover(stored, target), recovering)
            return await future
        group_key = (self._batch_base(_base_url(target)), target.model)
        group = self._groups.setdefault(group_key, _Group())
        queued = group.waiting.get(key)
        if queued is None:
            queued = _Waiting(spec, target, _request_line(key, spec, target))
            group.waiting[key] = queued
        queued.futures.append(future)  # identical requests: one line, every caller answered
        self._arm(group_key, group)
        return await future

    def _arm(self, group_key: tuple[str, str], group: _Group) -> None:
        if group.timer is not None:
            group.timer.cancel()
        loop = asyncio.get_running_loop()
        if len(group.waiting) >= self.settings.max_requests:
            group.timer = None
            self._flush(group_key, full=True)
        else:
            group.timer = loop.call_later(self.settings.send_delay_s, self._flush, group_key)

    def _flush(self, group_key: tuple[str, str], *, full: bool = False) -> None:
        if self._holds and not full:
            return  # armed again on release
        group = self._groups.pop(group_key, None)
        if group is None or not group.waiting:
            return
        if group.timer is not None:
            group.timer.cancel()
        for chunk in self._split(group.waiting):
            self._spawn(self._submit_and_collect(chunk), chunk)

    def _split(self, waiting: dict[str, _Waiting]) -> Iterator[dict[str, _Waiting]]:
        """Chunks within the request and byte limits (bytes: 95% of the cap, for safety)."""
        max_bytes = int(self.settings.max_bytes * 0.95)
        chunk: dict[str, _Waiting] = {}
        size = 0
        for key, item in waiting.items():
            line = len(item.line)
            if chunk and (len(chunk) >= self.settings.max_requests or size + line > max_bytes):
                yield chunk
                chunk, size = {}, 0
            chunk[key] = item
            size += line
        if chunk:
            yield chunk

    def _spawn(self, coro: Any, chunk: dict[str, _Waiting] | None = None) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if chunk is not None:
            task.add_done_callback(lambda t: self._fail_if_crashed(t, chunk))

    @staticmethod
    def _fail_if_crashed(task: asyncio.Task[None], chunk: dict[str, _Waiting]) -> None:
        """A defect in collecting a batch ends its calls with an error, never in a hang."""
        if task.cancelled() or task.exception() is None:
            return
        reason = f"BatchError: {_describe(task.exception())}"  # type: ignore[arg-type]
        for item in chunk.values():
            _resolve(item, CallResult(error=reason, attempts=item.submissions))

    def _client(self, target: NativeTarget, base_url: str | None = None) -> _Client:
        import aiohttp

        base = base_url or self._batch_base(_base_url(target))
        session = self._sessions.get((base, target.api_key))
        if session is None or session.closed:
            headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
            session = aiohttp.ClientSession(headers=headers, trust_env=True)
            self._sessions[base, target.api_key] = session
        return _Client(session, base)

    # -- the store, under its lock -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self) -> Any:
        """The store's lock: one task of this process at a time, then one process."""
        if self._submit_lock is None:
            self._submit_lock = asyncio.Lock()
        async with self._submit_lock:
            if self._store is None:
                yield
                return
            held = self._store.locked()
            await asyncio.to_thread(held.__enter__)
            try:
                yield
            finally:
                held.__exit__(None, None, None)

    async def _record(self, batch: StoredBatch) -> None:
        if self._store is None:
            return
        try:
            await asyncio.to_thread(self._store.record, batch)
        except OSError as exc:
            _warn(f"could not record batch {_ident(batch)} in the run directory: {exc}")

    async def _forget(self, batch: StoredBatch) -> None:
        if self._store is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._store.forget, batch)

    async def _claimed(
        self, chunk: dict[str, _Waiting]
    ) -> list[tuple[StoredBatch, dict[str, _Waiting]]]:
        """Requests of ``chunk`` another batch in the store already carries (another
        process's, made while this one ran or not collected yet): wait on it, never pay
        twice. Called under the store's lock; removes them from ``chunk``."""
        if self._store is None:
            return []
        records = await asyncio.to_thread(self._store.records)
        holder: dict[str, StoredBatch] = {}
        for record in records:
            if record.is_intent or (record.collected and record.submitted_at < self._started):
                continue  # an intent's process is gone (we hold the lock); old answers are old
            for key in record.keys:
                item = chunk.get(key)
                if item is None or record.batch_id in item.tried:
                    continue
                if key not in holder or holder[key].submitted_at < record.submitted_at:
                    holder[key] = record
        grouped: dict[str, tuple[StoredBatch, dict[str, _Waiting]]] = {}
        for key, record in holder.items():
            grouped.setdefault(record.batch_id, (record, {}))[1][key] = chunk.pop(key)
        return list(grouped.values())

    # -- submit, recover, collect ------------------------------------------------------------

    async def _submit_and_collect(self, chunk: dict[str, _Waiting]) -> None:
        target = next(iter(chunk.values())).target
        client = self._client(target)
        stored: StoredBatch | None = None
        async with self._locked():
            for record, part in await self._claimed(chunk):
                self._spawn(
                    self._collect(self._client(target, record.base_url), record, part), part
                )
            if not chunk:
                return
            for item in chunk.values():
                item.submissions += 1
            tag = uuid.uuid4().hex
            # The intent is on disk before the batch exists: a process killed before the
            # batch's id is recorded leaves the tag, and a resumed run finds the batch by it.
            intent = StoredBatch(
                "", client.base_url, target.model, tuple(chunk), time.time(), tag=tag
            )
            await self._record(intent)
            self._creating[tag] = client
            try:
                batch_id = await client.submit(b"".join(item.line for item in chunk.values()), tag)
            except Exception as exc:
                batch_id = None
                if not isinstance(exc, BatchProtocolError) or exc.status is None:
                    # No answer (connection lost, timeout): the batch may exist all the same.
                    with contextlib.suppress(Exception):
                        batch_id = await client.find(tag)
                if batch_id is None:
                    await self._forget(intent)
                    self._retry_or_fail(chunk, f"batch submission failed: {_describe(exc)}")
                    return
            finally:
                self._creating.pop(tag, None)
            self.submitted += 1
            stored = StoredBatch(
                batch_id, client.base_url, target.model, tuple(chunk), intent.submitted_at, tag=tag
            )
            # Before the first poll: a run killed from here on finds it on resume.
            await self._record(stored)
            await self._forget(intent)
        await self._collect(client, stored, chunk)

    async def _recover(self, stored: StoredBatch, target: NativeTarget) -> None:
        # Give the resumed run's other calls of this batch time to join before collecting.
        await asyncio.sleep(self.settings.send_delay_s)
        chunk = self._recovering.get(_ident(stored), {})
        try:
            client = self._client(target, stored.base_url)
            if stored.is_intent:
                adopted = await self._adopt(client, stored)
                if adopted is None:
                    self._retry_or_fail(chunk, "its batch was never created")
                    return
                stored = adopted
            await self._collect(client, stored, chunk)
        finally:
            # Calls that arrive after collection are no longer served by this batch.
            for key in stored.keys:
                self._stored.pop(key, None)
                self._answered_in.pop(key, None)
            self._recovering.pop(_ident(stored), None)

    async def _adopt(self, client: _Client, intent: StoredBatch) -> StoredBatch | None:
        """The batch a killed process created for ``intent`` (recorded now), else None."""
        async with self._locked():
            batch_id = await client.find(intent.tag)
            if batch_id is None:
                await self._forget(intent)
                return None
            stored = StoredBatch(
                batch_id,
                intent.base_url,
                intent.model,
                intent.keys,
                intent.submitted_at,
                tag=intent.tag,
            )
            await self._record(stored)
            await self._forget(intent)
            return stored

    async def _collect(
        self, client: _Client, stored: StoredBatch, chunk: dict[str, _Waiting]
    ) -> None:
        self._live[stored.batch_id] = (client, stored)
        try:
            batch = await self._poll(client, stored.batch_id)
        except BatchStillRunning as exc:
            self._live.pop(stored.batch_id, None)
            # Left running and recorded: a later resume collects it (nothing is lost).
            message = (
                f"BatchError: {exc}; it stays recorded: run again with --evalgate-resume to "
                f"collect it, or cancel it: POST {stored.base_url}/batches/{stored.batch_id}/cancel"
            )
            for item in chunk.values():
                _resolve(item, CallResult(error=message, attempts=item.submissions))
            return
        except Exception as exc:
            self._live.pop(stored.batch_id, None)
            if isinstance(exc, BatchProtocolError) and exc.status == 404:
                # The endpoint does not know it (deleted, another server): never poll again.
                await self._mark_collected(stored)
            for item in chunk.values():
                item.tried.add(stored.batch_id)
            self._retry_or_fail(chunk, f"batch {stored.batch_id}: {_describe(exc)}")
            return
        self._live.pop(stored.batch_id, None)
        turnaround_ms = (time.time() - stored.submitted_at) * 1000
        try:
            lines = await self._lines(client, batch, chunk)
        except Exception as exc:
            self._retry_or_fail(chunk, f"batch {stored.batch_id}: {_describe(exc)}")
            return
        missing: dict[str, _Waiting] = {}
        answered: list[tuple[_Waiting, CallResult]] = []
        for key, item in chunk.items():
            item.tried.add(stored.batch_id)
            try:
                result = _result_of(lines.get(key), item, turnaround_ms)
            except Exception:  # a line of an unexpected shape: that call's error, not a hang
                result = CallResult(
                    error="APIError: malformed batch output line", attempts=item.submissions
                )
            if result is None or (stored.collected and result.error is not None):
                missing[key] = item  # collected earlier: only its answers are reused
            else:
                answered.append((item, result))
        await self._mark_collected(stored)
        for item, result in answered:
            _resolve(item, result)
        if missing:
            reason = f"batch {stored.batch_id} ended {batch.get('status')} without an answer"
            self._retry_or_fail(missing, reason)

    async def _lines(
        self, client: _Client, batch: dict[str, Any], chunk: dict[str, _Waiting]
    ) -> dict[str, dict[str, Any]]:
        """Output and error lines by custom_id. A custom_id seen twice keeps its first
        answered line (a 200 response) over an error or a malformed one; lines that are
        not JSON objects and ids this batch never sent are skipped (and counted)."""
        lines: dict[str, dict[str, Any]] = {}
        skipped = duplicates = 0
        for file_key in ("output_file_id", "error_file_id"):
            if not batch.get(file_key):
                continue
            for raw in (await client.content(str(batch[file_key]))).splitlines():
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                    custom_id = obj["custom_id"]
                except (ValueError, TypeError, KeyError):
                    skipped += 1
                    continue
                if not isinstance(custom_id, str) or custom_id not in chunk:
                    skipped += 1
                    continue
                kept = lines.get(custom_id)
                if kept is not None:
                    duplicates += 1
                    if _answered(kept) or not _answered(obj):
                        continue
                lines[custom_id] = obj
        if skipped or duplicates:
            _warn(
                f"batch {batch.get('id')}: skipped {skipped} line(s) that are not JSON or "
                f"name no request of this batch, and {duplicates} repeated custom_id(s)"
            )
        return lines

    async def _mark_collected(self, stored: StoredBatch) -> None:
        """Marks it collected before any caller sees its results (written on the loop's
        thread, one small file): a run that closes right after its last result must not
        leave it "uncollected", or a resumed run retrying an error would be served the
        same error line from it instead of a new request."""
        done = StoredBatch(
            stored.batch_id,
            stored.base_url,
            stored.model,
            stored.keys,
            stored.submitted_at,
            True,
            stored.tag,
        )
        if self._store is not None:
            try:
                self._store.record(done)
            except OSError as exc:
                _warn(f"could not mark batch {stored.batch_id} collected: {exc}")

    def _retry_or_fail(self, chunk: dict[str, _Waiting], reason: str) -> None:
        """Submits again (alone) the requests still without a result, up to a limit."""
        again: dict[str, _Waiting] = {}
        for key, item in chunk.items():
            if item.submissions >= MAX_SUBMISSIONS:
                _resolve(item, CallResult(error=f"BatchError: {reason}", attempts=item.submissions))
            else:
                if not item.line:  # recovered from a stored batch: not built in this run
                    item.line = _request_line(key, item.spec, item.target)
                again[key] = item
        for part in self._split(again) if again else ():
            self._spawn(self._submit_and_collect(part), part)

    async def _poll(self, client: _Client, batch_id: str) -> dict[str, Any]:
        wait = self.settings.poll_s
        deadline = time.monotonic() + self.settings.max_wait_s
        while True:
            batch = await client.retrieve(batch_id)
            status = batch.get("status")
            if status in _TERMINAL:
                return batch
            if time.monotonic() + wait > deadline:
                raise BatchStillRunning(
                    f"batch {batch_id} still {status} after "
                    f"{self.settings.max_wait_s:g} s (EVALGATE_BATCH_MAX_WAIT_S)"
                )
            await asyncio.sleep(wait)
            wait = min(self.settings.max_poll_s, wait * 1.5)

    async def aclose(self) -> list[str]:
        """Cancels the batches still in flight; returns those that could not be cancelled
        (a one-line notice names them and the command that cancels them)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        live = [(batch_id, client) for batch_id, (client, _) in self._live.items()]
        for tag, client in list(self._creating.items()):
            # Interrupted while creating it: the batch may exist; find it by its tag.
            with contextlib.suppress(Exception):
                batch_id = await client.find(tag)
                if batch_id is not None and batch_id not in self._live:
                    live.append((batch_id, client))
        remaining: list[str] = []
        for batch_id, client in live:
            try:
                await client.cancel(batch_id)
                _warn(f"cancelled batch {batch_id} at {client.base_url} (run interrupted)")
            except Exception:
                remaining.append(f"{batch_id} at {client.base_url}")
        self._live.clear()
        self._creating.clear()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        if remaining:
            _warn(
                "these batches may still run (and bill): "
                + ", ".join(remaining)
                + "; cancel each with: curl -X POST -H 'Authorization: Bearer $KEY' "
                "<base_url>/batches/<id>/cancel"
            )
        return remaining


def _ident(batch: StoredBatch) -> str:
    return batch.batch_id or f"intent-{batch.tag}"


def _answered(line: Any) -> bool:
    response = line.get("response") if isinstance(line, dict) else None
    return isinstance(response, dict) and response.get("status_code") == 200


def _resolve(item: _Waiting, result: CallResult) -> None:
    for future in item.futures:
        if not future.done():
            future.set_result(result)
    item.futures.clear()


def _result_of(
    line: dict[str, Any] | None, item: _Waiting, turnaround_ms: float
) -> CallResult | None:
    """The call's result from its output or error line; None: not answered (submit again)."""
    if line is None:
        return None
    error = line.get("error")
    response = line.get("response")
    if not isinstance(response, dict):
        if isinstance(error, dict) and error.get("code") not in (None, "batch_expired"):
            text = f"{error.get('code')}: {error.get('message')}"
            return CallResult(error=f"BatchError: {text}"[:400], attempts=item.submissions)
        return None  # expired (or no response at all): submit again
    status = response.get("status_code")
    body: Any = response.get("body")
    if status != 200:
        problem = body.get("error") if isinstance(body, dict) else None
        message = problem.get("message") if isinstance(problem, dict) else problem
        return CallResult(
            error=f"APIError: HTTP {status} in batch: {message or body!r}"[:400],
            attempts=item.submissions,
        )
    try:
        choice = body["choices"][0]
        output = choice["message"].get("content") or ""
        finish = choice.get("finish_reason")
        usage = body.get("usage") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        return CallResult(error="APIError: malformed batch output line", attempts=item.submissions)
    input_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    output_tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    input_tokens = input_tokens if isinstance(input_tokens, int) else None
    output_tokens = output_tokens if isinstance(output_tokens, int) else None
    return CallResult(
        output=output if isinstance(output, str) else "",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=batch_cost(item.spec, item.target, input_tokens, output_tokens),
        latency_ms=turnaround_ms,
        ttft_ms=None,
        finish_reason=finish if isinstance(finish, str) else None,
        attempts=item.submissions,
    )


def _request_line(key: str, spec: CallSpec, target: NativeTarget) -> bytes:
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [dict(m) for m in spec.messages],
        "max_completion_tokens" if target.official else "max_tokens": spec.max_tokens,
        "temperature": spec.temperature,
        **dict(spec.params),
    }
    line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}
    return _ENCODE(line).encode() + b"\n"


def _base_url(target: NativeTarget) -> str:
    url = target.url
    return url[: -len("/chat/completions")] if url.endswith("/chat/completions") else url


def _describe(exc: BaseException) -> str:
    from evalgate.engine.engine import describe

    return describe(exc)


def _warn(message: str) -> None:
    print(f"evalgate: batch: {message}", file=sys.stderr, flush=True)


__all__ = [
    "BATCH_DISCOUNT",
    "BatchQueue",
    "BatchSettings",
    "BatchStore",
    "Endpoint",
    "batch_cost",
    "batch_unsupported",
]
