"""Early-stopping rules and their offline replay on recorded learning curves."""

from __future__ import annotations

import random

import pytest

from dm_search.study.stopping import (
    MedianRule,
    NoStopping,
    RungRule,
    expected,
    replay,
    rung_epochs,
)


def test_rungs_follow_grace_and_reduction_factor():
    assert rung_epochs(60, 20, 4) == [20]
    assert rung_epochs(60, 6, 3) == [6, 18, 54]
    assert rung_epochs(10, 1, 2) == [1, 2, 4, 8]


def test_a_rung_is_not_decided_until_enough_trials_reached_it():
    rule = RungRule(budget=10, grace=2, reduction_factor=2, min_trials=3)
    for trial, value in (("a", 0.9), ("b", 0.1)):
        assert rule.on_result(trial, 1, value)
        assert rule.on_result(trial, 2, value)  # fewer than 3 at the rung: both continue
    assert rule.on_result("c", 1, 0.05)
    assert not rule.on_result("c", 2, 0.05)  # the third arrival: below the median, stopped


def test_plain_asha_lets_the_first_arrival_set_the_bar():
    rule = RungRule(budget=10, grace=2, reduction_factor=2)
    rule.on_result("a", 1, 0.9)
    assert rule.on_result("a", 2, 0.9)
    rule.on_result("b", 1, 0.5)
    assert not rule.on_result("b", 2, 0.5)  # judged against one trial only


def test_the_trend_term_keeps_a_climbing_trial_over_a_falling_one():
    falling = [0.5, 0.8, 0.75, 0.7, 0.65, 0.6]
    climbing = [0.1, 0.2, 0.3, 0.4, 0.5, 0.58]
    for trend, climbing_survives in ((0.0, False), (1.0, True)):
        rule = RungRule(budget=12, grace=6, reduction_factor=2, min_trials=2, trend=trend,
                        window=5)
        for e, v in enumerate(falling, 1):
            rule.on_result("falling", e, v)
        go = [rule.on_result("climbing", e, v) for e, v in enumerate(climbing, 1)]
        assert go[-1] is climbing_survives


def test_median_rule_stops_a_trial_below_the_others():
    rule = MedianRule(grace=2, min_trials=2)
    for t in ("a", "b"):
        for e in (1, 2):
            rule.on_result(t, e, 0.8)
    rule.on_result("c", 1, 0.1)
    assert not rule.on_result("c", 2, 0.1)


def _inverted_pool() -> list[list[float]]:
    """Six 30-epoch curves where early accuracy ranks the trials backwards: fast learners
    peak at epoch 5 and then memorise; slow ones climb to the end."""
    pool = []
    for k in range(3):  # fast, then falling
        peak = 0.8 - 0.02 * k
        pool.append([min(peak, 0.2 * e) if e <= 5 else peak - 0.01 * (e - 5) for e in
                     range(1, 31)])
    for k in range(3):  # slow, then best
        end = 0.9 - 0.03 * k
        pool.append([end * e / 30 for e in range(1, 31)])
    return pool


def test_replay_without_stopping_has_no_regret_and_full_compute():
    r = replay(_inverted_pool(), NoStopping(), workers=2)
    assert r.regret == 0 and r.compute == 1.0 and r.returned == 3


def test_replay_shows_early_asha_losing_the_winner_and_a_late_rung_keeping_it():
    pool = _inverted_pool()
    early = expected(pool, lambda: RungRule(30, 3, 3), workers=2, orders=20)
    late = expected(pool, lambda: RungRule(30, 20, 3, min_trials=3, trend=1.0), workers=2,
                    orders=20)
    assert early[0] > 0.05  # regret: the slow winner was stopped in most orders
    assert late[0] == pytest.approx(0.0)
    assert late[2] < 1.0  # and it still saved compute


def test_replay_is_deterministic_for_a_seed_and_concurrency_changes_arrivals():
    pool = _inverted_pool()
    a = replay(pool, RungRule(30, 3, 2), workers=2, rng=random.Random(1))
    b = replay(pool, RungRule(30, 3, 2), workers=2, rng=random.Random(1))
    assert a == b
    assert expected(pool, lambda: RungRule(30, 3, 2), workers=8, orders=5)[2] > 0


def test_a_rule_shown_past_curves_keeps_their_bars():
    rule = RungRule(budget=4, grace=2, reduction_factor=2, min_trials=2)
    for k, curve in enumerate(([0.5, 0.9], [0.5, 0.8])):  # as a resumed study replays them
        for e, v in enumerate(curve, 1):
            rule.on_result(f"past-{k}", e, v)
        rule.forget(f"past-{k}")
    rule.on_result("new", 1, 0.3)
    assert not rule.on_result("new", 2, 0.3)  # judged against the study's earlier trials
