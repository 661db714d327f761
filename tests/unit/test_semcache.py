"""Semantic cache core: replay semantics, certification, guard, seeded simulation."""

from __future__ import annotations

import numpy as np
import pytest

from evalgate.results import CallResult, CaseResult, GradeResult
from evalgate.semcache.certify import calibrate, certify, evaluate, fold_labels
from evalgate.semcache.guard import may_share, signature
from evalgate.semcache.replay import EXACT, Replay
from evalgate.semcache.simulate import simulate


def _unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=float)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def _replay(
    intent: list[int],
    vectors: np.ndarray,
    keys: list[str] | None = None,
    texts: list[str] | None = None,
    guard: bool = False,
) -> Replay:
    n = len(intent)
    return Replay(
        keys or ["k"] * n,
        texts or [f"t{i}" for i in range(n)],
        vectors,
        [True] * n,
        lambda i, j: intent[i] == intent[j],
        cost=[1.0] * n,
        latency_ms=[100.0] * n,
        guard=guard,
        lookup_ms=5.0,
    )


def test_hit_serves_the_nearest_earlier_entry_and_a_hit_stores_nothing():
    vectors = _unit([[1, 0], [1, 0.1], [1, 0.2], [0, 1]])
    replay = _replay([0, 0, 0, 1], vectors)
    run = replay.run(0.9)
    assert run.served_from.tolist() == [-1, 0, 0, -1]  # request 1 hit, so 2 matches 0
    assert run.wrong_hit.tolist() == [0, 0, 0, 0]
    assert run.cost_saved.sum() == 2.0
    assert run.latency_saved_ms.tolist() == [-5.0, 95.0, 95.0, -5.0]


def test_a_wrong_hit_is_counted_only_where_a_fresh_call_would_pass():
    vectors = _unit([[1, 0], [1, 0.05], [1, 0.06]])
    replay = Replay(["k"] * 3, ["a", "b", "c"], vectors, [True, True, False], lambda i, j: False)
    assert replay.run(0.9).wrong_hit.tolist() == [0, 1, 0]
    no_fresh = Replay(["k"] * 2, ["a", "b"], vectors[:2], [True, None], lambda i, j: False)
    assert no_fresh.run(0.9).wrong_hit.tolist() == [0, 1]


def test_keys_never_share_and_exact_threshold_serves_only_identical_text():
    vectors = _unit([[1, 0], [1, 0], [1, 0.01], [1, 0]])
    replay = _replay(
        [0, 0, 0, 0],
        vectors,
        keys=["tenant-a", "tenant-b", "tenant-a", "tenant-a"],
        texts=["hi", "hi", "hello", "hi"],
    )
    assert replay.run(0.5).served_from.tolist() == [-1, -1, 0, 0]
    assert replay.run(EXACT).served_from.tolist() == [-1, -1, -1, 0]


def test_guard_signature_numbers_quotes_negation():
    assert not may_share("refund 30 dollars", "refund 300 dollars")
    assert may_share("refund 1,000 dollars please", "please refund 1000 dollars")
    assert not may_share('rename it "foo"', 'rename it "bar"')
    assert not may_share("is the bridge safe", "is the bridge not safe")
    assert not may_share("it works", "it doesn't work")
    assert may_share("what is the capital of France", "France's capital city?")
    assert signature("") == signature("hello")
    # Apostrophes are not quotes.
    assert may_share("don't stop, it isn't over", "do not stop, it is not over")
    assert may_share("reset alice's password", "reset the password of alice's account")


def test_guard_v2_answer_formats_are_not_negations():
    """Held-out traffic found v1 serving the opposite question: "no" in "answer yes or
    no" made both turns negated. v2 reads the answer format as no negation, and
    "false"/"untrue" as one; v1 stays available for policies certified with it."""
    plain = "Is a penguin a mammal? Answer yes or no."
    negated = "Is a penguin not a mammal? Answer yes or no."
    false = "Answer yes or no: is it false that a penguin is a mammal?"
    assert may_share(plain, negated, 1)  # the v1 defect, kept for old policies
    assert not may_share(plain, negated)
    assert not may_share(plain, false)
    assert may_share(negated, false)
    assert may_share("True or false: Mars is a planet.", "Mars is a planet. True/false?")
    assert not may_share("True or false: Mars is a planet.", "True or false: Mars is untrue.")
    with pytest.raises(ValueError, match="guard version"):
        signature("x", 3)
    # True == 1 in Python: SemanticCache(guard_version=True) silently ran version 1.
    with pytest.raises(ValueError, match="guard version"):
        signature("x", True)


def test_guard_blocks_near_miss_hits_in_the_replay():
    vectors = _unit([[1, 0], [1, 0.01]])
    texts = ["how many days in 2024", "how many days in 2023"]
    assert _replay([0, 1], vectors, texts=texts).run(0.9).wrong_hit.sum() == 1
    assert _replay([0, 1], vectors, texts=texts, guard=True).run(0.9).hit.sum() == 0


