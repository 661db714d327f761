"""Learn-then-Test: certify thresholds whose expected loss stays under a bound.

The one home of Learn-then-Test (Angelopoulos, Bates, Candès, Jordan, Lei, 2021) in
evalgate. Callers hold a set of candidate thresholds (a router's score cut-off, a semantic
cache's similarity cut-off) and, for each, a loss in [0, 1] per calibration sample. Each
candidate j is a null hypothesis H_j: "its expected loss exceeds ``bound``". A valid
p-value is computed per candidate, and **fixed-sequence testing** walks the candidates in
the order given (safest first), rejecting H_j while p_j <= alpha and stopping at the first
that is not rejected. Every rejected candidate is certified: with probability at least
1 - alpha (over the calibration draw), *all* certified candidates have expected loss at
most ``bound``, so the caller may use the last (most aggressive) one.

Fixed-sequence testing spends no alpha per candidate (no Bonferroni), so a fine grid of
candidates costs nothing, as long as the order is fixed before the calibration losses are
seen (it may depend on other data, e.g. on the cases a score model was fit on).

P-values (valid for any loss distribution on [0, 1] with i.i.d. samples):

- ``"binomial"``: losses all 0 or 1: P(Binomial(n, bound) <= k), exact.
- ``"hoeffding-bentkus"``: any losses in [0, 1]: min(Hoeffding, Bentkus) (Bates et al.,
  "Distribution-free, risk-controlling prediction sets", JACM 2021, eq. for p^HB).
- ``"clustered"``: 0/1 losses that come in *units* lost together (the samples a semantic
  cache serves from one stored answer: a bad answer is served to all of them), so the
  samples are not independent and the binomial p-value is too small. Units are
  independent, and each is wholly lost with a common probability q; under "mean loss per
  sample > bound", q > bound * n / (samples in units), and the exact p-value is
  P(sum_u w_u B_u <= losses) with B_u ~ Bernoulli(q) i.i.d. and w_u the unit sizes (a
  convolution). Losing a unit wholly is the extreme of dependence inside it (the most
  spread of all losses in [0, w_u] with that mean, in the convex order); partial losses
  spread less, and made the test more conservative, not less, in the semantic cache's
  seeded simulation (a heuristic, not a proof). The p-value returned is the
  larger of that and the binomial one (each valid under its own assumption, so the larger
  is valid under either: with singleton units or few samples in units it never falls
  below the per-sample test).

Pure: numpy and scipy only, no I/O, no random draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evalgate.stats._common import Record

METHODS = ("auto", "binomial", "hoeffding-bentkus", "clustered")


@dataclass(frozen=True, slots=True)
class LttResult(Record):
    """What fixed-sequence testing certified.

    Attributes:
        n: calibration samples per candidate.
        bound: the loss bound tested (H_j: expected loss of candidate j > bound).
        alpha: the family-wise error level.
        method: the p-value used ("binomial", "hoeffding-bentkus" or "clustered").
        risks: each candidate's mean calibration loss, in the order tested.
        p_values: each candidate's p-value, in the order tested.
        n_certified: candidates 0 .. n_certified - 1 are certified (0: none).
    """

    n: int
    bound: float
    alpha: float
    method: str
    risks: tuple[float, ...]
    p_values: tuple[float, ...]
    n_certified: int

    @property
    def chosen(self) -> int | None:
        """Index of the last (most aggressive) certified candidate, None when none is."""
        return self.n_certified - 1 if self.n_certified else None


def binomial_p_value(n_losses: int, n: int, bound: float) -> float:
    """P(Binomial(n, bound) <= n_losses): exact p-value of "mean loss > bound" for 0/1 losses.

    Under the null the true loss rate r exceeds ``bound``, and P(Bin(n, r) <= k) <= P(Bin(n,
    bound) <= k), so the p-value is valid (super-uniform).
    """
    return _binomial_p_values(np.array([n_losses]), n, bound)[0]


def hoeffding_bentkus_p_value(mean: float, n: int, bound: float) -> float:
    """min(Hoeffding, Bentkus) p-value of "mean loss > bound" for losses in [0, 1]."""
    return _hoeffding_bentkus_p_values(np.array([mean]), n, bound)[0]


def clustered_p_value(n_losses: int, unit_sizes: Sequence[int], n: int, bound: float) -> float:
    """P-value of "mean loss per sample > bound" when losses come in units lost together.

    Args:
        n_losses: losses observed (an integer count).
        unit_sizes: per unit, how many samples it holds (units are independent; samples
            outside every unit cannot incur a loss, but count in ``n``).
        n: all samples (the denominator of the mean loss).
        bound: the largest mean loss allowed, in (0, 1).

    See the module docstring: the larger of the exact "whole units lost with a common
    probability" p-value and the per-sample binomial p-value.
    """
    _check_level("bound", bound)
    sizes = np.asarray(unit_sizes, dtype=int)
    if sizes.size and sizes.min() < 1:
        raise ValueError("unit sizes must be positive integers")
    in_units = int(sizes.sum())
    if n_losses > in_units or in_units > n:
        raise ValueError(
            f"{n_losses} losses, {in_units} samples in units and {n} samples are inconsistent"
        )
    per_sample = _binomial_p_values(np.array([n_losses]), n, bound)[0]
    q = bound * n / in_units if in_units else math.inf
    if q >= 1:
        # Even if every unit were lost the mean would not exceed the bound in this draw:
        # only the per-sample test speaks.
        return per_sample
    from scipy.stats import binom

    # dist[s] = P(sum of the units' losses == s), for s <= n_losses only. Units of one size
    # w are added at once: k of c lost, k ~ Binomial(c, q), adds k * w.
    top = int(n_losses)
    dist = np.zeros(top + 1)
    dist[0] = 1.0
    for w, c in zip(*np.unique(sizes, return_counts=True), strict=True):
        ks = np.arange(min(int(c), top // int(w)) + 1)
        pmf = binom.pmf(ks, int(c), q)
        new = np.zeros_like(dist)
        for k, weight in zip(ks, pmf, strict=True):
            shift = int(k * w)
            new[shift:] += weight * dist[: top + 1 - shift]
        dist = new
    return float(max(per_sample, min(1.0, dist.sum())))


def _binomial_p_values(n_losses: np.ndarray, n: int, bound: float) -> list[float]:
    from scipy.stats import binom

    if n == 0:
        return [1.0] * len(n_losses)
    return [float(p) for p in np.minimum(1.0, binom.cdf(n_losses, n, bound))]


def _hoeffding_bentkus_p_values(means: np.ndarray, n: int, bound: float) -> list[float]:
    from scipy.stats import binom

    if n == 0:
        return [1.0] * len(means)
    means = np.clip(np.asarray(means, dtype=float), 0.0, 1.0)
    hoeffding = np.array([math.exp(-n * _kl_bernoulli(min(m, bound), bound)) for m in means])
    # A tiny tolerance keeps ceil(n * mean) from rounding an exact count of losses up.
    bentkus = math.e * binom.cdf(np.ceil(n * means - 1e-9), n, bound)
    return [float(p) for p in np.minimum(1.0, np.minimum(hoeffding, bentkus))]


def _clustered_p_values(matrix: np.ndarray, units: Any, bound: float) -> list[float]:
    labels = np.asarray(units)
    if labels.ndim == 1:
        labels = labels[None, :]
    if labels.shape != matrix.shape or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"units must be integer labels shaped like the losses {matrix.shape}; "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.min() < -1:
        raise ValueError("unit labels must be >= 0, or -1 for samples that cannot lose")
    if (matrix[labels == -1] != 0).any():
        raise ValueError("a sample labelled -1 (cannot lose) has a loss")
    n = matrix.shape[1]
    if n == 0:
        return [1.0] * matrix.shape[0]
    out = []
    for row, label in zip(matrix, labels, strict=True):
        sizes = np.unique(label[label >= 0], return_counts=True)[1]
        out.append(clustered_p_value(int(np.rint(row.sum())), sizes, n, bound))
    return out


def _kl_bernoulli(a: float, b: float) -> float:
    """KL(Bernoulli(a) || Bernoulli(b)); 0 log 0 = 0."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def fixed_sequence(p_values: Sequence[float], alpha: float) -> int:
    """How many leading hypotheses fixed-sequence testing rejects at level ``alpha``."""
    count = 0
    for p in p_values:
        if not p <= alpha:  # NaN stops the walk too
            break
        count += 1
    return count


