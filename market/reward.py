"""The reward: the change in log equity net of every cost, plus optional shaping terms, bounded.

Pure functions on arrays, used by the env; each term only reads data known when it is paid (delayed terms
are paid once their horizon has passed). Never touches the venue's books or the env's state.

Terms (weights in :class:`RewardConfig`, all 0 by default = shaping off, the reward is then the base term
clipped to ``clip``). Per step, after acting at t and arriving at t+1::

    reward = clip( base * ((1 - w_vol) + w_vol * vol_scale[t+1])
                   - w_freq  * max(0, trade_rate / max_trades_per_min - 1)
                   + w_pred  * d[t+1-h] * sign(log close[t+1] - log close[t+1-h])
                   + w_align * d[t] * cnn_signal[t]
                   + w_pivot * d[t+1-D] * pivot_label[t+1-D],  -clip, clip)

with ``base = log(equity[t+1] / equity[t])`` (equity after fees, slippage, funding and liquidation), ``d[s]``
the position direction held after acting at s (-1, 0, +1), ``h`` the prediction horizon and ``D`` the pivot
strength. Log-equity changes are ~1e-3 a minute, so useful shaping weights are of that order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from .config import StrictModel

#: Names of the reward terms, in the order :func:`total_reward` takes them.
TERMS: tuple[str, ...] = ("base", "frequency", "prediction", "alignment", "pivot", "vol_scale")

_EQUITY_FLOOR = 1e-12


class RewardConfig(StrictModel):
    """Weights and parameters of the reward terms; every weight 0 (the default) turns shaping off.

    ``frequency_weight`` penalises trading above ``max_trades_per_min`` (an exponential moving rate with a
    one-minute time constant). ``prediction_weight`` pays, ``prediction_horizon`` steps later, +1 when the
    position held then had the sign of the move since, -1 when opposite, 0 when flat. ``alignment_weight``
    pays the position times the CNN's signal at the step (a per-step array in [-1, 1] given to the env).
    ``pivot_weight`` pays, ``pivot_strength`` steps later, +1 for being long at a swing low or short at a swing
    high (a strict extreme of the ``2 * strength + 1`` bars around it), -1 for the opposite.
    ``volatility_weight`` in [0, 1] blends the base term towards ``base * sqrt(long var / short var)``
    (clipped to [1/4, 4]), shrinking rewards in turbulent regimes. The total is clipped to ``+-clip``.
    """

    clip: float = Field(1.0, gt=0.0)
    frequency_weight: float = Field(0.0, ge=0.0)
    max_trades_per_min: float = Field(10.0, gt=0.0)
    prediction_weight: float = Field(0.0, ge=0.0)
    prediction_horizon: int = Field(5, ge=1, le=10_000)
    alignment_weight: float = Field(0.0, ge=0.0)
    pivot_weight: float = Field(0.0, ge=0.0)
    pivot_strength: int = Field(2, ge=1, le=1_000)
    volatility_weight: float = Field(0.0, ge=0.0, le=1.0)
    volatility_short_halflife: int = Field(30, ge=1)
    volatility_long_halflife: int = Field(1000, ge=1)

    @property
    def history(self) -> int:
        """Steps of position history the delayed terms need (the ring the env keeps)."""
        return max(self.prediction_horizon, self.pivot_strength) + 1


def log_equity_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``log(after / before)``, with both floored at a tiny positive equity (a wiped-out account)."""
    return np.log(np.maximum(after, _EQUITY_FLOOR)) - np.log(np.maximum(before, _EQUITY_FLOOR))


def update_trade_rate(rate_per_min: np.ndarray, trades: np.ndarray, dt_ms: np.ndarray | float) -> np.ndarray:
    """Exponential moving average of trades per minute with a one-minute time constant.

    ``rate <- a * rate + (1 - a) * trades / dt_min`` with ``a = exp(-dt_min)``: a steady ``r`` trades a
    minute reads ``r`` whatever the step length.
    """
    dt_min = np.maximum(np.asarray(dt_ms, dtype=np.float64), 1.0) / 60_000.0
    a = np.exp(-dt_min)
    return a * rate_per_min + (1.0 - a) * trades / dt_min