def test_fold_labels_keep_each_cluster_in_one_fold():
    groups = ["a", "b", "a", "c", "b", "d"]
    folds = fold_labels(groups, 2, seed=0)
    for g in set(groups):
        assert len({int(f) for f, h in zip(folds, groups, strict=True) if h == g}) == 1


def _clustered(n: int, seed: int, near_share: float):
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((40, 8)).tolist())
    near = centres + 0.05 * rng.standard_normal(centres.shape)
    intent = rng.integers(0, 80, size=n)
    base = np.where((intent < 40)[:, None], centres[intent % 40], near[intent % 40])
    if near_share == 0:
        intent = intent % 40
        base = centres[intent]
    vectors = base + 0.08 * rng.standard_normal(base.shape)
    return intent.tolist(), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_certify_reports_cross_fitted_figures_and_fixed_thresholds():
    intent, vectors = _clustered(400, 0, near_share=0.5)
    replay = _replay(intent, vectors)
    result = certify(replay, max_wrong_hit=0.05, alpha=0.1, groups=[i % 40 for i in intent])
    assert result.certified and 0.5 <= result.threshold < 1.0
    assert result.figures.requests == 400 and result.figures.hits > 0
    assert [f.label for f in result.fixed] == [
        "fixed 0.80",
        "fixed 0.85",
        "fixed 0.90",
        "fixed 0.95",
    ]
    fixed80 = result.fixed[0]
    assert fixed80.wrong_hit_rate[0] > result.figures.wrong_hit_rate[0]
    assert result.figures.wrong_hit_rate[0] <= 0.05 + 0.03
    assert result.to_dict()["figures"]["hits"] == result.figures.hits


def test_nothing_certified_falls_back_to_exact_and_says_so():
    intent, vectors = _clustered(30, 1, near_share=0.5)
    result = certify(_replay(intent, vectors), max_wrong_hit=0.01, alpha=0.05, k=2)
    assert not result.certified and result.threshold == EXACT
    assert any("falls back to exact caching" in note for note in result.notes)


def test_calibrate_stops_where_fixed_sequence_testing_stops():
    intent, vectors = _clustered(200, 2, near_share=0.5)
    threshold, test = calibrate(_replay(intent, vectors), max_wrong_hit=0.05, alpha=0.1)
    assert test.n_certified == len(test.p_values) - 1
    assert threshold is not None


def test_evaluate_keeps_the_guard_unless_unguarded_hits_more():
    intent, vectors = _clustered(200, 3, near_share=0)
    texts = [f"question {i} about item {k}" for i, k in enumerate(intent)]
    memo: dict = {}
    plain = Replay(
        ["k"] * 200, texts, vectors, [True] * 200, lambda i, j: intent[i] == intent[j], memo=memo
    )
    guarded = Replay(
        ["k"] * 200,
        texts,
        vectors,
        [True] * 200,
        lambda i, j: intent[i] == intent[j],
        guard=True,
        memo=memo,
    )
    choice = evaluate(plain, guarded, max_wrong_hit=0.05, alpha=0.1)
    assert choice.with_guard.alpha == 0.05 and choice.without_guard.alpha == 0.05
    # Every text has its own number, so the guard blocks every hit: it does not pay.
    assert choice.with_guard.figures.hits == 0
    assert choice.without_guard.figures.hits > 0
    assert choice.chosen is choice.without_guard


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_bad_threshold_and_inputs_are_rejected(bad):
    replay = _replay([0], _unit([[1, 0]]))
    with pytest.raises(ValueError, match="threshold"):
        replay.run(bad)
    with pytest.raises(ValueError, match="same requests"):
        Replay(["k"], ["a", "b"], _unit([[1, 0]]), [True], lambda i, j: True)
    with pytest.raises(ValueError, match="max_wrong_hit"):
        certify(replay, max_wrong_hit=bad, alpha=0.1)


def test_seeded_simulation_is_reproducible_and_beats_a_fixed_080():
    first = simulate(trials=6, n=200, fresh=6, seed=3)
    assert first == simulate(trials=6, n=200, fresh=6, seed=3)
    assert first.none_certified < 6
    assert first.mean_true_risk < first.fixed_080_risk


def test_empty_traffic_reports_nothing_and_certifies_nothing():
    replay = Replay([], [], np.zeros((0, 384)), [], lambda i, j: True)
    result = certify(replay, max_wrong_hit=0.05, alpha=0.1)
    assert not result.certified and result.figures.requests == 0 and result.figures.hits == 0


