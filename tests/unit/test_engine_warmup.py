"""The engine's warm-up runs no test code and starts no server."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, threading
from evalgate.engine.calls import Endpoint
from evalgate.engine.engine import Engine
engine = Engine(lambda s: Endpoint("x", None, None), warm_up=True, processes=0)
print(sorted(m for m in sys.modules if m.startswith("evalgate.testing")))
print(sorted(t.name for t in threading.enumerate() if "fake" in t.name))
engine.close()
"""


def test_warm_up_imports_no_test_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "[]"], proc.stdout
