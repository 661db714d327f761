"""The gate's false-PASS rate at the margin and its power, per shape of the differences.

Run: .venv/bin/python benchmarks/gate_validity.py [--trials 4000] [--power-trials 1000]
     [--quick]

For every cell of the grid (shape x cases x δ; shapes in ``evalgate.stats.simulate``):
the share of seeded simulated suites whose candidate PASSES when its true loss is exactly
the margin (Δ = -δ, target <= α + 0.01), beside the gate before the betting test (paired
t for continuous scores and case means, Tango for every binary table), and the power at
Δ = 0 of both. The price of validity is the power column difference. α = 0.05.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy import stats

from evalgate.stats.noninferiority import identical_noninferiority, tango_statistic
from evalgate.stats.simulate import (
    SHAPES,
    case_differences,
    gate_passes,
    t_passes,
)

ALPHA = 0.05
CASES = (30, 100, 300, 1000)
MARGINS = (0.02, 0.05, 0.10)


def before_passes(d: np.ndarray, margin: float, binary: bool) -> np.ndarray:
    """The gate at 111df32: exact bound if identical, Tango if binary, else paired t."""
    n = d.shape[1]
    identical = np.ptp(d, axis=1) <= 1e-12
    if binary:
        b, c = np.sum(d > 0, axis=1), np.sum(d < 0, axis=1)
        out = stats.norm.sf(tango_statistic(b, c, n, margin)) < ALPHA
    else:
        out = t_passes(d, margin=margin, alpha=ALPHA)
    exact = identical_noninferiority(0.0, n, margin, alpha=ALPHA)[0] < ALPHA
    return np.where(identical & (d[:, 0] == 0), exact, np.where(identical, False, out))


def cell(shape: str, n: int, margin: float, trials: int, power_trials: int, seed: int):
    rng = np.random.default_rng(seed)
    d, binary = case_differences(shape, n, -margin, margin, trials, rng)
    size = gate_passes(d, margin=margin, alpha=ALPHA, binary=binary, rng=rng).mean()
    size_before = before_passes(d, margin, binary).mean()
    d, binary = case_differences(shape, n, 0.0, margin, power_trials, rng)
    power = gate_passes(d, margin=margin, alpha=ALPHA, binary=binary, rng=rng).mean()
    power_before = before_passes(d, margin, binary).mean()
    return float(size), float(size_before), float(power), float(power_before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4000, help="suites per cell at Δ = -δ")
    parser.add_argument("--power-trials", type=int, default=1000, help="suites at Δ = 0")
    parser.add_argument("--quick", action="store_true", help="30 and 100 cases only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = CASES[:2] if args.quick else CASES
    bound = ALPHA + 0.01
    print(f"false-PASS at Δ = -δ (target <= {bound:.2f}) and power at Δ = 0; α = {ALPHA}")
    print(f"{args.trials} suites per cell at the margin, {args.power_trials} for power")
    print(
        f"{'shape':<22} {'n':>5} {'δ':>5} {'false-PASS':>10} {'±MC':>6} {'before':>7} "
        f"{'power':>6} {'before':>7}"
    )
    worst = 0.0
    over = []
    start = time.perf_counter()
    for k, shape in enumerate(SHAPES):
        for n in cases:
            for j, margin in enumerate(MARGINS):
                seed = args.seed * 1_000_003 + k * 10_000 + n * 10 + j
                size, size_b, power, power_b = cell(
                    shape, n, margin, args.trials, args.power_trials, seed
                )
                mc = math.sqrt(max(size, ALPHA) * (1 - max(size, ALPHA)) / args.trials)
                flag = " OVER" if size > bound + 2 * mc else ""
                if flag:
                    over.append((shape, n, margin))
                worst = max(worst, size)
                print(
                    f"{shape:<22} {n:>5} {margin:>5.2f} {size:>10.4f} {mc:>6.4f} "
                    f"{size_b:>7.4f} {power:>6.3f} {power_b:>7.3f}{flag}",
                    flush=True,
                )
    print(f"largest false-PASS rate: {worst:.4f} (bound {bound:.2f}); cells over: {over or 'none'}")
    print(f"seconds: {time.perf_counter() - start:.0f}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
