"""Time the full statistics of one large suite: 10,000 cases x 8 configs.

Run: .venv/bin/python benchmarks/stats.py [--cases N] [--repeats R]
Target: under 10 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalgate.stats import analyze_suite
from evalgate.stats.simulate import SyntheticConfig, synthetic_results

CONFIGS = [
    SyntheticConfig("baseline", cost_usd=0.010, latency_ms=900),
    SyntheticConfig("large-trim50", delta=-0.005, cost_usd=0.006, latency_ms=700),
    SyntheticConfig("large-max128", delta=-0.01, cost_usd=0.008, latency_ms=600),
    SyntheticConfig("large-cache", delta=0.0, cost_usd=0.010, latency_ms=900, cached=0.4),
    SyntheticConfig("mid", delta=-0.02, cost_usd=0.003, latency_ms=450),
    SyntheticConfig("mid-trim50", delta=-0.04, cost_usd=0.002, latency_ms=400),
    SyntheticConfig("small", delta=-0.08, cost_usd=0.0008, latency_ms=250, error_rate=0.02),
    SyntheticConfig("small-trim50", delta=-0.12, cost_usd=0.0005, latency_ms=200),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--groups", type=int, default=0, help="cluster cases into N groups")
    args = parser.parse_args()

    df = synthetic_results(
        args.cases, CONFIGS, repeats=args.repeats, n_groups=args.groups or None, seed=0
    )
    start = time.perf_counter()
    analysis = analyze_suite(df, baseline="baseline", seed=0)
    seconds = time.perf_counter() - start

    print(
        f"analyze_suite: {args.cases} cases x {len(CONFIGS)} configs x {args.repeats} "
        f"repeat(s) = {len(df)} rows, groups={args.groups or 'none'}"
    )
    for cid, comp in analysis.comparisons.items():
        p = analysis.pareto.probability[cid]
        print(
            f"  {cid:<14} {comp.verdict:<12} Δ={comp.delta.estimate:+.4f} "
            f"savings={comp.savings_pct.estimate if comp.savings_pct else float('nan'):6.1f}% "
            f"P(frontier)={p if p is not None else float('nan'):.3f}"
        )
    rec = analysis.recommendation
    print(f"  recommendation: {rec.config_id if rec else None}")
    print(f"seconds: {seconds:.2f}")


if __name__ == "__main__":
    main()
