"""The native transport: OpenAI chat-completions over HTTP, without litellm in the call path.

litellm spends 10-20 ms of CPU on each streamed call (a pydantic object per chunk, its
stream wrapper, logging, a rebuilt response); on a 2-core CI runner that CPU, not the
model, decides how long a large suite takes. Endpoints that speak the OpenAI
chat-completions protocol (the embedded local models, ``api_base`` servers such as vLLM,
llama.cpp, Ollama or LM Studio, and ``openai/...`` models) are called here directly, over
one pooled aiohttp session per endpoint, for well under a millisecond of CPU per call.
litellm stays the transport for every other provider and the source of prices.

A native attempt is a drop-in for :func:`evalgate.engine.calls.attempt`: the same request
(model, messages, ``max_tokens``, ``temperature``, ``stream_options.include_usage``), the
same :class:`~evalgate.results.CallResult` (TTFT from the first content token, usage from
the last chunk, the same cost), and failures raised as exceptions that the engine's retry
policy judges by the same rules: they carry the HTTP ``status_code`` and the server's
``Retry-After``, and are named as litellm names them (``RateLimitError``,
``InternalServerError``, ...), so a result's error reads the same whichever transport
made the call. Keys go into the ``Authorization`` header only, never into a message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from evalgate.engine.calls import CallSpec, Endpoint, call_cost, litellm_module
from evalgate.engine.sse import SSEDecoder
from evalgate.results import CallResult

# litellm provider prefixes whose endpoints speak the OpenAI chat-completions protocol.
OPENAI_PROTOCOL_PREFIXES = frozenset({"openai", "hosted_vllm", "lm_studio", "llamafile"})
OPENAI_API_BASE = "https://api.openai.com/v1"

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class NativeTarget:
    """Where and how a native call goes.

    Attributes:
        url: the chat-completions URL.
        model: the model name sent upstream (the litellm provider prefix removed).
        price_model: the litellm model string, for litellm's price map.
        api_key: sent as a bearer token; None sends no ``Authorization`` header.
        official: the endpoint is OpenAI's own API (which wants ``max_completion_tokens``).
    """

    url: str
    model: str
    price_model: str
    api_key: str | None = field(default=None, repr=False)
    official: bool = False


def native_target(spec: CallSpec, endpoint: Endpoint) -> NativeTarget | None:
    """The native target of a call, or None when litellm must make it.

    ``auto`` (the default) goes native for a model with an OpenAI-protocol prefix
    (``openai/``, ``hosted_vllm/``, ``lm_studio/``, ``llamafile/``) and an endpoint:
    its ``api_base``, or for ``openai/`` OpenAI's API (``OPENAI_BASE_URL`` /
    ``OPENAI_API_BASE`` if set, as litellm reads them). ``native`` also sends other model
    strings, as written, to the tier's ``api_base``; ``litellm`` never goes native.

    Raises:
        ValueError: ``transport: native`` with no OpenAI-protocol endpoint to call.
    """
    transport = spec.transport
    if transport == "litellm":
        return None
    prefix, slash, name = endpoint.model.partition("/")
    base = endpoint.api_base
    if slash and prefix in OPENAI_PROTOCOL_PREFIXES:
        official = False
        if not base and prefix == "openai":
            base = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
            if not base:
                base, official = OPENAI_API_BASE, True
        if base:
            key = endpoint.api_key
            if key is None and official:
                key = os.environ.get("OPENAI_API_KEY")  # litellm's fallback for openai/
            return NativeTarget(_completions_url(base), name, endpoint.model, key, official)
    elif transport == "native" and base:
        url = _completions_url(base)
        return NativeTarget(url, endpoint.model, endpoint.model, endpoint.api_key)
    if transport == "native":
        raise ValueError(
            f"transport: native needs an OpenAI-protocol endpoint for {spec.model}: "
            "give the tier an api_base, or use an openai/ model"
        )
    return None


def _completions_url(base: str) -> str:
    return base.rstrip("/") + "/chat/completions"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ReplyInfo:
    """What an error keeps of the HTTP reply: its status and the headers retries read."""

    status: int
    headers: Mapping[str, str]


class NativeError(Exception):
    """A failed native attempt; ``status_code`` is the HTTP status, if there was one."""

    def __init__(
        self, message: str, status_code: int | None = None, response: ReplyInfo | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = response


class APIError(NativeError):
    """An HTTP error status litellm has no more specific class for (403, 409, ...)."""


class BadRequestError(NativeError):
    """400, 413, 422: the request is wrong and will stay wrong."""


class ContextWindowExceededError(BadRequestError):
    """A 400 whose message says the prompt does not fit the model's context."""


class AuthenticationError(NativeError):
    """401."""


class NotFoundError(NativeError):
    """404: no such model or route."""


class Timeout(NativeError):
    """408 or 504: the server (or a gateway) timed out."""


class RateLimitError(NativeError):
    """429."""


class InternalServerError(NativeError):
    """500."""


