"""Metrics equal their closed forms on hand-made curves; block-bootstrap intervals are seeded, cover the true
mean at about their nominal rate, and keep the dependence an i.i.d. bootstrap loses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from market import metrics
from market.baselines import YEAR_MS as BASELINES_YEAR_MS
from market.baselines import sharpe_ratio
from market.errors import DataError

MINUTE = 60_000
ANN_1M = np.sqrt(metrics.YEAR_MS / MINUTE)


def curve_of(r: np.ndarray, start: float = 100.0) -> np.ndarray:
    return start * np.exp(np.concatenate([[0.0], np.cumsum(r)]))


def test_total_return_and_log_returns_of_a_hand_made_curve() -> None:
    e = np.array([100.0, 110.0, 99.0])
    assert metrics.total_return(e) == pytest.approx(-0.01, abs=1e-15)
    np.testing.assert_allclose(metrics.log_returns(e), [np.log(1.1), np.log(0.9)], rtol=1e-13)
    assert metrics.compound_return(metrics.log_returns(e)) == pytest.approx(-0.01, abs=1e-14)


def test_constant_growth_has_infinite_sharpe_and_sortino_and_no_drawdown() -> None:
    e = 100.0 * 1.001 ** np.arange(500)
    r = metrics.log_returns(e)
    assert metrics.sharpe(r, MINUTE) == np.inf and metrics.sortino(r, MINUTE) == np.inf
    assert metrics.sharpe(-r, MINUTE) == -np.inf
    assert metrics.max_drawdown(e) == 0.0
    assert metrics.total_return(e) == pytest.approx(1.001**499 - 1.0, rel=1e-12)


def test_a_curve_that_never_moves_scores_zero_everywhere() -> None:
    e = np.full(50, 10_000.0)
    r = metrics.log_returns(e)
    assert (
        metrics.total_return(e),
        metrics.sharpe(r, MINUTE),
        metrics.sortino(r, MINUTE),
        metrics.max_drawdown(e),
    ) == (0.0, 0.0, 0.0, 0.0)
    assert metrics.sharpe(np.array([0.01]), MINUTE) == 0.0  # one return has no spread to speak of


def test_sharpe_is_the_annualised_closed_form_and_agrees_with_the_baselines_definition() -> None:
    r = np.array([0.01, -0.005, 0.02, 0.0])
    assert metrics.sharpe(r, MINUTE) == pytest.approx(r.mean() / r.std(ddof=1) * ANN_1M, rel=1e-12)
    assert metrics.sharpe(r, 1_000) == pytest.approx(metrics.sharpe(r, MINUTE) * np.sqrt(60), rel=1e-12)
    walk = np.random.default_rng(3).normal(0.0, 1e-3, 400)
    assert metrics.YEAR_MS == BASELINES_YEAR_MS
    assert metrics.sharpe(walk, MINUTE) == pytest.approx(sharpe_ratio(curve_of(walk), MINUTE), rel=1e-9)


def test_sortino_divides_by_the_downside_deviation_over_all_steps() -> None:
    r = np.array([0.03, -0.01, 0.01, -0.01])
    downside = np.sqrt((0.01**2 + 0.01**2) / 4)
    assert metrics.sortino(r, MINUTE) == pytest.approx(0.005 / downside * ANN_1M, rel=1e-12)
    assert metrics.sortino(np.array([0.01, 0.0, 0.02]), MINUTE) == np.inf  # no losing step


def test_max_drawdown_is_the_largest_fall_from_a_running_peak() -> None:
    assert metrics.max_drawdown(np.array([100.0, 120.0, 90.0, 130.0, 117.0])) == pytest.approx(0.25)
    assert metrics.max_drawdown(np.array([100.0, 50.0, 200.0, 150.0])) == pytest.approx(0.5)


def test_ratios_of_a_matrix_are_the_ratios_of_its_rows() -> None:
    rows = np.random.default_rng(0).normal(0.0, 1e-3, (5, 60))
    np.testing.assert_allclose(metrics.sharpe(rows, MINUTE), [metrics.sharpe(x, MINUTE) for x in rows], rtol=1e-12)
    np.testing.assert_allclose(metrics.sortino(rows, MINUTE), [metrics.sortino(x, MINUTE) for x in rows], rtol=1e-12)
    np.testing.assert_allclose(metrics.compound_return(rows), [metrics.compound_return(x) for x in rows], rtol=1e-12)


def test_round_trips_count_exits_to_flat_flips_and_a_trip_still_open_at_the_end() -> None:
    # steps:      0    1    2    3    4     5     6    7
    held = [0, 1, 1, 0, -1, 1, 1, 1]
    e = np.array([100.0, 99.9, 102.0, 101.0, 100.9, 100.0, 98.0, 99.0, 97.0])
    trips = metrics.round_trip_returns(held, e)
    # long entered at 1, exit order at 3 (its fee in step 3): e[4] / e[1]; short entered at 4, flipped at 5:
    # e[5] / e[4]; long from 5 to the last mark: e[8] / e[5]
    np.testing.assert_allclose(trips, [100.9 / 99.9 - 1, 100.0 / 100.9 - 1, 97.0 / 100.0 - 1], rtol=1e-15)
    assert metrics.win_rate(held, e) == pytest.approx(1 / 3)
    assert metrics.exposure(held) == pytest.approx(6 / 8)


def test_win_rate_is_undefined_without_a_round_trip_and_exposure_is_zero_flat() -> None:
    assert np.isnan(metrics.win_rate(np.zeros(4), np.full(5, 1.0)))
    assert metrics.exposure(np.zeros(4)) == 0.0 and metrics.exposure([]) == 0.0


def test_bad_inputs_are_refused_with_what_was_wrong() -> None:
    with pytest.raises(DataError, match=r"equity\[1\] = nan"):
        metrics.total_return([1.0, np.nan])
    with pytest.raises(DataError, match="3 values for an equity curve of 3 marks"):
        metrics.round_trip_returns([0, 1, 1], [1.0, 1.0, 1.0])
    with pytest.raises(DataError, match=r"values\[2\]"):
        metrics.block_bootstrap_ci([0.1, 0.2, np.inf], lambda s: s.mean(axis=-1))
    with pytest.raises(DataError, match="alpha"):
        metrics.block_bootstrap_ci([0.1, 0.2, 0.3], lambda s: s.mean(axis=-1), alpha=1.5)


@given(st.lists(st.floats(-0.2, 0.2, allow_nan=False), min_size=1, max_size=60), st.floats(0.01, 1e6))
def test_drawdown_is_a_fraction_invariant_to_scale_and_returns_compound_to_the_total(
    steps: list[float], scale: float
) -> None:
    e = curve_of(np.array(steps), 1.0)
    dd = metrics.max_drawdown(e)
    assert 0.0 <= dd < 1.0
    assert metrics.max_drawdown(e * scale) == pytest.approx(dd, abs=1e-12)
    assert metrics.compound_return(metrics.log_returns(e)) == pytest.approx(
        metrics.total_return(e), rel=1e-9, abs=1e-12
    )


def test_block_length_rule_is_the_cube_root_rounded_up() -> None:
    assert [metrics.block_length(n) for n in (1, 2, 8, 9, 27, 1000, 1001)] == [1, 2, 2, 3, 3, 10, 11]


@given(st.integers(1, 80), st.integers(1, 12), st.integers(0, 2**32))
def test_stationary_resamples_are_wrapped_runs_of_consecutive_indices(n: int, block: int, seed: int) -> None:
    idx = metrics.bootstrap_indices(n, block, 400, np.random.default_rng(seed), "stationary")
    assert idx.shape == (400, n) and idx.min() >= 0 and idx.max() < n
    # A step continues its block (the next index, wrapping past the end) with probability 1 - 1/block, or starts
    # a new block, which lands exactly one further on with probability 1/n: blocks of geometric mean length.
    if n >= 20:
        frac = (idx[:, 1:] == (idx[:, :-1] + 1) % n).mean()
        expected = 1 - 1 / block + 1 / (block * n)
        assert abs(frac - expected) < 0.05  # >= 7,600 steps: sd of frac <= 0.006


@given(st.integers(1, 80), st.integers(1, 12), st.integers(0, 2**32))
def test_moving_resamples_are_whole_blocks_laid_end_to_end(n: int, block: int, seed: int) -> None:
    idx = metrics.bootstrap_indices(n, block, 5, np.random.default_rng(seed), "moving")
    b = min(block, n)
    assert idx.shape == (5, n) and idx.min() >= 0 and idx.max() < n
    for start in range(0, n, b):
        part = idx[:, start : start + b]
        np.testing.assert_array_equal(part, part[:, :1] + np.arange(part.shape[1]))  # consecutive, no wrap


def test_bootstrap_is_deterministic_for_a_seed_and_moves_with_it() -> None:
    x = np.random.default_rng(1).normal(size=300)
    mean = lambda s: s.mean(axis=-1)  # noqa: E731
    a = metrics.block_bootstrap_ci(x, mean, seed=11)
    assert a == metrics.block_bootstrap_ci(x, mean, seed=11)
    b = metrics.block_bootstrap_ci(x, mean, seed=12)
    assert (a.low, a.high) != (b.low, b.high)
    assert a.estimate == pytest.approx(x.mean()) and a.low < a.estimate < a.high
    assert (a.block, a.n_resamples, a.alpha, a.method) == (metrics.block_length(300), 1000, 0.05, "stationary")


def test_several_statistics_share_the_same_resamples() -> None:
    x = np.random.default_rng(2).normal(0.0, 1e-3, 200)
    both = metrics.block_bootstrap_cis(
        x, {"ret": metrics.compound_return, "sharpe": lambda s: metrics.sharpe(s, MINUTE)}, seed=5
    )
    assert both["ret"] == metrics.block_bootstrap_ci(x, metrics.compound_return, seed=5)
    assert both["sharpe"] == metrics.block_bootstrap_ci(x, lambda s: metrics.sharpe(s, MINUTE), seed=5)


def test_interval_of_an_infinite_statistic_stays_defined() -> None:
    ci = metrics.block_bootstrap_ci(np.full(50, 1e-3), lambda s: metrics.sharpe(s, MINUTE), seed=0)
    assert (ci.estimate, ci.low, ci.high) == (np.inf, np.inf, np.inf)


@pytest.mark.parametrize("method", ["stationary", "moving"])
def test_interval_covers_the_true_mean_at_about_the_nominal_rate_on_iid_normal_data(method: str) -> None:
    # 200 trials of n = 200 i.i.d. N(0.3, 1) at a nominal 90%. The hit count is Binomial(200, p) with p near 0.90
    # (sd 0.021), and the percentile interval of a mean of 200 normals undercovers by about a point. A band of
    # 0.06 around 0.90 (about 3 sd) holds for a correct interval (0.87 stationary, 0.885 moving with these fixed
    # seeds) and fails for one 25% too narrow (0.73 / 0.75 on the same draws). Seeds are fixed: never flaky.
    rng = np.random.default_rng(2024)
    hits = 0
    for trial in range(200):
        x = rng.normal(0.3, 1.0, 200)
        ci = metrics.block_bootstrap_ci(
            x, lambda s: s.mean(axis=-1), n_resamples=1000, seed=trial, alpha=0.1, method=method
        )
        hits += ci.low <= 0.3 <= ci.high
    assert 0.84 <= hits / 200 <= 0.96


def test_blocks_keep_the_dependence_that_an_iid_bootstrap_loses() -> None:
    # AR(1) with phi = 0.6: the mean's variance is (1 + phi) / (1 - phi) = 4 times the i.i.d. one, so an interval
    # from single-value blocks is about half as wide as it should be and covers ~58% at a nominal 90%.
    rng = np.random.default_rng(7)
    trials, n, phi = 100, 400, 0.6
    noise = rng.normal(size=(trials, n))
    x = np.empty_like(noise)
    x[:, 0] = noise[:, 0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    cover = {}
    for block in (1, None):
        hits = 0
        for i in range(trials):
            ci = metrics.block_bootstrap_ci(
                x[i], lambda s: s.mean(axis=-1), block=block, n_resamples=500, seed=i, alpha=0.1
            )
            hits += ci.low <= 0.0 <= ci.high
        cover[block] = hits / trials
    assert cover[1] < 0.72
    assert cover[None] > cover[1] + 0.12
