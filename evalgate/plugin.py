"""The pytest plugin entry point (``pytest11``): options, and nothing else until enabled.

pytest imports this module in every run of every project where evalgate is installed, so
it imports only pytest and the standard library. Everything heavy (litellm, pandas, scipy,
jinja2) is imported by the session plugin registered when ``--evalgate`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evalgate import options
from evalgate.nodeid import SUITE_SUFFIXES


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("evalgate", "evalgate: evaluation-gated LLM optimisation")
    group.addoption(
        "--evalgate",
        action="store_true",
        dest=options.ENABLE,
        help="collect and run evalgate suites (YAML files with a `suite:` key)",
    )
    group.addoption(
        "--evalgate-concurrency",
        type=int,
        default=options.DEFAULT_CONCURRENCY,
        dest=options.CONCURRENCY,
        metavar="N",
        help="model calls in flight per process (default: %(default)s)",
    )
    group.addoption(
        "--evalgate-no-cache",
        action="store_true",
        dest=options.NO_CACHE,
        help="bypass the response cache (configs with cache: true call the model)",
    )
    group.addoption(
        "--evalgate-cache-dir",
        default=None,
        dest=options.CACHE_DIR,
        metavar="DIR",
        help="response cache directory (default: $EVALGATE_CACHE_DIR or ~/.cache/evalgate)",
    )
    group.addoption(
        "--evalgate-resume",
        action="store_true",
        dest=options.RESUME,
        help="continue the last run: re-run only its missing or failed calls",
    )
    group.addoption(
        "--evalgate-reports",
        default=options.DEFAULT_REPORTS,
        dest=options.REPORTS,
        metavar="DIR",
        help="where reports and runs are written (default: %(default)s)",
    )
    group.addoption(
        "--evalgate-max-attempts",
        type=int,
        default=options.DEFAULT_MAX_ATTEMPTS,
        dest=options.MAX_ATTEMPTS,
        metavar="N",
        help="attempts per call, retries included (default: %(default)s)",
    )
    group.addoption(
        "--evalgate-gate",
        choices=options.GATE_CHOICES,
        default="marked",
        dest=options.GATE,
        help="which configs the quality gate checks: those "
        "marked `gate: true` (default), all candidates, or none",
    )
    group.addoption(
        "--evalgate-margin",
        type=float,
        default=None,
        dest=options.MARGIN,
        metavar="DELTA",
        help="non-inferiority margin for every suite (default: "
        "each suite's gate.margin, else 0.05)",
    )
    group.addoption(
        "--evalgate-alpha",
        type=float,
        default=None,
        dest=options.ALPHA,
        metavar="A",
        help="one-sided alpha for every suite (default: each suite's gate.alpha, else 0.05)",
    )
    group.addoption(
        "--evalgate-allow-inconclusive",
        action="store_true",
        dest=options.ALLOW_INCONCLUSIVE,
        help="an INCONCLUSIVE verdict does not block (FAIL still does)",
    )
    group.addoption(
        "--evalgate-force-gate",
        action="store_true",
        dest=options.FORCE_GATE,
        help="gate suites with fewer than 100 paired cases too",
    )
    group.addoption(
        "--evalgate-baseline",
        default=None,
        dest=options.BASELINE,
        metavar="JSON",
        help="a stored evalgate.json (e.g. of main) to compare this run against, case by case",
    )
    group.addoption(
        "--evalgate-seed",
        type=int,
        default=0,
        dest=options.SEED,
        help="seed of every statistical resampling (default: %(default)s)",
    )
    group.addoption(
        "--evalgate-export",
        default=None,
        dest=options.EXPORT,
        metavar="PATH",
        help="at the end of the run, write the recommended configs into this runtime "
        "policy module (as `evalgate export -o PATH` does)",
    )
    group.addoption(
        "--evalgate-shard",
        default=None,
        dest=options.SHARD,
        metavar="K/N",
        help="run shard K of N (split by case; combine with `evalgate merge`)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "evalgate: an evalgate eval item")
    if not config.getoption(options.ENABLE):
        return
    if config.getoption(options.CONCURRENCY) < 1:
        raise pytest.UsageError("--evalgate-concurrency must be at least 1")
    if config.getoption(options.MAX_ATTEMPTS) < 1:
        raise pytest.UsageError("--evalgate-max-attempts must be at least 1")
    margin, alpha = config.getoption(options.MARGIN), config.getoption(options.ALPHA)
    if margin is not None and not 0 < margin < 1:
        raise pytest.UsageError(f"--evalgate-margin must be in (0, 1), got {margin}")
    if alpha is not None and not 0 < alpha <= 0.5:
        raise pytest.UsageError(f"--evalgate-alpha must be in (0, 0.5], got {alpha}")
    shard = config.getoption(options.SHARD)
    if shard is not None:
        from evalgate.shard import ShardSpecError, parse_shard

        try:
            parse_shard(shard)
        except ShardSpecError as exc:
            raise pytest.UsageError(f"--evalgate-shard: {exc}") from None
    # litellm trips pydantic's deprecation warnings on every streamed chunk; they are
    # litellm's to fix and would bury the user's own warnings.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:litellm.*")
    from evalgate.session import SESSION_KEY, EvalgateSession

    session = EvalgateSession(config)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "evalgate-session")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Any:
    if file_path.suffix not in SUITE_SUFFIXES or not parent.config.getoption(options.ENABLE):
        return None
    from evalgate.collect import SuiteFile
    from evalgate.suite.loader import declares_suite

    if not declares_suite(file_path):
        return None
    return SuiteFile.from_parent(parent, path=file_path)
