"""Graders through the plugin: custom graders from a conftest.py, collection errors of
the graders' own checks, and a real run of every grader against the fake server."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from evalgate.results import read_results
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model
from tests.helpers import run_evalgate

CONFTEST = """\
import evalgate


@evalgate.grader("ends-with-period{suffix}", params={{"strict": bool}})
def ends_with_period(output, case, strict=False):
    text = output if strict else output.rstrip()
    return evalgate.Grade(float(text.endswith(".")), text.endswith("."), "period check")
"""

GOOD = """\
suite: good
tiers:
  small: {model: openai/fake}
prompt:
  - {role: user, content: "{{ question }}"}
configs:
  - {id: base, tier: small}
cases:
  - {id: c1, vars: {question: "hi"}}
"""


def collection_errors(pytester: pytest.Pytester) -> list[str]:
    result = pytester.runpytest_subprocess("--evalgate", "--collect-only", "-q")
    text = result.stdout.str()
    assert "Traceback" not in text and "raise " not in text, text
    return [line for line in result.outlines if re.match(r"^\S+\.(yaml|jsonl|csv):\d+: ", line)]


def with_assert(graders: str) -> str:
    return GOOD.replace("configs:", f"assert:\n{graders}configs:", 1)


# ------------------------------------------------------------------------------ collection


def test_misspelt_grader_lists_the_known_ones_including_a_custom_one(
    pytester: pytest.Pytester,
) -> None:
    suffix = "-" + uuid.uuid4().hex[:6]  # the registry is per process: keep names unique
    pytester.makeconftest(CONFTEST.format(suffix=suffix))
    pytester.makefile(".yaml", bad=with_assert(f"  - {{type: ends-with-perod{suffix}}}\n"))
    (error,) = collection_errors(pytester)
    assert error.startswith(f"bad.yaml:7: assert[0].type: unknown grader 'ends-with-perod{suffix}'")
    known = error.split("known graders: ", 1)[1]
    for name in (
        "contains",
        "similar",
        "llm-judge",
        "json-schema",
        "python",
        "cost",
        "latency",
        f"ends-with-period{suffix}",
        f"not-ends-with-period{suffix}",
    ):
        assert re.search(rf"(^|, ){re.escape(name)}(,| |$)", known), name
    assert error.endswith(f"(did you mean 'ends-with-period{suffix}'?)")


def test_custom_grader_params_are_checked_at_collection(pytester: pytest.Pytester) -> None:
    suffix = "-" + uuid.uuid4().hex[:6]
    pytester.makeconftest(CONFTEST.format(suffix=suffix))
    pytester.makefile(
        ".yaml", bad=with_assert(f"  - {{type: ends-with-period{suffix}, strict: yes-please}}\n")
    )
    assert collection_errors(pytester) == [
        "bad.yaml:7: assert[0].strict: expected bool, found a string ('yes-please')"
    ]


@pytest.mark.parametrize(
    ("graders", "expected"),
    [
        (
            "  - {type: json-schema, schema_file: schemas/missing.json}\n",
            r"^bad\.yaml:7: assert\[0\]: schema_file: expected an existing schema file, found "
            r"no file at \S*schemas/missing\.json$",
        ),
        (
            "  - {type: contains, value: x}\n  - {type: json-schema, schema: {type: objekt}}\n",
            r"^bad\.yaml:8: assert\[1\]: invalid JSON Schema at type: 'objekt' is not valid",
        ),
        (
            "  - {type: json-schema}\n",
            r"^bad\.yaml:7: assert\[0\]: expected exactly one of `schema` \(inline mapping\) or "
            r"`schema_file`",
        ),
        (
            "  - {type: python, function: no_such_pkg.checks.is_ok}\n",
            r"^bad\.yaml:7: assert\[0\]: function: cannot import 'no_such_pkg\.checks\.is_ok': "
            r"ModuleNotFoundError: No module named 'no_such_pkg'$",
        ),
        (
            "  - {type: python, function: os.path.jion}\n",
            r"^bad\.yaml:7: assert\[0\]: function: 'os\.path' has no attribute 'jion' "
            r"\(did you mean 'join'\?\)$",
        ),
        (
            "  - {type: python, function: is_ok}\n",
            r"^bad\.yaml:7: assert\[0\]: function: expected a dotted path",
        ),
        (
            "  - {type: latency}\n",
            r"^bad\.yaml:7: assert\[0\]: expected `max_ms` and/or `ttft_max_ms`$",
        ),
        (
            "  - {type: cost, max_usd: cheap}\n",
            r"^bad\.yaml:7: assert\[0\]\.max_usd: expected int or float, found a string",
        ),
        (
            "  - {type: llm-judge, model: judge}\n",
            r"^bad\.yaml:7: assert\[0\]: missing required key 'rubric'$",
        ),
        (
            "  - {type: llm-judge, rubric: ok, threshold: 7}\n",
            r"^bad\.yaml:7: assert\[0\]: threshold: expected a number in \[0, 1\], found 7$",
        ),
        (
            '  - {type: llm-judge, rubric: "Says {{ answr }}"}\n',
            r"^bad\.yaml:11: case 'c1': templates use undefined variable 'answr'",
        ),
        (
            "  - {type: similar, value: x, threshold: 2}\n",
            r"^bad\.yaml:7: assert\[0\]: threshold: expected a cosine in \[-1, 1\], found 2$",
        ),
    ],
    ids=[
        "schema-file-missing",
        "schema-invalid",
        "schema-absent",
        "python-no-module",
        "python-no-attribute",
        "python-not-dotted",
        "latency-no-ceiling",
        "cost-wrong-type",
        "judge-no-rubric",
        "judge-threshold",
        "judge-rubric-variable",
        "similar-threshold",
    ],
)
def test_grader_checks_fail_collection_with_one_located_line(
    pytester: pytest.Pytester, graders: str, expected: str
) -> None:
    pytester.makefile(".yaml", bad=with_assert(graders))
    errors = collection_errors(pytester)
    assert len(errors) == 1, errors
    assert re.match(expected, errors[0]), errors[0]


def test_other_suites_still_collect_after_a_grader_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", bad=with_assert("  - {type: python, function: nope.mod.f}\n"))
    pytester.makefile(".yaml", good=GOOD)
    result = pytester.runpytest_subprocess("--evalgate", "--collect-only", "-q")
    assert "good.yaml::good::c1[base]" in result.stdout.str()


# ------------------------------------------------------------------------------ a real run

TEXT_SUITE = """\
suite: graded-text
tiers:
  app:
    model: "openai/{app}"
    api_base: "{base}"
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  judge:
    model: "openai/{judge}"
    api_base: "{base}"
    price: {{input_per_mtok: 10.0, output_per_mtok: 20.0}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "{{{{ answer }}}}"}}
  - {{type: not-contains, value: Lyon}}
  - {{type: similar, value: "Paris is the capital of France."}}
  - {{type: ends-with-period{suffix}}}
  - {{type: python, function: "eg_checks:mentions_answer"}}
  - {{type: cost, max_usd: 0.01}}
  - {{type: latency, max_ms: 60000, ttft_max_ms: 60000}}
  - type: llm-judge
    model: judge
    rubric: "The answer to '{{{{ question }}}}' is {{{{ answer }}}}."