def _row(score: float, *, error: str | None = None, grader_error: bool = False) -> CaseResult:
    grades = (GradeResult("g", score, score >= 0.5, "r", error="boom" if grader_error else None),)
    return CaseResult(
        item_key="s::c[x]",
        run_id="r",
        suite="s",
        feature="f",
        suite_hash="h",
        case_id="c",
        config_id="x",
        repeat=0,
        group=None,
        tier="t",
        model="m",
        must_pass=False,
        call=CallResult(output="" if error else "a", error=error),
        grades=grades,
        score=0.0 if error or grader_error else score,
        passed=score >= 0.5 and not (error or grader_error),
    )


def test_quality_figures_leave_errored_rows_out_of_the_means_and_count_them():
    """Quality describes completed calls (the statistics' convention): an errored twin
    call (score 0, a miss: errors are never cached) dragged the misses' mean down, and a
    grader error on a hit or its fresh twin dragged one side of the pair."""
    from evalgate.derived.semcache import _quality, describe

    fresh = [_row(0.8), _row(0.6), _row(0.9, error="APIError: x"), _row(1.0), _row(0.7)]
    composed = [_row(0.8), _row(0.6), fresh[2], _row(1.0, grader_error=True), _row(0.7)]
    served = np.array([-1, 0, -1, 0, -1])
    requests = [(None, row) for row in fresh]
    quality = _quality(requests, composed, served)  # type: ignore[arg-type]
    assert quality["hits"] == 2 and quality["misses"] == 3
    # Hit 3's served answer could not be graded: the pair is left out on both sides.
    assert quality["hit_score"] == pytest.approx(0.6)
    assert quality["fresh_score_on_hits"] == pytest.approx(0.6)
    assert quality["miss_score"] == pytest.approx(0.75)  # the errored call is no score
    assert quality["errored"] == 2
    # No hits, or every miss errored: no mean, and the line says nothing about it.
    none = _quality(requests[2:3], composed[2:3], np.array([-1]))  # type: ignore[arg-type]
    assert none == {
        "hits": 0,
        "hit_score": None,
        "fresh_score_on_hits": None,
        "misses": 1,
        "miss_score": None,
        "errored": 1,
    }
    record = {
        "twin": "fresh",
        "threshold": 0.9,
        "max_wrong_hit": 0.02,
        "alpha": 0.05,
        "guard": True,
        "certified": True,
        "folds": 5,
        "requests": 5,
        "hit_rate": 0.4,
        "wrong_hit_rate": {"estimate": 0.0, "low": 0.0, "high": 0.1},
        "wrong_among_hits": {"estimate": 0.0, "low": 0.0, "high": 0.2},
    }
    assert "quality" not in describe("c", {**record, "quality": none})
    line = describe("c", {**record, "quality": quality})
    assert (
        "; quality of hits 0.600 (fresh calls on the same requests 0.600), of misses 0.750" in line
    )
    assert "2 errored rows left out" in line
    # No hits: the misses' figure is not left hanging after another clause.
    misses = {**none, "miss_score": 0.75, "errored": 0}
    line = describe("c", {**record, "near_miss_wrong_rate": 0.0, "quality": misses})
    assert "0.0% of near-misses; quality of misses 0.750" in line


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # A leading decimal point was dropped: ".5" read as 5.
        ("Refund .5 BTC to my wallet", "Refund 5 BTC to my wallet"),
        # Commas were dropped wherever they stood, not only between thousands.
        ("Refund 1,5 euros", "Refund 15 euros"),
        ("Add items 1,2 to the cart", "Add item 12 to the cart"),
        # A hyphenated answer format was still a negation (the defect v2 fixes).
        (
            "Is a whale a fish? A yes-or-no question.",
            "Is a whale not a fish? A yes-or-no question.",
        ),
        ("Is a whale a fish? Answer yes, or no.", "Is a whale not a fish? Answer yes, or no."),
        # Contractions typed without an apostrophe, or with another apostrophe character.
        ("Is the bridge open today?", "Isnt the bridge open today?"),
        ("Does the plan cover dental?", "Doesnt the plan cover dental?"),
        ("Is the bridge open today?", "Isnʼt the bridge open today?"),
        ("Is the bridge open today?", "Isn＇t the bridge open today?"),
    ],
)
def test_guard_v2_keeps_apart_what_v1_let_share(a: str, b: str) -> None:
    assert may_share(a, b, 1)  # v1 is kept as it was for the policies certified with it
    assert not may_share(a, b)


def test_guard_v2_still_shares_what_is_the_same_request() -> None:
    assert may_share("Refund 1,000 dollars", "Refund 1000 dollars")
    assert may_share("Refund 1,000,000.50 now", "Refund 1000000.50 now")
    assert may_share("Pick 1, 2 or 3", "Pick 1,  2 or 3")
    assert may_share("Is a whale a fish? yes-or-no", "Is a whale a fish? Yes / no")
    assert may_share("Is a whale a fish? Answer yes, or no.", "Is a whale a fish?")
    assert signature("Refund 0.5 BTC") != signature("Refund .5 BTC")  # as written: kept apart
