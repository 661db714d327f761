"""The runtime policy's added time per call over a plain litellm call.

Run: ``.venv/bin/python benchmarks/runtime_overhead.py [--calls 400] [--redis URL]``

Against the project's OpenAI-protocol server at zero latency (in its own process), in
one run and interleaved call by call (so both sides see the same machine load):

- **plain**: ``litellm.completion`` with the same model, endpoint and parameters;
- **miss**: ``Policy.completion`` on a request never seen before (routing, the cap, key
  computation, a cache lookup that misses, the model call, storing the answer, one ledger
  record);
- **hit**: ``Policy.completion`` on a request already cached (lookup, rebuilding the
  litellm response, one ledger record; no model call);
- **own**: the miss's time outside its model call (``litellm.completion`` timed from
  inside the policy): the policy's own share, free of the noise of comparing two
  separate model calls.

Printed per backend (SQLite file, Redis at ``--redis``/``$REDIS_URL``): the median and p99
of each, the miss's added median and p99 (policy minus plain), and the hit's absolute
figures. Targets on the project's machine: added median <= 1 ms (SQLite), <= 2 ms (Redis);
exact-hit p99 <= 2 ms.

Then the per-user limits' own cost per call (``--limit-calls``, no model call): one
check-and-reserve plus one settle, as the policy runs them around each call, for a user
with all three limits (requests per minute, tokens and cost per day: three counters in
one atomic step each way). Targets: added median <= 1 ms (SQLite), <= 2 ms (Redis).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from evalgate.policy.render import render_policy
from evalgate.runtime import LimitOptions, LimitRules, Limits, Policy
from evalgate.runtime.ledger import UsageRecord
from evalgate.runtime.responses import litellm_module
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def policy_file(directory: Path, base_url: str, model: str) -> Path:
    entry = {
        "model": f"openai/{model}",
        "api_base": base_url,
        "api_key_env": None,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
        "timeout_s": 30.0,
        "fallbacks": [],
        "context_trim": None,
        "max_tokens": 16,
        "temperature": 0.0,
        "stream": False,
        "cache": {"mode": "exact", "ttl_s": 3600.0},
        "evidence": {},
    }
    path = directory / "policy.py"
    path.write_text(render_policy({"version": 1, "features": {"bench": entry}}))
    return path


def measure(
    backend: str, base_url: str, calls: int, prefix: str, pause_s: float
) -> dict[str, list[float]]:
    litellm = litellm_module()
    model = make_model(key=uuid.uuid4().hex[:8], reply="ok fine")
    with tempfile.TemporaryDirectory() as tmp:
        url = backend if backend != "sqlite" else f"sqlite:///{Path(tmp) / 'state.sqlite3'}"
        policy = Policy.load(policy_file(Path(tmp), base_url, model), backend=url, prefix=prefix)
        plain_kwargs = {
            "model": f"openai/{model}",
            "api_base": base_url,
            "api_key": "no-key",
            "max_tokens": 16,
            "temperature": 0.0,
            "timeout": 30.0,
            "max_retries": 0,
            "input_cost_per_token": 1e-6,
            "output_cost_per_token": 4e-6,
        }
        hot = [{"role": "user", "content": "the cached question"}]
        policy.completion(feature="bench", messages=hot)  # warm: imports, pools, the entry
        for i in range(20):
            litellm.completion(messages=[{"role": "user", "content": f"warm {i}"}], **plain_kwargs)
        times: dict[str, list[float]] = {"plain": [], "miss": [], "hit": [], "own": []}
        run = uuid.uuid4().hex[:6]
        real = litellm.completion
        inside: list[float] = []

        def timed(*args: object, **kwargs: object) -> object:
            # Times the model call inside the policy, so its own share can be read
            # without the noise of two separate model calls.
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                inside.append((time.perf_counter() - start) * 1000)

        for i in range(calls):
            messages = [{"role": "user", "content": f"question {run} {i}"}]
            # litellm finishes each call's logging on a background thread; a pause after
            # every call lets it end, so that work is not billed to whatever runs next.
            t0 = time.perf_counter()
            real(messages=messages, **plain_kwargs)
            times["plain"].append((time.perf_counter() - t0) * 1000)
            time.sleep(pause_s)
            litellm.completion = timed
            t0 = time.perf_counter()
            try:
                policy.completion(feature="bench", user="u", tenant="t", messages=messages)
            finally:
                litellm.completion = real
            times["miss"].append((time.perf_counter() - t0) * 1000)
            times["own"].append(times["miss"][-1] - inside.pop())
            time.sleep(pause_s)
            t0 = time.perf_counter()
            policy.completion(feature="bench", user="u", tenant="t", messages=hot)
            times["hit"].append((time.perf_counter() - t0) * 1000)
            time.sleep(pause_s)
        if backend != "sqlite":
            policy.backend.delete_all()  # type: ignore[attr-defined]
        policy.close()
    return times


def measure_limits(backend: str, calls: int, prefix: str) -> dict[str, list[float]]:
    """Milliseconds of check-and-reserve, settle, and both, per call (no model call)."""
    generous = Limits(requests_per_minute=10**9, tokens_per_day=10**12, cost_per_day_usd=1e9)
    options = LimitOptions(rules=LimitRules(users={"*": generous}))
    with tempfile.TemporaryDirectory() as tmp:
        url = backend if backend != "sqlite" else f"sqlite:///{Path(tmp) / 'state.sqlite3'}"
        model = make_model(key="limits-bench")
        path = policy_file(Path(tmp), "http://127.0.0.1:9/v1", model)
        policy = Policy.load(path, backend=url, prefix=prefix, limits=options)
        guard = policy.limiter
        assert guard is not None
        messages = [{"role": "user", "content": "What is the refund window for orders?"}]
        times: dict[str, list[float]] = {"reserve": [], "settle": [], "both": []}
        for i in range(calls + 50):  # the first 50 warm connections and statements
            call = policy._prepare("bench", messages, f"user{i % 10}", "", None, None, {})
            record = UsageRecord(
                ts=call.ts, feature="bench", tokens_in=9, tokens_out=16, cost_usd=7.3e-5
            )
            t0 = time.perf_counter()
            admission = guard.admit(call)
            t1 = time.perf_counter()
            admission.settle(record)
            t2 = time.perf_counter()
            if i >= 50:
                times["reserve"].append((t1 - t0) * 1000)
                times["settle"].append((t2 - t1) * 1000)
                times["both"].append((t2 - t0) * 1000)
        if backend != "sqlite":
            guard.store.delete_all()  # type: ignore[attr-defined]
            policy.backend.delete_all()  # type: ignore[attr-defined]
        policy.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument(
        "--limit-calls", type=int, default=2000, help="calls for the limits' cost (default 2000)"
    )
    parser.add_argument(
        "--pause-ms", type=float, default=10.0, help="pause between iterations (default 10)"
    )
    args = parser.parse_args()
    backends = ["sqlite"] + ([] if args.skip_redis else [args.redis])
    with FakeOpenAIServer(mode="process") as server:
        print(f"{args.calls} calls per side, zero-latency server, interleaved call by call")
        print(
            f"{'backend':<8} {'plain p50':>9} {'p99':>7} {'miss p50':>9} {'p99':>7} "
            f"{'added p50':>9} {'added p99':>9} {'own p50':>8} {'own p99':>8} "
            f"{'hit p50':>8} {'hit p99':>8}"
        )
        for backend in backends:
            try:
                prefix = f"evalgate-bench-{os.getpid()}:"
                t = measure(backend, server.base_url, args.calls, prefix, args.pause_ms / 1000)
            except Exception as exc:  # e.g. no Redis here: say so, keep the other figures
                print(f"{backend}: not measured: {type(exc).__name__}: {exc}")
                continue
            name = "sqlite" if backend == "sqlite" else "redis"
            p = {k: (quantile(v, 0.5), quantile(v, 0.99)) for k, v in t.items()}
            print(
                f"{name:<8} {p['plain'][0]:>9.2f} {p['plain'][1]:>7.2f} {p['miss'][0]:>9.2f} "
                f"{p['miss'][1]:>7.2f} {p['miss'][0] - p['plain'][0]:>9.2f} "
                f"{p['miss'][1] - p['plain'][1]:>9.2f} {p['own'][0]:>8.2f} {p['own'][1]:>8.2f} "
                f"{p['hit'][0]:>8.2f} {p['hit'][1]:>8.2f}"
            )
        print(
            "ms. added = policy miss - plain call (two model calls: noisy on a busy machine); "
            "own = the miss's time outside its model call.\n"
            "targets: added p50 <= 1 ms (sqlite), <= 2 ms (redis); hit p99 <= 2 ms"
        )
    print(f"\nper-user limits: check-and-reserve + settle, {args.limit_calls} calls, 3 limits")
    print(
        f"{'backend':<8} {'reserve p50':>11} {'p99':>7} {'settle p50':>10} {'p99':>7} "
        f"{'both p50':>9} {'p99':>7}"
    )
    for backend in backends:
        try:
            prefix = f"evalgate-bench-{os.getpid()}:"
            t = measure_limits(backend, args.limit_calls, prefix)
        except Exception as exc:
            print(f"{backend}: not measured: {type(exc).__name__}: {exc}")
            continue
        name = "sqlite" if backend == "sqlite" else "redis"
        p = {k: (quantile(v, 0.5), quantile(v, 0.99)) for k, v in t.items()}
        print(
            f"{name:<8} {p['reserve'][0]:>11.3f} {p['reserve'][1]:>7.3f} {p['settle'][0]:>10.3f} "
            f"{p['settle'][1]:>7.3f} {p['both'][0]:>9.3f} {p['both'][1]:>7.3f}"
        )
    print("ms. targets: both p50 <= 1 ms (sqlite), <= 2 ms (redis)")


if __name__ == "__main__":
    main()
