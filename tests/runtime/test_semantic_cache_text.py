"""Hostile text through the semantic cache: lone surrogates (what ``json.loads`` makes of
a provider's or a dataset's ``"\\ud800"``) in a question or in an answer. Real SQLite and
Redis backends, the real MiniLM encoder for the embedding itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from evalgate.runtime.backends import open_backend
from evalgate.runtime.cache import CachedAnswer
from tests.runtime.test_semantic_cache_hostile import answer, ask, cache

LONE = "\ud800"


def test_an_answer_with_a_lone_surrogate_is_stored_and_served_unchanged(
    backend_spec: Any,
) -> None:
    # Before: to_bytes() raised UnicodeEncodeError inside store(), which runs after the
    # paid call and before its ledger record: the answer and the record were lost.
    content = f"bad {LONE} text and a pair \U0001f600"
    raw = answer(content).to_bytes()
    again = CachedAnswer.from_bytes(raw)
    assert again is not None and again.content == content
    url, prefix = backend_spec
    with open_backend(url, prefix=prefix) as backend:
        cache(backend).store(ask("item 7"), answer(content), ttl_s=None)
        hit = cache(backend).lookup(ask("item 7"))
    assert hit is not None and hit.answer.content == content


def test_the_encoder_embeds_a_question_with_a_lone_surrogate() -> None:
    # Before: the tokenizer raised TypeError: one such question failed a whole semantic
    # cache config (evaluation) or the live call (runtime lookup).
    from evalgate.embeddings import NumpyEncoder

    encoder = NumpyEncoder(cache_size=0)
    got = encoder.encode([f"what is {LONE} the door code", "what is \ufffd the door code"])
    assert got.shape == (2, 384) and np.isfinite(got).all()
    assert np.allclose(got[0], got[1])


def test_a_guarded_question_quoting_a_lone_surrogate_is_stored_and_served(
    backend_spec: Any,
) -> None:
    # The guard's signature keeps quoted text as written: a lone surrogate in it made the
    # entry unencodable, and store() raised after the paid call.
    url, prefix = backend_spec
    question = f'say "{LONE}" item 9'
    with open_backend(url, prefix=prefix) as backend:
        cache(backend, guard=True).store(ask(question), answer("ok"), ttl_s=None)
        hit = cache(backend, guard=True).lookup(ask(question))
        assert hit is not None and hit.answer.content == "ok"
        # Another quoted text, same vector: the guard refuses it.
        assert cache(backend, guard=True).lookup(ask('say "x" item 9')) is None
