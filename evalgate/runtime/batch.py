"""``policy.batch(feature, requests)``: an application's offline requests as provider batches.

Each request goes through the feature's policy as an online call would (model, trim,
cap), then:

- **limits**: every request is admitted before anything is sent, all or none (a refusal
  releases what the others reserved); reservations hold for the batch's window
  (:data:`RESERVATION_TTL_S`), not a call's, and settle per request when its result comes;
- **cache**: a cached answer is served at once and never sent;
- the rest is grouped per model (one model per batch file), split under the provider's
  caps, and submitted through litellm's batch functions
  (:mod:`evalgate.runtime.batch_provider`); :mod:`evalgate.runtime.batch_requests` holds
  a request's way into and out of the stored state.

The returned :class:`BatchHandle` is polled (``handle.poll()``), waited on
(``handle.wait()``) or awaited (``await handle``). Each result is recorded in the usage
ledger as a call would be, priced at the batch price (litellm's batch price where it has
one, else the online price with the documented 50% discount), with its ``batch_id``;
answers are stored in the cache.

Nothing lost, nothing paid twice: the handle's state (requests, reservations, batch ids)
is stored in the policy's backend (SQLite or Redis) under its id before each batch is
created, with a tag sent as the batch's metadata; ``policy.batch_handle(id)`` in another
process picks it up, finds a batch whose id was never stored by its tag, and collects.
Requests a batch did not answer (expired, cancelled, missing) are submitted again, up to
:data:`MAX_SUBMISSIONS` times. Exactly once: one process at a time advances a handle (a
lease of :data:`LEASE_S` in the backend), and each request's result is recorded (ledger,
limits, cache) only by the collector that claims it, so two processes waiting on one
handle, or a second taking over from a slow one, never record it twice. A provider or
backend that cannot be reached makes a poll answer "not yet". ``evalgate cache clear``
also forgets stored handles (their batches still run: cancel them first).

Imports neither pytest nor the eval stack; litellm on first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalgate.runtime.batch_provider import (
    TERMINAL,
    Provider,
    answered,
    batch_rates,
    parse_lines,
    provider_of,
)
from evalgate.runtime.batch_requests import (
    MAX_BATCH_BYTES,
    MAX_REQUESTS_PER_BATCH,
    RESERVATION_TTL_S,
    admit,
    call_of,
    dump_call,
    line_of,
    prepare,
    restored_admissions,
    split,
)
from evalgate.runtime.batch_requests import describe as _describe
from evalgate.runtime.cache import CachedAnswer, is_cacheable
from evalgate.runtime.cascade import CascadeRouting
from evalgate.runtime.errors import PolicyError
from evalgate.runtime.policy_file import FeaturePolicy, Route

if TYPE_CHECKING:
    from evalgate.runtime.callpath import Admission, Endpoint, Policy, PreparedCall

BATCH_DISCOUNT = 0.5
"""OpenAI's and Anthropic's documented batch discount: half the online price."""
MAX_SUBMISSIONS = 3
"""Times one request is submitted before it stands unanswered (an error result)."""
HANDLE_TTL_S = 30 * 86400.0
"""How long a handle's state is kept in the backend."""
LEASE_S = 600.0
"""How long one process may collect a handle before another may take over (it died)."""
log = logging.getLogger("evalgate.runtime")
_KEY = "evalgate-batch:"
_LEASE = "evalgate-batch-lease:"
_DONE = "evalgate-batch-done:"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One request's outcome, in the order the requests were given.

    Attributes:
        index: the request's position in ``requests``.
        content: the answer's text (None on an error).
        error: None, or the error's type and message (one line).
        cached: served from the cache (never sent to a batch).
        model: the route that answered.
        batch_id: the provider batch that carried it (None for a cache hit).
    """

    index: int
    content: str | None
    error: str | None
    cached: bool = False
    model: str = ""
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    finish_reason: str | None = None
    batch_id: str | None = None


def submit_batch(
    policy: Policy, feature_name: str, requests: Sequence[Mapping[str, Any]]
) -> BatchHandle:
    """See :meth:`Policy.batch <evalgate.runtime.Policy.batch>`."""
    feature = policy.feature(feature_name)
    if isinstance(feature.router, CascadeRouting):
        raise PolicyError(
            f"{policy.document.path}: features.{feature.name}: a cascade checks each answer "
            "before it escalates; it cannot run as a batch"
        )
    calls = [prepare(policy, feature_name, i, req) for i, req in enumerate(requests)]
    admissions: list[list[Admission]] = []
    try:
        for call in calls:
            admissions.append(admit(policy, call))
    except Exception:
        for admitted in admissions:  # all or none: a refusal leaves nothing reserved
            policy._settle_unused(admitted)
        raise
    try:
        try:
            handle, state, hits = _store_new(policy, feature, calls, admissions)
        except policy.backend.errors as exc:
            raise PolicyError(
                f"batch of features.{feature.name}: cannot store its handle in "
                f"{policy.backend.url} ({_describe(exc)}); nothing was sent"
            ) from None
    except BaseException:
        # Nothing was sent and no handle exists: a reservation left would hold for 26 h.
        for admitted in admissions:
            # Its backend down too: the reservation's TTL ends it.
            with suppress(Exception):
                policy._settle_unused(admitted)
        raise
    for call, admitted, hit in hits:  # recorded once the handle is stored
        policy._finish(call, admitted, policy._hit_record(call, hit, None))
    for group in list(state["groups"]):
        handle._create(state, group)
    return handle


def _store_new(
    policy: Policy,
    feature: FeaturePolicy,
    calls: list[PreparedCall],
    admissions: list[list[Admission]],
) -> tuple[BatchHandle, dict[str, Any], list[tuple[PreparedCall, list[Admission], Any]]]:
    """The handle and its state, stored before any batch exists (cache hits answered)."""
    handle = BatchHandle(policy, uuid.uuid4().hex, feature.name)
    state: dict[str, Any] = {
        "v": 1,
        "id": handle.id,
        "feature": feature.name,
        "created": time.time(),
        "requests": [],
        "groups": [],
    }
    groups: dict[str, list[int]] = {}
    hits = []
    for index, (call, admitted) in enumerate(zip(calls, admissions, strict=True)):
        handle._admissions[index] = admitted
        request = dump_call(call, admitted)
        state["requests"].append(request)
        try:
            hit = policy._lookup(call)
        except Exception:
            hit = None  # the cache is down: the request is sent
        if hit is not None:  # a cached answer is never sent
            hits.append((call, admitted, hit))
            request["result"] = _result_json(
                index,
                hit.answer.content,
                None,
                cached=True,
                model=hit.answer.model,
                finish_reason=hit.answer.finish_reason,
            )
            continue
        groups.setdefault(call.routes[0].where, []).append(index)
    state["groups"] = [
        {
            "route": where,
            "indices": chunk,
            "tag": None,
            "batch_id": None,
            "submitted": None,
            "collected": False,
        }
        for where, indices in groups.items()
        for chunk in split(state["requests"], indices, where)
    ]
    handle._save(state)  # before any batch exists: a new process finds every request
    return handle, state, hits


class BatchHandle:
    """A submitted batch of a feature's requests: poll, wait or await its results.

    ``Policy.batch_handle(handle.id)`` gives the same handle in another process.
    """

    def __init__(self, policy: Policy, handle_id: str, feature: str) -> None:
        self.policy = policy
        self.id = handle_id
        self.feature = feature
        self._lock = threading.Lock()
        # This handle's lease token: a lease it could not release (the backend went down
        # mid-poll) is still its own when the backend is back.
        self._token = uuid.uuid4().hex.encode()
        # This process's admissions (custom guards' cannot be stored): index -> admissions.
        self._admissions: dict[int, list[Admission]] = {}

    def __repr__(self) -> str:
        return f"BatchHandle(id={self.id!r}, feature={self.feature!r})"

    # -- state in the backend -------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        raw = self.policy.backend.cache_get(_KEY + self.id)
        if raw is None:
            raise PolicyError(
                f"batch handle {self.id!r}: not found in {self.policy.backend.url} "
                "(wrong backend, expired, or the cache was cleared)"
            )
        return json.loads(raw)

    def _save(self, state: dict[str, Any]) -> None:
        data = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode()
        self.policy.backend.cache_set(_KEY + self.id, data, HANDLE_TTL_S)

    # -- status ---------------------------------------------------------------------------

    def poll(self) -> bool:
        """Checks the batches once, collects those that ended; True when all have.

        One process at a time advances a handle (a lease in the backend); another polling
        meanwhile only reads the stored state, so no batch is created twice. While the
        backend is down, the answer is False (not yet): the batches wait on the provider,
        and what was recorded before is claimed, so nothing is recorded twice later."""
        try:
            with self._lock, self._lease() as mine:
                state = self._load()
                if not mine:
                    return _finished(state)
                for group in state["groups"]:
                    if not group["collected"]:
                        self._advance_or_wait(state, group)
                return _finished(state)
        except self.policy.backend.errors as exc:
            log.warning("evalgate: batch handle %s not polled: backend down (%s)", self.id, exc)
            return False

    @contextmanager
    def _lease(self, wait_s: float = 0.0) -> Iterator[bool]:
        """Whether this process holds the handle's lease (within ``wait_s``); released
        after. A holder that died frees it after :data:`LEASE_S`."""
        backend, token, key = self.policy.backend, self._token, _LEASE + self.id
        deadline = time.monotonic() + wait_s
        while not (mine := backend.cache_add(key, token, LEASE_S)):
            if backend.cache_get(key) == token:
                mine = True
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        try:
            yield mine
        finally:
            if mine:
                backend.cache_delete_if(key, token)

    def _claim(self, index: int) -> bool:
        """Exactly one collector records request ``index`` (ledger, limits, cache), even
        when a lease expired under a slow collector and a second one took over."""
        return self.policy.backend.cache_add(f"{_DONE}{self.id}:{index}", b"1", HANDLE_TTL_S)

    def results(self) -> list[BatchResult | None]:
        """Each request's result so far (None: not answered yet), in request order."""
        state = self._load()
        return [
            None if r.get("result") is None else BatchResult(**r["result"])
            for r in state["requests"]
        ]

    def wait(
        self, timeout_s: float | None = None, poll_s: float = 5.0, max_poll_s: float = 60.0
    ) -> list[BatchResult]:
        """Polls until every request has its result (backing off up to ``max_poll_s``).

        Raises:
            TimeoutError: ``timeout_s`` passed first (the handle stays valid).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.poll():
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise TimeoutError(f"batch handle {self.id}: not finished after {timeout_s} s")
            time.sleep(poll_s)
            poll_s = min(max_poll_s, poll_s * 1.5)
        return [r for r in self.results() if r is not None]

    async def wait_async(
        self, timeout_s: float | None = None, poll_s: float = 5.0, max_poll_s: float = 60.0
    ) -> list[BatchResult]:
        """:meth:`wait` for asyncio code (the polls run in a worker thread)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not await asyncio.to_thread(self.poll):
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise TimeoutError(f"batch handle {self.id}: not finished after {timeout_s} s")
            await asyncio.sleep(poll_s)
            poll_s = min(max_poll_s, poll_s * 1.5)
        return [r for r in await asyncio.to_thread(self.results) if r is not None]

    def __await__(self) -> Any:
        return self.wait_async().__await__()

    def cancel(self) -> list[str]:
        """Cancels the batches still running; returns their ids. Their unanswered
        requests end as errors when the handle is next polled."""
        cancelled: list[str] = []
        with self._lock, self._lease(wait_s=LEASE_S) as mine:
            if not mine:
                raise PolicyError(f"batch handle {self.id}: another process is collecting it")
            state = self._load()
            for group in state["groups"]:
                if not group["collected"] and group["batch_id"]:
                    self._provider(state, group)[0].cancel(group["batch_id"])
                    cancelled.append(group["batch_id"])
            for request in state["requests"]:
                request["submissions"] = MAX_SUBMISSIONS  # cancelled: never sent again
            self._save(state)
        return cancelled

    # -- submit and collect ---------------------------------------------------------------

    def _route(self, state: dict[str, Any], where: str) -> tuple[FeaturePolicy, Route]:
        feature = self.policy.feature(state["feature"])
        candidates = list(feature.routes)
        routing = feature.router
        for name in ("small", "large"):
            if isinstance(getattr(routing, name, None), Route):
                candidates.append(getattr(routing, name))
        for route in candidates:
            if route.where == where:
                return feature, route
        raise PolicyError(
            f"{self.policy.document.path}: batch handle {self.id}: the policy has no route "
            f"{where!r} any more (was the policy re-exported?)"
        )

    def _provider(self, state: dict[str, Any], group: dict[str, Any]) -> tuple[Provider, str]:
        feature, route = self._route(state, group["route"])
        endpoint = self.policy._endpoint(feature, route)
        base = self.policy.batch_bases.get(route.model, endpoint.api_base)
        return provider_of(endpoint.model, base, endpoint.api_key)

    def _create(self, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Creates the group's batch: tag stored first, then the batch, then its id."""
        try:
            provider, upstream = self._provider(state, group)
        except Exception as exc:
            self._fail(state, group["indices"], group["route"], None, _describe(exc))
            group["collected"] = True
            self._save(state)
            return
        lines = []
        for index in group["indices"]:
            request = state["requests"][index]
            request["submissions"] = request.get("submissions", 0) + 1
            lines.append(line_of(request, index, upstream))
        group["tag"] = uuid.uuid4().hex
        self._save(state)
        try:
            group["batch_id"] = provider.create(("\n".join(lines) + "\n").encode(), group["tag"])
        except Exception as exc:
            sent = max(state["requests"][i]["submissions"] for i in group["indices"])
            if _transient(exc) and sent < MAX_SUBMISSIONS:
                # Not reached, or its answer lost after the batch was made: the next poll
                # finds it by its tag or submits it again.
                log.warning("evalgate: batch handle %s: submission deferred (%s)", self.id, exc)
                self._save(state)
                return
            # Refused (a provider litellm cannot batch, a bad request): per-request errors.
            self._fail(
                state,
                group["indices"],
                group["route"],
                None,
                f"batch submission failed: {_describe(exc)}",
            )
            group["collected"] = True
        group["submitted"] = time.time()
        self._save(state)

    def _advance_or_wait(self, state: dict[str, Any], group: dict[str, Any]) -> None:
        """:meth:`_advance`; a provider that cannot be reached right now (connection,
        timeout, 429, 5xx) leaves the group as it is for the next poll."""
        try:
            self._advance(state, group)
        except self.policy.backend.errors:
            raise
        except Exception as exc:
            if not _transient(exc):
                raise
            log.warning("evalgate: batch handle %s: provider not reachable (%s)", self.id, exc)

    def _advance(self, state: dict[str, Any], group: dict[str, Any]) -> None:
        provider, _ = self._provider(state, group)
        if group["batch_id"] is None:
            # Its creator died between creating it and storing its id, or before creating it.
            found = provider.find(group["tag"]) if group["tag"] else None
            if found is None:
                self._create(state, group)
                return
            group["batch_id"] = found
            group["submitted"] = group["submitted"] or state["created"]
            self._save(state)
        try:
            batch = provider.retrieve(group["batch_id"])
        except Exception as exc:
            if getattr(exc, "status_code", None) != 404:
                raise
            # The provider does not know it (deleted, another server): nothing of it will
            # come, so its requests are submitted again (up to MAX_SUBMISSIONS).
            batch = {"id": group["batch_id"], "status": "unknown to the provider"}
        if batch["status"] not in TERMINAL and batch["status"] != "unknown to the provider":
            return
        wanted = {f"r{i}" for i in group["indices"]}
        lines: dict[str, dict[str, Any]] = {}
        for file_key in ("output_file_id", "error_file_id"):
            if batch.get(file_key):
                found_lines = parse_lines(provider.content(batch[file_key]), wanted)
                for cid, line in found_lines.items():
                    if cid not in lines or (not answered(lines[cid]) and answered(line)):
                        lines[cid] = line
        again: list[int] = []
        for index in group["indices"]:
            request = state["requests"][index]
            if request.get("result") is not None:
                continue  # recorded by an earlier collection of this handle
            line = lines.get(f"r{index}")
            if line is None or _expired(line):
                if request.get("submissions", 0) < MAX_SUBMISSIONS:
                    again.append(index)
                else:
                    reason = (
                        f"BatchError: batch {batch['id']} ended {batch['status']} without an answer"
                    )
                    self._fail(state, [index], group["route"], batch["id"], reason)
                continue
            self._answer(state, index, group, batch["id"], line)
        group["collected"] = True
        if again:
            retry = {
                "route": group["route"],
                "indices": again,
                "tag": None,
                "batch_id": None,
                "submitted": None,
                "collected": False,
            }
            state["groups"].append(retry)
            self._save(state)
            self._create(state, retry)
        self._save(state)

    def _answer(
        self,
        state: dict[str, Any],
        index: int,
        group: dict[str, Any],
        batch_id: str,
        line: dict[str, Any],
    ) -> None:
        feature, route = self._route(state, group["route"])
        request = state["requests"][index]
        call = call_of(self.policy, feature, route, request)
        latency_ms = (time.time() - (group["submitted"] or state["created"])) * 1000
        response = line.get("response")
        body = response.get("body") if isinstance(response, dict) else None
        status = response.get("status_code") if isinstance(response, dict) else None
        attempts = request.get("submissions", 1)
        if status != 200 or not isinstance(body, dict):
            error = _line_error(line, status, body)
            record = self.policy._record(
                call,
                model=route.model,
                attempts=attempts,
                error=error,
                latency_ms=latency_ms,
                batch_id=batch_id,
            )
            if self._claim(index):
                self.policy._finish(call, self._admitted(request, index), record)
            request["result"] = _result_json(
                index, None, error, model=route.model, batch_id=batch_id
            )
            return
        try:
            choice = body["choices"][0]
            message = choice["message"]
            calls_tools = bool(message.get("tool_calls") or message.get("function_call"))
            refusal = bool(message.get("refusal"))
            # The rule reads the content as sent (null is no text, as online); in the
            # result "" stands for an answer without text (a tool call, a refusal).
            sent = message.get("content")
            content = "" if sent is None else sent
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            sent = content = finish = None
            calls_tools = refusal = False
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        tokens_in = (
            usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None
        )
        tokens_out = (
            usage.get("completion_tokens")
            if isinstance(usage.get("completion_tokens"), int)
            else None
        )
        endpoint = self.policy._endpoint(feature, route)
        cost = _batch_cost(self.policy, route, endpoint, tokens_in, tokens_out)
        error = None if isinstance(content, str) else "APIError: malformed batch output line"
        record = self.policy._record(
            call,
            model=route.model,
            attempts=attempts,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            latency_ms=latency_ms,
            error=error,
            batch_id=batch_id,
        )
        answer = None
        if error is None and is_cacheable(sent, finish, tool_calls=calls_tools, refusal=refusal):
            answer = CachedAnswer(
                content=content,
                model=route.model,
                finish_reason=finish,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_usd=cost,
                latency_ms=latency_ms,
                created=time.time(),
            )
        if self._claim(index):  # else another collector recorded it
            self.policy._finish(call, self._admitted(request, index), record, answer)
        request["result"] = _result_json(
            index,
            content if error is None else None,
            error,
            model=route.model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            finish_reason=finish if isinstance(finish, str) else None,
            batch_id=batch_id,
        )

    def _fail(
        self,
        state: dict[str, Any],
        indices: list[int],
        where: str,
        batch_id: str | None,
        error: str,
    ) -> None:
        feature, route = self._route(state, where)
        for index in indices:
            request = state["requests"][index]
            call = call_of(self.policy, feature, route, request)
            record = self.policy._record(
                call,
                model=route.model,
                attempts=0 if batch_id is None else request.get("submissions", 1),
                error=error,
                batch_id=batch_id,
            )
            if self._claim(index):
                self.policy._finish(call, self._admitted(request, index), record)
            request["result"] = _result_json(
                index, None, error[:400], model=route.model, batch_id=batch_id
            )

    def _admitted(self, request: dict[str, Any], index: int) -> list[Admission]:
        """This process's admissions of the request, or those rebuilt from the state."""
        admitted = self._admissions.pop(index, None)
        if admitted is not None:
            return admitted
        return restored_admissions(self.policy, request)


def open_handle(policy: Policy, handle_id: str) -> BatchHandle:
    """The handle ``handle_id`` stored in the policy's backend (another process's too)."""
    handle = BatchHandle(policy, handle_id, "")
    handle.feature = handle._load()["feature"]
    return handle


# --- helpers ----------------------------------------------------------------------------------


def _batch_cost(
    policy: Policy, route: Route, endpoint: Endpoint, tokens_in: int | None, tokens_out: int | None
) -> float | None:
    """litellm's batch price where it has one (and the route sets none), else the online
    price with the documented discount; None when the provider reported no usage."""
    if tokens_in is None or tokens_out is None:
        return None
    if route.price is None and (rates := batch_rates(endpoint.model)) is not None:
        return tokens_in * rates[0] + tokens_out * rates[1]
    online = policy._cost(route, endpoint, tokens_in, tokens_out)
    return None if online is None else float(online) * BATCH_DISCOUNT


def _expired(line: dict[str, Any]) -> bool:
    error = line.get("error")
    return not isinstance(line.get("response"), dict) and (
        not isinstance(error, dict) or error.get("code") in (None, "batch_expired")
    )


def _line_error(line: dict[str, Any], status: Any, body: Any) -> str:
    error = line.get("error")
    if not isinstance(line.get("response"), dict) and isinstance(error, dict):
        return f"BatchError: {error.get('code')}: {error.get('message')}"[:400]
    problem = body.get("error") if isinstance(body, dict) else None
    message = problem.get("message") if isinstance(problem, dict) else problem
    return f"APIError: HTTP {status} in batch: {message or body!r}"[:400]


def _result_json(index: int, content: str | None, error: str | None, **fields: Any) -> dict:
    return {"index": index, "content": content, "error": error, **fields}


def _transient(exc: BaseException) -> bool:
    """A provider error that says 'not now' (connection, timeout, rate limit, server error),
    not 'never' (a bad request, a provider litellm cannot batch)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in (408, 409, 429) or status >= 500
    if isinstance(exc, OSError):
        return True
    name = type(exc).__name__
    return any(word in name for word in ("Connection", "Timeout", "Unavailable", "RateLimit"))


def _finished(state: dict[str, Any]) -> bool:
    return all(r.get("result") is not None for r in state["requests"])


__all__ = [
    "BATCH_DISCOUNT",
    "MAX_BATCH_BYTES",
    "MAX_REQUESTS_PER_BATCH",
    "MAX_SUBMISSIONS",
    "RESERVATION_TTL_S",
    "BatchHandle",
    "BatchResult",
    "open_handle",
    "submit_batch",
]
