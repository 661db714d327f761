"""The engine's warm-up runs no test code and starts no server."""

from __future__ import annotations

import subprocess
import sys

# The warm-up runs with the first call that uses the litellm transport (this one fails:
# model "x" has no provider; the warm-up has run by then all the same).
SCRIPT = """
import sys, threading
from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.engine.engine import Engine
engine = Engine(lambda s: Endpoint("x", None, None), warm_up=True, processes=0)
spec = CallSpec(model="x", messages=({"role": "user", "content": "hi"},), max_tokens=4,
                temperature=0.0, stream=True, repeat=0, tier="t", transport="litellm")
engine.submit(spec).result(timeout=300)
assert engine.litellm_startup_s is not None, "the litellm transport was not started"
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
