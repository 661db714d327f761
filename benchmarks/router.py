"""The difficulty router's guarantee, reach and savings, measured on seeded simulations.

Run: .venv/bin/python benchmarks/router.py [--trials 1000] [--quick] [--latency-only]

1. Learn-then-Test alone (``evalgate.stats.ltt_simulate``): a score with known risk curve
   R(t) = c (1 - t)^2 / 2; per (n, bound, loss kind): the share of trials whose certified
   threshold has true risk above the bound (target <= alpha), and the traffic it sends to
   the small tier beside the oracle's (the threshold whose true risk is the bound).
2. The whole router pipeline (``evalgate.routing.simulate``): synthetic cases whose small-
   tier success is a known function of their features; per trial, the exported router
   (fit on half the cases, threshold certified on the other half) and its TRUE expected
   loss on 100,000 fresh cases: violation rate (target <= alpha), small share beside the
   oracle's; the cross-fitted routed config against a random router at the same small
   share (realised loss on the trial's cases, share of trials it wins), and the cost
   saved against always-large at the stated prices.
3. Latency of the routing features for ONE request (the runtime's MiniLM encoder:
   ONNX Runtime when installed, else numpy; the numpy encoder alone beside it; embedding
   cache cleared, 200 distinct short requests): ``feature_matrix`` and the whole routing
   decision (features + score + cut) beside the encoder alone, measured in the same run.
   The target for the decision is a median <= 20 ms.
4. Runtime routing latency (``runtime_latency_section``): what a learned router in an
   exported policy adds to a request (``LearnedRouter.routes`` on the prepared call:
   request text, MiniLM embedding, length features, score), wall and CPU median and p95
   over a few hundred distinct prompts of mixed shape and length: the default recipe
   (embedding of at most 48 word pieces: the request's start and end) beside the same
   router reading up to MiniLM's own limit (the recipe before the cap), interleaved in
   the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalgate.stats.ltt_simulate import simulate

ALPHA = 0.1
PRICE_SMALL = 0.15  # USD per million tokens (stated, e.g. a mini tier), same tokens per call
PRICE_LARGE = 2.50


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


def pipeline_section(trials: int) -> None:
    from evalgate.routing.simulate import simulate as simulate_router

    saving = 1.0 - PRICE_SMALL / PRICE_LARGE
    print(
        f"Router pipeline, known truth ({trials} seeded trials per row; prices "
        f"small ${PRICE_SMALL}/M, large ${PRICE_LARGE}/M tokens)"
    )
    print(
        f"{'n':>5} {'max_loss':>8} {'alpha':>5} {'large acc':>9} {'violations':>10} "
        f"{'true loss':>9} {'small share':>11} {'oracle':>6} {'none cert':>9} | "
        f"{'xfit share':>10} {'xfit loss':>9} {'random loss':>11} {'wins':>5} {'cost saved':>10}"
    )
    rows = (
        (400, 0.05, 0.1, 1.0),
        (400, 0.05, 0.1, 0.9),
        (1000, 0.02, 0.05, 1.0),
        (150, 0.05, 0.1, 1.0),
    )
    for n, max_loss, alpha, large in rows:
        s = simulate_router(
            n=n, max_loss=max_loss, alpha=alpha, large_accuracy=large, trials=trials, seed=n
        )
        print(
            f"{n:>5} {max_loss:>8} {alpha:>5} {large:>9} {s.violation_rate:>10.3f} "
            f"{s.mean_true_loss:>9.4f} {s.mean_small_share:>11.3f} {s.oracle_share:>6.3f} "
            f"{s.none_certified:>9} | {s.mean_crossfit_share:>10.3f} "
            f"{s.mean_crossfit_loss:>9.4f} {s.mean_random_loss:>11.4f} "
            f"{s.wins_over_random:>5.2f} {s.mean_crossfit_share * saving:>10.1%}"
        )


def _median_p90(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times), times[int(0.9 * len(times))]


def latency_section(calls: int = 200) -> None:
    import numpy as np

    from evalgate.embeddings import fastest_encoder, get_encoder
    from evalgate.routing.features import default_recipe, feature_matrix, request_text
    from evalgate.routing.model import RouterModel

    encoder = fastest_encoder()  # what the runtime router uses
    numpy_encoder = get_encoder("numpy")
    recipe = default_recipe()
    rng = np.random.default_rng(0)
    model = RouterModel(
        recipe,
        (0.0,) * recipe.width,
        (1.0,) * recipe.width,
        tuple(rng.standard_normal(recipe.width) * 0.1),
        0.0,
        0.5,
    )
    texts = [
        request_text(
            [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"What is {i} plus {7 * i}? Show the sum {i}."},
            ]
        )
        for i in range(calls)
    ]
    tokens = statistics.median(len(ids) for ids in encoder.token_ids(texts))
    feature_matrix(["warm up"], recipe, encoder)

    numpy_encoder.encode(["warm up"])
    variants = {
        "numpy encoder alone": lambda t: numpy_encoder.encode([t]),
        "encoder alone (baseline)": lambda t: encoder.encode([t]),
        "feature_matrix": lambda t: feature_matrix([t], recipe, encoder),
        "routing decision": lambda t: model.route_small(feature_matrix([t], recipe, encoder)),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    times["feature_matrix, cached text"] = []
    # Interleaved per request, so a change of machine load hits every variant alike.
    for text in texts:
        for name, call in variants.items():
            encoder.clear_cache()  # every request is new, as at runtime
            numpy_encoder.clear_cache()
            started = time.perf_counter()
            call(text)
            times[name].append((time.perf_counter() - started) * 1000.0)
        started = time.perf_counter()
        feature_matrix([text], recipe, encoder)  # the text is cached now
        times["feature_matrix, cached text"].append((time.perf_counter() - started) * 1000.0)
    results = {name: _median_p90(values) for name, values in times.items()}
    print(
        f"Routing latency, one request ({calls} distinct requests, {tokens:.0f} word pieces, "
        f"{type(encoder).__name__})"
    )
    print(f"{'':>28} {'median ms':>10} {'p90 ms':>8}")
    for name, (median, p90) in results.items():
        print(f"{name:>28} {median:>10.2f} {p90:>8.2f}")
    ratio = results["routing decision"][0] / results["encoder alone (baseline)"][0]
    print(f"routing decision / encoder alone: {ratio:.2f}; target: decision median <= 20 ms")


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


def _policy_entry(model: Any) -> dict[str, Any]:
    route = {
        "model": "openai/m",
        "api_base": "http://127.0.0.1:9/v1",
        "api_key_env": None,
        "price": None,
        "timeout_s": 10.0,
    }
    return {
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


def runtime_latency_section(requests: int) -> None:
    """Median and p95 of the routing decision at runtime, through an exported policy: the
    default recipe (embedding of at most 48 word pieces, start and end) beside the same
    router with no cap (MiniLM's own 256), interleaved request by request in the same run."""
    import dataclasses
    import tempfile

    import numpy as np

    from evalgate.embeddings import fastest_encoder
    from evalgate.policy.render import render_policy
    from evalgate.routing.features import default_recipe, feature_matrix, request_text
    from evalgate.routing.fit import fit_router
    from evalgate.runtime import Policy
    from evalgate.runtime.callpath import LearnedRouter, PreparedCall

    started = time.perf_counter()
    encoder = fastest_encoder()  # the encoder LearnedRouter uses (its cache is cleared)
    load_ms = (time.perf_counter() - started) * 1000
    capped = default_recipe()
    recipes = {
        f"cap {capped.max_word_pieces} pieces": capped,
        "no cap (before)": dataclasses.replace(capped, max_word_pieces=None),
    }
    fit_prompts = _prompts(200, seed=1)
    fit_texts = [request_text(m) for m in fit_prompts]
    q_small = np.array([float(len(t) < 300) for t in fit_texts])
    features = {}
    for i, recipe in enumerate(recipes.values()):
        x = feature_matrix(fit_texts, recipe)
        model = fit_router(
            x, q_small, np.ones(len(q_small)), max_loss=0.1, alpha=0.1, recipe=recipe, seed=0
        )
        features[f"qa{i}"] = _policy_entry(model)
    prompts = _prompts(requests, seed=2)
    pieces = statistics.median(
        len(ids) for ids in encoder.token_ids([request_text(m) for m in prompts])
    )
    times: dict[str, list[float]] = {name: [] for name in recipes}
    cpu: dict[str, list[float]] = {name: [] for name in recipes}
    small = dict.fromkeys(recipes, 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.py"
        path.write_text(render_policy({"version": 1, "features": features}))
        with Policy.load(path, backend=f"sqlite:///{Path(tmp) / 'rt.sqlite3'}") as policy:
            router = LearnedRouter()
            # Interleaved per request, so a change of machine load hits both alike; the
            # embedding cache is cleared before each call (every live request is new).
            for messages in prompts:
                for i, name in enumerate(recipes):
                    call = PreparedCall(policy.feature(f"qa{i}"), "", "", messages, {}, False)
                    encoder.clear_cache()
                    started, cpu_started = time.perf_counter(), time.process_time()
                    router.routes(call)
                    times[name].append((time.perf_counter() - started) * 1000)
                    cpu[name].append((time.process_time() - cpu_started) * 1000)
                    small[name] += call.route == "small"

    def p95(values: list[float]) -> float:
        return sorted(values)[min(len(values) - 1, int(0.95 * len(values)))]

    print(
        f"\nRuntime routing decision ({requests} mixed requests, median {pieces:.0f} word "
        "pieces, MiniLM embedding included)"
    )
    print(f"  encoder load, once per process: {load_ms:.0f} ms (0: an earlier section loaded it)")
    print(f"  {'recipe':>22} {'median ms':>10} {'p95 ms':>8} {'CPU median':>11} {'small':>6}")
    for name in recipes:
        print(
            f"  {name:>22} {statistics.median(times[name]):>10.2f} {p95(times[name]):>8.2f} "
            f"{statistics.median(cpu[name]):>11.2f} {small[name] / requests:>6.0%}"
        )
    first, before = (statistics.median(times[name]) for name in recipes)
    print(
        f"  capped/uncapped median ratio {first / before:.2f}; target: median <= 20 ms: "
        f"{'met' if first <= 20 else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument(
        "--pipeline-trials", type=int, default=0, help="router pipeline trials (300)"
    )
    parser.add_argument("--latency-only", action="store_true", help="only sections 3 and 4")
    parser.add_argument("--requests", type=int, default=300, help="section 4's sample")
    parser.add_argument("--quick", action="store_true", help="200 (pipeline: 50) trials per row")
    args = parser.parse_args()
    trials = 200 if args.quick else args.trials
    started = time.perf_counter()
    if not args.latency_only:
        ltt_section(trials)
        print()
        pipeline_section(args.pipeline_trials or (50 if args.quick else 300))
        print()
    latency_section()
    runtime_latency_section(args.requests)
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
