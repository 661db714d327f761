"""Helpers shared by the plugin and integration tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def evalgate_command(*args: str) -> list[str]:
    """The command line of ``pytest --evalgate ARGS`` in a fresh interpreter."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--evalgate", *args]


def run_evalgate(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    cache: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Runs ``pytest --evalgate`` in a fresh process in ``cwd`` (with a private cache)."""
    cache_args = ["--evalgate-cache-dir", str(cwd / ".cache")] if cache else []
    return subprocess.run(
        evalgate_command(*cache_args, *args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env is not None else None,
    )
