"""The certified semantic cache: guarantee on seeded simulations, and runtime lookup latency.

Run: .venv/bin/python benchmarks/semantic_cache.py [--trials 300] [--fresh 400] [--quick]
     [--entries 100000] [--only-simulation | --skip-simulation]

1. Guarantee (``evalgate.semcache.simulate.compare``): streams drawn from one population
   of intents with near-miss siblings, in several settings; per setting, for the
   per-request binomial test (the earlier certifier) and the per-entry test (the certifier
   now) on the same streams: the share of trials whose certified threshold's true
   wrong-hit rate exceeds the bound (target <= alpha) with its Monte Carlo error, the
   mean certified threshold, its true risk and hit rate, how overdispersed the wrong hits
   are, and a fixed 0.80 threshold's true risk.
2. Near-misses (real MiniLM): similarity of a paraphrase and of near-misses (a number
   changed, a negation added, an entity swapped) to the original question; the share that
   fixed thresholds would serve, and the share the guard blocks.
3. Runtime lookup (``evalgate.runtime.semantic_cache``): median and p95 latency of one
   lookup (MiniLM embedding of the user turn included) with 1k/10k/100k entries in one
   tenant, on SQLite and on Redis (127.0.0.1:6379, a unique prefix, removed after), split
   into embedding, store I/O (the version check) and search, with the lookup's CPU time
   (what a loaded machine cannot inflate); "before" (numpy encoder, float32 scan) and
   "after" (ONNX Runtime encoder, int8 scan + exact re-rank) on the same store, same run.
   Run: ... --skip-simulation --skip-near-miss [--entries 100000] [--backends sqlite]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalgate.semcache.simulate import compare

# Settings of the seeded simulation: the default population, then one change each
# (near-misses drive the wrong hits; near-misses as popular as the intents they mimic;
# a steeper popularity, so bigger bursts; a tighter bound at a smaller alpha).
SETTINGS: tuple[tuple[str, dict[str, float | bool]], ...] = (
    ("default (p_pass 0.9)", {}),
    ("p_pass 0.97", {"p_pass": 0.97}),
    ("popular siblings", {"popular_siblings": True}),
    ("zipf 1.1", {"zipf": 1.1}),
    ("bound 0.02, alpha 0.05", {"max_wrong_hit": 0.02, "alpha": 0.05}),
)


def guarantee_section(trials: int, n: int, fresh: int) -> None:
    """Violation rate of the certified threshold, per setting, for both calibration tests.

    Both tests run on the same streams and the same truth: "requests" is the per-request
    binomial test (the earlier certifier), "entries" counts the hits one stored answer
    serves as one unit (the certifier now). Columns: the violation rate +- its Monte Carlo
    standard error over the trials, and in brackets the rates counting only certain
    violations (true risk - 2 se > bound) and all possible ones (+ 2 se), since the truth
    is itself estimated on the fresh streams; trials certifying nothing; the mean certified
    threshold, its true risk and hit rate; "disp.", Var(wrong hits per stream) over the
    binomial variance at the test's most chosen threshold (1: independent requests); and
    "reject unsafe", the share of trials whose p-value alone rejects the strictest grid
    threshold that is clearly unsafe (must be <= alpha for a valid p-value).
    """
    print(f"Certified threshold validity (n={n}; {trials} trials a setting; {fresh} streams)")
    print(
        f"{'test':>8} {'alpha':>5} {'violation rate [sure, possible]':>32} {'none':>4} "
        f"{'thresh':>6} {'true risk':>9} {'hit rate':>8} {'disp.':>5} {'reject unsafe':>13}"
    )
    for seed, (label, setting) in enumerate(SETTINGS):
        start = time.perf_counter()
        kwargs: dict = {"max_wrong_hit": 0.05, "alpha": 0.1, **setting}
        results = compare(
            units=("requests", "entries"), n=n, trials=trials, fresh=fresh, seed=seed, **kwargs
        )
        first = results[0]
        print(
            f"-- {label} (seed {seed}, bound {kwargs['max_wrong_hit']}): fixed 0.80 true risk "
            f"{first.fixed_080_risk:.4f}; clearly unsafe probe {first.probe_threshold:.2f} "
            f"(true risk {first.probe_risk:.4f}); {time.perf_counter() - start:.0f} s"
        )
        for s in results:
            rate = (
                f"{s.violation_rate:.3f} +- {s.violation_se:.3f} "
                f"[{s.violation_rate_sure:.3f}, {s.violation_rate_possible:.3f}]"
            )
            print(
                f"{s.units:>8} {kwargs['alpha']:>5} {rate:>32} {s.none_certified:>4} "
                f"{s.mean_threshold:>6.3f} {s.mean_true_risk:>9.4f} {s.mean_hit_rate:>8.3f} "
                f"{s.dispersion:>5.2f} {s.probe_rejection:>13.3f}"
            )


# (question, paraphrase, near-misses: number changed, negation added, entity swapped).
# Written for this benchmark (not tuned on): what embeddings confuse, per kind.
NEAR_MISS_SET = (
    (
        "How long is the refund window for orders?",
        "How many days do I have to return an order?",
        "How long is the refund window for orders over 500 dollars?",
        "Is there no refund window for orders?",
        "How long is the exchange window for orders?",
    ),
    (
        "What is 17 times 23?",
        "Compute 17 multiplied by 23.",
        "What is 17 times 24?",
        "What is not 17 times 23?",
        "What is 17 plus 23?",
    ),
    (
        "What is the capital of Australia?",
        "Which city is Australia's capital?",
        "What was the capital of Australia in 1900?",
        "Which city is not the capital of Australia?",
        "What is the capital of Austria?",
    ),
    (
        "Reset the password for user 'alice'",
        "Please reset alice's password",
        "Reset the password for user 'alice2'",
        "Do not reset the password for user 'alice'",
        "Reset the password for user 'bob'",
    ),
    (
        "Is it safe to take ibuprofen with coffee?",
        "Can I drink coffee while taking ibuprofen?",
        "Is it safe to take 800 mg of ibuprofen with coffee?",
        "Is it unsafe to not take ibuprofen with coffee?",
        "Is it safe to take ibuprofen with alcohol?",
    ),
    (
        "Convert 5 miles to kilometres",
        "How many km is 5 miles?",
        "Convert 50 miles to kilometres",
        "Don't convert 5 miles to kilometres",
        "Convert 5 miles to metres",
    ),
    (
        "When does the store open on Sunday?",
        "What time does the shop open Sundays?",
        "When does the store open on Sunday 24 December?",
        "Does the store not open on Sunday?",
        "When does the store close on Sunday?",
    ),
    (
        "Translate 'good morning' into French",
        "How do you say good morning in French?",
        "Translate 'good night' into French",
        "Translate 'good morning' into anything but French",
        "Translate 'good morning' into Spanish",
    ),
)


def near_miss_section() -> None:
    import numpy as np

    from evalgate.embeddings import get_encoder
    from evalgate.semcache.guard import may_share

    encoder = get_encoder()
    kinds = ("paraphrase", "number", "negation", "entity")
    sims: dict[str, list[float]] = {k: [] for k in kinds}
    blocked: dict[str, list[bool]] = {k: [] for k in kinds}
    for base, *others in NEAR_MISS_SET:
        vectors = np.asarray(encoder.encode([base, *others]), dtype=np.float64)
        for kind, text, vector in zip(kinds, others, vectors[1:], strict=True):
            sims[kind].append(float(vector @ vectors[0]))
            blocked[kind].append(not may_share(base, text))
    print(f"\nMiniLM similarity to the original question ({len(NEAR_MISS_SET)} sets)")
    print(
        f"{'kind':>11} {'median':>7} {'min':>6} {'max':>6}"
        + "".join(f"{'hit@' + str(t):>9}" for t in (0.8, 0.85, 0.9, 0.95))
        + f"{'guard blocks':>13}"
    )
    for kind in kinds:
        values = np.array(sims[kind])
        hits = "".join(f"{np.mean(values >= t):>9.2f}" for t in (0.8, 0.85, 0.9, 0.95))
        print(
            f"{kind:>11} {np.median(values):>7.3f} {values.min():>6.3f} {values.max():>6.3f}"
            f"{hits}{np.mean(blocked[kind]):>13.2f}"
        )


def _median_p95(values: list[float]) -> str:
    import statistics

    return f"{statistics.median(values):7.2f} {statistics.quantiles(values, n=20)[18]:7.2f}"


_QUESTIONS = tuple(
    f"How do I {('reset', 'change', 'recover', 'update', 'delete', 'verify')[i % 6]} the "
    f"{('password', 'email address', 'billing plan', 'phone number', 'username')[i % 5]} of "
    f"account number {i} on the portal?"
    for i in range(300)
)


def _stored_vectors(encoder: Any, entries: int) -> Any:
    """``entries`` unit rows near 300 real MiniLM question embeddings (cosine ~0.9 to
    their source): a scope full of near-duplicates, the hard case for the int8 bound
    (random rows would leave it nothing to re-rank)."""
    import numpy as np

    base = np.asarray(encoder.encode(list(_QUESTIONS)), dtype=np.float32)
    rng = np.random.default_rng(0)
    rows = base[rng.integers(0, len(base), entries)]
    rows += rng.standard_normal(rows.shape).astype(np.float32) * np.float32(0.48 / np.sqrt(384))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def _bulk_load(backend: Any, scope: str, rows: Any) -> None:
    from evalgate.runtime.cache import CachedAnswer
    from evalgate.runtime.semantic_cache import encode_entry

    answer = CachedAnswer(content="an answer of a few words", model="m")
    _bulk_raw(backend, scope, (encode_entry(v, "", answer, None) for v in rows))


def lookup_section(sizes: list[int], backends: list[str], lookups: int) -> None:
    """Lookup latency, embedding included, split into embedding, store I/O (the version
    check) and search; "before" (numpy encoder, float32 scan) and "after" (ONNX Runtime
    encoder, int8 scan + exact re-rank) on the same store in the same run."""
    import os
    import tempfile
    import uuid

    from evalgate.embeddings import get_encoder
    from evalgate.embeddings_onnx import onnx_available
    from evalgate.runtime.backends import open_backend
    from evalgate.runtime.semantic_index import int8_scan_available

    if not (onnx_available() and int8_scan_available()):
        print("\n(onnxruntime + onnx not installed: only the 'before' path can run)")
    paths = {"before": (get_encoder("numpy"), False)}
    if onnx_available():
        paths["after"] = (get_encoder("onnx"), True)
    store_rows = _stored_vectors(paths["before"][0], max(sizes))
    threshold = 0.9
    print(
        f"\nRuntime lookup latency, ms (median p95), {lookups} lookups of new texts per row; "
        f"threshold {threshold}; stored rows: near-duplicates of real MiniLM vectors; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'backend':>7} {'entries':>8} {'path':>6} {'| lookup wall':>16} {'lookup CPU':>16}"
        f" {'embedding':>16} {'store I/O':>16} {'search':>16} {'hits':>5}"
        f" {'1st lookup':>10} {'loaded in':>9}"
    )
    ratios = []
    for kind in backends:
        for entries in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                prefix = f"evalgate-bench-{uuid.uuid4().hex[:8]}:"
                url = (
                    f"sqlite:///{tmp}/s.sqlite3" if kind == "sqlite" else "redis://127.0.0.1:6379/0"
                )
                backend = open_backend(url, prefix=prefix)
                try:
                    medians = _measure(
                        backend, entries, store_rows, paths, threshold, lookups, kind
                    )
                    if "after" in medians:
                        ratios.append((kind, entries, medians["before"] / medians["after"]))
                finally:
                    if kind == "redis":
                        backend.delete_all()
                    backend.close()
    for kind, entries, ratio in ratios:
        print(f"  {kind} {entries}: before / after median lookup = {ratio:.2f}x")
    print(
        "  1st lookup: a process's first lookup in the scope (a miss while a large scope "
        "loads in the background); loaded in: until its entries are all searchable"
    )
    print(f"  load average at end {os.getloadavg()[0]:.1f} (2 cores, shared)")
    first_read_section(max(sizes), backends, store_rows)
    encoder_floor(paths)


def _encode_v1(vector: Any, answer: Any) -> bytes:
    """An entry of format 1 as the earlier code wrote it (a JSON head, then the vector)."""
    import json
    import struct

    import numpy as np

    head = json.dumps(
        {"v": 1, "sig": "", "exp": None, "a": answer.to_bytes().decode()}, separators=(",", ":")
    ).encode()
    return struct.pack("<I", len(head)) + head + np.asarray(vector, dtype="<f4").tobytes()


def _old_quantise(self: Any, vectors: Any, start: int) -> None:
    """ScopeIndex._quantise as it was before the first read was cut (whole-matrix steps)."""
    import numpy as np

    from evalgate.runtime.semantic_index import _Q_LEVELS, _V_LEVELS, BLOCK

    peak = np.abs(vectors).max(axis=1)
    scales = np.where(peak > 0, _V_LEVELS / np.maximum(peak, 1e-30), 1.0).astype(np.float32)
    rows = np.rint(vectors * scales[:, None]).astype(np.int8)
    end = start + len(vectors)
    self._inv_scales[start:end] = 1.0 / scales
    self._errors[start:end] = np.linalg.norm(vectors - rows / scales[:, None], axis=1)
    self._offsets[start:end] = (_Q_LEVELS + 1) * rows.sum(axis=1, dtype=np.int32)
    while len(self._blocks) * BLOCK < end:
        self._blocks.append(np.zeros((self.dim, BLOCK), dtype=np.int8))
    done = 0
    while done < len(rows):
        block, column = divmod(start + done, BLOCK)
        take = min(BLOCK - column, len(rows) - done)
        self._blocks[block][:, column : column + take] = rows[done : done + take].T
        done += take


def first_read_section(entries: int, backends: list[str], rows: Any) -> None:
    """A process's first read of a scope of ``entries``, old path against new, same run,
    same rows, alternating (3 rounds, medians): "old" reads entries of format 1 in one
    query / one LRANGE, parses every JSON head and answer, and quantises as the earlier
    code did; "new" is the load :class:`SemanticCache` runs now (format 2 in chunks,
    vectors decoded in one numpy step, answers left as bytes). Each split into the read,
    the decode and the index build; "CPU" is the whole read's CPU time."""
    import os
    import statistics
    import tempfile
    import uuid

    from evalgate.runtime.backends import open_backend
    from evalgate.runtime.cache import CachedAnswer
    from evalgate.runtime.semantic_cache import (
        INLINE_LOAD,
        LOAD_CHUNK,
        SemanticCache,
        _decode_v1,
    )
    from evalgate.runtime.semantic_index import ScopeIndex

    print(
        f"\nFirst read of a {entries:,}-entry scope, s (median of 3; read / decode / index;"
        f" CPU); load average {os.getloadavg()[0]:.1f}"
    )
    answer = CachedAnswer(content="an answer of a few words", model="m")
    dim = rows.shape[1]
    for kind in backends:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/s.sqlite3" if kind == "sqlite" else "redis://127.0.0.1:6379/0"
            backend = open_backend(url, prefix=f"evalgate-bench-{uuid.uuid4().hex[:8]}:")
            try:
                _bulk_load(backend, "new", rows[:entries])
                _bulk_raw(backend, "old", (_encode_v1(v, answer) for v in rows[:entries]))
                times: dict[str, list[tuple[float, ...]]] = {"old": [], "new": []}
                cache = SemanticCache(backend, threshold=0.9, embedding_model="bench")
                for _round in range(3):
                    c0, t0 = time.process_time(), time.perf_counter()
                    _, raws = backend.semantic_read("old", 0)
                    t1 = time.perf_counter()
                    _, vectors, sigs, answers, expires = _decode_v1(raws, dim)
                    t2 = time.perf_counter()
                    index = ScopeIndex(dim, int8_scan=True)
                    index._quantise = _old_quantise.__get__(index)  # type: ignore[method-assign]
                    index.append(vectors, expires, sigs, answers)
                    t3 = time.perf_counter()
                    times["old"].append(
                        (t1 - t0, t2 - t1, t3 - t2, t3 - t0, time.process_time() - c0)
                    )
                    del raws, vectors, answers, index
                    c0, t0 = time.process_time(), time.perf_counter()
                    # What SemanticCache._read_rest does, with the decode timed apart.
                    first = backend.semantic_tail("new", 0, INLINE_LOAD)
                    raws, tail = list(first.entries), first
                    while len(tail.entries) == (INLINE_LOAD if tail is first else LOAD_CHUNK):
                        tail = backend.semantic_tail("new", tail.position, LOAD_CHUNK)
                        raws += tail.entries
                    t1 = time.perf_counter()
                    decoded = _decode_v2_timed(cache, raws, dim)
                    t3 = time.perf_counter()
                    times["new"].append(
                        (t1 - t0, decoded, t3 - t1 - decoded, t3 - t0, time.process_time() - c0)
                    )
                    del raws
                medians = {
                    path: [statistics.median(column) for column in zip(*rounds, strict=True)]
                    for path, rounds in times.items()
                }
                for path, (read, decode, build, total, cpu) in medians.items():
                    print(
                        f"{kind:>7} {path:>4}: {total:6.2f} s  ({read:.2f} / {decode:.2f} / "
                        f"{build:.2f}; CPU {cpu:.2f} s)"
                    )
                print(f"{kind:>7} old / new: {medians['old'][3] / medians['new'][3]:.1f}x")
            finally:
                if kind == "redis":
                    backend.delete_all()
                backend.close()


