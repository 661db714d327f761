"""Command-line option names (reused by the tests, so a rename breaks loudly)."""

ENABLE = "evalgate"
CONCURRENCY = "evalgate_concurrency"
NO_CACHE = "evalgate_no_cache"
CACHE_DIR = "evalgate_cache_dir"
RESUME = "evalgate_resume"
REPORTS = "evalgate_reports"
MAX_ATTEMPTS = "evalgate_max_attempts"

DEFAULT_CONCURRENCY = 8
DEFAULT_REPORTS = "reports"
DEFAULT_MAX_ATTEMPTS = 4