configs:
  - {{id: base, tier: app, max_tokens: 20}}
cases:
  - {{id: france, vars: {{question: "What is the capital of France?", answer: Paris}}}}
"""

JSON_SUITE = """\
suite: graded-json
tiers:
  app:
    model: "openai/{app}"
    api_base: "{base}"
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
threshold: 0.7
assert:
  - {{type: json-valid}}
  - {{type: json-schema, schema_file: schemas/answer.json, weight: 2}}
  - {{type: json-schema, schema: {{type: object, required: [confidence]}}}}
configs:
  - {{id: base, tier: app, max_tokens: 40}}
cases:
  - {{id: france, vars: {{question: "Capital of France, as JSON?"}}}}
"""

CHECKS = """\
def mentions_answer(output, case):
    return case.vars["answer"] in output
"""


run_pytest = run_evalgate


def test_every_grader_in_a_real_run(tmp_path: Path, fake_server: FakeOpenAIServer) -> None:
    key = uuid.uuid4().hex[:8]
    suffix = "-" + key
    base = fake_server.base_url
    app = make_model(reply="The capital of France is Paris.", key=key)
    judge = make_model(reply='{"reason": "It names Paris.", "score": 9}', key=key + "j")
    json_app = make_model(reply='```json\n{"answer": "Paris"}\n```', key=key + "x")
    (tmp_path / "conftest.py").write_text(CONFTEST.format(suffix=suffix))
    (tmp_path / "evals" / "schemas").mkdir(parents=True)
    (tmp_path / "evals" / "eg_checks.py").write_text(CHECKS)
    (tmp_path / "evals" / "schemas" / "answer.json").write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["answer"],
                "properties": {"answer": {"type": "string", "minLength": 1}},
            }
        )
    )
    (tmp_path / "evals" / "text.yaml").write_text(
        TEXT_SUITE.format(app=app, judge=judge, base=base, suffix=suffix)
    )
    (tmp_path / "evals" / "json.yaml").write_text(JSON_SUITE.format(app=json_app, base=base))

    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout

    run_id = (tmp_path / "reports" / "runs" / "LATEST").read_text().strip()
    results = {
        r.suite: r for r in read_results(tmp_path / "reports" / "runs" / run_id / "results.jsonl")
    }

    text = results["graded-text"]
    grades = {g.grader: g for g in text.grades}
    assert list(grades) == [
        "contains",
        "not-contains",
        "similar",
        f"ends-with-period{suffix}",
        "python",
        "cost",
        "latency",
        "llm-judge",
    ]
    assert all(g.passed and g.error is None for g in grades.values()), grades
    assert text.passed
    assert text.score == pytest.approx((6 + grades["similar"].score + 0.9) / 8)
    judge_grade = grades["llm-judge"]
    assert judge_grade.score == pytest.approx(0.9)
    assert judge_grade.reason == "9/10 by judge: It names Paris."
    assert judge_grade.calls == 1 and judge_grade.latency_ms is not None
    # The fake server counts words: the judge's prompt and its 7-word reply at the judge's price.
    assert judge_grade.cost_usd is not None and judge_grade.cost_usd > 0
    # The config's cost is the application call's alone (6 prompt words, 6 reply words).
    assert text.call.cost_usd == pytest.approx((6 * 1.0 + 6 * 2.0) / 1e6)
    assert all(g.cost_usd is None and g.calls == 0 for n, g in grades.items() if n != "llm-judge")
    assert fake_server.request_count(key + "j") == 1

    data = results["graded-json"]
    names = [(g.grader, g.passed, g.weight) for g in data.grades]
    assert names == [
        ("json-valid", True, 1.0),
        ("json-schema", True, 2.0),
        ("json-schema", False, 1.0),
    ]
    # One miss out of weight 4: score 0.75 reaches the suite's threshold 0.7.
    assert data.score == pytest.approx(0.75) and data.passed

    report = json.loads((tmp_path / "reports" / "evalgate.json").read_text())
    config = report["suites"]["graded-text"]["configs"]["base"]
    assert config["cost_per_case_usd"] == pytest.approx(text.call.cost_usd)
    # The judge's cost is reported, separately, per config and per case.
    assert config["grading_cost_usd"] == pytest.approx(judge_grade.cost_usd)
    assert config["grading_calls"] == 1
    row = report["suites"]["graded-text"]["cases"][0]
    assert row["grading_cost_usd"] == pytest.approx(judge_grade.cost_usd)
    assert row["cost_usd"] == pytest.approx(text.call.cost_usd)
    assert {g["grader"] for g in row["grades"]} >= {"llm-judge", "similar"}


# ------------------------------------------------------------------------------ hostile outputs

HOSTILE_SUITE = """\
suite: hostile
tiers:
  app: {{model: "openai/{app}", api_base: "{base}"}}
