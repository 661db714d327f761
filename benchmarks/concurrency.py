"""Concurrency: streamed calls to a local server, plain litellm versus evalgate's engine.

Run: ``.venv/bin/python benchmarks/concurrency.py [--calls 1000] [--concurrency 50]
[--latency-ms 200] [--repeat 1] [--transport auto|native|litellm] [--processes N]
[--no-price] [--only SIDE]``

The fault-injecting OpenAI-protocol server (``evalgate.testing.fake_openai``) runs in its
own process, so its CPU is not counted; every call waits ``--latency-ms`` before the
server streams a short reply word by word, with usage in the final chunk. The limit is
``calls x latency / concurrency`` (1000 x 0.2 s / 50 = 4 s): what the calls would take
if the client cost nothing. For each side the benchmark prints the wall time, its ratio
to that limit, the client's CPU per call and calls per second, and checks that every
call succeeded with the right text, tokens and finish reason:

* ``litellm``: ``litellm.acompletion(stream=True, stream_options={"include_usage":
  True})`` under an ``asyncio.Semaphore(concurrency)`` on a stock ``asyncio.run`` loop,
  consuming the stream the way evalgate does; CPU is this process's.
* ``evalgate``: the same calls as ``CallSpec`` s through :class:`Engine` (``submit`` from
  the main thread, results as futures), with its defaults: the tier's transport is
  ``auto``, so these OpenAI-protocol calls go through the native transport
  (:mod:`evalgate.engine.native`) in the engine's process. ``--transport litellm`` sends
  them through litellm instead, which at this concurrency runs attempts in worker
  processes (``--processes`` overrides; 0 keeps them in-process). CPU is this process's
  plus the workers' (``Engine.worker_cpu_seconds``).

Both sides first run one untimed wave of ``concurrency`` calls (imports, clients,
connection pools). The engine's tier has a price (``--no-price`` drops it), as a suite
for a model outside litellm's price map would; litellm then prices with it instead of
searching its map.
With ``--repeat N`` the two sides alternate N times and the medians are printed too.
Last, for each side, the floor its client CPU sets: CPU seconds / cores, the wall time of
a perfect spread over every core (the server's CPU left out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from evalgate.engine.calls import CallSpec, Endpoint, litellm_module
from evalgate.engine.engine import Engine
from evalgate.suite.model import Price
from evalgate.testing.fake_openai import FakeOpenAIServer, make_model

REPLY = "The answer is forty-two, as computed by the deep thought machine."
WORDS = len(REPLY.split())
PRICE = Price(input_per_mtok=1.0, output_per_mtok=2.0)


@dataclass
class Figures:
    side: str
    wall_s: float
    cpu_s: float
    calls: int
    ok: int
    limit_s: float
    worker_cpu_s: float = 0.0  # the part of cpu_s spent in worker processes

    @property
    def ratio(self) -> float:
        return self.wall_s / self.limit_s

    def row(self) -> str:
        return (
            f"{self.side:<16} {self.wall_s:8.2f} {self.ratio:7.2f} "
            f"{self.cpu_s * 1000 / self.calls:10.2f} {self.calls / self.wall_s:9.1f} "
            f"{self.ok:>6}/{self.calls}"
            + (
                f"   (workers {self.worker_cpu_s * 1000 / self.calls:.2f})"
                if self.worker_cpu_s
                else ""
            )
        )


HEADER = f"{'':<16} {'wall s':>8} {'ratio':>7} {'CPU ms/call':>10} {'calls/s':>9} {'ok':>11}"


def model_string(latency_ms: int) -> str:
    return make_model(reply=REPLY, latency_ms=latency_ms)


def correct(output: str, output_tokens: int | None, finish: str | None) -> bool:
    return output == REPLY and output_tokens == WORDS and finish == "stop"


# --------------------------------------------------------------------------- plain litellm


async def _plain_batch(base_url: str, model: str, first: int, n: int, concurrency: int) -> int:
    litellm = litellm_module()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with semaphore:
            response = await litellm.acompletion(
                model=f"openai/{model}",
                api_base=base_url,
                api_key="bench-key",
                messages=[{"role": "user", "content": f"question {i}"}],
                max_tokens=64,
                temperature=0.0,
                timeout=60,
                max_retries=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts: list[str] = []
            finish = usage = None
            async for chunk in response:
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
            tokens = getattr(usage, "completion_tokens", None)
            return correct("".join(parts), tokens, finish)

    results = await asyncio.gather(*(one(first + i) for i in range(n)), return_exceptions=True)
    return sum(r is True for r in results)


def run_plain(base_url: str, args: argparse.Namespace, limit_s: float, run: int) -> Figures:
    model = model_string(args.latency_ms)

    async def main() -> tuple[float, float, int]:
        await _plain_batch(base_url, model, -args.concurrency, args.concurrency, args.concurrency)
        cpu0, t0 = time.process_time(), time.perf_counter()
        ok = await _plain_batch(base_url, model, run * args.calls, args.calls, args.concurrency)
        return time.perf_counter() - t0, time.process_time() - cpu0, ok

    wall, cpu, ok = asyncio.run(main())
    return Figures("litellm", wall, cpu, args.calls, ok, limit_s)


# --------------------------------------------------------------------------- evalgate


def make_engine(base_url: str, args: argparse.Namespace) -> Engine:
    def resolve(spec: CallSpec) -> Endpoint:
        return Endpoint(f"openai/{spec.model}", base_url, "bench-key")

    return Engine(resolve, concurrency=args.concurrency, processes=args.processes)


def _specs(args: argparse.Namespace, first: int, n: int) -> list[CallSpec]:
    model = model_string(args.latency_ms)
    return [
        CallSpec(
            model=model,
            messages=({"role": "user", "content": f"question {first + i}"},),
            max_tokens=64,
            temperature=0.0,
            stream=True,
            repeat=0,
            tier="bench",
            price=None if args.no_price else PRICE,
            timeout_s=60.0,
            transport=args.transport,
        )
        for i in range(n)
    ]


def _engine_batch(engine: Engine, specs: list[CallSpec]) -> int:
    futures = [engine.submit(spec) for spec in specs]
    results = [f.result() for f in futures]
    return sum(
        r.error is None and correct(r.output, r.output_tokens, r.finish_reason) for r in results
    )


def run_engine(engine: Engine, args: argparse.Namespace, limit_s: float, run: int) -> Figures:
    _engine_batch(engine, _specs(args, -args.concurrency, args.concurrency))
    specs = _specs(args, run * args.calls, args.calls)
    workers0 = engine.worker_cpu_seconds()
    cpu0, t0 = time.process_time(), time.perf_counter()
    ok = _engine_batch(engine, specs)
    wall = time.perf_counter() - t0
    parent_cpu = time.process_time() - cpu0
    worker_cpu = engine.worker_cpu_seconds() - workers0
    via = "litellm" if args.transport == "litellm" else "native"
    if via == "litellm" and engine.processes:
        via += f", {engine.processes}p"
    side = f"evalgate ({via})"
    return Figures(side, wall, parent_cpu + worker_cpu, args.calls, ok, limit_s, worker_cpu)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="alternate the sides N times")
    parser.add_argument(
        "--processes", type=int, default=None, help="engine worker processes (default: auto)"
    )
    parser.add_argument(
        "--transport",
        choices=("auto", "native", "litellm"),
        default="auto",
        help="the engine tier's transport (default: auto, i.e. native here)",
    )
    parser.add_argument("--no-price", action="store_true", help="no price on the engine's tier")
    parser.add_argument(
        "--only", choices=("litellm", "evalgate"), default=None, help="run one side only"
    )
    args = parser.parse_args(argv)
    limit_s = args.calls * args.latency_ms / 1000 / args.concurrency

    print(
        f"{args.calls} streamed calls, {args.latency_ms} ms latency, concurrency "
        f"{args.concurrency}: limit {limit_s:.2f} s; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rows: dict[str, list[Figures]] = {}
    with FakeOpenAIServer(mode="process") as server:
        started = time.perf_counter()
        engine = make_engine(server.base_url, args)
        print(
            f"engine ready in {time.perf_counter() - started:.1f} s "
            f"({engine.processes} worker processes)"
        )
        print(HEADER)
        try:
            for run in range(args.repeat):
                for side in ("litellm", "evalgate"):
                    if args.only not in (None, side):
                        continue
                    if side == "litellm":
                        figures = run_plain(server.base_url, args, limit_s, 2 * run)
                    else:
                        figures = run_engine(engine, args, limit_s, 2 * run + 1)
                    rows.setdefault(figures.side, []).append(figures)
                    print(figures.row(), flush=True)
        finally:
            engine.close()
        stats = server.stats()
    if args.repeat > 1:
        print(f"median of {args.repeat}:")
        for side, runs in rows.items():
            median = Figures(
                side,
                statistics.median(f.wall_s for f in runs),
                statistics.median(f.cpu_s for f in runs),
                args.calls,
                min(f.ok for f in runs),
                limit_s,
                statistics.median(f.worker_cpu_s for f in runs),
            )
            print(median.row())
    # What no scheduling can beat: each side's client CPU spread perfectly over every core.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for side, runs in rows.items():
        floor_s = statistics.median(f.cpu_s for f in runs) / (cpus or 1)
        print(
            f"{side}: its CPU alone, spread over {cpus} cores, needs {floor_s:.2f} s "
            f"(ratio {floor_s / limit_s:.2f}) at best"
        )
    served = stats["requests_total"]
    print(
        f"server: {served} requests, {stats['cpu_total_s'] * 1000 / max(served, 1):.2f} ms "
        f"CPU each (not counted); load average now {os.getloadavg()[0]:.2f}"
    )
    failed = sum(f.calls - f.ok for runs in rows.values() for f in runs)
    if failed:
        print(f"FAILED: {failed} calls did not return the expected reply", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
