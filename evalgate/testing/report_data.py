"""Synthetic runs for report tests and the report scale benchmark.

Builds a real :class:`~evalgate.suite.model.Suite` and real :class:`CaseResult` lines, then
the evalgate.json document through the same functions a pytest session uses
(``build_report``, ``analyze_run``, ``suite_settings``, ``suite_inputs``), so what the
HTML report is tested on has the shape a run writes. Seeded: the same arguments give the
same document.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalgate.results import CallResult, CaseResult, GradeResult
from evalgate.suite.model import Case, Config, GraderSpec, Message, Price, Suite, Tier

XSS_TEXTS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
XSS_CASE_ID = 'case-"><img src=x onerror=alert(2)>'
"""A case id no suite file can declare; a hand-edited or hostile evalgate.json can."""


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """One config of a synthetic suite: how good, costly and slow it is."""

    id: str
    tier: str = "large"
    quality: float = 0.9
    latency_ms: float = 800.0
    context_trim: float = 1.0
    max_tokens: int = 64
    error_rate: float = 0.0
    cache: bool = False
    repeats: int = 1


DEFAULT_CONFIGS = (
    SyntheticConfig("large", quality=0.92, latency_ms=900),
    SyntheticConfig("large-trim50", quality=0.91, latency_ms=700, context_trim=0.5),
    SyntheticConfig("large-max32", quality=0.90, latency_ms=600, max_tokens=32),
    SyntheticConfig("small", tier="small", quality=0.84, latency_ms=250, error_rate=0.01),
    SyntheticConfig("small-trim50", tier="small", quality=0.80, latency_ms=200, context_trim=0.5),
    SyntheticConfig("small-cached", tier="small", quality=0.84, latency_ms=250, cache=True),
)
TIERS = {
    "large": Tier("large", "local/qwen2.5-coder-1.5b", Price(2.5, 10.0)),
    "small": Tier("small", "local/smollm2-135m", Price(0.15, 0.6)),
}


def synthetic_suite(
    cases: int, configs: Sequence[SyntheticConfig] = DEFAULT_CONFIGS, *, hostile: bool = False
) -> Suite:
    """A suite with ``cases`` cases; ``hostile`` puts markup in questions and one case id."""
    rows = []
    for i in range(cases):
        answer = f"{i * 7}"
        context = " ".join(f"Fact {j} of record {i} is unrelated." for j in range(4))
        context += f" The total of record {i} is {answer}."
        question = f"What is the total of record {i}?"
        if hostile and i < len(XSS_TEXTS):
            question = f"{XSS_TEXTS[i]} {question}"
        rows.append(
            Case(
                id=XSS_CASE_ID if hostile and i == 2 else f"case-{i:05d}",
                vars={"context": context, "question": question, "answer": answer},
            )
        )
    return Suite(
        name="synthetic",
        feature="support",
        path="suites/synthetic.yaml",
        tiers=TIERS,
        prompt=(
            Message("system", "Answer with the number only."),
            Message("user", "Context: {{ context }}\nQuestion: {{ question }}"),
        ),
        cases=tuple(rows),
        graders=(GraderSpec("contains", {"value": "{{ answer }}"}),),
        configs=tuple(
            Config(
                id=c.id,
                tier=c.tier,
                context_trim=c.context_trim,
                max_tokens=c.max_tokens,
                cache=c.cache,
                repeats=c.repeats,
            )
            for c in configs
        ),
        baseline=configs[0].id,
        suite_hash="synthetic",
    )


def synthetic_results(
    suite: Suite,
    configs: Sequence[SyntheticConfig] = DEFAULT_CONFIGS,
    *,
    seed: int = 0,
    hostile: bool = False,
) -> list[CaseResult]:
    """One result per (case, config, repeat); paired: a hard case is hard for every config."""
    rng = random.Random(seed)
    results = []
    difficulty = [rng.random() for _ in suite.cases]
    for index, (case, hard) in enumerate(zip(suite.cases, difficulty, strict=True)):
        answer = str(case.vars["answer"])
        for spec in configs:
            tier = suite.tiers[spec.tier]
            for repeat in range(spec.repeats):
                key = f"{suite.name}::{case.id}[{spec.id}]"
                if spec.repeats > 1:
                    key = f"{suite.name}::{case.id}[{spec.id}-r{repeat + 1}]"
                error = rng.random() < spec.error_rate
                passed = not error and hard < spec.quality + rng.uniform(-0.02, 0.02)
                output = f"The total is {answer}." if passed else f"It is {int(answer) + 1}."
                if hostile and case.id.endswith(("00000", "00001")):
                    output = XSS_TEXTS[int(case.id[-1])] + " " + output
                tokens_in = int(60 * spec.context_trim) + 20
                tokens_out = rng.randint(4, min(spec.max_tokens, 24))
                cached = spec.cache and rng.random() < 0.4
                cost = tier.price.cost(tokens_in, tokens_out) if tier.price else None
                latency = spec.latency_ms * rng.lognormvariate(0, 0.3)
                call = CallResult(
                    output="" if error else output,
                    input_tokens=None if error else tokens_in,
                    output_tokens=None if error else tokens_out,
                    cost_usd=0.0 if cached else (None if error else cost),
                    saved_usd=(cost or 0.0) if cached else 0.0,
                    latency_ms=latency,
                    ttft_ms=None if error else latency * 0.4,
                    cached=cached,
                    attempts=3 if error else 1,
                    error="APIError: HTTP 503 after 3 attempts" if error else None,
                    finish_reason=None if error else "stop",
                )
                grades = (
                    ()
                    if error
                    else (
                        GradeResult(
                            "contains",
                            1.0 if passed else 0.0,
                            passed,
                            f"found '{answer}'"
                            if passed
                            else f"expected '{answer}' in output, found {output[:40]!r}",
                            # Every 11th case's pass carries a reviewer's mark, as a judge
                            # sets it on an output that talks to its grader.
                            flags=("addresses-grader",) if passed and index % 11 == 0 else (),
                        ),
                    )
                )
                results.append(
                    CaseResult(
                        item_key=key,
                        run_id="synthetic",
                        suite=suite.name,
                        feature=suite.feature,
                        suite_hash=suite.suite_hash,
                        case_id=case.id,
                        config_id=spec.id,
                        repeat=repeat,
                        group=None,
                        tier=spec.tier,
                        model=tier.model,
                        must_pass=False,
                        call=call,
                        grades=grades,
                        score=1.0 if passed else 0.0,
                        passed=passed,
                        expected=f"contains(value={answer!r})",
                    )
                )
    return results


def synthetic_document(
    cases: int = 150,
    configs: Sequence[SyntheticConfig] = DEFAULT_CONFIGS,
    *,
    seed: int = 0,
    hostile: bool = False,
    gate_mode: str = "all",
) -> dict[str, Any]:
    """An evalgate.json document as a run writes it (statistics, gate, settings, inputs)."""
    from evalgate.report.gate import GateSettings, analyze_run
    from evalgate.report.inputs import suite_inputs
    from evalgate.report.settings import suite_settings
    from evalgate.report.summary import build_report

    suite = synthetic_suite(cases, configs, hostile=hostile)
    results = synthetic_results(suite, configs, seed=seed, hostile=hostile)
    gate = analyze_run(results, {suite.name: suite}, GateSettings(mode=gate_mode, seed=seed))
    document = build_report(
        results,
        run_id="synthetic",
        baselines={suite.name: suite.baseline},
        config_orders={suite.name: [c.id for c in suite.configs]},
        extra={name: {"stats": section} for name, section in gate.sections.items()},
    )
    section = document["suites"][suite.name]
    section["settings"] = suite_settings(suite)
    section["inputs"] = suite_inputs(suite)
    document["gate"] = {"blocked": bool(gate.blocking), "reasons": gate.blocking, "notes": []}
    return document