prompt:
  - {{role: user, content: "{{{{ text }}}}"}}
assert:
  - {{type: python, function: "hostile_checks:loops_on_request", timeout_s: 1}}
  - {{type: python, function: "hostile_checks:async_numpy"}}
  - {{type: regex, pattern: "^echo: (\\\\w+\\\\s?)*$"}}
configs:
  - {{id: base, tier: app}}
cases:
  - {{id: hangs, vars: {{text: "please loop forever"}}}}
  - {{id: fine-1, vars: {{text: "hello there"}}}}
  - {{id: fine-2, vars: {{text: "word word word word word word word word word word word !"}}}}
"""

HOSTILE_CHECKS = """\
import asyncio

import numpy as np


def loops_on_request(output, case):
    while "loop" in output:
        pass
    return True


async def async_numpy(output, case):
    await asyncio.sleep(0)
    return np.bool_(len(output) > 0)
"""


def test_a_hung_grader_is_a_one_line_error_and_later_items_keep_flowing(
    tmp_path: Path, fake_server: FakeOpenAIServer
) -> None:
    """Issue 18.5 / 8.7: a grader that never returns, an async python grader returning a
    numpy bool (18.10) and a catastrophic regex (18.5) against a real run."""
    app = make_model(key=uuid.uuid4().hex[:8])
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "hostile_checks.py").write_text(HOSTILE_CHECKS)
    (tmp_path / "evals" / "hostile.yaml").write_text(
        HOSTILE_SUITE.format(app=app, base=fake_server.base_url)
    )
    proc = run_pytest(tmp_path, "-n", "0")
    run_id = (tmp_path / "reports" / "runs" / "LATEST").read_text().strip()
    results = {
        r.case_id: r for r in read_results(tmp_path / "reports" / "runs" / run_id / "results.jsonl")
    }
    assert set(results) == {"hangs", "fine-1", "fine-2"}, proc.stdout + proc.stderr
    loop, async_grade, _ = results["hangs"].grades
    assert loop.error is not None and not results["hangs"].passed
    assert "timeout_s" not in results["hangs"].expected
    assert loop.reason == (
        "grader error on case 'hangs': GraderTimeout: grader 'python' ran past its time "
        "limit of 1 s"
    )
    assert async_grade.error is None and async_grade.passed  # async def + numpy.bool_
    assert results["fine-1"].passed, results["fine-1"].grades
    # The regex that backtracks catastrophically under `re` is a plain miss here.
    assert [g.error for g in results["fine-2"].grades] == [None, None, None]
    assert not results["fine-2"].grades[2].passed
    # The item whose grader hung fails with the one line; the others pass.
    assert "1 failed, 2 passed" in proc.stdout, proc.stdout


JUDGED_SUITE = """\
suite: judged
tiers:
  app:
    model: "openai/{app}"
    api_base: "{base}"
    price: {{input_per_mtok: 1, output_per_mtok: 2}}
  priced:
    model: "openai/{priced}"
    api_base: "{base}"
    price: {{input_per_mtok: 10, output_per_mtok: 20}}
  unpriced: {{model: "openai/{unpriced}", api_base: "{base}"}}
