"""The runner keeps a bounded window of calls submitted, however large the suite."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from evalgate.engine.calls import Endpoint, litellm_module
from evalgate.engine.engine import Engine
from evalgate.plan import plan_items
from evalgate.runner import Runner
from evalgate.runs import RunPaths
from evalgate.suite.loader import load_suite
from evalgate.testing.fake_openai import make_model


def suite_file(tmp_path: Path, base_url: str, key: str, cases: int) -> Path:
    model = "openai/" + make_model(reply="ok", latency_ms=20, key=key)
    rows = "\n".join(f"  - {{id: q{i}, vars: {{question: 'q {i}'}}}}" for i in range(cases))
    path = tmp_path / "s.yaml"
    path.write_text(f"""\
suite: many
tiers:
  t: {{model: "{model}", api_base: "{base_url}"}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "ok"}}
configs:
  - {{id: a, tier: t, max_tokens: 4}}
cases:
{rows}
""")
    return path


def make_runner(tmp_path: Path, concurrency: int, stop=None) -> Runner:
    litellm_module()
    engine = Engine(
        lambda s: Endpoint(s.model, s.api_base, "k"),
        concurrency=concurrency,
        warm_up=False,
        processes=0,
    )
    return Runner(RunPaths(tmp_path / "reports", "r1"), engine, should_stop=stop)


def tasks_on(engine: Engine) -> int:
    """Items submitted to the engine and not finished (litellm's own tasks left out)."""

    async def count() -> int:
        return sum(
            getattr(t.get_coro(), "__qualname__", "") == "Runner._execute"
            for t in asyncio.all_tasks()
        )

    return engine.submit_coroutine(count()).result(timeout=30)


def test_prefetch_submits_a_window_not_the_whole_suite(tmp_path, fake_server) -> None:
    key = uuid.uuid4().hex[:8]
    plans = list(plan_items(load_suite(suite_file(tmp_path, fake_server.base_url, key, 300))))
    runner = make_runner(tmp_path, concurrency=2)
    try:
        runner.prefetch(plans)
        assert runner.window == 8
        most = tasks_on(runner.engine)
        for plan in plans:
            result, reused = runner.result_for(plan)
            assert result.call.error is None and not reused
            most = max(most, tasks_on(runner.engine))
    finally:
        runner.close()
        runner.engine.close()
    assert most <= runner.window, most
    assert fake_server.request_count(key) == 300


def test_nothing_more_is_submitted_once_pytest_stops(tmp_path, fake_server) -> None:
    key = uuid.uuid4().hex[:8]
    plans = list(plan_items(load_suite(suite_file(tmp_path, fake_server.base_url, key, 200))))
    stopping = False
    runner = make_runner(tmp_path, concurrency=2, stop=lambda: stopping)
    try:
        runner.prefetch(plans)
        runner.result_for(plans[0])
        stopping = True  # as after a failure under -x
        runner.result_for(plans[1])
    finally:
        runner.close()
        runner.engine.close()
    assert fake_server.request_count(key) <= 2 + runner.window


def test_an_item_asked_for_before_its_turn_runs_once(tmp_path, fake_server) -> None:
    key = uuid.uuid4().hex[:8]
    plans = list(plan_items(load_suite(suite_file(tmp_path, fake_server.base_url, key, 40))))
    runner = make_runner(tmp_path, concurrency=1)
    try:
        runner.prefetch(plans)
        last, _ = runner.result_for(plans[-1])  # far outside the window: submitted now
        rest = [runner.result_for(plan)[0] for plan in plans[:-1]]
    finally:
        runner.close()
        runner.engine.close()
    assert last.call.error is None and all(r.call.error is None for r in rest)
    assert fake_server.request_count(key) == 40
