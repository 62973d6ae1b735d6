"""Tests of policies/curves.py: a point every K updates holding the means of the steps since the last one."""

from __future__ import annotations

import pytest

from policies.curves import SERIES, LearningCurves
from policies.learning import LearnStats


def _stats(loss: float, updates: int) -> LearnStats:
    return LearnStats(loss=loss, mean_q=2 * loss, mean_abs_td=3 * loss, beta=0.4, updates=updates)


def test_points_fall_due_at_each_multiple_of_k_and_average_the_steps_since_the_last() -> None:
    curves = LearningCurves(every_updates=3)
    assert not curves.due(0) and not curves.due(2) and curves.due(3)
    for u, loss in enumerate([1.0, 2.0, 3.0], start=1):
        curves.observe(_stats(loss, u))
    curves.point(3, 24, episode_return=None, validation_return=0.01)
    assert not curves.due(5) and curves.due(7)  # a jump past 6 is due once
    curves.observe(_stats(10.0, 4))
    curves.point(7, 56, episode_return=-0.5, validation_return=float("nan"))
    assert curves.updates == [3, 7] and curves.env_steps == [24, 56]
    assert curves.series["loss"] == [pytest.approx(2.0), 10.0] and curves.series["mean_q"][0] == pytest.approx(4.0)
    assert curves.series["mean_abs_td"] == [pytest.approx(6.0), 30.0]
    assert curves.series["episode_return"] == [None, -0.5]
    assert curves.series["validation_return"] == [0.01, None]  # a non-finite value is no value
    again = LearningCurves.from_dict(curves.as_dict())
    assert again.as_dict() == curves.as_dict() and set(again.series) == set(SERIES)


def test_a_point_without_steps_has_no_learning_figures_and_k_must_be_positive() -> None:
    curves = LearningCurves(every_updates=1)
    curves.point(1, 8, 0.0)
    assert [curves.series[name][0] for name in ("loss", "mean_q", "mean_abs_td")] == [None, None, None]
    with pytest.raises(ValueError, match="every_updates"):
        LearningCurves(every_updates=0)
