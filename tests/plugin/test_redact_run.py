"""A provider error quoting the request's headers leaves no key in any output of a run."""

from __future__ import annotations

import os
import uuid

from evalgate.testing.fake_openai import make_model
from tests.helpers import run_evalgate


def test_no_key_in_results_reports_or_terminal(tmp_path, fake_server) -> None:
    key = uuid.uuid4().hex[:8]
    secret = "Q" + uuid.uuid4().hex  # no known key shape: found because evalgate read it
    model = "openai/" + make_model(fail="401", echo_headers=1, key=key)
    (tmp_path / "s.yaml").write_text(f"""\
suite: leaky
tiers:
  t: {{model: "{model}", api_base: "{fake_server.base_url}", api_key_env: LEAKY_KEY}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "x"}}
configs:
  - {{id: a, tier: t}}
cases:
  - {{id: q1, vars: {{question: "one"}}}}
  - {{id: q2, vars: {{question: "two"}}}}
""")
    proc = run_evalgate(tmp_path, "-v", env={**os.environ, "LEAKY_KEY": secret})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert fake_server.request_count(key) == 2  # 401 is not retried
    assert "AuthenticationError" in proc.stdout and "[redacted]" in proc.stdout
    assert secret not in proc.stdout + proc.stderr
    written = [p for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"results.jsonl", "evalgate.json", "summary.md"}
    for path in written:
        assert secret not in path.read_text(errors="replace"), path
