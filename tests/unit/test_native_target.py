"""Which calls go native, where they go, and how native failures read and retry."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.engine.native import (
    OPENAI_API_BASE,
    NativeTarget,
    http_error,
    native_target,
)
from evalgate.engine.retry import RetryPolicy, is_retryable, retry_after_seconds
from evalgate.plan import plan_items
from evalgate.suite import SuiteError, load_suite


def spec(model: str = "m", transport: str = "auto") -> CallSpec:
    return CallSpec(
        model, ({"role": "user", "content": "hi"},), 8, 0.0, True, 0, "t", transport=transport
    )


def test_local_and_api_base_tiers_go_native_with_the_provider_prefix_removed() -> None:
    local = Endpoint("openai/smollm2-135m", "http://127.0.0.1:8001/v1/", "local")
    target = native_target(spec("local/smollm2-135m"), local)
    assert target == NativeTarget(
        "http://127.0.0.1:8001/v1/chat/completions", "smollm2-135m", "openai/smollm2-135m", "local"
    )
    vllm = Endpoint("hosted_vllm/Qwen/Qwen2.5-7B", "http://gpu:8000/v1", "no-key")
    assert native_target(spec(), vllm).model == "Qwen/Qwen2.5-7B"  # type: ignore[union-attr]


def test_openai_models_without_api_base_go_to_openai_with_its_key(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    target = native_target(spec(), Endpoint("openai/gpt-4o-mini", None, None))
    assert target is not None and target.official
    assert target.url == OPENAI_API_BASE + "/chat/completions"
    assert target.api_key == "sk-from-env"
    assert "sk-from-env" not in repr(target)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.internal/v1")
    target = native_target(spec(), Endpoint("openai/gpt-4o-mini", None, "k"))
    assert target is not None and not target.official and target.url.startswith("http://proxy")


def test_other_providers_stay_on_litellm_unless_forced_to_an_api_base() -> None:
    anthropic = Endpoint("anthropic/claude-3-5-haiku", None, "k")
    assert native_target(spec(), anthropic) is None
    assert native_target(spec(), Endpoint("hosted_vllm/x", None, None)) is None  # no endpoint
    ollama = Endpoint("llama3", "http://127.0.0.1:11434/v1", "no-key")
    assert native_target(spec(), ollama) is None
    forced = native_target(spec(transport="native"), ollama)
    assert forced is not None and forced.model == "llama3"
    with pytest.raises(ValueError, match="transport: native needs an OpenAI-protocol endpoint"):
        native_target(spec("anthropic/claude", "native"), anthropic)


def test_transport_litellm_is_never_native() -> None:
    local = Endpoint("openai/smollm2-135m", "http://127.0.0.1:8001/v1", "local")
    assert native_target(spec(transport="litellm"), local) is None


@pytest.mark.parametrize(
    ("status", "kind", "retried"),
    [
        (400, "BadRequestError", False),
        (401, "AuthenticationError", False),
        (403, "APIError", False),
        (404, "NotFoundError", False),
        (408, "Timeout", True),
        (422, "BadRequestError", False),
        (429, "RateLimitError", True),
        (500, "InternalServerError", True),
        (502, "BadGatewayError", True),
        (503, "ServiceUnavailableError", True),
        (504, "Timeout", True),
    ],
)
def test_http_errors_are_named_and_retried_as_through_litellm(
    status: int, kind: str, retried: bool
) -> None:
    body = b'{"error": {"message": "went  wrong\\nbadly", "type": "x"}}'
    exc = http_error(status, body, {}, None)
    assert (type(exc).__name__, str(exc), is_retryable(exc)) == (kind, "went wrong badly", retried)


def test_retry_after_is_honoured() -> None:
    exc = http_error(429, b"{}", {"retry-after": "2"}, None)
    assert retry_after_seconds(exc) == 2.0
    assert 2.0 <= RetryPolicy().delay(1, retry_after_seconds(exc), random.Random(0)) <= 2.1
    assert str(exc) == "{}"  # a JSON body without a message is shown as it came


def test_a_prompt_too_long_for_the_context_is_named_so() -> None:
    body = b'{"error": {"message": "the request exceeds the available context size"}}'
    assert type(http_error(400, body, {}, None)).__name__ == "ContextWindowExceededError"


def test_the_key_never_appears_in_an_error_message() -> None:
    body = b'{"error": {"message": "Incorrect API key provided: sk-secret-123"}}'
    exc = http_error(401, body, {}, "sk-secret-123")
    assert "sk-secret-123" not in str(exc) and "***" in str(exc)


def test_non_json_error_bodies_are_shown_briefly() -> None:
    assert str(http_error(502, b"<html>Bad gateway</html>" * 50, {}, None)).startswith("<html>")
    assert len(str(http_error(502, b"x" * 5000, {}, None))) <= 300
    assert str(http_error(500, b"", {}, None)) == "HTTP 500"


SUITE = """\
suite: s
tiers:
  small: {model: local/smollm2-135m, transport: TRANSPORT}
prompt: "{{ q }}"
configs: [{id: a, tier: small}]
cases: [{id: c, vars: {q: hi}}]
"""


def test_a_tier_chooses_its_transport_and_calls_carry_it(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.replace("TRANSPORT", "litellm"))
    suite = load_suite(path)
    assert suite.tiers["small"].transport == "litellm"
    assert [item.spec.transport for item in plan_items(suite)] == ["litellm"]
    path.write_text(SUITE.replace(", transport: TRANSPORT", ""))
    assert load_suite(path).tiers["small"].transport == "auto"


def test_a_misspelt_transport_fails_with_one_line_naming_file_line_and_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.replace("TRANSPORT", "nativ"))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value) == (
        f"{path}:3: tiers.small.transport: expected one of auto, native, litellm, "
        "found 'nativ' (did you mean 'native'?)"
    )


def test_forced_native_without_an_endpoint_is_one_clear_error_result() -> None:
    from evalgate.engine.engine import Engine

    engine = Engine(lambda s: Endpoint(s.model, None, "k"), warm_up=False, processes=0)
    try:
        result = engine.submit(spec("anthropic/claude-3-5-haiku", "native")).result(timeout=30)
    finally:
        engine.close()
    assert result.attempts == 0
    assert result.error == (
        "ValueError: transport: native needs an OpenAI-protocol endpoint for "
        "anthropic/claude-3-5-haiku: give the tier an api_base, or use an openai/ model"
    )
