"""Pure, seeded statistics: paired deltas, non-inferiority verdicts, quantiles, Pareto.

The plugin imports this package only when evalgate runs; everything here is a function
of its inputs (no I/O, no global random state).
"""

from evalgate.stats.analysis import (
    ERROR_EXCESS,
    ERROR_MAX,
    MIN_GATE_CASES,
    Comparison,
    ConfigStats,
    GateOutcome,
    GateReason,
    Pareto,
    Recommendation,
    SuiteAnalysis,
    analyze_suite,
    config_stats,
)
from evalgate.stats.noninferiority import (
    NonInferiorityTest,
    NonInferiorityVerdict,
    betting_noninferiority,
    holm,
    identical_noninferiority,
    min_detectable_margin,
    n_needed,
    noninferiority_test,
    paired_t_noninferiority,
    tango_interval,
    tango_noninferiority,
    tango_statistic,
)
from evalgate.stats.paired import (
    T_INTERVAL_MIN_UNITS,
    Interval,
    bootstrap_mean_ci,
    difference_test,
    mcnemar_exact,
    mean_ci,
    paired_delta_ci,
    ratio_ci,
    wilcoxon_p,
)
from evalgate.stats.pareto import frontier_probability, pareto_front
from evalgate.stats.quantiles import QuantileCI, min_n_for_quantile_ci, quantile_ci

__all__ = [
    "ERROR_EXCESS",
    "ERROR_MAX",
    "MIN_GATE_CASES",
    "T_INTERVAL_MIN_UNITS",
    "Comparison",
    "ConfigStats",
    "GateOutcome",
    "GateReason",
    "Interval",
    "NonInferiorityTest",
    "NonInferiorityVerdict",
    "Pareto",
    "QuantileCI",
    "Recommendation",
    "SuiteAnalysis",
    "analyze_suite",
    "betting_noninferiority",
    "bootstrap_mean_ci",
    "config_stats",
    "difference_test",
    "frontier_probability",
    "holm",
    "identical_noninferiority",
    "mcnemar_exact",
    "mean_ci",
    "min_detectable_margin",
    "min_n_for_quantile_ci",
    "n_needed",
    "noninferiority_test",
    "paired_delta_ci",
    "paired_t_noninferiority",
    "pareto_front",
    "quantile_ci",
    "ratio_ci",
    "tango_interval",
    "tango_noninferiority",
    "tango_statistic",
    "wilcoxon_p",
]
