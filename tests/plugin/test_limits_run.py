"""A tier's rpm holds for the whole run, all xdist workers together (counted at the server)."""

from __future__ import annotations

import uuid

from evalgate.testing.fake_openai import make_model
from tests.helpers import run_evalgate


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The largest number of arrivals inside any window of ``seconds``."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + seconds) for i, start in enumerate(times))


def limited_suite(base_url: str, key: str, rpm: int, cases: int) -> str:
    model = "openai/" + make_model(key=key)
    rows = "\n".join(f"  - {{id: q{i}, vars: {{question: 'q {i}'}}}}" for i in range(cases))
    return f"""\
suite: limited
tiers:
  t: {{model: "{model}", api_base: "{base_url}", rpm: {rpm}}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "q"}}
configs:
  - {{id: a, tier: t, max_tokens: 8}}
  - {{id: b, tier: t, max_tokens: 4}}
cases:
{rows}
"""


def test_rpm_holds_across_xdist_workers(tmp_path, fake_server) -> None:
    key = uuid.uuid4().hex[:8]
    (tmp_path / "s.yaml").write_text(limited_suite(fake_server.base_url, key, rpm=240, cases=12))
    proc = run_evalgate(tmp_path, "-n", "2", "--evalgate-concurrency", "8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    times = fake_server.request_times(key)
    assert len(times) == 24
    # 240 rpm is 4 a second: a one-second window holds the bucket (4) and a second's
    # refill (4); one more of slack. Per-worker buckets would let through twice that,
    # and no limit all 24 at once.
    assert most_in_any_window(times, 1.0) <= 9