def _decode_v2_timed(cache: Any, raws: list[bytes], dim: int) -> float:
    """Decodes and indexes ``raws`` as a load does; returns the decode's share (s)."""
    from evalgate.runtime.semantic_cache import decode_entries
    from evalgate.runtime.semantic_index import ScopeIndex

    t0 = time.perf_counter()
    vectors, sigs, answers, expires = decode_entries(raws, dim)
    decoded = time.perf_counter() - t0
    ScopeIndex(dim, int8_scan=True).append(vectors, expires, sigs, answers)
    return decoded


def _bulk_raw(backend: Any, scope: str, entries: Any) -> None:
    if hasattr(backend, "_connections"):  # SQLite: one transaction
        with backend._connections.use() as db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO semantic (scope, entry) VALUES (?, ?)",
                ((scope, e) for e in entries),
            )
            db.execute("COMMIT")
        return
    pipe = backend._r.pipeline(transaction=False)  # Redis: RPUSH in batches
    for k, entry in enumerate(entries, 1):
        pipe.rpush(backend._semantic + scope, entry)
        if k % 2000 == 0:
            pipe.execute()
    pipe.execute()


def encoder_floor(paths: dict[str, Any]) -> None:
    """The encoder's compute floor on this CPU: the multiply-adds of one short text through
    the six layers, at the single-core float32 GEMM rate measured now (hot weights, the
    best case), beside each encoder's CPU time per text measured now."""
    import statistics
    import time

    import numpy as np

    from evalgate.embeddings import _openblas_thread_setters, _single_threaded_blas

    text = "How can I reset the password for account 12345 on the portal?"
    tokens = len(paths["before"][0].token_ids([text])[0])
    d, inner, layers = 384, 1536, 6
    flops = layers * 2 * tokens * d * (3 * d + d + 2 * inner)  # QKV, out, FFN in and out
    rng = np.random.default_rng(0)
    x = rng.random((tokens, d), dtype=np.float32)
    w = rng.random((d, inner), dtype=np.float32)
    with _single_threaded_blas(_openblas_thread_setters()):
        for _ in range(50):
            x @ w
        times = []
        for _ in range(300):
            t0 = time.thread_time()
            x @ w
            times.append(time.thread_time() - t0)
    rate = 2 * tokens * d * inner / statistics.median(times)
    print(
        f"\nEncoder floor: {tokens} tokens -> {flops / 1e6:.0f} MFLOP in the layers; "
        f"single-core float32 GEMM at {rate / 1e9:.0f} GFLOP/s (hot) -> "
        f"{flops / rate * 1000:.1f} ms of CPU at best"
    )
    for name, (encoder, _) in paths.items():
        encoder.encode([text])
        cpu = []
        for i in range(100):
            t0 = time.thread_time()
            encoder.encode([f"{text} ({name} {i})"])
            cpu.append((time.thread_time() - t0) * 1000)
        kind = type(encoder).__name__
        print(f"  {name} encoder ({kind}): {statistics.median(cpu):.2f} ms CPU per text")


