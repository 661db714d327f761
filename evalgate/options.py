"""Command-line option names (reused by the tests, so a rename breaks loudly)."""

ENABLE = "evalgate"
CONCURRENCY = "evalgate_concurrency"
NO_CACHE = "evalgate_no_cache"
CACHE_DIR = "evalgate_cache_dir"
RESUME = "evalgate_resume"
REPORTS = "evalgate_reports"
MAX_ATTEMPTS = "evalgate_max_attempts"
MARGIN = "evalgate_margin"
ALPHA = "evalgate_alpha"
GATE = "evalgate_gate"
ALLOW_INCONCLUSIVE = "evalgate_allow_inconclusive"
FORCE_GATE = "evalgate_force_gate"
BASELINE = "evalgate_baseline"
SEED = "evalgate_seed"
EXPORT = "evalgate_export"
SHARD = "evalgate_shard"

GATE_CHOICES = ("marked", "all", "none")
DEFAULT_CONCURRENCY = 8
DEFAULT_REPORTS = "reports"
DEFAULT_MAX_ATTEMPTS = 4
