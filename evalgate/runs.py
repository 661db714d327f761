"""Run identity and layout: ``reports/runs/<run-id>/results.jsonl`` and friends."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

LATEST = "LATEST"


@dataclass(frozen=True, slots=True)
class RunPaths:
    """Where one run keeps its files."""

    reports: Path
    run_id: str

    @property
    def run_dir(self) -> Path:
        return self.reports / "runs" / self.run_id

    @property
    def results(self) -> Path:
        return self.run_dir / "results.jsonl"

    @property
    def servers(self) -> Path:
        return self.run_dir / "servers.json"

    @property
    def report_json(self) -> Path:
        return self.reports / "evalgate.json"

    @property
    def summary_md(self) -> Path:
        return self.reports / "summary.md"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def latest_run_id(reports: Path) -> str | None:
    marker = reports / "runs" / LATEST
    try:
        run_id = marker.read_text().strip()
    except OSError:
        return None
    return run_id if run_id and (reports / "runs" / run_id).is_dir() else None


def mark_latest(paths: RunPaths) -> None:
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.reports / "runs" / f".{LATEST}.{os.getpid()}"
    tmp.write_text(paths.run_id + "\n")
    os.replace(tmp, paths.reports / "runs" / LATEST)