def learn_then_test(
    losses: Any,
    *,
    bound: float,
    alpha: float,
    method: str = "auto",
    units: Any = None,
) -> LttResult:
    """Certify candidates whose expected loss is at most ``bound`` (w.p. >= 1 - alpha).

    Args:
        losses: shape (candidates, samples), each in [0, 1]; row j holds candidate j's loss
            on every calibration sample. Rows are tested in order: put the safest first.
        bound: the largest expected loss allowed, in (0, 1).
        alpha: the error level, in (0, 1).
        method: "binomial" (0/1 losses), "hoeffding-bentkus", "clustered" (0/1 losses in
            ``units``), or "auto" ("clustered" when ``units`` is given, else binomial when
            every loss is 0 or 1).
        units: for "clustered", same shape as ``losses``: per candidate, each sample's unit
            (samples with the same label >= 0 may be lost together; -1: the sample cannot
            incur a loss under that candidate). Labels may depend on anything but the
            losses (for a semantic cache: which stored answer served the sample).

    Raises:
        ValueError: a loss outside [0, 1] or not finite, a loss on a sample labelled -1,
            units of the wrong shape, or a parameter out of range.
    """
    _check_level("bound", bound)
    _check_level("alpha", alpha)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    matrix = np.asarray(losses, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2:
        raise ValueError(f"losses must be (candidates, samples); got shape {matrix.shape}")
    if matrix.size and not (np.isfinite(matrix).all() and matrix.min() >= 0 and matrix.max() <= 1):
        raise ValueError("losses must be finite numbers in [0, 1]")
    n = matrix.shape[1]
    binary = bool(np.isin(matrix, (0.0, 1.0)).all())
    if method == "auto":
        method = "clustered" if units is not None else "binomial" if binary else "hoeffding-bentkus"
    if method in ("binomial", "clustered") and not binary:
        raise ValueError(f"the {method} p-value needs losses that are all 0 or 1")
    if (method == "clustered") != (units is not None):
        raise ValueError("units are given exactly when the method is 'clustered'")
    risks = matrix.mean(axis=1) if n else np.zeros(matrix.shape[0])
    if method == "clustered":
        p_values = _clustered_p_values(matrix, units, bound)
    elif method == "binomial":
        p_values = _binomial_p_values(np.rint(matrix.sum(axis=1)), n, bound)
    else:
        p_values = _hoeffding_bentkus_p_values(risks, n, bound)
    return LttResult(
        n=n,
        bound=float(bound),
        alpha=float(alpha),
        method=method,
        risks=tuple(float(r) for r in risks),
        p_values=tuple(p_values),
        n_certified=fixed_sequence(p_values, alpha),
    )


def certified_thresholds(
    thresholds: Sequence[float], losses: Any, *, bound: float, alpha: float, method: str = "auto"
) -> tuple[tuple[float, ...], LttResult]:
    """The certified thresholds (a prefix of ``thresholds``, safest first) and the test."""
    matrix = np.asarray(losses, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != len(thresholds):
        raise ValueError(
            f"losses must have one row per threshold ({len(thresholds)}); got shape {matrix.shape}"
        )
    result = learn_then_test(matrix, bound=bound, alpha=alpha, method=method)
    return tuple(float(t) for t in thresholds[: result.n_certified]), result


def _check_level(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1) (got {value!r})")
