"""market.synthetic: determinism, record invariants, correlation, regime switching, clustering, labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.datasets import kline_quality
from market.errors import ConfigError
from market.records import BAR_DTYPE, TRADE_DTYPE
from market.synthetic import (
    SYNTHETIC_LABEL,
    Regime,
    SyntheticConfig,
    synthetic_bars,
    synthetic_trades,
)

START = 1_722_470_400_000  # 2024-08-01 00:00 UTC
HOUR = 3_600_000
DAY = 24 * HOUR
SYMBOLS = ("ETHUSDT", "BTCUSDT")

FAST_SWITCHING = SyntheticConfig(
    regimes=(
        Regime("calm", 0.0, 0.5e-4, 0.0, 3.0, 120.0),
        Regime("stressed", 0.0, 3.0e-4, 0.0, 12.0, 120.0),
    ),
    transitions=((0.0, 1.0), (1.0, 0.0)),
)


def _last_price_per_bucket(trades: np.ndarray, start_ms: int, bucket_ms: int, n: int) -> np.ndarray:
    """Last trade price in each bucket, carried forward over empty buckets."""
    bucket = (trades["time_ms"] - start_ms) // bucket_ms
    last = np.full(n, np.nan)
    last[bucket] = trades["price"]  # later trades overwrite earlier ones in the same bucket
    idx = np.where(np.isfinite(last), np.arange(n), 0)
    np.maximum.accumulate(idx, out=idx)
    return last[idx]


def test_same_seed_gives_identical_trades_and_bars() -> None:
    a, b = synthetic_trades(START, 600_000, seed=11), synthetic_trades(START, 600_000, seed=11)
    for s in SYMBOLS:
        np.testing.assert_array_equal(a.trades[s], b.trades[s])
    np.testing.assert_array_equal(a.regimes, b.regimes)
    x, y = synthetic_bars(START, DAY, seed=11), synthetic_bars(START, DAY, seed=11)
    for s in SYMBOLS:
        np.testing.assert_array_equal(x.bars[s], y.bars[s])


def test_different_seeds_give_different_markets() -> None:
    a, b = synthetic_trades(START, 600_000, seed=1), synthetic_trades(START, 600_000, seed=2)
    for s in SYMBOLS:
        n = min(a.trades[s].size, b.trades[s].size)
        assert not np.array_equal(a.trades[s]["price"][:n], b.trades[s]["price"][:n])
    x, y = synthetic_bars(START, DAY, seed=1), synthetic_bars(START, DAY, seed=2)
    assert not np.array_equal(x.bars["ETHUSDT"]["close"], y.bars["ETHUSDT"]["close"])


def test_everything_returned_is_labelled_synthetic() -> None:
    market = synthetic_trades(START, 10_000, seed=3)
    bars = synthetic_bars(START, HOUR, seed=3)
    for product in (market, bars):
        assert product.synthetic is True and product.label == SYNTHETIC_LABEL == "synthetic"
        assert product.metadata["synthetic"] == "true" and product.metadata["seed"] == "3"
        with pytest.raises(dataclasses.FrozenInstanceError):
            product.synthetic = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        type(market)(
            seed=0,
            start_ms=0,
            duration_ms=0,
            step_ms=1,
            trades={},
            regimes=np.zeros(0),
            regime_names=(),
            synthetic=False,
        )  # type: ignore[call-arg]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), seconds=st.integers(1, 900), start_s=st.integers(0, 2_000_000_000))
def test_trades_are_valid_records_in_time_and_id_order(seed: int, seconds: int, start_s: int) -> None:
    start = start_s * 1000
    market = synthetic_trades(start, seconds * 1000, seed=seed)
    assert market.regimes.shape == (seconds,)
    assert set(market.trades) == set(SYMBOLS)
    for trades in market.trades.values():
        assert trades.dtype == TRADE_DTYPE
        assert np.all(np.isfinite(trades["price"])) and np.all(trades["price"] > 0)
        assert np.all(np.isfinite(trades["qty"])) and np.all(trades["qty"] > 0)
        assert np.all(np.diff(trades["trade_id"]) > 0)
        assert np.all(np.diff(trades["time_ms"]) >= 0)
        if trades.size:
            assert trades["time_ms"][0] >= start and trades["time_ms"][-1] < start + seconds * 1000


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), bars=st.integers(1, 3000), interval=st.sampled_from(["1s", "1m", "1h"]))
def test_bars_are_contiguous_and_consistent(seed: int, bars: int, interval: str) -> None:
    product = synthetic_bars(
        START, bars * {"1s": 1000, "1m": 60_000, "1h": HOUR}[interval], seed=seed, interval=interval
    )
    for b in product.bars.values():
        assert b.dtype == BAR_DTYPE and b.size == bars
        assert np.all(b["low"] > 0) and np.all(np.isfinite(b["high"]))
        assert np.all(b["low"] <= np.minimum(b["open"], b["close"]))
        assert np.all(b["high"] >= np.maximum(b["open"], b["close"]))
        assert np.all(b["open"][1:] == b["close"][:-1])
        assert np.all(b["close_time_ms"] == b["open_time_ms"] + product.interval_ms - 1)
        np.testing.assert_allclose(b["buy_volume"] + b["sell_volume"], b["volume"])
        assert np.all(b["volume"] >= 0) and np.all(b["tick_count"] >= 0)
        assert np.all((b["volume"] > 0) == (b["tick_count"] > 0))
        assert kline_quality(b, product.interval_ms).is_complete


def test_eth_and_btc_returns_follow_the_configured_correlation() -> None:
    # trades: one-minute returns of the last traded price over four hours
    market = synthetic_trades(START, 4 * HOUR, seed=5, config=SyntheticConfig(reference_correlation=0.8))
    n = 4 * 60
    eth = np.diff(np.log(_last_price_per_bucket(market.trades["ETHUSDT"], START, 60_000, n)))
    btc = np.diff(np.log(_last_price_per_bucket(market.trades["BTCUSDT"], START, 60_000, n)))
    assert np.corrcoef(eth, btc)[0, 1] > 0.5

    def bar_corr(rho: float) -> float:
        product = synthetic_bars(START, 2 * DAY, seed=5, config=SyntheticConfig(reference_correlation=rho))
        e, b = (np.diff(np.log(product.bars[s]["close"])) for s in SYMBOLS)
        return float(np.corrcoef(e, b)[0, 1])

    assert bar_corr(0.8) > 0.6
    assert bar_corr(-0.8) < -0.3  # the parameter, not an accident, drives the sign


def test_regimes_switch_and_their_volatility_differs() -> None:
    market = synthetic_trades(START, 2 * HOUR, seed=9, config=FAST_SWITCHING)
    regimes = market.regimes
    switches = int(np.count_nonzero(np.diff(regimes)))
    assert switches >= 10 and set(np.unique(regimes)) == {0, 1}
    n = regimes.size
    returns = np.diff(np.log(_last_price_per_bucket(market.trades["ETHUSDT"], START, 1000, n)))
    during = regimes[1:]
    calm, stressed = returns[during == 0].std(), returns[during == 1].std()
    assert stressed > 3 * calm

    product = synthetic_bars(START, 5 * DAY, seed=9)  # default three regimes on 1m bars
    r = np.diff(np.log(product.bars["ETHUSDT"]["close"]))
    vols = [r[product.regimes[1:] == k].std() for k in range(3)]
    assert np.count_nonzero(np.diff(product.regimes)) > 5
    assert vols[0] < vols[1] < vols[2]


def _counts_per_30s(config: SyntheticConfig) -> np.ndarray:
    trades = synthetic_trades(START, HOUR, seed=4, config=config).trades["ETHUSDT"]
    return np.bincount((trades["time_ms"] - START) // 30_000, minlength=120)


def test_trade_arrivals_cluster_beyond_poisson() -> None:
    one_regime = SyntheticConfig(
        regimes=(Regime("only", 0.0, 1e-4, 0.0, 5.0, 1e9),), transitions=((0.0,),), hawkes_branching=0.6
    )
    # counts over windows longer than the 5 s excitation: a constant-rate Poisson process has
    # variance / mean = 1; self-excitation inflates it towards 1 / (1 - branching)^2
    excited = _counts_per_30s(one_regime)
    assert excited.var() / excited.mean() > 2.5
    assert abs(excited.mean() / 30 - 5.0 / (1 - 0.6)) < 1.5  # stationary rate base / (1 - branching)

    flat = _counts_per_30s(dataclasses.replace(one_regime, hawkes_branching=0.0))
    assert flat.var() / flat.mean() < 1.6
    assert abs(flat.mean() / 30 - 5.0) < 0.5


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: synthetic_trades(START, 1500, seed=0), "duration_ms"),
        (lambda: synthetic_trades(START, 0, seed=0), "duration_ms"),
        (lambda: synthetic_bars(START, HOUR, seed=0, interval="7m"), "interval"),
        (
            lambda: synthetic_trades(START, 1000, seed=0, config=SyntheticConfig(reference_correlation=1.5)),
            "reference_correlation",
        ),
        (
            lambda: synthetic_trades(START, 1000, seed=0, config=SyntheticConfig(hawkes_branching=1.0)),
            "hawkes_branching",
        ),
        (
            lambda: synthetic_trades(START, 1000, seed=0, config=SyntheticConfig(transitions=((0.0, 1.0), (1.0, 0.0)))),
            "transitions",
        ),
    ],
)
def test_bad_parameters_raise_config_error_naming_them(call, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        call()
