"""Hostile review of the batch queue (evalgate.engine.batch): kills, races, bad files.

Real HTTP on 127.0.0.1 (the fake server's Files/Batches endpoints, or a small server
below that answers crafted output files) and a real run directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from evalgate.engine.batch import BatchQueue, BatchSettings, BatchStore
from evalgate.engine.calls import CallSpec
from evalgate.engine.native import NativeTarget
from evalgate.results import CallResult
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model

ROOT = Path(__file__).resolve().parents[2]
FAST = {"send_delay_s": 0.05, "poll_s": 0.05, "max_poll_s": 0.1}


def _spec(i: int, model: str) -> CallSpec:
    return CallSpec(
        model=f"openai/{model}",
        messages=({"role": "user", "content": f"n{i}"},),
        max_tokens=8,
        temperature=0,
        stream=False,
        repeat=0,
        tier="t",
    )


def _target(base_url: str, model: str) -> NativeTarget:
    return NativeTarget(f"{base_url}/chat/completions", model, f"openai/{model}")


async def _run(
    store: Path | None, base_url: str, model: str, n: int, **settings: Any
) -> list[CallResult]:
    queue = BatchQueue(BatchStore(store) if store else None, BatchSettings(**{**FAST, **settings}))
    try:
        target = _target(base_url, model)
        return list(await asyncio.gather(*(queue.call(_spec(i, model), target) for i in range(n))))
    finally:
        await queue.aclose()


def run(store: Path | None, base_url: str, model: str, n: int, **settings: Any) -> list[CallResult]:
    return asyncio.run(asyncio.wait_for(_run(store, base_url, model, n, **settings), 60))


def records(store: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(store.glob("*.json"))]


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:8]


# A process that dies at one point of a batch's life: the test kills it there.
_CHILD = """
import asyncio, os, sys
from pathlib import Path
from evalgate.engine import batch as b
from tests.unit.test_batch_hostile import _run

when = sys.argv[4]
record = b.BatchStore.record

def dying_record(self, stored):
    if when == "created" and stored.batch_id and not stored.collected:
        os._exit(9)  # the batch exists on the server; its id never reaches the disk
    record(self, stored)

