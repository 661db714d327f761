"""Without Chromium the browser tests skip, and the reason says how to install it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_browser_tests_skip_with_the_install_command(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PATH": str(tmp_path)}  # no chromium, no chromedriver on PATH
    env.pop("EVALGATE_REQUIRE_BROWSER", None)  # as on a developer's machine, not CI
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rs",
            "-q",
            "tests/browser/test_report_page.py::test_sorting_orders_rows_by_the_clicked_column",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout
    assert "apt-get install -y chromium chromium-driver" in proc.stdout
