"""The scaling model of bench/scaling.py: which bound binds, and the recorded local runs it is checked against."""

from __future__ import annotations

import pytest

from bench.scaling import OVERHEAD_CORES, RECORDED, Rates, predict


def rates(ratio: float, learner: float = 80.0) -> Rates:
    return Rates(2_500.0, learner, 1e-5, 3e-3, 64, ratio)


def test_a_slow_learner_bounds_the_run_and_more_workers_do_not_help() -> None:
    one, four = predict(rates(0.25), 1, None), predict(rates(0.25), 4, None)
    assert one.bottleneck == four.bottleneck == "learner"
    assert one.env_steps_s == pytest.approx(four.env_steps_s)
    assert one.updates_s == pytest.approx(0.25 * one.env_steps_s)
    assert one.env_steps_s == pytest.approx(1.0 / (0.25 / 80.0 + 1e-5))


def test_a_fast_learner_leaves_collection_as_the_bottleneck_and_it_scales_with_workers() -> None:
    one, ten = predict(rates(0.01, learner=5_000.0), 1, None), predict(rates(0.01, learner=5_000.0), 10, None)
    assert one.bottleneck == ten.bottleneck == "collection"
    assert ten.env_steps_s == pytest.approx(10 * one.env_steps_s)


def test_shared_cores_cap_the_sum_of_worker_and_learner_time() -> None:
    r = rates(0.02)
    p = predict(r, 4, 2)
    worker_s = 1 / r.worker_env_steps_s + r.weights_pull_s / r.weight_sync_every
    learner_s = r.replay_ratio / r.learner_updates_s + r.ingest_s_per_transition
    assert p.bottleneck == "shared CPU"
    assert p.env_steps_s == pytest.approx((2 - OVERHEAD_CORES) / (worker_s + learner_s))


def test_the_recorded_local_runs_cover_one_two_and_four_workers_at_both_ratios() -> None:
    assert set(RECORDED) == {0.25, 0.02}
    assert all(set(runs) == {1, 2, 4} for runs in RECORDED.values())
