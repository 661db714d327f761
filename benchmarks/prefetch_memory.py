"""Memory of a run against suite size: peak RSS of ``pytest --evalgate`` at two sizes.

Run: ``.venv/bin/python benchmarks/prefetch_memory.py [--items 2000 20000]
[--concurrency 8] [--tree PATH]``

Each size is a suite of ``items / 2`` cases x 2 configs calling the fault-injecting
OpenAI-protocol server (``evalgate.testing.fake_openai``, in its own process, no latency).
Each run is a fresh ``python -m pytest --evalgate`` process; its peak resident set size
comes from ``wait4`` (the kernel's ``ru_maxrss`` for that process and what it waited for).
The runner keeps a bounded window of calls submitted (``PREFETCH_PER_SLOT`` x concurrency),
so calls, tasks and results in flight do not grow with the suite. What does: pytest's own
per-item cost (collected items, reports), each item's plan, and the end-of-run report's
transient work. The report holds no result per item: it keeps the offset of each current
result's line in results.jsonl and reads a suite's results back for each use (one
suite's statistics columns at a time; evalgate.json's rows and the HTML page's one at a
time, ``report.stored``), and hands the statistics' freed bootstrap blocks back to the
system before the page is built (``report.heap``). ``--tree`` runs another checkout of
evalgate (for example main, before a change) for comparison.

Beside each evalgate run, the same number of trivial parametrized tests run under bare
pytest (evalgate installed, not enabled), once with ``--collect-only`` (the items alone)
and once run: pytest's own per-item cost (collected items, the three reports per item its
terminal reporter keeps), a floor no plugin can go under. The closing lines give each
one's growth per item between the smallest and the largest size, and evalgate's own
share: its growth per item above bare pytest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalgate.testing.fake_openai import FakeOpenAIServer, make_model  # noqa: E402


def write_suite(directory: Path, base_url: str, items: int) -> None:
    model = "openai/" + make_model(reply="ok fine", key=f"mem{items}")
    rows = "\n".join(
        f'{{"id": "q{i}", "question": "question number {i}"}}' for i in range(items // 2)
    )
    (directory / "cases.jsonl").write_text(rows + "\n")
    (directory / "mem.yaml").write_text(f"""\
suite: mem
tiers:
  t: {{model: "{model}", api_base: "{base_url}", price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
prompt:
  - {{role: user, content: "{{{{ question }}}}"}}
dataset: cases.jsonl
assert:
  - {{type: contains, value: "ok"}}
configs:
  - {{id: a, tier: t, max_tokens: 8}}
  - {{id: b, tier: t, max_tokens: 4}}
""")


def write_bare(directory: Path, items: int) -> None:
    """``items`` trivial parametrized tests: pytest's own cost per item, nothing else."""
    (directory / "test_bare.py").write_text(f"""\
import pytest


@pytest.mark.parametrize("i", range({items}))
def test_item(i):
    pass
""")


def run(directory: Path, concurrency: int, tree: Path) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit status) of one evalgate run."""
    cmd = ["--evalgate", "--evalgate-concurrency", str(concurrency)]
    cmd += ["--evalgate-cache-dir", str(directory / ".cache"), "mem.yaml"]
    return measure(directory, tree, cmd)


def run_bare(directory: Path, tree: Path, *extra: str) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit status) of the bare pytest run."""
    return measure(directory, tree, ["test_bare.py", *extra])


def measure(directory: Path, tree: Path, args: list[str]) -> tuple[float, float, int]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.monotonic() - started, proc.returncode


def per_item_kib(rows: list[tuple[int, float]]) -> float:
    """Growth of peak RSS per item (KiB) from the smallest size to the largest."""
    (small, low), (large, high) = min(rows), max(rows)
    return (high - low) * 1024 / (large - small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tree", type=Path, default=ROOT, help="evalgate checkout to run")
    args = parser.parse_args()
    print(f"evalgate from {args.tree}, concurrency {args.concurrency}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    heading = f"{'items':>8} {'run':>12} {'peak RSS MiB':>13} {'KiB/item':>9} {'wall s':>8}"
    print(f"{heading} {'exit':>5}")
    rows: dict[str, list[tuple[int, float]]] = {"evalgate": [], "bare": [], "bare-collect": []}
    with FakeOpenAIServer(mode="process") as server:
        for items in args.items:
            with tempfile.TemporaryDirectory() as tmp:
                directory = Path(tmp)
                write_suite(directory, server.base_url, items)
                write_bare(directory, items)
                for name in rows:
                    if name == "evalgate":
                        rss, wall, status = run(directory, args.concurrency, args.tree)
                    elif name == "bare":
                        rss, wall, status = run_bare(directory, args.tree)
                    else:
                        rss, wall, status = run_bare(directory, args.tree, "--collect-only")
                    rows[name].append((items, rss))
                    print(
                        f"{items:>8} {name:>12} {rss:>13.1f} {rss * 1024 / items:>9.1f} "
                        f"{wall:>8.1f} {status:>5}"
                    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if len(set(args.items)) < 2:
        return
    (small, low), (large, high) = min(rows["evalgate"]), max(rows["evalgate"])
    ours, floor = per_item_kib(rows["evalgate"]), per_item_kib(rows["bare"])
    collect = per_item_kib(rows["bare-collect"])
    print(f"evalgate peak RSS {large} items / {small} items: {high / low:.2f}x")
    print(f"growth of peak RSS per item, {small} -> {large} items (KiB/item):")
    print(f"  bare pytest, collect only:     {collect:6.2f}  (collected items)")
    print(f"  bare pytest, run:              {floor:6.2f}  (pytest's own floor)")
    print(f"  evalgate run, total:           {ours:6.2f}")
    print(f"  evalgate's own, above pytest:  {ours - floor:6.2f}")


if __name__ == "__main__":
    main()
