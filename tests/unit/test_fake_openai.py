"""Tests for evalgate.testing.fake_openai, through real HTTP clients (httpx and litellm)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from evalgate.testing.fake_openai import FakeOpenAIServer, make_model, parse_model

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def litellm() -> Any:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def uniq(**directives: Any) -> str:
    """A model string with its own counter namespace, so tests never share fault counters."""
    return make_model("fake", key=uuid.uuid4().hex, **directives)


def chat(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hello there"}])
    return body


def sse_events(text: str) -> list[Any]:
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ------------------------------------------------------------------ model-string directives


def test_parse_model_directives() -> None:
    b = parse_model("fake?reply=a%20b&latency_ms=200&fail=429:2&retry_after=1&key=t1&chunks=3")
    assert (b.name, b.key, b.reply, b.latency_ms, b.chunks) == ("fake", "t1", "a b", 200, 3)
    assert (b.fail_status, b.fail_times, b.retry_after) == (429, 2, "1")
    assert [b.fails(i) for i in (1, 2, 3)] == [True, True, False]
    always = parse_model("m?fail=503&hang_ms=5&cut_after=1&cut_times=1")
    assert always.key == "m?fail=503&hang_ms=5&cut_after=1&cut_times=1"
    assert always.fails(1000) and always.hangs(1000)
    assert always.cuts(1) and not always.cuts(2)
    assert parse_model("plain") == parse_model("plain?key=plain")
    assert parse_model(make_model("x", reply="a&b=c d/e?")).reply == "a&b=c d/e?"
    assert parse_model("m?jitter_ms=40").jitter_ms == 40
    bad_ones = ("m?bogus=1", "m?fail=200", "m?latency_ms=-1", "m?chunks=0", "m?hang_times=x")
    for bad in (*bad_ones, "m?jitter_ms=-1", "m?jitter_ms=nan"):
        with pytest.raises(ValueError):
            parse_model(bad)


# ------------------------------------------------------------------ raw protocol via httpx


def test_health_models_and_404(client: httpx.Client) -> None:
    assert client.get("/../health").json() == {"status": "ok"}
    models = client.get("/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "fake"
    r = client.get("/nope")
    assert r.status_code == 404 and "error" in r.json()


def test_non_streaming_shape_and_usage(client: httpx.Client) -> None:
    body = chat(
        model="fake",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
        ],
    )
    r = client.post("/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    data = r.json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["model"] == "fake" and isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "echo: one two three",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_max_tokens_truncates_with_finish_length(client: httpx.Client) -> None:
    body = chat(model=make_model(reply="a b  c d"), max_tokens=2)
    data = client.post("/chat/completions", json=body).json()
    assert data["choices"][0]["message"]["content"] == "a b"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 2
    body = chat(model=make_model(reply="a b"), max_tokens=5)
    assert client.post("/chat/completions", json=body).json()["choices"][0]["finish_reason"] == (
        "stop"
    )


def test_streaming_protocol_with_usage(client: httpx.Client) -> None:
    body = chat(model=make_model(reply="w1 w2 w3"), stream=True)
    body["stream_options"] = {"include_usage": True}
    r = client.post("/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert contents == ["w1 ", "w2 ", "w3"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_streaming_chunks_directive_and_no_usage_by_default(client: httpx.Client) -> None:
    body = chat(model=make_model(reply="a b c d e", chunks=2), stream=True)
    events = sse_events(client.post("/chat/completions", json=body).text)
    assert [e["choices"][0]["delta"].get("content") for e in events[1:-2]] == ["a b c ", "d e"]
    assert all("usage" not in e for e in events[:-1])


def test_keep_alive_reuses_one_connection(server: FakeOpenAIServer) -> None:
    before = server.stats()["connections_opened"]
    with httpx.Client(base_url=server.base_url) as c:
        for stream in (False, True, False, True):
            r = c.post("/chat/completions", json=chat(model="fake", stream=stream))
            assert r.status_code == 200
        # errors are Content-Length framed too, so the connection survives them
        assert c.post("/chat/completions", json=chat(model=uniq(fail=500))).status_code == 500
        assert c.get("/models").status_code == 200
    # +1 for this client, +1 for the stats() control connection
    assert server.stats()["connections_opened"] - before == 2


def test_fail_n_times_with_retry_after_and_counts(
    server: FakeOpenAIServer, client: httpx.Client
) -> None:
    model = make_model(fail="429:2", retry_after=3, key="fail-429-test")
    statuses = []
    for _ in range(3):
        r = client.post("/chat/completions", json=chat(model=model))
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.headers["retry-after"] == "3"
            err = r.json()["error"]
            assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert statuses == [429, 429, 200]
    assert server.request_count("fail-429-test") == 3
    assert server.counts()["fail-429-test"] == 3
    assert server.request_count() >= 3


def test_bad_requests_are_400(client: httpx.Client) -> None:
    r = client.post("/chat/completions", json=chat(model="fake?nonsense=1"))
    assert r.status_code == 400 and "nonsense" in r.json()["error"]["message"]
    r = client.post("/chat/completions", content=b"{not json")
    assert r.status_code == 400
    assert client.get("/chat/completions").status_code == 405


def test_latency_and_hang_times(client: httpx.Client) -> None:
    model = uniq(latency_ms=150)
    t = time.perf_counter()
    client.post("/chat/completions", json=chat(model=model))
    assert time.perf_counter() - t >= 0.14

    model = uniq(hang_ms=300, hang_times=1)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json=chat(model=model), timeout=0.1)
    t = time.perf_counter()
    assert client.post("/chat/completions", json=chat(model=model)).status_code == 200
    assert time.perf_counter() - t < 0.25  # only the first request hangs


def test_jitter_gives_each_request_its_own_random_latency(client: httpx.Client) -> None:
    model = uniq(jitter_ms=200)
    took = []
    for _ in range(10):
        t = time.perf_counter()
        client.post("/chat/completions", json=chat(model=model))
        took.append(time.perf_counter() - t)
    # ten uniform draws from [0, 200) ms all within 20 ms of each other: p < 1e-8
    assert max(took) - min(took) > 0.02


def test_chunk_delay_spaces_out_chunks(client: httpx.Client) -> None:
    body = chat(model=uniq(reply="a b c", chunk_delay_ms=80), stream=True)
    stamps = []
    started = time.perf_counter()
    with client.stream("POST", "/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if '"content":"' in line and '"role"' not in line:
                stamps.append(time.perf_counter())
    assert len(stamps) == 3
    # The last chunk cannot arrive before two delays have passed since the request; the
    # first chunk's own arrival time varies with load, so it is not the reference.
    assert stamps[-1] - started >= 0.16


def test_cut_after_closes_mid_stream(client: httpx.Client) -> None:
    model = uniq(reply="a b c d", cut_after=2, cut_times=1)
    body = chat(model=model, stream=True)
    got = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=body) as r,
    ):
        for line in r.iter_lines():
            got.append(line)
    text = "\n".join(got)
    assert '"content":"a "' in text and '"content":"b "' in text
    assert '"content":"c "' not in text and "[DONE]" not in text
    # second request of the same key is not cut
    events = sse_events(client.post("/chat/completions", json=body).text)
    assert events[-1] == "[DONE]"


def test_reset_clears_counters(client: httpx.Client) -> None:
    with FakeOpenAIServer() as srv:
        model = make_model(fail="500:1", key="k")
        with httpx.Client(base_url=srv.base_url) as c:
            assert c.post("/chat/completions", json=chat(model=model)).status_code == 500
            assert c.post("/chat/completions", json=chat(model=model)).status_code == 200
            assert srv.request_count("k") == 2
            srv.reset()
            assert srv.request_count() == 0
            assert c.post("/chat/completions", json=chat(model=model)).status_code == 500


# ------------------------------------------------------------------ process mode and CLI


def test_process_mode_counts_reset_and_stats() -> None:
    with FakeOpenAIServer(mode="process") as srv:
        assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
        model = make_model(reply="x y", fail="503:1", key="proc")
        with httpx.Client(base_url=srv.base_url) as c:
            assert c.post("/chat/completions", json=chat(model=model)).status_code == 503
            r = c.post("/chat/completions", json=chat(model=model))
            assert r.json()["choices"][0]["message"]["content"] == "x y"
        assert srv.request_count("proc") == 2 and srv.request_count() == 2
        assert srv.counts() == {"proc": 2}
        stats = srv.stats()
        assert stats["pid"] != os.getpid() and stats["cpu_total_s"] >= 0
        srv.reset()
        assert srv.request_count() == 0
        proc = srv._proc
    assert proc is not None and proc.returncode is not None


def test_cli_prints_port_and_exits_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "evalgate.testing.fake_openai", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        word, port = proc.stdout.readline().split()
        assert word == "PORT"
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------ through real litellm calls


def run_litellm(litellm: Any, coro: Any) -> Any:
    """asyncio.run() one litellm coroutine, then close litellm's cached clients: they are bound
    to this event loop and would otherwise leak their connections when it closes."""
    from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

    async def main() -> Any:
        try:
            return await coro
        finally:
            await close_litellm_async_clients()
            litellm.in_memory_llm_clients_cache.flush_cache()

    return asyncio.run(main())


def _acall(litellm: Any, server: FakeOpenAIServer, model: str, **kw: Any) -> Any:
    kw.setdefault("messages", [{"role": "user", "content": "one two three"}])
    return litellm.acompletion(
        model=f"openai/{model}", api_base=server.base_url, api_key="x", max_retries=0, **kw
    )


def test_litellm_non_streaming(litellm: Any, server: FakeOpenAIServer) -> None:
    resp = run_litellm(litellm, _acall(litellm, server, make_model(reply="hello big world")))
    assert resp.choices[0].message.content == "hello big world"
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (3, 3)


def test_litellm_streaming_with_usage(litellm: Any, server: FakeOpenAIServer) -> None:
    async def run() -> tuple[list[str], Any]:
        stream = await _acall(
            litellm, server, "fake", stream=True, stream_options={"include_usage": True}
        )
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            usage = getattr(chunk, "usage", None) or usage
        return parts, usage

    parts, usage = run_litellm(litellm, run())
    assert "".join(parts) == "echo: one two three"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 4, 7)


def test_litellm_429_rate_limit_error_with_retry_after(
    litellm: Any, server: FakeOpenAIServer
) -> None:
    with pytest.raises(litellm.RateLimitError) as info:
        run_litellm(litellm, _acall(litellm, server, uniq(fail=429, retry_after=7)))
    exc = info.value
    assert exc.status_code == 429
    # litellm 1.110.2: the Retry-After header is readable from BOTH
    #   exc.response.headers["retry-after"]      (exc.response is the httpx.Response)
    #   exc.litellm_response_headers["retry-after"]  (an httpx.Headers)
    # while exc.headers is None. litellm.RateLimitError subclasses openai.RateLimitError.
    assert exc.response.headers["retry-after"] == "7"
    assert exc.litellm_response_headers["retry-after"] == "7"


def test_litellm_500_once_then_success(litellm: Any, server: FakeOpenAIServer) -> None:
    model = uniq(fail="500:1", reply="ok")
    with pytest.raises(litellm.InternalServerError) as info:
        run_litellm(litellm, _acall(litellm, server, model))
    assert info.value.status_code == 500
    assert run_litellm(litellm, _acall(litellm, server, model)).choices[0].message.content == "ok"
    # fail=503 surfaces as litellm.ServiceUnavailableError
    with pytest.raises(litellm.ServiceUnavailableError):
        run_litellm(litellm, _acall(litellm, server, uniq(fail=503)))


def test_litellm_stream_cut_raises_midstream_error(litellm: Any, server: FakeOpenAIServer) -> None:
    async def run(got: list[str]) -> None:
        stream = await _acall(litellm, server, uniq(reply="a b c d", cut_after=2), stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)

    from litellm.exceptions import MidStreamFallbackError  # not exported as litellm.X

    got: list[str] = []
    # litellm 1.110.2 raises litellm.exceptions.MidStreamFallbackError (a ServiceUnavailableError
    # subclass, status_code 500 taken from the wrapped litellm.APIConnectionError in
    # .original_exception); .generated_content holds the text received before the cut.
    with pytest.raises(MidStreamFallbackError) as info:
        run_litellm(litellm, run(got))
    assert got == ["a ", "b "]
    assert info.value.generated_content == "a b "
    assert isinstance(info.value.original_exception, litellm.APIConnectionError)


def test_litellm_hang_raises_timeout(litellm: Any, server: FakeOpenAIServer) -> None:
    t = time.perf_counter()
    with pytest.raises(litellm.Timeout) as info:  # openai.APITimeoutError subclass
        run_litellm(litellm, _acall(litellm, server, uniq(hang_ms=3000), timeout=0.2))
    assert info.value.status_code == 408
    assert time.perf_counter() - t < 2
