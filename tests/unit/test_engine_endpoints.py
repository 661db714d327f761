"""Local endpoints come from the run's servers.json, read off the event loop, never stale."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from evalgate.engine.calls import CallSpec, Endpoint, litellm_module
from evalgate.engine.engine import Engine
from evalgate.runner import Endpoints


def local_spec(name: str) -> CallSpec:
    return CallSpec(
        model=f"local/{name}",
        messages=({"role": "user", "content": "hi"},),
        max_tokens=4,
        temperature=0.0,
        stream=True,
        repeat=0,
        tier="t",
        timeout_s=60,
    )


def write_servers(path: Path, name: str, url: str) -> None:
    path.write_text(json.dumps({name: {"url": url, "pid": 1}}))


def test_a_servers_file_missing_at_the_first_call_is_read_again(tmp_path, fake_server) -> None:
    servers = tmp_path / "servers.json"
    litellm_module()
    engine = Engine(Endpoints(servers), warm_up=False, processes=0)
    try:
        first = engine.submit(local_spec("fake")).result(timeout=120)
        assert first.error == "RuntimeError: no server is running for local/fake"
        write_servers(servers, "fake", fake_server.base_url)  # the servers came up
        second = engine.submit(local_spec("fake")).result(timeout=120)
    finally:
        engine.close()
    assert second.error is None and second.output == "echo: hi"


def test_a_known_local_model_resolves_without_io(tmp_path) -> None:
    servers = tmp_path / "servers.json"
    write_servers(servers, "m", "http://127.0.0.1:9/v1")
    endpoints = Endpoints(servers)  # read here, in the caller's thread
    servers.unlink()
    assert endpoints(local_spec("m")) == Endpoint("openai/m", "http://127.0.0.1:9/v1", "local")
    # An unknown one is looked up again, as a coroutine the engine awaits (a thread read).
    pending = endpoints(local_spec("other"))
    assert inspect.isawaitable(pending)
    pending.close()


def test_an_unreadable_servers_file_is_no_servers(tmp_path) -> None:
    servers = tmp_path / "servers.json"
    servers.write_text('{"m": {"pid": 3}}')  # no url: a half-written or foreign file
    pending = Endpoints(servers)(local_spec("m"))
    assert inspect.isawaitable(pending)
    pending.close()


def test_one_missing_model_error_for_local_and_embedding_models() -> None:
    from evalgate import embeddings, errors
    from evalgate.engine import local_models

    assert embeddings.MissingModelError is local_models.MissingModelError
    assert local_models.MissingModelError is errors.MissingModelError