class BadGatewayError(NativeError):
    """502."""


class ServiceUnavailableError(NativeError):
    """503."""


class APIConnectionError(NativeError, ConnectionError):
    """No HTTP reply: the connection could not be made or broke before the reply was whole."""


class MidStreamFallbackError(APIConnectionError):
    """A stream cut after it started (litellm's name for it): retried from the start."""


_BY_STATUS: dict[int, type[NativeError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    408: Timeout,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    500: InternalServerError,
    502: BadGatewayError,
    503: ServiceUnavailableError,
    504: Timeout,
}

# The phrases servers use when a prompt overflows the context (OpenAI, vLLM, llama.cpp).
_CONTEXT_PHRASES = (
    "maximum context length",
    "context_length_exceeded",
    "exceeds the available context size",
    "is longer than the model's context length",
)


def _redact(text: str, api_key: str | None) -> str:
    return text.replace(api_key, "***") if api_key and len(api_key) >= 4 else text


def http_error(
    status: int, body: bytes, headers: Mapping[str, str], api_key: str | None
) -> NativeError:
    """The exception for an HTTP error reply, with the server's own message."""
    message = ""
    try:
        payload = json.loads(body)
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
        elif isinstance(error, str):
            message = error
    except ValueError:
        pass
    if not message:
        message = body[:300].decode("utf-8", "replace").strip() or f"HTTP {status}"
    message = _redact(" ".join(message.split()), api_key)
    cls = _BY_STATUS.get(status, APIError)
    if cls is BadRequestError and any(p in message.lower() for p in _CONTEXT_PHRASES):
        cls = ContextWindowExceededError
    retry_after = headers.get("retry-after")
    reply = ReplyInfo(status, {"retry-after": retry_after} if retry_after else {})
    return cls(message, status, reply)


def _stream_error(error: Any, api_key: str | None) -> NativeError:
    """An error event inside a 200 stream (vLLM and llama.cpp send one on a server fault)."""
    status = 500
    message = str(error)
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        code = error.get("code")
        if isinstance(code, int) and 400 <= code <= 599:
            status = code
    body = json.dumps({"error": {"message": message}}).encode()
    return http_error(status, body, {}, api_key)


def _connection_error(cause: BaseException) -> str:
    detail = " ".join(str(cause).split())
    return f"Connection error. ({type(cause).__name__}{': ' + detail if detail else ''})"


# --------------------------------------------------------------------------- pricing

# litellm model -> (input, output) USD per token; None: litellm has no price; _TIERED: the
# price depends on the prompt's size, so litellm computes each call.
_RATES: dict[str, tuple[float, float] | None] = {}
_TIERED = (-1.0, -1.0)


def _map_rates(model: str) -> tuple[float, float] | None:
    try:
        info = litellm_module().get_model_info(model)
    except Exception:  # not in litellm's map
        return None
    rates = (info.get("input_cost_per_token"), info.get("output_cost_per_token"))
    if not all(isinstance(r, int | float) for r in rates):
        return None
    if any("_above_" in k and v for k, v in info.items()):
        return _TIERED
    return (float(rates[0]), float(rates[1]))  # type: ignore[arg-type]


def native_cost(
    spec: CallSpec, target: NativeTarget, input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """The call's USD cost, as :func:`~evalgate.engine.calls.call_cost` gives it.

    The tier's price first; else litellm's per-token prices for the model, looked up once
    per model (litellm computes ``tokens x price`` the same way, to the last bit).
    """
    if input_tokens is None or output_tokens is None:
        return None
    if spec.price is not None:
        return spec.price.cost(input_tokens, output_tokens)
    model = target.price_model
    if model not in _RATES:
        if len(_RATES) >= 1024:
            _RATES.clear()
        _RATES[model] = _map_rates(model)
    rates = _RATES[model]
    if rates is None:
        return None
    if rates is _TIERED:
        endpoint = Endpoint(model=model, api_base=None, api_key=None)
        return call_cost(spec, endpoint, input_tokens, output_tokens)
    return float(input_tokens * rates[0]) + float(output_tokens * rates[1])


# --------------------------------------------------------------------------- transport


def _tokens(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class NativeClients:
    """The native transport: one pooled aiohttp session per endpoint (URL and key).

    Sessions are made on first use, on the loop that runs the attempts, and closed by
    :meth:`aclose` on that loop.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str | None], aiohttp.ClientSession] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._targets: dict[tuple[str, Endpoint], NativeTarget | None] = {}

    def target(self, spec: CallSpec, endpoint: Endpoint) -> NativeTarget | None:
        """:func:`native_target`, remembered per (transport, endpoint)."""
        memo = (spec.transport, endpoint)
        try:
            return self._targets[memo]
        except KeyError:
            found = native_target(spec, endpoint)
            if len(self._targets) < 4096:
                self._targets[memo] = found
            return found

    def _session(self, target: NativeTarget) -> aiohttp.ClientSession:
        origin = target.url.split("/", 3)[:3]
        key = ("/".join(origin), target.api_key)
        session = self._sessions.get(key)
        if session is None or session.closed:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if target.api_key:
                headers["Authorization"] = f"Bearer {target.api_key}"
            session = aiohttp.ClientSession(
                # The engine bounds the calls in flight; the pool must not add a second,
                # different bound.
                connector=aiohttp.TCPConnector(limit=0),
                headers=headers,
                # Like litellm's httpx client: honour HTTP(S)_PROXY / NO_PROXY.
                trust_env=True,
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._sessions[key] = session
        return session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            # Connecting, and each wait for bytes; the engine bounds the whole attempt.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
            self._timeouts[seconds] = timeout
        return timeout

    async def attempt(self, spec: CallSpec, target: NativeTarget) -> CallResult:
        """Makes one attempt; raises a :class:`NativeError` or ``TimeoutError`` on failure."""
        payload: dict[str, Any] = {
            "model": target.model,
            "messages": [dict(m) for m in spec.messages],
            "max_completion_tokens" if target.official else "max_tokens": spec.max_tokens,
            "temperature": spec.temperature,
            **dict(spec.params),
        }
        if spec.stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        body = _ENCODE(payload).encode()
        session = self._session(target)
        started = time.perf_counter()
        try:
            async with session.post(
                target.url, data=body, timeout=self._timeout(spec.timeout_s)
            ) as reply:
                if reply.status >= 400:
                    raise http_error(
                        reply.status, await reply.read(), reply.headers, target.api_key
                    )
                if spec.stream and reply.content_type == "text/event-stream":
                    result = await _read_stream(reply, started, target.api_key)
                else:
                    result = _read_json(await reply.read(), target.api_key)
        except NativeError:
            raise
        except TimeoutError:
            # Named as the engine's own per-attempt timeout names it: one kind, whichever
            # of the two fires first.
            raise TimeoutError() from None
        except (aiohttp.ClientError, OSError) as exc:
            raise APIConnectionError(_connection_error(exc)) from None
        output, finish_reason, usage, ttft_ms = result
        latency_ms = (time.perf_counter() - started) * 1000
        input_tokens = _tokens(usage, "prompt_tokens")
        output_tokens = _tokens(usage, "completion_tokens")
        return CallResult(
            output=output,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=native_cost(spec, target, input_tokens, output_tokens),
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            finish_reason=finish_reason,
        )

    async def aclose(self) -> None:
        """Closes every session (and its connections)."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()


_Read = tuple[str, str | None, Any, float | None]  # output, finish reason, usage, TTFT


def _read_json(raw: bytes, api_key: str | None) -> _Read:
    """A complete (non-streamed) chat completion."""
    try:
        reply = json.loads(raw)
        choice = reply["choices"][0]
        content = choice["message"].get("content")
        finish = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        if isinstance(reply := _loads_or_none(raw), dict) and "error" in reply:
            raise _stream_error(reply["error"], api_key) from None
        raise APIError(f"malformed chat completion: {raw[:200]!r}") from None
    output = content if isinstance(content, str) else ""
    return output, finish if isinstance(finish, str) else None, reply.get("usage"), None


def _loads_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _read_stream(reply: aiohttp.ClientResponse, started: float, api_key: str | None) -> _Read:
    """Reads an SSE chat-completion stream to its end.

    The stream is read to end of body even after ``[DONE]``, so the connection goes back
    to the pool instead of being closed with unread bytes on it.
    """
    decoder = SSEDecoder()
    parts: list[str] = []
    ttft_ms: float | None = None
    finish: str | None = None
    usage: Any = None
    done = False
    chunks = 0
    loads = json.loads
    try:
        async for piece in reply.content.iter_any():
            for data in decoder.feed(piece):
                if done:
                    continue
                if data == b"[DONE]":
                    done = True
                    continue
                try:
                    event = loads(data)
                except ValueError:
                    raise APIError(f"malformed stream event: {data[:200]!r}") from None
                if not isinstance(event, dict):
                    continue
                chunks += 1
                choices = event.get("choices")
                if choices:
                    for choice in choices:
                        delta = choice.get("delta")
                        if delta:
                            content = delta.get("content")
                            if content and type(content) is str:
                                if ttft_ms is None:
                                    ttft_ms = (time.perf_counter() - started) * 1000
                                parts.append(content)
                        reason = choice.get("finish_reason")
                        if reason:
                            finish = reason
                elif "error" in event:
                    raise _stream_error(event["error"], api_key)
                if event.get("usage"):
                    usage = event["usage"]
    except (AttributeError, TypeError):  # an event of the wrong shape (choices not objects)
        raise APIError("malformed stream event: unexpected JSON shape") from None
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
        raise MidStreamFallbackError(
            f"the stream was cut after {chunks} chunk(s): {_connection_error(exc)}"
        ) from None
    if not done:
        for data in decoder.close():
            if data == b"[DONE]":
                done = True
    return "".join(parts), finish, usage, ttft_ms
