"""policy.batch at scale: N requests (default 100,000) submitted, split under the provider's
caps, collected; prints wall time per phase, the batches made, the stored handle's size
and the peak memory of this process (the fake server runs in another process).

    python benchmarks/batch_scale.py [N]
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from evalgate.policy.render import render_policy
from evalgate.runtime import Policy
from evalgate.runtime import batch as batch_module
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(mode="process") as server:
        feature = {
            "model": f"openai/{make_model(key='scale')}",
            "api_base": server.base_url,
            "api_key_env": None,
            "price": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
            "timeout_s": 600.0,
            "fallbacks": [],
            "context_trim": None,
            "max_tokens": 8,
            "temperature": 0.0,
            "stream": False,
            "cache": {"mode": "off"},
            "evidence": {"suite_hash": "abc"},
        }
        path = Path(tmp) / "policy.py"
        path.write_text(render_policy({"version": 1, "features": {"digest": feature}}))
        policy = Policy.load(path, backend=f"sqlite:///{tmp}/state.sqlite3")
        requests = [
            {"messages": [{"role": "user", "content": f"ticket {i} " + "x" * 60}], "user": "u"}
            for i in range(n)
        ]
        started = time.perf_counter()
        handle = policy.batch("digest", requests)
        submitted = time.perf_counter()
        results = handle.wait(timeout_s=3600, poll_s=0.5, max_poll_s=2.0)
        collected = time.perf_counter()
        policy.ledger.flush()
        state = policy.backend.cache_get("evalgate-batch:" + handle.id) or b""
        ok = sum(r.error is None for r in results)
        print(f"requests: {n}, answered: {ok}, batches: {server.batch_submissions('scale')}")
        print(
            f"caps: {batch_module.MAX_REQUESTS_PER_BATCH} requests, "
            f"{batch_module.MAX_BATCH_BYTES} bytes per batch"
        )
        print(f"submit: {submitted - started:.1f} s, collect: {collected - submitted:.1f} s")
        print(f"stored handle: {len(state) / 1e6:.1f} MB")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {peak:.0f} MB")
        policy.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
