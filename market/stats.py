"""Trial-aware statistics of a strategy's per-step returns: the probabilistic and deflated Sharpe ratios
(Bailey and López de Prado 2012, 2014), the minimum track-record length, and the probability of backtest
overfitting by combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado and Zhu 2017).

Pure numpy and the standard library over returns a caller recorded; never runs an env. Every Sharpe here is
per step (not annualised): the papers' formulas take the per-observation ratio and the number of observations.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from .errors import DataError

#: The Euler-Mascheroni constant (the expected maximum of N standard normals, Bailey and López de Prado 2014).
EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()
#: Most combinations PBO evaluates (C(16, 8) = 12,870 for the default 16 blocks).
MAX_COMBINATIONS = 20_000


def moments(returns: Any) -> tuple[float, float, float, int]:
    """Per-step Sharpe ratio (``mean / std`` with ``ddof=1``), skewness and (non-excess) kurtosis, and ``n``.

    A series without spread has Sharpe 0 (and skewness 0, kurtosis 3: the normal's, which assumes nothing).
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size < 2 or not np.isfinite(r).all():
        raise DataError(f"returns: expected at least 2 finite values in a 1-D array, got shape {r.shape}")
    sd = float(r.std(ddof=1))
    if sd <= 1e-15:
        return 0.0, 0.0, 3.0, int(r.size)
    z = (r - r.mean()) / r.std(ddof=0)
    return float(r.mean() / sd), float(np.mean(z**3)), float(np.mean(z**4)), int(r.size)


def _sr_scale(sr: float, skew: float, kurtosis: float) -> float:
    """``sqrt(1 - skew * SR + (kurtosis - 1) / 4 * SR^2)``: the Sharpe estimate's standard error times sqrt(n-1)."""
    v = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    return math.sqrt(max(v, 1e-12))


def probabilistic_sharpe(sr: float, n: int, benchmark: float, *, skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """PSR: the probability that the true per-step Sharpe exceeds ``benchmark``, given an estimate ``sr`` from
    ``n`` returns of this skewness and kurtosis (Bailey and López de Prado 2012, eq. 5).

    ``Z[(SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2)]``; assumes the returns are i.i.d. (not
    autocorrelated), which a strategy holding positions over many steps is not: read it as optimistic.
    """
    if n < 2:
        raise DataError(f"probabilistic Sharpe of {n} returns: need at least 2")
    return float(_NORMAL.cdf((sr - benchmark) * math.sqrt(n - 1) / _sr_scale(sr, skew, kurtosis)))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """The expected largest of ``n_trials`` per-step Sharpe estimates whose true value is 0 and whose variance
    across trials is ``sr_variance`` (Bailey and López de Prado 2014, eq. 2 with mean 0):

    ``sqrt(V) ((1 - gamma) Z^-1[1 - 1/N] + gamma Z^-1[1 - 1/(N e)])``; 0 for one trial.
    """
    if n_trials < 1 or sr_variance < 0 or not math.isfinite(sr_variance):
        raise DataError(f"expected max Sharpe of {n_trials} trials, variance {sr_variance}: need N >= 1, V >= 0")
    if n_trials == 1:
        return 0.0
    a = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    b = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * a + EULER_GAMMA * b)


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    """The deflated Sharpe ratio of one strategy and what it assumed.

    Attributes
    ----------
    dsr : float
        The probability that the true Sharpe exceeds the best of ``n_trials`` luck-only trials.
    sharpe : float
        The strategy's per-step Sharpe.
    benchmark : float
        ``expected_max_sharpe(n_trials, sr_variance)``, per step.
    n_trials, n : int
        Trials counted and returns in the strategy's track record.
    sr_variance : float
        Variance of the per-step Sharpe ratios across the trials.
    skew, kurtosis : float
    """

    dsr: float
    sharpe: float
    benchmark: float
    n_trials: int
    n: int
    sr_variance: float
    skew: float
    kurtosis: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {name: getattr(self, name) for name in self.__slots__}

    def assumptions(self) -> str:
        """What a reader must know to read :attr:`dsr`."""
        return (
            f"{self.n_trials} trial(s) on the same data with per-step Sharpe variance {self.sr_variance:.3g}; the "
            f"best of that many luck-only trials is expected at {self.benchmark:.4f} per step; returns i.i.d. "
            f"(skew {self.skew:.2f}, kurtosis {self.kurtosis:.2f} used), trials independent"
        )


def deflated_sharpe(
    sr: float, n: int, *, n_trials: int, sr_variance: float, skew: float = 0.0, kurtosis: float = 3.0
) -> DeflatedSharpe:
    """DSR (Bailey and López de Prado 2014): the PSR of ``sr`` against the expected maximum Sharpe of
    ``n_trials`` trials of variance ``sr_variance`` (every figure per step, ``n`` returns)."""
    bench = expected_max_sharpe(n_trials, sr_variance)
    dsr = probabilistic_sharpe(sr, n, bench, skew=skew, kurtosis=kurtosis)
    return DeflatedSharpe(
        dsr, float(sr), bench, int(n_trials), int(n), float(sr_variance), float(skew), float(kurtosis)
    )


def min_track_record_length(
    sr: float, benchmark: float = 0.0, *, skew: float = 0.0, kurtosis: float = 3.0, confidence: float = 0.95
) -> float:
    """MinTRL (Bailey and López de Prado 2012, eq. 11): the returns needed before ``sr`` (per step) is above
    ``benchmark`` with ``confidence``: ``1 + (1 - g3 SR + (g4 - 1)/4 SR^2) (Z_conf / (SR - SR*))^2``.

    ``inf`` when ``sr <= benchmark`` (no track record is long enough).
    """
    if not 0.5 < confidence < 1.0:
        raise DataError(f"min track record confidence {confidence}: expected in (0.5, 1)")
    if sr <= benchmark:
        return math.inf
    z = _NORMAL.inv_cdf(confidence)
    return 1.0 + _sr_scale(sr, skew, kurtosis) ** 2 * (z / (sr - benchmark)) ** 2


@dataclass(frozen=True, slots=True)
class Overfitting:
    """The probability of backtest overfitting (CSCV) and what it assumed.

    Attributes
    ----------
    pbo : float
        Share of the in-sample/out-of-sample splits where the trial best in sample ranks at or below the
        median out of sample (logit <= 0).
    logits : array [C]
        ``log(w / (1 - w))`` of the in-sample best's relative out-of-sample rank ``w``, per split.
    n_trials, n_blocks, n_splits, n : int
        Trials (columns), blocks the ``n`` rows were cut into, and splits evaluated.
    """

    pbo: float
    logits: np.ndarray
    n_trials: int
    n_blocks: int
    n_splits: int
    n: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the logits' quartiles, not each one)."""
        q = np.quantile(self.logits, [0.25, 0.5, 0.75]) if self.logits.size else [math.nan] * 3
        return {
            "pbo": self.pbo,
            "n_trials": self.n_trials,
            "n_blocks": self.n_blocks,
            "n_splits": self.n_splits,
            "n": self.n,
            "logit_quartiles": [float(v) for v in q],
        }

    def assumptions(self) -> str:
        """What a reader must know to read :attr:`pbo`."""
        return (
            f"{self.n_trials} trials' per-step returns on the same {self.n} steps, cut into {self.n_blocks} blocks; "
            f"{self.n_splits} splits of half the blocks in sample; performance = per-step Sharpe; the blocks keep "
            "each trial's serial dependence inside them, not across them"
        )


def pbo_cscv(returns: Any, n_blocks: int = 16) -> Overfitting:
    """PBO by combinatorially symmetric cross-validation over a ``[n, trials]`` matrix of per-step returns.

    The rows are cut into ``n_blocks`` (even) contiguous blocks; for every choice of half of them as the
    in-sample set (the rest out of sample), the trial with the best in-sample Sharpe is ranked among all
    trials out of sample (rank 1 worst .. N best), ``w = rank / (N + 1)``, and the split's logit is
    ``log(w / (1 - w))``. PBO is the share of splits with logit <= 0.

    Raises
    ------
    DataError
        Fewer than 2 trials, an odd or too small block count, fewer rows than blocks x 2, non-finite values,
        or more than :data:`MAX_COMBINATIONS` splits.
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise DataError(f"PBO needs a [steps, trials] matrix of at least 2 trials, got shape {m.shape}")
    if n_blocks < 2 or n_blocks % 2:
        raise DataError(f"PBO blocks = {n_blocks}: expected an even number >= 2")
    n, trials = m.shape
    if n < 2 * n_blocks:
        raise DataError(f"PBO over {n} steps in {n_blocks} blocks: need at least {2 * n_blocks} steps")
    if not np.isfinite(m).all():
        raise DataError("PBO returns hold a non-finite value")
    splits = math.comb(n_blocks, n_blocks // 2)
    if splits > MAX_COMBINATIONS:
        raise DataError(f"PBO with {n_blocks} blocks is {splits} splits: at most {MAX_COMBINATIONS}")
    cuts = (np.arange(n_blocks + 1) * n) // n_blocks
    # Per block the sums and sums of squares, so each split's Sharpe comes from block totals.
    sums = np.stack([m[cuts[i] : cuts[i + 1]].sum(axis=0) for i in range(n_blocks)])
    squares = np.stack([(m[cuts[i] : cuts[i + 1]] ** 2).sum(axis=0) for i in range(n_blocks)])
    counts = np.diff(cuts).astype(np.float64)
    logits = np.empty(splits)
    everything = set(range(n_blocks))
    for k, chosen in enumerate(itertools.combinations(range(n_blocks), n_blocks // 2)):
        ins = list(chosen)
        outs = sorted(everything - set(chosen))
        is_sr = _block_sharpe(sums[ins], squares[ins], counts[ins])
        oos_sr = _block_sharpe(sums[outs], squares[outs], counts[outs])
        best = int(np.argmax(is_sr))
        rank = 1 + int(np.sum(oos_sr < oos_sr[best])) + 0.5 * int(np.sum(oos_sr == oos_sr[best]) - 1)
        w = rank / (trials + 1)
        logits[k] = math.log(w / (1.0 - w))
    return Overfitting(float(np.mean(logits <= 0.0)), logits, int(trials), int(n_blocks), int(splits), int(n))


def _block_sharpe(sums: np.ndarray, squares: np.ndarray, counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    mean = sums.sum(axis=0) / total
    var = (squares.sum(axis=0) - total * mean**2) / max(total - 1.0, 1.0)
    sd = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = mean / np.where(sd > 1e-15, sd, 1.0)
    return np.where(sd > 1e-15, out, 0.0)
