"""The policy's call path: one request through routing, trimming, the cap, the cache,
the model (with fallbacks) and the ledger.

Every call runs the same steps, in order:

1. **prepare**: find the feature, fill and trim the context, cap ``max_tokens``, pick the
   routes (a :class:`Router`; the static router returns the exported model and its
   fallbacks; a learned router can choose per request);
2. **admit**: each :class:`Guard` (per-user limits) reserves what the call may use, or
   refuses it before anything else happens;
3. **lookup**: the feature's cache (:class:`~evalgate.runtime.cache.ResponseCache`:
   exact, or semantic per tenant (:mod:`evalgate.runtime.semantic_cache`), one interface);
4. **call**: the routes in order, the next one after an error or timeout (before the
   first streamed chunk: once content has reached the caller, a failure is the caller's);
5. **finish**: store a complete answer in the cache, settle the guards with the real
   usage, append one ledger record. A stream finishes when it ends, fails, is closed, or
   is dropped unread or half read (:mod:`evalgate.runtime.streams`).

The sync (:meth:`Policy.completion`) and async (:meth:`Policy.acompletion`) paths share
every step but the model call itself.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from evalgate.runtime.backends import Backend, open_backend
from evalgate.runtime.cache import (
    CachedAnswer,
    CacheRequest,
    ExactCache,
    Hit,
    ResponseCache,
    is_cacheable,
)
from evalgate.runtime.cascade import CascadeRouting
from evalgate.runtime.degraded import BackendFailures
from evalgate.runtime.errors import PolicyError, UnknownFeatureError
from evalgate.runtime.ledger import Ledger, UsageRecord
from evalgate.runtime.limits import LimitError, LimitOptions, limit_guard
from evalgate.runtime.messages import capped_params, fill_context
from evalgate.runtime.policy_file import FeaturePolicy, PolicyDocument, Route, load_policy_file
from evalgate.runtime.responses import litellm_module, replay_chunks, response_from_answer
from evalgate.runtime.streams import ABANDONED, AsyncPolicyStream, PolicyStream, StreamEnd

LOCAL_PREFIX = "local/"
DEFAULT_BACKEND = "sqlite:///.evalgate/runtime.sqlite3"
BACKEND_ENV = "EVALGATE_RUNTIME_BACKEND"


def default_backend_url() -> str:
    """``$EVALGATE_RUNTIME_BACKEND``, else an SQLite file under ``.evalgate/``."""
    return os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND


# --- extension points ----------------------------------------------------------------------


@dataclass(slots=True)
class PreparedCall:
    """One request after the prepare step (what guards, caches and routers see)."""

    feature: FeaturePolicy
    user: str
    tenant: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    stream: bool
    routes: tuple[Route, ...] = ()
    trimmed_tokens: tuple[int, int] | None = None
    cache_request: CacheRequest | None = None
    route: str | None = None  # a router's decision: "small"/"large", "first"/"escalated"
    route_score: float | None = None  # a learned router's score (P(small is as good))
    first_cost_usd: float | None = None  # an escalated cascade's first (rejected) call
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)


class Router(Protocol):
    """Chooses the routes (primary first, then fallbacks) for one prepared request."""

    def routes(self, call: PreparedCall) -> tuple[Route, ...]: ...


class StaticRouter:
    """The exported model, then its fallbacks, for every request."""

    def routes(self, call: PreparedCall) -> tuple[Route, ...]:
        return call.feature.routes


class FeatureRouter(StaticRouter):
    """The policy's default: a feature's learned router where it has one, else static.

    A learned router scores the prepared (trimmed) messages as the evaluation scored the
    cases, sends the request to the small route when the score reaches the certified
    threshold, else to the large one; the other route is the fallback on an error or a
    timeout. The decision and score are recorded in the ledger. The MiniLM encoder loads
    on the first routed request (once per process) and is shared by every thread.
    """

    def routes(self, call: PreparedCall) -> tuple[Route, ...]:
        routing = call.feature.router
        if routing is None:
            return call.feature.routes
        if isinstance(routing, CascadeRouting):
            # The policy asks ``first``, then ``then`` when a check rejects the answer.
            return (routing.first, routing.then)
        model = routing.model
        if model.threshold is None:
            # Nothing was certified: every request goes large, whatever its score, so no
            # score is computed (its MiniLM encoding is the routing decision's latency).
            call.route = "large"
            return (routing.large, routing.small)
        from evalgate.routing.features import feature_matrix, request_text

        score = float(model.score(feature_matrix([request_text(call.messages)], model.recipe))[0])
        small = score >= model.threshold
        call.route, call.route_score = ("small" if small else "large"), score
        return (routing.small, routing.large) if small else (routing.large, routing.small)


LearnedRouter = FeatureRouter  # the name issue 13 and the README use


class Admission(Protocol):
    """What a guard reserved for one call; settled once with the real usage."""

    def settle(self, record: UsageRecord) -> None: ...


class Guard(Protocol):
    """Admits a call (reserving what it may use) or raises to refuse it."""

    def admit(self, call: PreparedCall) -> Admission: ...


# --- the policy ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a route's calls go: the model name litellm is given, endpoint and key."""

    model: str
    api_base: str | None
    api_key: str | None


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class _Stream:
    """Accumulates a streamed answer as chunks pass through to the caller."""

    __slots__ = ("finish_reason", "parts", "received", "started", "tool_calls", "ttft_ms", "usage")

    def __init__(self, started: float) -> None:
        self.started = started
        self.parts: list[str] = []
        self.ttft_ms: float | None = None
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.tool_calls = False
        self.received = 0  # chunks passed to the caller

    def feed(self, chunk: Any) -> None:
        self.received += 1
        for choice in getattr(chunk, "choices", None) or ():
            delta = choice.delta
            content = getattr(delta, "content", None)
            if content:
                if self.ttft_ms is None:
                    self.ttft_ms = (time.perf_counter() - self.started) * 1000
                self.parts.append(content)
            if getattr(delta, "tool_calls", None) or getattr(delta, "function_call", None):
                self.tool_calls = True
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage

    def abandoned(self) -> str:
        """The ledger's error for a stream the caller left: what had reached it."""
        chars = sum(len(part) for part in self.parts)
        return f"{ABANDONED}: {self.received} chunk(s), {chars} characters received"


