"""The difficulty router's guarantee, reach and savings, measured on seeded simulations.

Run: .venv/bin/python benchmarks/router.py [--trials 1000] [--quick]

1. Learn-then-Test alone (``evalgate.stats.ltt_simulate``): a score with known risk curve
   R(t) = c (1 - t)^2 / 2; per (n, bound, loss kind): the share of trials whose certified
   threshold has true risk above the bound (target <= alpha), and the traffic it sends to
   the small tier beside the oracle's (the threshold whose true risk is the bound).
2. The whole router pipeline (``evalgate.routing.simulate``): features with a known
   small-tier success probability; per trial, fit + certify (``fit_router``) and measure the
   exported router's true loss on 20,000 fresh cases (violation rate, target <= alpha), its
   small-tier share beside the oracle's, and the cross-fitted routed config's realised loss
   beside a random router's at the same share, with the cost saved at stated prices.
3. The runtime routing decision (``FeatureRouter.routes``: request text, MiniLM embedding,
   length features, logistic score): median and p95 added latency per request, one request
   at a time (target: median <= 20 ms).
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


def pipeline_section(trials: int) -> None:
    from evalgate.routing.simulate import simulate as simulate_router

    # Illustrative prices per case: large 10x small (as in suites/quick-answers.yaml).
    small_cost, large_cost = 1.0, 10.0
    print(f"\nRouter pipeline validity (fit + LTT certify + cross-fit; {trials} seeded trials)")
    print(
        f"{'n':>6} {'max_loss':>8} {'alpha':>6} {'violation':>10} {'none cert.':>10} "
        f"{'small share':>11} {'oracle':>7} {'routed loss':>12} {'random loss':>12} "
        f"{'cost saved':>10}"
    )
    for n, max_loss, alpha in ((200, 0.1, 0.1), (400, 0.05, 0.1), (1000, 0.05, 0.05)):
        s = simulate_router(n=n, max_loss=max_loss, alpha=alpha, trials=trials, seed=n)
        share = s.mean_crossfit_share
        saved = share * (large_cost - small_cost) / large_cost
        print(
            f"{n:>6} {max_loss:>8} {alpha:>6} {s.violation_rate:>10.3f} {s.none_certified:>10} "
            f"{s.mean_small_share:>11.3f} {s.oracle_share:>7.3f} {s.mean_crossfit_loss:>12.4f} "
            f"{s.mean_random_loss:>12.4f} {saved:>10.1%}"
        )


def latency_section(requests: int) -> None:
    import numpy as np

    from evalgate.routing.features import default_recipe, feature_matrix, request_text
    from evalgate.routing.fit import fit_router
    from evalgate.runtime.callpath import FeatureRouter, PreparedCall
    from evalgate.runtime.policy_file import CacheSpec, FeaturePolicy, LearnedRouting, Route

    def text(i: int) -> str:
        if i % 2:
            return f"What is {i} times 3?"
        return (
            f"Summarise the attached incident report {i} for an executive audience, listing "
            "the root cause, the customer impact and the three follow-up actions.\n"
            + "The service degraded when the cache tier was drained during a deploy. "
            * 4
        )

    recipe = default_recipe()
    texts = [request_text([{"role": "user", "content": text(i)}]) for i in range(200)]
    x = feature_matrix(texts, recipe)
    q_small = np.array([i % 2 for i in range(200)], dtype=float)
    model = fit_router(x, q_small, np.ones(200), max_loss=0.1, alpha=0.1, recipe=recipe)
    route = Route("openai/small", None, None, None, 10.0, "small")
    big = Route("openai/large", None, None, None, 10.0, "large")
    feature = FeaturePolicy(
        "qa",
        (big,),
        None,
        None,
        None,
        False,
        CacheSpec("off", None),
        {},
        router=LearnedRouting(route, big, model),
    )
    router = FeatureRouter()
    router.routes(PreparedCall(feature, "", "", [{"role": "user", "content": "warm"}], {}, False))
    times = []
    for i in range(requests):
        # Fresh texts: the encoder's cache must not serve them.
        call = PreparedCall(
            feature, "", "", [{"role": "user", "content": text(1000 + i)}], {}, False
        )
        started = time.perf_counter()
        router.routes(call)
        times.append((time.perf_counter() - started) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    print(f"\nRuntime routing decision ({requests} requests, one at a time, embedding included)")
    print(f"  median {p50:.1f} ms, p95 {p95:.1f} ms (target: median <= 20 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="200 trials per row")
    args = parser.parse_args()
    trials = 200 if args.quick else args.trials
    started = time.perf_counter()
    ltt_section(trials)
    pipeline_section(max(20, trials // 5))
    latency_section(300)
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