prompt:
  - {{role: user, content: "Capital of France?"}}
assert:
  - {{type: llm-judge, model: priced, rubric: "Names Paris."}}
  - {{type: llm-judge, model: unpriced, rubric: "Names Paris."}}
configs:
  - {{id: base, tier: app}}
cases:
  - {{id: france}}
"""


def test_judge_cost_on_a_warm_cache_is_kept_like_a_configs(
    tmp_path: Path, fake_server: FakeOpenAIServer
) -> None:
    """Issue 18.11: a cached verdict costs 0 and records its saving; an unpriced judge's
    cost stays unknown on the warm run instead of turning into $0.00."""
    key = uuid.uuid4().hex[:8]
    verdict = '{"reason": "Names Paris.", "score": 10}'
    (tmp_path / "judged.yaml").write_text(
        JUDGED_SUITE.format(
            base=fake_server.base_url,
            app=make_model(reply="Paris.", key=key),
            priced=make_model(reply=verdict, key=key + "p"),
            unpriced=make_model(reply=verdict, key=key + "u"),
        )
    )
    grades = []
    for _ in range(2):
        proc = run_pytest(tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run_id = (tmp_path / "reports" / "runs" / "LATEST").read_text().strip()
        (result,) = read_results(tmp_path / "reports" / "runs" / run_id / "results.jsonl")
        grades.append(result.grades)
    (cold_priced, cold_unpriced), (warm_priced, warm_unpriced) = grades
    assert fake_server.request_count(key + "p") == 1  # the second verdict came from the cache
    assert cold_priced.cost_usd is not None and cold_priced.cost_usd > 0
    assert cold_priced.saved_usd == 0
    assert warm_priced.cost_usd == 0 and warm_priced.saved_usd == pytest.approx(
        cold_priced.cost_usd
    )
    assert cold_unpriced.cost_usd is None and warm_unpriced.cost_usd is None
