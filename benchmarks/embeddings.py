"""Throughput of the embedding backends: texts per second in batches of 64.

Run: ``.venv/bin/python benchmarks/embeddings.py [--texts 640] [--batch-size 64]``

Generates distinct English-like sentences of 10-30 words (fixed seed), encodes one
warm-up batch, then times the rest with the LRU disabled (``cache_size=0``), for the
numpy backend and, when torch and sentence-transformers are importable, the torch one.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evalgate import embeddings

_SUBJECTS = [
    "the model",
    "our support agent",
    "a customer",
    "the billing service",
    "the new release",
    "this prompt",
    "the evaluation suite",
    "a junior engineer",
    "the cache layer",
    "the summary",
]
_VERBS = [
    "returned",
    "explained",
    "ignored",
    "summarised",
    "rejected",
    "translated",
    "refunded",
    "scheduled",
    "compared",
    "flagged",
]
_OBJECTS = [
    "the refund request",
    "an invoice from last March",
    "the quarterly report",
    "a long complaint about shipping delays",
    "two conflicting answers",
    "the password reset flow",
    "every failing test case",
    "a short poem about the sea",
    "the latency budget",
    "the pricing table",
]
_TAILS = [
    "before the deadline",
    "without asking for more details",
    "in a friendly and concise tone",
    "even though the input was ambiguous",
    "after checking the order history twice",
    "while the queue was unusually busy",
    "and then apologised for the confusion",
    "using only facts from the provided context",
    "so that the user could continue",
    "despite several typos in the question",
]


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """Return ``n`` distinct sentences of 10-30 words."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        for _ in range(rng.randint(0, 3)):
            words.append(rng.choice(_TAILS))
        sentence = " ".join(words)
        count = len(sentence.split())
        if sentence in seen or not 10 <= count <= 30:
            continue
        seen.add(sentence)
        out.append(sentence[0].upper() + sentence[1:] + ".")
    return out


def bench(name: str, encoder: embeddings.Encoder, texts: list[str], batch_size: int) -> float:
    """Encode ``texts`` in batches after a warm-up batch; print and return texts/s."""
    warmup, timed = texts[:batch_size], texts[batch_size:]
    encoder.encode(warmup, batch_size=batch_size)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(0, len(timed), batch_size):
        encoder.encode(timed[i : i + batch_size], batch_size=batch_size)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    rate = len(timed) / elapsed
    print(
        f"{name:>6}: {rate:8.1f} texts/s  ({len(timed)} texts in {elapsed:.2f} s wall, "
        f"{cpu:.2f} s CPU, batch {batch_size})"
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=640, help="timed texts (default 640)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    texts = make_sentences(args.texts + args.batch_size)
    words = [len(t.split()) for t in texts]
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"{len(texts)} sentences, {min(words)}-{max(words)} words, cpus={os.cpu_count()}{load}")

    start = time.perf_counter()
    numpy_encoder = embeddings.NumpyEncoder(cache_size=0)
    print(f" numpy: loaded in {time.perf_counter() - start:.2f} s")
    tokens = [len(ids) for ids in numpy_encoder.token_ids(texts)]
    print(f"word pieces per text: mean {sum(tokens) / len(tokens):.1f}, max {max(tokens)}")
    bench("numpy", numpy_encoder, texts, args.batch_size)

    if embeddings._torch_available():
        start = time.perf_counter()
        torch_encoder = embeddings.TorchEncoder(cache_size=0)
        print(f" torch: loaded in {time.perf_counter() - start:.2f} s")
        bench("torch", torch_encoder, texts, args.batch_size)
    else:
        print(" torch: not importable (torch + sentence-transformers), skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
