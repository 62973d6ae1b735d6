"""A causal market-regime label per step: trend up, trend down, range or high volatility, from the state's own
regime features (``market.regime``) at that step and thresholds fitted on a training span only.

Owns the rule, its thresholds and per-regime scores of per-step returns. Never reads a row after the step it
labels, and never fits a threshold on the span it labels (the caller gives the training span).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError
from .metrics import block_bootstrap_ci
from .regime import FEATURE_INDEX

#: Regime labels, by code.
REGIMES: tuple[str, ...] = ("trend_up", "trend_down", "range", "high_vol")
VOL_COLUMN = "vol_pct_medium"
TREND_COLUMN = "trend_tstat_medium"
#: Quantiles of the training span that set the thresholds.
VOL_QUANTILE = 0.8
TREND_QUANTILE = 0.7
#: A regime with fewer steps than this in a span gets no interval and does not count in the "3 regimes" line.
MIN_REGIME_STEPS = 30


@dataclass(frozen=True, slots=True)
class RegimeThresholds:
    """High volatility at ``vol_pct_medium >= vol_high``; else a trend where ``|trend_tstat_medium| >= trend``
    (up or down by its sign); else range. Both fitted on ``fitted_on`` steps."""

    vol_high: float
    trend: float
    fitted_on: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "vol_high": self.vol_high,
            "trend": self.trend,
            "fitted_on": list(self.fitted_on),
            "rule": self.describe(),
        }

    def describe(self) -> str:
        """The rule in one line."""
        return (
            f"high_vol where {VOL_COLUMN} >= {self.vol_high:.3f} (its {VOL_QUANTILE:.0%} quantile on training steps "
            f"[{self.fitted_on[0]}, {self.fitted_on[1]})), else trend_up / trend_down where |{TREND_COLUMN}| >= "
            f"{self.trend:.3f} (its {TREND_QUANTILE:.0%} quantile there) by its sign, else range"
        )


def _columns(regime: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(regime)
    if x.ndim != 2 or x.shape[1] <= max(FEATURE_INDEX[VOL_COLUMN], FEATURE_INDEX[TREND_COLUMN]):
        raise DataError(f"regime features: expected [T, 20], got shape {x.shape}")
    return x[:, FEATURE_INDEX[VOL_COLUMN]].astype(np.float64), x[:, FEATURE_INDEX[TREND_COLUMN]].astype(np.float64)


def fit_thresholds(regime: np.ndarray, start: int, end: int) -> RegimeThresholds:
    """Thresholds from the regime features of training steps ``[start, end)`` only.

    Raises
    ------
    DataError
        When the span has fewer than 10 steps or is off the array.
    """
    n = np.shape(regime)[0]
    if not 0 <= start < end <= n or end - start < 10:
        raise DataError(f"regime thresholds on steps [{start}, {end}) of {n}: need at least 10 steps on the array")
    vol, trend = _columns(np.asarray(regime)[start:end])
    return RegimeThresholds(
        vol_high=float(np.quantile(vol, VOL_QUANTILE)),
        trend=float(np.quantile(np.abs(trend), TREND_QUANTILE)),
        fitted_on=(int(start), int(end)),
    )


def label_regimes(regime: np.ndarray, thresholds: RegimeThresholds) -> np.ndarray:
    """The regime code (index into :data:`REGIMES`) of every row; row t reads row t only. int8 [T]."""
    vol, trend = _columns(regime)
    out = np.full(vol.shape[0], REGIMES.index("range"), dtype=np.int8)
    out[trend >= thresholds.trend] = REGIMES.index("trend_up")
    out[trend <= -thresholds.trend] = REGIMES.index("trend_down")
    out[vol >= thresholds.vol_high] = REGIMES.index("high_vol")
    return out


def regime_scores(
    labels: np.ndarray,
    returns: Mapping[str, np.ndarray],
    *,
    against: tuple[str, str],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Per regime: steps, and per strategy the mean per-step log return with a block-bootstrap interval; and the
    paired difference ``against[0] - against[1]`` with its interval.

    Parameters
    ----------
    labels : array [n]
        The regime code at each return's decision step.
    returns : mapping of name -> array [n]
        Per-step log returns over the same steps.
    against : (str, str)
        The strategy and the baseline it must beat.

    Returns
    -------
    dict with ``regimes`` (name -> {steps, share, strategies: {name: {mean, low, high}}, difference: {...},
    beats}) and ``beats`` (how many regimes of at least :data:`MIN_REGIME_STEPS` steps have a positive
    difference whose interval lies above 0), ``beats_point`` (positive difference, interval ignored) and
    ``counted`` (regimes with enough steps).
    """
    lab = np.asarray(labels)
    for name, r in returns.items():
        if np.shape(r) != lab.shape:
            raise DataError(f"regime scores: {name} has {np.shape(r)} returns for {lab.shape} labels")
    out: dict[str, Any] = {}
    beats = beats_point = counted = 0
    for code, regime in enumerate(REGIMES):
        mask = lab == code
        k = int(mask.sum())
        entry: dict[str, Any] = {"steps": k, "share": float(k / max(lab.size, 1)), "strategies": {}}
        for name, r in returns.items():
            entry["strategies"][name] = _mean_ci(np.asarray(r)[mask], n_resamples, seed, alpha)
        diff = np.asarray(returns[against[0]])[mask] - np.asarray(returns[against[1]])[mask]
        entry["difference"] = _mean_ci(diff, n_resamples, seed, alpha)
        if k >= MIN_REGIME_STEPS:
            counted += 1
            d = entry["difference"]
            beats_point += int(d["mean"] > 0)
            beats += int(d["low"] is not None and d["low"] > 0)
        entry["beats"] = bool(k >= MIN_REGIME_STEPS and entry["difference"]["mean"] > 0)
        out[regime] = entry
    return {
        "regimes": out,
        "beats": beats,
        "beats_point": beats_point,
        "counted": counted,
        "against": list(against),
    }


def _mean_ci(x: np.ndarray, n_resamples: int, seed: int, alpha: float) -> dict[str, Any]:
    if x.size == 0:
        return {"mean": float("nan"), "low": None, "high": None}
    if x.size < MIN_REGIME_STEPS:
        return {"mean": float(x.mean()), "low": None, "high": None}
    ci = block_bootstrap_ci(x, lambda v: v.mean(axis=-1), n_resamples=n_resamples, seed=seed, alpha=alpha)
    return {"mean": float(x.mean()), "low": ci.low, "high": ci.high}
