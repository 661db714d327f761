"""Where evalgate keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user's evalgate cache: $EVALGATE_CACHE_DIR, else $XDG_CACHE_HOME/evalgate."""
    explicit = os.environ.get("EVALGATE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalgate"
