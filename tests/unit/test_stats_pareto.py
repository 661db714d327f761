"""Pareto frontier and frontier probability."""

from __future__ import annotations

import numpy as np

from evalgate.stats import frontier_probability, pareto_front

MAXIMIZE = (True, False, False)  # quality up, cost down, p95 down


def test_frontier_on_a_hand_example():
    points = np.array(
        [
            [0.90, 10.0, 900.0],  # best quality
            [0.85, 2.0, 400.0],  # cheap and fast
            [0.85, 3.0, 500.0],  # dominated by the one above
            [0.80, 1.0, 800.0],  # cheapest
            [0.85, 2.0, 400.0],  # identical twin: both stay
            [0.70, 1.0, 900.0],  # dominated by the cheapest
        ]
    )
    assert pareto_front(points, MAXIMIZE).tolist() == [True, True, False, True, True, False]


def test_nan_points_are_off_the_frontier_and_dominate_nothing():
    points = np.array([[0.9, np.nan, 100.0], [0.8, 2.0, 400.0]])
    assert pareto_front(points, MAXIMIZE).tolist() == [False, True]


def test_frontier_probability_counts_resamples():
    always = [0.9, 1.0, 100.0]
    never = [0.5, 5.0, 900.0]
    sometimes = [[0.95, 2.0, 200.0], [0.85, 2.0, 200.0]]  # beats `always` on quality only once
    samples = np.array([[always, never, sometimes[0]], [always, never, sometimes[1]]])
    np.testing.assert_allclose(frontier_probability(samples, MAXIMIZE), [1.0, 0.0, 0.5])


def test_two_objective_frontier():
    points = np.array([[0.9, 500.0], [0.8, 100.0], [0.7, 200.0]])
    assert pareto_front(points, (True, False)).tolist() == [True, True, False]


def test_default_orientation_maximises_the_first_objective_only():
    points = np.array([[0.9, 10.0, 900.0], [0.9, 12.0, 900.0]])
    assert pareto_front(points).tolist() == pareto_front(points, MAXIMIZE).tolist() == [True, False]