def frequency_penalty(rate_per_min: np.ndarray, max_per_min: float) -> np.ndarray:
    """``max(0, rate / max_per_min - 1)``: zero at or below the allowed rate, linear above it."""
    return np.maximum(rate_per_min / max_per_min - 1.0, 0.0)


def direction_correctness(direction: np.ndarray, log_return: np.ndarray) -> np.ndarray:
    """+1 where the position had the sign of the move, -1 where it had the opposite, 0 flat or no move."""
    return direction * np.sign(log_return)


def pivot_labels(high: np.ndarray, low: np.ndarray, strength: int) -> np.ndarray:
    """Swing label of each bar: +1 swing low, -1 swing high, 0 neither (or both, an outside bar).

    A bar is a swing low when its low is strictly below every other low of the ``2 * strength + 1`` bars
    centred on it (the same for highs). The label of bar p uses bars up to ``p + strength`` and is therefore
    known only at step ``p + strength``; bars closer than ``strength`` to either end are 0.

    Returns
    -------
    array [T] int8
    """
    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    n = high.shape[0]
    out = np.zeros(n, dtype=np.int8)
    s = int(strength)
    if n < 2 * s + 1:
        return out
    win_lo = np.lib.stride_tricks.sliding_window_view(low, 2 * s + 1)
    win_hi = np.lib.stride_tricks.sliding_window_view(high, 2 * s + 1)
    others_lo = np.minimum(win_lo[:, :s].min(axis=1), win_lo[:, s + 1 :].min(axis=1))
    others_hi = np.maximum(win_hi[:, :s].max(axis=1), win_hi[:, s + 1 :].max(axis=1))
    is_low = low[s : n - s] < others_lo
    is_high = high[s : n - s] > others_hi
    out[s : n - s] = is_low.astype(np.int8) - is_high.astype(np.int8)
    return out


def volatility_scale(close: np.ndarray, short_halflife: int, long_halflife: int) -> np.ndarray:
    """``sqrt(long var / short var)`` of log returns, clipped to [1/4, 4]; 1 where the short var is 0.

    Both variances are exponential moving averages of squared one-step log returns up to and including
    step t (causal), so the value at t is known at t.
    """
    close = np.asarray(close, dtype=np.float64)
    r2 = np.zeros_like(close)
    r2[1:] = np.diff(np.log(close)) ** 2
    series = pd.Series(r2)
    short = series.ewm(halflife=short_halflife, adjust=False).mean().to_numpy()
    long = series.ewm(halflife=long_halflife, adjust=False).mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(long / short)
    return np.where(short > 0, np.clip(scale, 0.25, 4.0), 1.0)


def total_reward(
    config: RewardConfig,
    base: np.ndarray,
    *,
    frequency: np.ndarray | float = 0.0,
    prediction: np.ndarray | float = 0.0,
    alignment: np.ndarray | float = 0.0,
    pivot: np.ndarray | float = 0.0,
    vol_scale: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Combine the terms with the config's weights and clip to ``+-config.clip`` (see the module doc).

    Parameters
    ----------
    config : RewardConfig
    base : array [K]
        :func:`log_equity_change` of the step.
    frequency : array [K]
        :func:`frequency_penalty` (a cost: subtracted).
    prediction, alignment, pivot : arrays [K]
        Scores in [-1, 1] (0 where not due).
    vol_scale : array [K]
        :func:`volatility_scale` at the arrival step.
    """
    w = config.volatility_weight
    total = base * ((1.0 - w) + w * vol_scale) if w else np.asarray(base, dtype=np.float64)
    if config.frequency_weight:
        total = total - config.frequency_weight * frequency
    if config.prediction_weight:
        total = total + config.prediction_weight * prediction
    if config.alignment_weight:
        total = total + config.alignment_weight * alignment
    if config.pivot_weight:
        total = total + config.pivot_weight * pivot
    return np.clip(total, -config.clip, config.clip)
