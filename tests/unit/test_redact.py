"""Credentials never reach a result, a report or the terminal."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from evalgate.engine.calls import CallSpec, Endpoint, litellm_module
from evalgate.engine.engine import Engine, describe
from evalgate.engine.retry import RetryPolicy
from evalgate.redact import REDACTED, redact, remember, remember_environment
from evalgate.results import CallResult, CaseResult, GradeResult, ResultsWriter, read_results
from evalgate.testing.fake_openai import make_model


def secret() -> str:
    return "sk-test-" + uuid.uuid4().hex


@pytest.mark.parametrize(
    "text",
    [
        "headers: {'authorization': 'Bearer {S}', 'content-type': 'application/json'}",
        "Authorization: Bearer {S}",
        '{"api-key": "{S}"}',
        "x-api-key={S}&model=m",
        "GET https://example.test/v1/models?key={S}&alt=sse",
    ],
)
@pytest.mark.parametrize("shaped", [True, False])
def test_header_and_parameter_values_are_removed(text: str, shaped: bool) -> None:
    # A value of no known shape goes too: its place in a header gives it away.
    value = secret() if shaped else "Q" + uuid.uuid4().hex
    out = redact(text.replace("{S}", value))
    assert value not in out and REDACTED in out, out


@pytest.mark.parametrize("make", [secret, lambda: "AKIA" + uuid.uuid4().hex[:16].upper()])
def test_common_key_shapes_are_removed_anywhere(make) -> None:
    value = make()
    assert redact(f"the key {value} was rejected") == f"the key {REDACTED} was rejected"


def test_remembered_secrets_are_removed_anywhere() -> None:
    value = "plain" + uuid.uuid4().hex
    remember(value)
    assert redact(f"echo:{value}!") == f"echo:{REDACTED}!"


def test_placeholders_and_ordinary_text_are_kept() -> None:
    remember("local")  # too short to be a key: never redacted
    text = "RuntimeError: environment variable OPENAI_API_KEY is not set (needed for local/x)"
    assert redact(text) == text
    assert redact("InternalServerError: the API key was rejected") == (
        "InternalServerError: the API key was rejected"
    )


def test_credential_environment_variables_are_remembered() -> None:
    value = "env" + uuid.uuid4().hex
    remember_environment({"SOME_PROVIDER_API_KEY": value, "HOME": "/home/someone-long"})
    assert value not in redact(f"key {value}")
    assert "/home/someone-long" in redact("path /home/someone-long")


def test_describe_redacts_before_shortening() -> None:
    s = secret()
    message = describe(RuntimeError("x" * 290 + " Bearer " + s))
    assert s[:12] not in message  # not even the start of a cut-off key


def test_results_carry_no_secret_in_memory_or_on_disk(tmp_path: Path) -> None:
    s = secret()
    call = CallResult(error=f"AuthenticationError: bad key {s}")
    grade = GradeResult("llm-judge", 0.0, False, f"judge failed: {s}", error=f"x {s}")
    result = CaseResult(
        item_key="s::c[a]", run_id="r", suite="s", feature="s", suite_hash="h", case_id="c",
        config_id="a", repeat=0, group=None, tier="t", model="m", must_pass=False,
        call=call, grades=(grade,),
    )  # fmt: skip
    assert s not in repr(result)
    writer = ResultsWriter(tmp_path / "results.jsonl")
    writer.append(result)
    writer.close()
    assert s not in (tmp_path / "results.jsonl").read_text()
    assert next(read_results(tmp_path / "results.jsonl")).call.error == call.error


@pytest.mark.parametrize("processes", [0, 2])
def test_a_server_echoing_the_request_headers_leaks_nothing(fake_server, processes: int) -> None:
    s = "Q" + uuid.uuid4().hex  # a key of no known shape: it must be remembered to go
    remember(s)
    key = uuid.uuid4().hex[:8]
    litellm_module()
    engine = Engine(
        lambda spec: Endpoint(f"openai/{spec.model}", fake_server.base_url, s),
        retry=RetryPolicy(max_attempts=1),
        warm_up=processes > 0,
        processes=processes,
    )
    try:
        result = engine.submit(
            CallSpec(
                model=make_model(fail="401", echo_headers=1, key=key),
                messages=({"role": "user", "content": "hi"},),
                max_tokens=4,
                temperature=0.0,
                stream=True,
                repeat=0,
                tier="t",
                timeout_s=60,
            )
        ).result(timeout=300)
    finally:
        engine.close()
    assert fake_server.request_count(key) == 1
    assert result.error is not None and "AuthenticationError" in result.error
    assert "authorization" in result.error.lower()  # the server did quote the headers
    assert s not in result.error and REDACTED in result.error
    assert s not in json.dumps(result.__repr__())