b.BatchStore.record = dying_record
asyncio.run(_run(Path(sys.argv[1]), sys.argv[2], sys.argv[3], 6))
"""


def _child(store: Path, base_url: str, model: str, when: str) -> subprocess.Popen:
    import evalgate

    code = Path(evalgate.__file__).resolve().parents[1]  # the evalgate under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(store), base_url, model, when], cwd=ROOT, env=env
    )


def test_kill_between_batch_created_and_id_stored_does_not_pay_twice(tmp_path, key) -> None:
    store = tmp_path / "batches"
    with FakeOpenAIServer() as server:
        model = make_model("fake", key=key, batch_ms=300)
        proc = _child(store, server.base_url, model, "created")
        assert proc.wait(timeout=60) == 9
        assert server.batch_submissions(key) == 1

        got = run(store, server.base_url, model, 6)
        assert [r.output for r in got] == [f"echo: n{i}" for i in range(6)]
        assert server.batch_submissions(key) == 1  # the orphan was found by its tag
        assert server.request_count(key) == 6
        # The intent was resolved to the batch it named: one record, with the batch's id.
        assert [bool(r["batch_id"]) for r in records(store)] == [True]


def test_two_processes_resuming_the_same_run_pay_once(tmp_path, key) -> None:
    store = tmp_path / "batches"
    with FakeOpenAIServer() as server:
        # The first batch expires with half its requests unanswered.
        model = make_model("fake", key=key, batch_ms=1500, batch_expire=1, expire_keep=3)
        proc = _child(store, server.base_url, model, "never")
        deadline = time.monotonic() + 60
        while not [r for r in records(store) if r["batch_id"]] and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # polling now
        proc.wait()
        assert server.batch_submissions(key) == 1

        outs: dict[int, list[CallResult]] = {}

        def resume(n: int) -> None:
            outs[n] = run(store, server.base_url, model, 6)

        threads = [threading.Thread(target=resume, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        for n in range(2):
            assert [r.output for r in outs[n]] == [f"echo: n{i}" for i in range(6)]
        # The expired half was submitted once, by one of the two: 2 batches in all.
        assert server.batch_submissions(key) == 2
        assert server.batches()["requests"] and sorted(server.batches()["requests"].values()) == [
            3,
            6,
        ]


def test_a_batch_that_never_finishes_ends_its_calls_with_a_clear_error(tmp_path, key) -> None:
    store = tmp_path / "batches"
    with FakeOpenAIServer() as server:
        model = make_model("fake", key=key, batch_ms=600_000)
        got = run(store, server.base_url, model, 3, max_wait_s=0.5)
        assert all(r.output is None or r.output == "" for r in got)
        for r in got:
            assert r.error is not None
            assert "still in_progress after 0.5 s" in r.error
            assert "--evalgate-resume" in r.error and "/cancel" in r.error
        # Left running and recorded: a resumed run collects it; nothing cancelled or lost.
        assert server.batches()["cancelled"] == 0
        assert [r["collected"] for r in records(store)] == [False]


def test_settings_read_the_max_wait(monkeypatch) -> None:
    monkeypatch.setenv("EVALGATE_BATCH_MAX_WAIT_S", "90")
    assert BatchSettings.from_env().max_wait_s == 90.0


# ----------------------------------------------------------------- crafted output files


Craft = Callable[[list[dict]], tuple[bytes | None, bytes | None]]


def _answer(line: dict, usage: bool = True) -> dict:
    body: dict[str, Any] = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok " + line["custom_id"][:6]},
                "finish_reason": "stop",
            }
        ]
    }
    if usage:
        body["usage"] = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    return {"custom_id": line["custom_id"], "response": {"status_code": 200, "body": body}}


def _jsonl(objs: list[Any]) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


class _Crafted(ThreadingHTTPServer):
    """Files/Batches endpoints whose output and error files ``craft`` writes."""

    def __init__(self, craft: Craft, status: str = "completed") -> None:
        self.craft = craft
        self.status = status  # "in_progress": never ends; cancel is not supported either
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        super().__init__(("127.0.0.1", 0), _CraftedHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _CraftedHandler(BaseHTTPRequestHandler):
    server: _Crafted

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, obj: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        if self.path == "/v1/files":
            content = body.split(b"\r\n\r\n", 2)[-1].rsplit(b"\r\n--", 1)[0]
            fid = f"file-{len(srv.files)}"
            srv.files[fid] = content
            return self._send({"id": fid})
        if self.path.endswith("/cancel"):
            self.send_response(501)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.loads(body)
        lines = [json.loads(x) for x in srv.files[payload["input_file_id"]].splitlines()]
        out, err = srv.craft(lines)
        batch = {"id": f"batch-{len(srv.batches)}", "status": srv.status}
        for name, content in (("output_file_id", out), ("error_file_id", err)):
            if content is not None:
                fid = f"file-{len(srv.files)}"
                srv.files[fid] = content
                batch[name] = fid
        srv.batches[batch["id"]] = batch
        self._send(batch)

    def do_GET(self) -> None:
        parts = self.path.split("/")
        if parts[2] == "files":
            return self._send(None, self.server.files[parts[3]])
        self._send(self.server.batches[parts[3]])


def crafted(craft: Craft, n: int = 4) -> list[CallResult]:
    server = _Crafted(craft)
    try:
        return run(None, server.base_url, "m", n)
    finally:
        server.shutdown()
        server.server_close()


def test_a_repeated_custom_id_keeps_its_answer_over_an_error_line() -> None:
    def craft(lines: list[dict]) -> tuple[bytes, None]:
        objs: list[Any] = []
        for line in lines:
            error = {"status_code": 500, "body": {"error": {"message": "transient"}}}
            objs.append({"custom_id": line["custom_id"], "response": error})
            objs.append(_answer(line))
        return _jsonl(objs), None

    got = crafted(craft)
    assert all(r.error is None and r.output.startswith("ok ") for r in got), got


def test_unknown_ids_and_non_json_lines_are_skipped_and_the_rest_answered() -> None:
    def craft(lines: list[dict]) -> tuple[bytes, None]:
        junk: list[Any] = [b"not json {", b"[1, 2]", {"custom_id": "nobody-sent-this"}, b""]
        return _jsonl(junk + [_answer(line) for line in lines] + [b"\x00\xff"]), None

    got = crafted(craft)
    assert all(r.error is None and r.output.startswith("ok ") for r in got), got


def test_an_error_file_alone_gives_each_request_its_error() -> None:
    def craft(lines: list[dict]) -> tuple[None, bytes]:
        bad = {"status_code": 400, "body": {"error": {"message": "context too long"}}}
        return None, _jsonl([{"custom_id": x["custom_id"], "response": bad} for x in lines])

    got = crafted(craft)
    assert all(r.error and "HTTP 400" in r.error and "context too long" in r.error for r in got)


def test_no_usage_reported_means_unknown_cost_never_zero() -> None:
    def craft(lines: list[dict]) -> tuple[bytes, None]:
        return _jsonl([_answer(line, usage=False) for line in lines]), None

    got = crafted(craft)
    for r in got:
        assert r.error is None and r.output.startswith("ok ")
        assert r.input_tokens is None and r.output_tokens is None and r.cost_usd is None


def test_a_run_killed_after_collection_reuses_the_answers_and_asks_errors_again(
    tmp_path, key
) -> None:
    # The batch is collected (and marked so) before its results reach the run's file: a
    # process killed in between leaves calls without results whose answers are paid for.
    store = tmp_path / "batches"
    with FakeOpenAIServer() as server:
        model = make_model("fake", key=key, fail="500:1")
        first = run(store, server.base_url, model, 4)
        assert sum(r.error is not None for r in first) == 1
        assert [r["collected"] for r in records(store)] == [True]

        again = run(store, server.base_url, model, 4)  # as a resumed run would ask
        assert [r.output for r in again] == [f"echo: n{i}" for i in range(4)]
        assert server.batch_submissions(key) == 2  # only the errored request, alone
        assert server.request_count(key) == 5


def test_an_interrupted_run_names_the_batches_it_could_not_cancel(capsys) -> None:
    server = _Crafted(lambda lines: (None, None), status="in_progress")
    try:

        async def interrupted() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(_run(None, server.base_url, "m", 2), 1.0)

        asyncio.run(interrupted())  # as Ctrl-C: the queue closes while it polls
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "these batches may still run (and bill): batch-0 at http://127.0.0.1:" in err
    assert "<base_url>/batches/<id>/cancel" in err
