"""A server that answers 200 with a malformed stream gives an error result, not a crash."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from evalgate.engine.calls import CallSpec
from evalgate.engine.native import APIError, NativeClients, NativeTarget

BODIES = {
    "not-json": b"data: {not json\n\n",
    "choices-are-strings": b'data: {"choices": ["x"]}\n\n',
    "error-event": b'data: {"error": {"message": "boom", "code": 500}}\n\n',
}


async def serve_and_call(body: bytes) -> BaseException | str:
    async def handler(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        await reply.write(body + b"data: [DONE]\n\n")
        return reply

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    clients = NativeClients()
    spec = CallSpec("m", ({"role": "user", "content": "hi"},), 8, 0.0, True, 0, "t")
    target = NativeTarget(f"http://127.0.0.1:{port}/v1/chat/completions", "m", "m")
    try:
        return (await clients.attempt(spec, target)).output
    except Exception as exc:
        return exc
    finally:
        await clients.aclose()
        await runner.cleanup()


@pytest.mark.parametrize("name", sorted(BODIES))
def test_malformed_streams_raise_a_named_error(name: str) -> None:
    outcome = asyncio.run(serve_and_call(BODIES[name]))
    assert isinstance(outcome, Exception), outcome
    if name == "error-event":
        assert type(outcome).__name__ == "InternalServerError" and str(outcome) == "boom"
    else:
        assert isinstance(outcome, APIError) and "malformed stream event" in str(outcome)