def _measure(
    backend: Any,
    entries: int,
    store_rows: Any,
    paths: dict[str, Any],
    threshold: float,
    lookups: int,
    kind: str,
) -> dict[str, float]:
    """Median lookup wall time per path; the paths' lookups alternate, so both see the
    same load (the machine is shared: load moves within seconds)."""
    import statistics
    import time

    from evalgate.runtime.cache import CacheRequest
    from evalgate.runtime.semantic_cache import SemanticCache

    def ask(text: str) -> CacheRequest:
        return CacheRequest(
            model="m", messages=[{"role": "user", "content": text}], params={}, namespace="t"
        )

    caches, first = {}, {}
    for path, (encoder, int8) in paths.items():
        caches[path] = SemanticCache(
            backend, threshold=threshold, encoder=encoder, int8_scan=int8, embedding_model="bench"
        )
        scope = caches[path].scope_of(ask("x"))
        if path == "before":  # every path reads the same store
            _bulk_load(backend, scope, store_rows[:entries])
        start = time.perf_counter()
        caches[path].lookup(ask("warm-up: starts reading every entry"))
        first_lookup = time.perf_counter() - start
        loading = caches[path]._scope(scope).loading  # None: read within the lookup
        if loading is not None:
            loading.result()
        first[path] = (first_lookup, time.perf_counter() - start)
        encoder.clear_cache()  # every text is new, as at runtime
    names = ("wall", "cpu", "embed", "io", "search")
    times: dict[str, dict[str, list[float]]] = {p: {n: [] for n in names} for p in paths}
    hits = dict.fromkeys(paths, 0)
    verbs = ("reset", "change", "recover", "update")
    for i in range(lookups):
        for path, (encoder, _) in paths.items():
            cache, t = caches[path], times[path]
            # Odd lookups ask a stored question again (~330 stored rows lie near it, around
            # the threshold: the most re-ranking); even ones a new question (a miss).
            text = (
                _QUESTIONS[i % len(_QUESTIONS)]
                if i % 2
                else f"How can I {verbs[i % 4]} the password for account {10_000 + i}?"
            )
            t0, c0 = time.perf_counter(), time.thread_time()
            hits[path] += cache.lookup(ask(text)) is not None
            t["wall"].append((time.perf_counter() - t0) * 1000)
            t["cpu"].append((time.thread_time() - c0) * 1000)
            t0 = time.perf_counter()
            vector = encoder.encode([f"{text} (embedding alone)"])[0]
            t["embed"].append((time.perf_counter() - t0) * 1000)
            state = cache._scope(cache.scope_of(ask(text)))
            t0 = time.perf_counter()
            backend.semantic_read(cache.scope_of(ask(text)), state.position)  # nothing new
            t["io"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            state.index.search(vector, now=time.time(), threshold=threshold)
            t["search"].append((time.perf_counter() - t0) * 1000)
    for path in paths:
        t = times[path]
        print(
            f"{kind:>7} {entries:>8} {path:>6} | {_median_p95(t['wall'])} {_median_p95(t['cpu'])} "
            f"{_median_p95(t['embed'])} {_median_p95(t['io'])} {_median_p95(t['search'])} "
            f"{hits[path]:>5} {first[path][0] * 1000:>8.1f}ms {first[path][1]:>8.2f}s"
        )
    return {path: statistics.median(times[path]["wall"]) for path in paths}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--fresh", type=int, default=400)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument(
        "--entries", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="store sizes"
    )
    parser.add_argument("--backends", nargs="+", default=["sqlite", "redis"])
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--skip-near-miss", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--only-simulation", action="store_true")
    args = parser.parse_args()
    trials = 20 if args.quick else args.trials
    if not args.skip_simulation:
        guarantee_section(trials, args.n, 50 if args.quick else args.fresh)
    if args.only_simulation:
        return
    if not args.skip_near_miss:
        near_miss_section()
    lookup_section(args.entries, args.backends, args.lookups)


if __name__ == "__main__":
    main()
