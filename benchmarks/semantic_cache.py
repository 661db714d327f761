"""The certified semantic cache: guarantee on seeded simulations, and runtime lookup latency.

Run: .venv/bin/python benchmarks/semantic_cache.py [--trials 100] [--quick] [--entries 100000]

1. Guarantee (``evalgate.semcache.simulate``): streams drawn from one population of
   intents with near-miss siblings; per seed, the share of trials whose certified
   threshold's true wrong-hit rate exceeds the bound (target <= alpha), the mean certified
   threshold, its true risk and hit rate, and a fixed 0.80 threshold's true risk.
2. Runtime lookup (``evalgate.runtime.semantic_cache``): median and p95 latency of one
   lookup (MiniLM embedding of the user turn included) with N entries in one tenant, on
   the SQLite backend; the embedding alone is measured in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalgate.semcache.simulate import simulate

ALPHA = 0.1
BOUND = 0.05


def guarantee_section(trials: int, n: int) -> None:
    print(f"Certified threshold validity (max_wrong_hit={BOUND}, alpha={ALPHA}, n={n})")
    print(
        f"{'seed':>5} {'trials':>7} {'violation rate':>15} {'none':>5} {'threshold':>10} "
        f"{'true risk':>10} {'hit rate':>9} {'fixed 0.80 risk':>16} {'s':>6}"
    )
    for seed in range(3):
        start = time.perf_counter()
        s = simulate(n=n, max_wrong_hit=BOUND, alpha=ALPHA, trials=trials, seed=seed)
        print(
            f"{seed:>5} {s.trials:>7} {s.violation_rate:>15.3f} {s.none_certified:>5} "
            f"{s.mean_threshold:>10.3f} {s.mean_true_risk:>10.4f} {s.mean_hit_rate:>9.3f} "
            f"{s.fixed_080_risk:>16.4f} {time.perf_counter() - start:>6.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    trials = 20 if args.quick else args.trials
    guarantee_section(trials, args.n)


if __name__ == "__main__":
    main()
