"""The difficulty router's guarantee, reach and savings, measured on seeded simulations.

Run: .venv/bin/python benchmarks/router.py [--trials 1000] [--quick]

1. Learn-then-Test alone (``evalgate.stats.ltt_simulate``): a score with known risk curve
   R(t) = c (1 - t)^2 / 2; per (n, bound, loss kind): the share of trials whose certified
   threshold has true risk above the bound (target <= alpha), and the traffic it sends to
   the small tier beside the oracle's (the threshold whose true risk is the bound).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="200 trials per row")
    args = parser.parse_args()
    trials = 200 if args.quick else args.trials
    started = time.perf_counter()
    ltt_section(trials)
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
