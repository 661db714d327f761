"""The difficulty router's guarantee, reach and savings, measured on seeded simulations.

Run: .venv/bin/python benchmarks/router.py [--trials 1000] [--quick]

1. Learn-then-Test alone (``evalgate.stats.ltt_simulate``): a score with known risk curve
   R(t) = c (1 - t)^2 / 2; per (n, bound, loss kind): the share of trials whose certified
   threshold has true risk above the bound (target <= alpha), and the traffic it sends to
   the small tier beside the oracle's (the threshold whose true risk is the bound).
2. Runtime routing latency (``runtime_latency_section``): the time a learned router in an
   exported policy adds to a request (``LearnedRouter.routes``: request text, MiniLM
   embedding, length features, score), median and p95 over a few hundred realistic
   prompts, beside the one-off encoder load. Target: median <= 20 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalgate.stats.ltt_simulate import simulate

ALPHA = 0.1


def ltt_section(trials: int) -> None:
    print(f"Learn-then-Test validity (alpha={ALPHA}, {trials} seeded trials per row)")
    print(
        f"{'n':>6} {'bound':>6} {'losses':>10} {'violation rate':>15} {'small share':>12} "
        f"{'oracle share':>13} {'none certified':>15}"
    )
    for n, bound in ((100, 0.05), (300, 0.05), (1000, 0.02), (3000, 0.02)):
        for binary in (True, False):
            s = simulate(n=n, bound=bound, alpha=ALPHA, binary=binary, trials=trials, seed=n)
            kind = "0/1" if binary else "continuous"
            print(
                f"{n:>6} {bound:>6} {kind:>10} {s.violation_rate:>15.3f} "
                f"{s.mean_small_share:>12.3f} {s.oracle_share:>13.3f} {s.none_certified:>15}"
            )


def _prompts(n: int, seed: int) -> list[list[dict[str, str]]]:
    """Chat requests of mixed shape: short questions, long tasks with context, code; each
    one distinct (the encoder caches embeddings by text: a repeat would time a lookup)."""
    import random

    rng = random.Random(seed)
    topics = ["invoices", "a rust borrow error", "rainfall data", "a refund", "SQL joins"]
    shapes = [
        lambda t, i: f"What is {i} times {i + 3}?",
        lambda t, i: (
            f"Summarise this note about {t} in one sentence: " + "word " * rng.randint(40, 400)
        ),
        lambda t, i: f"Fix the bug:\n```python\ndef f(x):\n    return x[{i}] +\n```\nExplain {t}.",
        lambda t, i: f"Write a detailed plan for {t}, with headings, risks and a table. " * 3,
    ]
    out = []
    for i in range(n):
        text = f"[{seed}-{i}] " + rng.choice(shapes)(rng.choice(topics), i)
        out.append(
            [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": text},
            ]
        )
    return out


def runtime_latency_section(requests: int) -> None:
    """Median and p95 of the routing decision at runtime, through an exported policy."""
    import statistics
    import tempfile

    import numpy as np

    from evalgate.embeddings import get_encoder
    from evalgate.policy.render import render_policy
    from evalgate.routing.features import default_recipe, feature_matrix, request_text
    from evalgate.routing.fit import fit_router
    from evalgate.runtime import Policy
    from evalgate.runtime.callpath import LearnedRouter, PreparedCall

    started = time.perf_counter()
    get_encoder()
    load_ms = (time.perf_counter() - started) * 1000
    recipe = default_recipe()
    fit_prompts = _prompts(200, seed=1)
    x = feature_matrix([request_text(m) for m in fit_prompts], recipe)
    q_small = np.array([float(len(request_text(m)) < 300) for m in fit_prompts])
    model = fit_router(
        x, q_small, np.ones(len(q_small)), max_loss=0.1, alpha=0.1, recipe=recipe, seed=0
    )
    route = {
        "model": "openai/m",
        "api_base": "http://127.0.0.1:9/v1",
        "api_key_env": None,
        "price": None,
        "timeout_s": 10.0,
    }
    entry = {
        **route,
        "fallbacks": [],
        "context_trim": None,
        "max_tokens": 64,
        "temperature": 0.0,
        "stream": False,
        "cache": {"mode": "off", "ttl_s": None},
        "evidence": {},
        "router": {"kind": "learned", "small": route, "large": route, "model": model.to_dict()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.py"
        path.write_text(render_policy({"version": 1, "features": {"qa": entry}}))
        with Policy.load(path, backend=f"sqlite:///{Path(tmp) / 'rt.sqlite3'}") as policy:
            feature = policy.feature("qa")
            router = LearnedRouter()
            times, cpu, bare, small = [], [], [], 0
            encoder = get_encoder()
            for messages in _prompts(requests, seed=2):
                call = PreparedCall(feature, "", "", messages, {}, False)
                started, cpu_started = time.perf_counter(), time.process_time()
                router.routes(call)
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
                small += call.route == "small"
            # Baseline in the same run: the bare embedding of fresh texts of the same shapes.
            for messages in _prompts(requests, seed=3):
                started = time.perf_counter()
                encoder.encode([request_text(messages)])
                bare.append((time.perf_counter() - started) * 1000)

    def p95(values: list[float]) -> float:
        return sorted(values)[min(len(values) - 1, int(0.95 * len(values)))]

    median = statistics.median(times)
    print(f"\nRuntime routing decision ({requests} requests, MiniLM embedding included)")
    print(f"  encoder load, once per process (before the first routed request): {load_ms:.0f} ms")
    print(
        f"  wall: median {median:.2f} ms, p95 {p95(times):.2f} ms (target: median <= 20 ms: "
        f"{'met' if median <= 20 else 'MISSED'}); {small / requests:.0%} routed small"
    )
    print(f"  CPU (all threads): median {statistics.median(cpu):.2f} ms, p95 {p95(cpu):.2f} ms")
    print(
        f"  baseline, bare embedding: median {statistics.median(bare):.2f} ms, p95 "
        f"{p95(bare):.2f} ms; routing/embedding median ratio "
        f"{median / statistics.median(bare):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="200 trials per row")
    parser.add_argument("--requests", type=int, default=300, help="runtime latency sample")
    args = parser.parse_args()
    trials = 200 if args.quick else args.trials
    started = time.perf_counter()
    ltt_section(trials)
    runtime_latency_section(args.requests)
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
