"""Tests of market/stats.py: the deflated Sharpe ratio reproduces the worked example of Bailey and López de Prado
(2014); the minimum track-record length is the length at which the PSR reaches its confidence; PBO is near 0.5
on trials of pure noise and near 0 when one trial has a planted edge (seeded)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from market.errors import DataError
from market.stats import (
    deflated_sharpe,
    expected_max_sharpe,
    min_track_record_length,
    moments,
    pbo_cscv,
    probabilistic_sharpe,
)


def test_dsr_reproduces_the_worked_example_of_the_2014_paper() -> None:
    # Bailey & López de Prado (2014), section "A numerical example": N = 100 trials whose annualised Sharpe
    # ratios have variance 0.5, the best has an annualised Sharpe of 2.5 over T = 1,250 daily returns (5 years of
    # 250 days) with skewness -3 and kurtosis 10. Per day: V = 0.5 / 250, SR = 2.5 / sqrt(250) = 0.1581.
    # The paper finds SR0 = 0.1132 per day (the expected maximum of 100 luck-only trials) and DSR = 0.9004.
    # By hand: sqrt(0.002) * ((1 - 0.5772) * 2.3263 + 0.5772 * 2.6822) = 0.04472 * 2.5318 = 0.11322;
    # z = (0.15811 - 0.11322) * sqrt(1249) / sqrt(1 + 3 * 0.15811 + 9/4 * 0.15811^2) = 1.5866 / 1.2372 = 1.2824.
    days = 250
    bench = expected_max_sharpe(100, 0.5 / days)
    assert bench == pytest.approx(0.1132, abs=5e-5)
    d = deflated_sharpe(2.5 / math.sqrt(days), 1_250, n_trials=100, sr_variance=0.5 / days, skew=-3.0, kurtosis=10.0)
    assert d.benchmark == pytest.approx(bench)
    assert d.dsr == pytest.approx(0.9004, abs=5e-4)
    assert "100 trial(s)" in d.assumptions() and "i.i.d." in d.assumptions()
    # one trial: no deflation, the DSR is the PSR against 0
    one = deflated_sharpe(0.05, 1_000, n_trials=1, sr_variance=0.1)
    assert one.benchmark == 0.0 and one.dsr == pytest.approx(probabilistic_sharpe(0.05, 1_000, 0.0))


def test_more_trials_or_more_spread_deflate_more() -> None:
    base = deflated_sharpe(0.1, 1_000, n_trials=10, sr_variance=1e-3).dsr
    assert deflated_sharpe(0.1, 1_000, n_trials=1_000, sr_variance=1e-3).dsr < base
    assert deflated_sharpe(0.1, 1_000, n_trials=10, sr_variance=1e-2).dsr < base


def test_min_track_record_length_is_where_the_psr_reaches_its_confidence() -> None:
    sr, skew, kurt = 0.08, -0.5, 6.0
    n = min_track_record_length(sr, 0.0, skew=skew, kurtosis=kurt, confidence=0.95)
    assert probabilistic_sharpe(sr, math.ceil(n), 0.0, skew=skew, kurtosis=kurt) >= 0.95
    assert probabilistic_sharpe(sr, math.floor(n) - 1, 0.0, skew=skew, kurtosis=kurt) < 0.95
    # normal returns, SR 0.1: 1 + (1 + 0.5 * 0.01) * (1.6449 / 0.1)^2 = 272.9
    assert min_track_record_length(0.1) == pytest.approx(1 + 1.005 * (1.6448536 / 0.1) ** 2, rel=1e-6)
    assert min_track_record_length(0.0) == math.inf


def test_moments_of_a_known_series() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.01])
    sr, skew, kurt, n = moments(r)
    assert n == 5 and sr == pytest.approx(r.mean() / r.std(ddof=1))
    z = (r - r.mean()) / r.std()
    assert skew == pytest.approx(np.mean(z**3)) and kurt == pytest.approx(np.mean(z**4))
    assert moments(np.full(10, 0.001))[:3] == (0.0, 0.0, 3.0)


def test_pbo_is_near_one_half_on_pure_noise() -> None:
    # 40 trials of i.i.d. N(0, 1%) returns over 2,000 steps: the in-sample best is a random trial out of sample, so
    # its rank is uniform and PBO ~ 0.5. One seed's PBO is noisy (its splits share blocks; sd ~0.18 measured over
    # 16 seeds), so: every seed's PBO in [0.1, 0.9], and the mean of 16 seeds in [0.38, 0.62] (~2.5 sd of a mean).
    pbos = []
    for seed in range(16):
        rng = np.random.default_rng(seed)
        pbos.append(pbo_cscv(rng.normal(0.0, 0.01, size=(2_000, 40)), n_blocks=10).pbo)
    assert all(0.1 <= p <= 0.9 for p in pbos), pbos
    assert 0.38 <= float(np.mean(pbos)) <= 0.62, pbos


def test_pbo_is_near_zero_when_one_trial_has_a_real_edge() -> None:
    # The same noise, one trial with a mean of 0.2% per step (per-step Sharpe 0.2, about 6 standard errors over
    # a half of the steps): best in and out of sample in almost every split. Tolerance: PBO <= 0.05 per seed.
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        m = rng.normal(0.0, 0.01, size=(2_000, 40))
        m[:, 7] += 0.002
        result = pbo_cscv(m, n_blocks=10)
        assert result.pbo <= 0.05, (seed, result.pbo)
        assert result.n_splits == math.comb(10, 5) and result.n_trials == 40
        assert "10 blocks" in result.assumptions()


def test_pbo_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(DataError, match="at least 2 trials"):
        pbo_cscv(np.zeros((100, 1)))
    with pytest.raises(DataError, match="even number"):
        pbo_cscv(np.zeros((100, 3)), n_blocks=5)
    with pytest.raises(DataError, match="need at least 32 steps"):
        pbo_cscv(np.zeros((20, 3)), n_blocks=16)