class Policy:
    """An exported policy enforced around litellm.

    Args:
        document: the validated policy (see :meth:`load`).
        backend: a backend URL or object for the cache and the ledger (default:
            ``$EVALGATE_RUNTIME_BACKEND``, else ``sqlite:///.evalgate/runtime.sqlite3``).
        api_bases: model string -> endpoint, overriding the policy's (required for
            ``local/...`` models: see :func:`evalgate.runtime.serve_local_models`).
        router: chooses the routes per request (default: the exported ones).
        guards: admit or refuse each call before it is made.
        limits: how per-user limits are enforced (the policy file's ``limits`` section,
            code's per-plan limits, fail-open or closed): see :class:`LimitOptions`.
        prefix: key prefix on a Redis backend.
    """

    def __init__(
        self,
        document: PolicyDocument,
        *,
        backend: str | Backend | None = None,
        api_bases: Mapping[str, str] | None = None,
        router: Router | None = None,
        guards: Sequence[Guard] = (),
        limits: LimitOptions | None = None,
        prefix: str = "evalgate:",
    ) -> None:
        self.document = document
        if backend is None or isinstance(backend, str):
            backend = open_backend(backend or default_backend_url(), prefix=prefix)
        self.backend = backend
        # One failure report for the cache and the ledger: a backend that is down is
        # logged once per kind of failure, and the calls go on without it.
        self.failures = BackendFailures(backend.url)
        self.ledger = Ledger(backend, write_behind=True, failures=self.failures)
        self._exact = ExactCache(backend, writer=self.ledger.submit, failures=self.failures)
        self.api_bases = dict(api_bases or {})
        # Model string -> where its batches go when not its api_base (a local model's
        # batch proxy, set by serve_local_models): see policy.batch.
        self.batch_bases: dict[str, str] = {}
        self.router: Router = router or FeatureRouter()
        self.guards = list(guards)
        self.limiter = limit_guard(document.limits, backend, limits)
        if self.limiter is not None:
            self.guards.insert(0, self.limiter)
        self._endpoints: dict[tuple[str, str], Endpoint] = {}
        self._semantic: dict[str, ResponseCache] = {}

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> Policy:
        """Reads a policy module written by ``evalgate export`` (as data, never executed).

        Raises:
            PolicyError: a missing or malformed file, naming the file, line and key.
        """
        return cls(load_policy_file(path), **options)

    @property
    def features(self) -> dict[str, FeaturePolicy]:
        return self.document.features

    def feature(self, name: str) -> FeaturePolicy:
        """The named feature's policy.

        Raises:
            UnknownFeatureError: naming the policy file and the features it has.
        """
        try:
            return self.document.features[name]
        except KeyError:
            known = ", ".join(sorted(self.document.features)) or "none"
            raise UnknownFeatureError(
                f"{self.document.path}: features.{name}: no such feature; the policy has: {known}"
            ) from None

    def close(self) -> None:
        """Writes the queued ledger records, then releases the backend."""
        self.ledger.close()
        if self.limiter is not None:
            self.limiter.store.close()
        self.backend.close()

    def __enter__(self) -> Policy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- offline requests as provider batches (evalgate.runtime.batch) ----------------------

    def batch(self, feature: str, requests: Sequence[Mapping[str, Any]]) -> Any:
        """Submits offline requests as provider batches under the feature's policy.

        Args:
            feature: the policy feature (model, trim, cap, cache, limits).
            requests: one mapping per request: ``messages`` and optionally ``user``,
                ``tenant``, ``context``, ``query`` and litellm parameters.

        Returns:
            A :class:`~evalgate.runtime.batch.BatchHandle`: ``poll()``, ``wait()``,
            ``await handle``; ``handle.id`` reopens it anywhere (:meth:`batch_handle`).

        Raises:
            UnknownFeatureError, PolicyError: the feature, a request or its model.
            LimitExceeded: a request does not fit its limits (nothing is sent then).
        """
        from evalgate.runtime.batch import submit_batch

        return submit_batch(self, feature, requests)

    async def abatch(self, feature: str, requests: Sequence[Mapping[str, Any]]) -> Any:
        """:meth:`batch` for asyncio code (submits in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.batch, feature, requests)

    def batch_handle(self, handle_id: str) -> Any:
        """The batch handle ``handle_id`` stored in this policy's backend (from any process)."""
        from evalgate.runtime.batch import open_handle

        return open_handle(self, handle_id)

    # -- steps shared by the sync and async paths -----------------------------------------

    def _cache(self, feature: FeaturePolicy) -> ResponseCache | None:
        if feature.cache.mode == "semantic":
            return self._semantic_cache(feature)
        return self._exact if feature.cache.mode == "exact" else None

    def _semantic_cache(self, feature: FeaturePolicy) -> ResponseCache:
        cache = self._semantic.get(feature.name)
        if cache is None:
            from evalgate.runtime.semantic_cache import SemanticCache

            spec = feature.cache
            cache = self._semantic[feature.name] = SemanticCache(
                self.backend,
                threshold=spec.threshold or 1.0,
                guard=spec.guard,
                guard_version=spec.guard_version,
                embedding_model=spec.embedding_model,
                **({} if spec.max_entries is None else {"max_entries": spec.max_entries}),
                failures=self.failures,
                writer=self.ledger.submit,
            )
        return cache

    def _prepare(
        self,
        feature_name: str,
        messages: Sequence[Mapping[str, Any]],
        user: str,
        tenant: str,
        context: str | None,
        query: str | None,
        kwargs: dict[str, Any],
    ) -> PreparedCall:
        feature = self.feature(feature_name)
        stream = bool(kwargs.pop("stream", False))
        ratio = feature.trim.ratio if feature.trim is not None else None
        filled, counts = fill_context(messages, context, query, ratio)
        params = capped_params(kwargs, feature.max_tokens, feature.temperature)
        call = PreparedCall(feature, user, tenant, filled, params, stream, trimmed_tokens=counts)
        call.routes = tuple(self.router.routes(call))
        if not call.routes:
            raise PolicyError(f"{self.document.path}: features.{feature.name}: no route to call")
        if self._cache(feature) is not None and params.get("n") in (None, 1):
            primary = call.routes[0]
            call.cache_request = CacheRequest(
                model=primary.model,
                messages=filled,
                params=params,
                api_base=primary.api_base,
                namespace=tenant,
            )
        return call

    def _admit(self, call: PreparedCall) -> list[Admission]:
        admitted: list[Admission] = []
        try:
            for guard in self.guards:
                admitted.append(guard.admit(call))
        except Exception as exc:
            self._settle_unused(admitted)  # a refusal leaves nothing reserved
            if isinstance(exc, LimitError):
                self.ledger.append(self._record(call, attempts=0, error=_describe(exc)))
            raise
        return admitted

    def _lookup(self, call: PreparedCall) -> Hit | None:
        cache = self._cache(call.feature)
        if cache is None or call.cache_request is None:
            return None
        return cache.lookup(call.cache_request)

    def _endpoint(self, feature: FeaturePolicy, route: Route) -> Endpoint:
        key = (feature.name, route.where)
        endpoint = self._endpoints.get(key)
        if endpoint is not None:
            return endpoint
        where = f"{self.document.path}: {route.where}"
        base = self.api_bases.get(route.model, route.api_base)
        if route.model.startswith(LOCAL_PREFIX):
            if not base:
                raise PolicyError(
                    f"{where}.model: {route.model!r} is a local model and no server was given; "
                    f"pass api_bases={{{route.model!r}: 'http://127.0.0.1:PORT/v1'}} or use "
                    "evalgate.runtime.serve_local_models(policy)"
                )
            endpoint = Endpoint(f"openai/{route.model[len(LOCAL_PREFIX) :]}", base, "local")
        else:
            api_key = None
            if route.api_key_env:
                api_key = os.environ.get(route.api_key_env)
                if not api_key:
                    raise PolicyError(
                        f"{where}.api_key_env: environment variable {route.api_key_env} "
                        f"is not set (needed for {route.model})"
                    )
            elif base:
                api_key = "no-key"  # a self-hosted endpoint never gets the provider's key
            try:
                litellm_module().get_llm_provider(model=route.model, api_base=base)
            except Exception as exc:
                raise PolicyError(
                    f"{where}.model: litellm cannot route {route.model!r}: {_describe(exc)}"
                ) from None
            endpoint = Endpoint(route.model, base, api_key)
        self._endpoints[key] = endpoint
        return endpoint

    def _request(self, call: PreparedCall, route: Route, endpoint: Endpoint) -> dict[str, Any]:
        kwargs = dict(call.params)
        kwargs["model"] = endpoint.model
        kwargs["messages"] = call.messages
        kwargs.setdefault("timeout", route.timeout_s)
        # One attempt per route: the next route is the retry (list a route twice to retry it).
        kwargs.setdefault("max_retries", 0)
        if endpoint.api_base:
            kwargs["api_base"] = endpoint.api_base
        if endpoint.api_key:
            kwargs["api_key"] = endpoint.api_key
        if route.price is not None:
            # litellm's documented custom pricing: not sent upstream; spares its map search.
            kwargs["input_cost_per_token"] = route.price.input_per_mtok / 1e6
            kwargs["output_cost_per_token"] = route.price.output_per_mtok / 1e6
        if call.stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {
                **(kwargs.get("stream_options") or {}),
                "include_usage": True,
            }
        return kwargs

    def _cost(self, route: Route, endpoint: Endpoint, tokens_in: Any, tokens_out: Any) -> Any:
        if tokens_in is None or tokens_out is None:
            return None
        if route.price is not None:
            return route.price.cost(tokens_in, tokens_out)
        try:
            prompt, completion = litellm_module().cost_per_token(
                model=endpoint.model, prompt_tokens=tokens_in, completion_tokens=tokens_out
            )
        except Exception:  # litellm raises for a model it has no price for
            return None
        return float(prompt) + float(completion)

    def _record(self, call: PreparedCall, **fields: Any) -> UsageRecord:
        fields.setdefault("latency_ms", (time.perf_counter() - call.started) * 1000)
        if call.route == "escalated":
            # The record of an escalated cascade pays for both calls (as the evals did).
            first, cost = call.first_cost_usd, fields.get("cost_usd", 0.0)
            fields["first_cost_usd"] = first
            fields["cost_usd"] = None if first is None or cost is None else first + cost
        return UsageRecord(
            ts=call.ts,
            feature=call.feature.name,
            user=call.user,
            tenant=call.tenant,
            stream=call.stream,
            trimmed_tokens=call.trimmed_tokens,
            policy_hash=call.feature.evidence.get("suite_hash"),
            route=call.route,
            route_score=call.route_score,
            **fields,
        )

    def _finish(
        self,
        call: PreparedCall,
        admitted: list[Admission],
        record: UsageRecord,
        answer: CachedAnswer | None = None,
    ) -> None:
        cache = self._cache(call.feature)
        if answer is not None and cache is not None and call.cache_request is not None:
            cache.store(call.cache_request, answer, call.feature.cache.ttl_s)
        for admission in admitted:
            admission.settle(record)
        self.ledger.append(record)

    def _hit_record(
        self, call: PreparedCall, hit: Hit, ttft_ms: float | None, error: str | None = None
    ) -> UsageRecord:
        return self._record(
            call,
            model=hit.answer.model,
            attempts=0,
            tokens_in=0,
            tokens_out=0,
            cost_usd=0.0,
            saved_usd=hit.answer.cost_usd,
            ttft_ms=ttft_ms,
            cached=True,
            error=error,
            similarity=hit.similarity,
        )

    def _info(self, call: PreparedCall, route: Route | None, index: int, cached: bool) -> dict:
        return {
            "feature": call.feature.name,
            "model": route.model if route is not None else None,
            "fallback": index,
            "cached": cached,
        }

    def _answered(
        self,
        call: PreparedCall,
        route: Route,
        endpoint: Endpoint,
        index: int,
        attempts: int,
        response: Any,
    ) -> tuple[UsageRecord, CachedAnswer | None]:
        """Ledger record and cacheable answer of a non-streamed response."""
        choice = response.choices[0] if response.choices else None
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        usage = getattr(response, "usage", None)
        tokens_in = getattr(usage, "prompt_tokens", None)
        tokens_out = getattr(usage, "completion_tokens", None)
        latency_ms = (time.perf_counter() - call.started) * 1000
        cost = self._cost(route, endpoint, tokens_in, tokens_out)
        record = self._record(
            call,
            model=route.model,
            fallback=index,
            attempts=attempts,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            latency_ms=latency_ms,
        )
        answer = None
        calls_tools = bool(
            getattr(message, "tool_calls", None) or getattr(message, "function_call", None)
        )
        if is_cacheable(
            content,
            getattr(choice, "finish_reason", None),
            tool_calls=calls_tools,
            refusal=bool(getattr(message, "refusal", None)),
        ):
            answer = CachedAnswer(
                content=str(content),
                model=route.model,
                finish_reason=getattr(choice, "finish_reason", None),
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_usd=cost,
                latency_ms=latency_ms,
                created=time.time(),
            )
        hidden = getattr(response, "_hidden_params", None)
        if isinstance(hidden, dict):
            hidden["evalgate"] = self._info(call, route, index, False)
        return record, answer

    def _streamed(
        self,
        call: PreparedCall,
        route: Route,
        endpoint: Endpoint,
        index: int,
        attempts: int,
        acc: _Stream,
        error: str | None,
    ) -> tuple[UsageRecord, CachedAnswer | None]:
        usage = acc.usage
        tokens_in = getattr(usage, "prompt_tokens", None)
        tokens_out = getattr(usage, "completion_tokens", None)
        if error is None and acc.finish_reason is None:
            error = "StreamCut: the stream ended without a finish reason"
        latency_ms = (time.perf_counter() - call.started) * 1000
        cost = self._cost(route, endpoint, tokens_in, tokens_out)
        record = self._record(
            call,
            model=route.model,
            fallback=index,
            attempts=attempts,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            latency_ms=latency_ms,
            ttft_ms=acc.ttft_ms,
            error=error,
        )
        answer = None
        # A cut or abandoned stream (an error, or no finish reason) is never stored. A
        # refusal cannot be told here: litellm drops a stream's refusal deltas, so the
        # caller and the cache both see an empty answer.
        if error is None and is_cacheable("", acc.finish_reason, tool_calls=acc.tool_calls):
            answer = CachedAnswer(
                content="".join(acc.parts),
                model=route.model,
                finish_reason=acc.finish_reason,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_usd=cost,
                latency_ms=latency_ms,
                ttft_ms=acc.ttft_ms,
                created=time.time(),
            )
        return record, answer

    def _failed(
        self, call: PreparedCall, admitted: list[Admission], tried: list[str], exc: BaseException
    ) -> None:
        record = self._record(
            call,
            model=call.routes[len(tried) - 1].model if tried else "",
            fallback=len(tried) - 1,
            attempts=len(tried),
            error="; ".join(tried) if tried else _describe(exc),
        )
        self._finish(call, admitted, record)
        if len(tried) > 1:
            exc.add_note("evalgate: every route failed: " + "; ".join(tried))

    # -- sync --------------------------------------------------------------------------

    def completion(
        self,
        *,
        feature: str,
        messages: Sequence[Mapping[str, Any]],
        user: str = "",
        tenant: str = "",
        context: str | None = None,
        query: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """``litellm.completion`` under the feature's policy.

        Args:
            feature: the policy feature (chooses model, trim, cap, cache).
            messages: chat messages; ``"{context}"`` in a content marks where ``context``
                goes.
            user, tenant: recorded in the ledger; ``tenant`` is the cache namespace.
            context: the trimmable context (trimmed by the feature's ``context_trim``).
            query: what the context is ranked against (default: the last user message).
            kwargs: litellm parameters (``stream=True`` streams; ``max_tokens`` is capped).

        Returns:
            A ``litellm.ModelResponse``, or with ``stream=True`` an iterator of litellm
            stream chunks (close it to abandon the stream).

        Raises:
            UnknownFeatureError, PolicyError: the feature or its model cannot be used.
            The last route's litellm exception when every route fails.
        """
        call = self._prepare(feature, messages, user, tenant, context, query, kwargs)
        admitted = self._admit(call)
        try:
            hit = self._lookup(call)
        except Exception:
            self._settle_unused(admitted)
            raise
        if hit is not None:
            if call.stream:
                return self._replay(call, admitted, hit)
            response = response_from_answer(hit.answer, self._info(call, None, 0, True))
            self._finish(call, admitted, self._hit_record(call, hit, None))
            return response
        if isinstance(call.feature.router, CascadeRouting):
            return self._cascade(call, admitted)
        litellm = litellm_module()
        tried: list[str] = []
        for index, route in enumerate(call.routes):
            try:
                endpoint = self._endpoint(call.feature, route)
            except PolicyError:
                self._settle_unused(admitted)
                raise
            try:
                response = litellm.completion(**self._request(call, route, endpoint))
                if call.stream:
                    chunks = iter(response)
                    first = next(chunks, None)  # an error before any content falls back
            except Exception as exc:
                tried.append(f"{route.model}: {_describe(exc)}")
                if index == len(call.routes) - 1:
                    self._failed(call, admitted, tried, exc)
                    raise
                continue
            if call.stream:
                return self._relay(
                    call, admitted, route, endpoint, index, len(tried) + 1, first, chunks
                )
            record, answer = self._answered(call, route, endpoint, index, len(tried) + 1, response)
            self._finish(call, admitted, record, answer)
            return response
        raise AssertionError("unreachable: the last route returns or raises")

    def _cascade(self, call: PreparedCall, admitted: list[Admission]) -> Any:
        """A cascade feature's call: ``first`` (buffered, checked), ``then`` on a rejection."""
        cascade, streamed, first_ep, then_ep = self._cascade_start(call, admitted)
        litellm = litellm_module()
        tried: list[str] = []
        try:
            response = litellm.completion(**self._request(call, cascade.first, first_ep))
        except Exception as exc:  # an error rejects the first answer: escalate
            tried.append(f"{cascade.first.model}: {_describe(exc)}")
            response = None
        kept = self._cascade_check(call, cascade, first_ep, response)
        if kept is not None:
            return self._cascade_keep(call, admitted, kept, response, streamed)
        call.stream = streamed
        try:
            response = litellm.completion(**self._request(call, cascade.then, then_ep))
            if streamed:
                chunks = iter(response)
                first = next(chunks, None)
        except Exception as exc:
            tried.append(f"{cascade.then.model}: {_describe(exc)}")
            self._cascade_failed(call, admitted, tried, exc)
            raise
        if streamed:
            return self._relay(call, admitted, cascade.then, then_ep, 1, 2, first, chunks)
        record, answer = self._answered(call, cascade.then, then_ep, 1, 2, response)
        self._finish(call, admitted, record, answer)
        return response

    async def _acascade(self, call: PreparedCall, admitted: list[Admission]) -> Any:
        """:meth:`_cascade` on the async path."""
        cascade, streamed, first_ep, then_ep = self._cascade_start(call, admitted)
        litellm = litellm_module()
        tried: list[str] = []
        try:
            response = await litellm.acompletion(**self._request(call, cascade.first, first_ep))
        except asyncio.CancelledError as exc:  # recorded like a failure (see acompletion)
            call.route = "first"
            self._finish(
                call,
                admitted,
                self._record(call, model=cascade.first.model, error=_describe(exc)),
            )
            raise
        except Exception as exc:
            tried.append(f"{cascade.first.model}: {_describe(exc)}")
            response = None
        kept = self._cascade_check(call, cascade, first_ep, response)
        if kept is not None:
            return self._cascade_keep(call, admitted, kept, response, streamed, asynchronous=True)
        call.stream = streamed
        try:
            response = await litellm.acompletion(**self._request(call, cascade.then, then_ep))
            if streamed:
                chunks = aiter(response)
                first = await anext(chunks, None)
        except (Exception, asyncio.CancelledError) as exc:
            # Cancelled too: the first call was paid for, and the record says so.
            tried.append(f"{cascade.then.model}: {_describe(exc)}")
            self._cascade_failed(call, admitted, tried, exc)
            raise
        if streamed:
            return self._arelay(call, admitted, cascade.then, then_ep, 1, 2, first, chunks)
        record, answer = self._answered(call, cascade.then, then_ep, 1, 2, response)
        self._finish(call, admitted, record, answer)
        return response

    def _cascade_start(
        self, call: PreparedCall, admitted: list[Admission]
    ) -> tuple[CascadeRouting, bool, Endpoint, Endpoint]:
        cascade = call.feature.router
        assert isinstance(cascade, CascadeRouting)
        try:
            first_ep = self._endpoint(call.feature, cascade.first)
            then_ep = self._endpoint(call.feature, cascade.then)
        except PolicyError:
            self._settle_unused(admitted)
            raise
        streamed, call.stream = call.stream, False  # the first answer is checked whole
        return cascade, streamed, first_ep, then_ep

    def _cascade_check(
        self, call: PreparedCall, cascade: CascadeRouting, endpoint: Endpoint, response: Any
    ) -> tuple[UsageRecord, CachedAnswer | None] | None:
        """The first answer's record when every check accepts it, else None (escalate)."""
        if response is None:  # the first call failed: nothing was billed for it
            call.route, call.first_cost_usd = "escalated", 0.0
            return None
        call.route = "first"
        record, answer = self._answered(call, cascade.first, endpoint, 0, 1, response)
        choice = response.choices[0] if response.choices else None
        content = getattr(getattr(choice, "message", None), "content", None)
        if cascade.rejection(content) is None:
            return record, answer
        call.route, call.first_cost_usd = "escalated", record.cost_usd
        return None

    def _cascade_keep(
        self,
        call: PreparedCall,
        admitted: list[Admission],
        kept: tuple[UsageRecord, CachedAnswer | None],
        response: Any,
        streamed: bool,
        *,
        asynchronous: bool = False,
    ) -> Any:
        """Returns the accepted first answer; a streaming caller gets it replayed."""
        record, answer = kept
        if not streamed:
            self._finish(call, admitted, record, answer)
            return response
        call.stream = True
        if answer is None:  # not replayable (no finish reason): an unfinished answer
            answer = CachedAnswer(
                content=str(response.choices[0].message.content),
                model=record.model,
                finish_reason="stop",
                tokens_in=record.tokens_in,
                tokens_out=record.tokens_out,
                cost_usd=record.cost_usd,
                latency_ms=record.latency_ms,
                created=time.time(),
            )
        shown: list[float] = []
        info = self._info(call, call.routes[0] if call.routes else None, 0, False)

        def replayed() -> Iterator[Any]:
            for chunk in replay_chunks(answer, info):
                if not shown:
                    shown.append((time.perf_counter() - call.started) * 1000)
                yield chunk

        def end(error: str | None) -> None:
            final = replace(record, stream=True, ttft_ms=shown[0] if shown else None, error=error)
            self._finish(call, admitted, final, answer if error is None else None)

        if not asynchronous:
            return PolicyStream(replayed(), StreamEnd(end))

        async def areplayed() -> AsyncIterator[Any]:
            for chunk in replayed():
                yield chunk

        return AsyncPolicyStream(areplayed(), StreamEnd(end))

    def _cascade_failed(
        self, call: PreparedCall, admitted: list[Admission], tried: list[str], exc: BaseException
    ) -> None:
        record = self._record(
            call,
            model=call.feature.router.then.model,
            fallback=1,
            attempts=2,
            error="; ".join(tried),
        )
        self._finish(call, admitted, record)
        exc.add_note("evalgate: the cascade escalated and its second route failed: " + tried[-1])

    def _settle_unused(self, admitted: list[Admission]) -> None:
        for admission in admitted:
            admission.settle(UsageRecord(ts=time.time(), feature="", attempts=0))

    def _replay(self, call: PreparedCall, admitted: list[Admission], hit: Hit) -> Iterator[Any]:
        first: list[float] = []  # the replay's TTFT, once its first chunk is out

        def chunks() -> Iterator[Any]:
            for chunk in replay_chunks(hit.answer, self._info(call, None, 0, True)):
                if not first:
                    first.append((time.perf_counter() - call.started) * 1000)
                yield chunk

        def end(error: str | None) -> None:
            ttft = first[0] if first else None
            self._finish(call, admitted, self._hit_record(call, hit, ttft, error))

        return PolicyStream(chunks(), StreamEnd(end))

    def _relay(
        self,
        call: PreparedCall,
        admitted: list[Admission],
        route: Route,
        endpoint: Endpoint,
        index: int,
        attempts: int,
        first: Any,
        chunks: Iterator[Any],
    ) -> Iterator[Any]:
        acc = _Stream(call.started)

        def relayed() -> Iterator[Any]:
            if first is not None:
                acc.feed(first)
                yield first
            for chunk in chunks:
                acc.feed(chunk)
                yield chunk

        def end(error: str | None) -> None:
            if error == ABANDONED:
                error = acc.abandoned()
            record, answer = self._streamed(call, route, endpoint, index, attempts, acc, error)
            self._finish(call, admitted, record, answer)

        return PolicyStream(relayed(), StreamEnd(end, upstream=chunks))

    # -- async -------------------------------------------------------------------------

    async def acompletion(
        self,
        *,
        feature: str,
        messages: Sequence[Mapping[str, Any]],
        user: str = "",
        tenant: str = "",
        context: str | None = None,
        query: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """``litellm.acompletion`` under the feature's policy (see :meth:`completion`).

        With ``stream=True`` returns an async iterator of litellm stream chunks.
        """
        call = self._prepare(feature, messages, user, tenant, context, query, kwargs)
        admitted = self._admit(call)
        try:
            hit = self._lookup(call)
        except Exception:
            self._settle_unused(admitted)
            raise
        if hit is not None:
            if call.stream:
                return self._areplay(call, admitted, hit)
            response = response_from_answer(hit.answer, self._info(call, None, 0, True))
            self._finish(call, admitted, self._hit_record(call, hit, None))
            return response
        if isinstance(call.feature.router, CascadeRouting):
            return await self._acascade(call, admitted)
        litellm = litellm_module()
        tried: list[str] = []
        for index, route in enumerate(call.routes):
            try:
                endpoint = self._endpoint(call.feature, route)
            except PolicyError:
                self._settle_unused(admitted)
                raise
            try:
                response = await litellm.acompletion(**self._request(call, route, endpoint))
                if call.stream:
                    chunks = aiter(response)
                    first = await anext(chunks, None)
            except asyncio.CancelledError as exc:
                # The caller's task went away mid-call: the call may be billed, and its
                # admissions must be settled, so it is recorded like a failure.
                tried.append(f"{route.model}: {_describe(exc)}")
                self._failed(call, admitted, tried, exc)
                raise
            except Exception as exc:
                tried.append(f"{route.model}: {_describe(exc)}")
                if index == len(call.routes) - 1:
                    self._failed(call, admitted, tried, exc)
                    raise
                continue
            if call.stream:
                return self._arelay(
                    call, admitted, route, endpoint, index, len(tried) + 1, first, chunks
                )
            record, answer = self._answered(call, route, endpoint, index, len(tried) + 1, response)
            self._finish(call, admitted, record, answer)
            return response
        raise AssertionError("unreachable: the last route returns or raises")

    def _areplay(
        self, call: PreparedCall, admitted: list[Admission], hit: Hit
    ) -> AsyncIterator[Any]:
        first: list[float] = []

        async def chunks() -> AsyncIterator[Any]:
            for chunk in replay_chunks(hit.answer, self._info(call, None, 0, True)):
                if not first:
                    first.append((time.perf_counter() - call.started) * 1000)
                yield chunk

        def end(error: str | None) -> None:
            ttft = first[0] if first else None
            self._finish(call, admitted, self._hit_record(call, hit, ttft, error))

        return AsyncPolicyStream(chunks(), StreamEnd(end))

    def _arelay(
        self,
        call: PreparedCall,
        admitted: list[Admission],
        route: Route,
        endpoint: Endpoint,
        index: int,
        attempts: int,
        first: Any,
        chunks: AsyncIterator[Any],
    ) -> AsyncIterator[Any]:
        acc = _Stream(call.started)

        async def relayed() -> AsyncIterator[Any]:
            if first is not None:
                acc.feed(first)
                yield first
            async for chunk in chunks:
                acc.feed(chunk)
                yield chunk

        def end(error: str | None) -> None:
            if error == ABANDONED:
                error = acc.abandoned()
            record, answer = self._streamed(call, route, endpoint, index, attempts, acc, error)
            self._finish(call, admitted, record, answer)

        return AsyncPolicyStream(relayed(), StreamEnd(end, upstream=chunks))
