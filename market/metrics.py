"""Performance metrics of equity curves and per-step returns, and block-bootstrap confidence intervals.

Pure numpy functions over arrays a caller recorded (equity marks, held positions); never runs an env, never
reads a price, never touches global random state (every resample draws from a generator seeded by the caller).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from .errors import DataError

#: Milliseconds in a year of 24/7 crypto trading (365.25 days), for annualising Sharpe and Sortino ratios.
YEAR_MS = 365.25 * 86_400_000
#: Below this standard deviation (relative to the mean's size) a series of returns counts as constant.
_REL_FLAT = 1e-9
_ABS_FLAT = 1e-15

Method = Literal["stationary", "moving"]
Statistic = Callable[[np.ndarray], Any]


def _curve(equity: Any, what: str = "equity") -> np.ndarray:
    arr = np.asarray(equity, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{what}: expected a non-empty 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{what}[{i}] = {float(arr[i])!r} is not a finite positive value")
    return arr


def annualisation(step_ms: float) -> float:
    """``sqrt(YEAR_MS / step_ms)``: the factor that turns a per-step ratio into an annual one."""
    if not step_ms > 0:
        raise DataError(f"step_ms = {step_ms!r}: expected a positive step length in milliseconds")
    return float(np.sqrt(YEAR_MS / step_ms))


def log_returns(equity: Any) -> np.ndarray:
    """Per-step log returns ``log(e[i+1] / e[i])`` of an equity curve of ``n + 1`` marks: ``n`` values."""
    return np.diff(np.log(_curve(equity)))


def total_return(equity: Any) -> float:
    """``e[-1] / e[0] - 1``: the simple return of the whole curve (net of whatever the curve is net of)."""
    e = _curve(equity)
    return float(e[-1] / e[0] - 1.0)


def compound_return(returns: Any) -> Any:
    """``exp(sum(r)) - 1`` along the last axis: the total simple return of per-step log returns ``r``."""
    return np.expm1(np.sum(np.asarray(returns, dtype=np.float64), axis=-1))


def _ratio(mean: np.ndarray, scale: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """``mean / scale``, and where ``flat`` (no spread): +-inf for a nonzero mean, 0 for a zero one."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mean / np.where(flat, 1.0, scale)
    moving = np.abs(mean) > _ABS_FLAT
    return np.where(flat, np.where(moving, np.copysign(np.inf, mean), 0.0), ratio)


def _sharpe_per_step(r: np.ndarray) -> np.ndarray:
    mean = r.mean(axis=-1)
    sd = r.std(axis=-1, ddof=1)
    return _ratio(mean, sd, sd <= np.maximum(_REL_FLAT * np.abs(mean), _ABS_FLAT))


def _sortino_per_step(r: np.ndarray) -> np.ndarray:
    mean = r.mean(axis=-1)
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=-1))
    return _ratio(mean, downside, downside <= _ABS_FLAT)


def _annualised(returns: Any, step_ms: float, per_step: Callable[[np.ndarray], np.ndarray]) -> Any:
    """``per_step(r) * annualisation(step_ms)`` per series (0 under two returns; a float for one series)."""
    r = np.asarray(returns, dtype=np.float64)
    ann = annualisation(step_ms)
    out = np.zeros(r.shape[:-1]) if r.shape[-1] < 2 else per_step(r) * ann
    return float(out) if out.ndim == 0 else out


def sharpe(returns: Any, step_ms: float) -> Any:
    """Annualised Sharpe ratio of per-step log returns (risk-free rate 0), along the last axis.

    ``mean(r) / std(r, ddof=1) * sqrt(YEAR_MS / step_ms)`` (the same definition as
    ``market.baselines.sharpe_ratio``). A series without spread (``std <= 1e-9 |mean|``, e.g. constant growth)
    has an infinite ratio, signed as its mean, and 0 when it does not move at all; fewer than two returns give 0.

    Parameters
    ----------
    returns : array [..., n]
        Per-step log returns; a 2-D array is one series per row (bootstrap resamples).
    step_ms : float
        The length of one step in milliseconds.

    Returns
    -------
    float, or an array [...] for more than one series
    """
    return _annualised(returns, step_ms, _sharpe_per_step)


def sortino(returns: Any, step_ms: float) -> Any:
    """Annualised Sortino ratio of per-step log returns (target 0), along the last axis.

    ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(YEAR_MS / step_ms)``: the downside deviation is taken over all
    ``n`` steps (Sortino and Price). No losing step gives +inf for a positive mean and 0 for a zero one; fewer
    than two returns give 0.

    Parameters
    ----------
    returns : array [..., n]
    step_ms : float

    Returns
    -------
    float, or an array [...] for more than one series
    """
    return _annualised(returns, step_ms, _sortino_per_step)


def max_drawdown(equity: Any) -> float:
    """Largest fall of equity from its running peak, as a fraction of that peak (0 for a curve that never falls)."""
    e = _curve(equity)
    peak = np.maximum.accumulate(e)
    return float(np.max(1.0 - e / peak))


def _positions(positions: Any, n: int | None = None) -> np.ndarray:
    p = np.sign(np.asarray(positions, dtype=np.float64))
    if p.ndim != 1:
        raise DataError(f"positions: expected a 1-D array, got shape {p.shape}")
    if n is not None and p.size != n:
        raise DataError(f"positions: {p.size} values for an equity curve of {n + 1} marks (expected {n})")
    return p


def exposure(positions: Any) -> float:
    """Fraction of steps with a position (long or short); 0 for no steps."""
    p = _positions(positions)
    return float(np.mean(p != 0)) if p.size else 0.0


def round_trip_returns(positions: Any, equity: Any) -> np.ndarray:
    """The simple return of every round trip: a run of steps holding the same nonzero direction.

    ``positions[i]`` is the direction held over step ``i`` (from mark ``i`` to mark ``i + 1``, i.e. after the
    order sent at ``i`` filled), ``equity`` the ``n + 1`` marks. A trip entered at step ``s`` (its entry fee is
    in step ``s``) and left at step ``j`` returns ``e[j + 1] / e[s] - 1`` when it exits to flat (the exit order
    fills at ``j``, so its fee is in step ``j``), ``e[j] / e[s] - 1`` when it flips to the other side at ``j``
    (the flip's step, with the old side's exit fee, goes to the new trip) or is still open at the last mark.

    Returns
    -------
    array [trips] float64, in time order
    """
    e = _curve(equity)
    n = e.size - 1
    p = _positions(positions, n)
    if n == 0:
        return np.zeros(0)
    change = np.flatnonzero(np.diff(p) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    held = p[starts] != 0
    starts, ends = starts[held], ends[held]
    exits_flat = (ends < n) & (p[np.minimum(ends, n - 1)] == 0)
    last_mark = np.where(exits_flat, ends + 1, ends)
    return e[last_mark] / e[starts] - 1.0


def win_rate(positions: Any, equity: Any) -> float:
    """Fraction of round trips (see :func:`round_trip_returns`) that made money net of fees; NaN without trips."""
    trips = round_trip_returns(positions, equity)
    return float(np.mean(trips > 0)) if trips.size else float("nan")


def block_length(n: int) -> int:
    """The block length used when none is given: ``ceil(n ** (1/3))``, at least 1.

    ``n^(1/3)`` is the rate at which the mean-squared-error-optimal block length grows for variance and bias
    estimation (Hall, Horowitz and Jing 1995; Politis and White 2004); it keeps blocks long enough to carry
    short-range dependence (volatility clustering, a policy holding a position over several steps) while
    leaving ``n^(2/3)`` blocks to resample.
    """
    if n < 1:
        raise DataError(f"block length of a series of {n} values: expected at least one value")
    return max(1, int(np.ceil(n ** (1.0 / 3.0) - 1e-9)))


def bootstrap_indices(
    n: int, block: int, n_resamples: int, rng: np.random.Generator, method: Method = "stationary"
) -> np.ndarray:
    """Indices of ``n_resamples`` block-bootstrap resamples of a series of ``n`` values, int64 [R, n].

    ``stationary`` (Politis and Romano 1994): blocks start at uniform positions and have geometric lengths of
    mean ``block``, wrapping around the end. ``moving`` (Kuensch 1989): blocks of exactly ``block`` values start
    at uniform positions in ``[0, n - block]``, laid end to end and cut to ``n``.
    """
    if n < 1 or block < 1 or n_resamples < 1:
        raise DataError(f"bootstrap of n={n}, block={block}, resamples={n_resamples}: each must be >= 1")
    block = min(block, n)
    if method == "moving":
        n_blocks = -(-n // block)
        starts = rng.integers(0, n - block + 1, size=(n_resamples, n_blocks))
        idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_resamples, n_blocks * block)
        return idx[:, :n].astype(np.int64)
    if method != "stationary":
        raise DataError(f"bootstrap method {method!r}: expected 'stationary' or 'moving'")
    new_block = rng.random((n_resamples, n)) < 1.0 / block
    new_block[:, 0] = True
    fresh = rng.integers(0, n, size=(n_resamples, n))
    pos = np.arange(n)
    # For each position, where its block began: the last new-block position at or before it.
    began = np.maximum.accumulate(np.where(new_block, pos, 0), axis=1)
    first = np.take_along_axis(fresh, began, axis=1)
    return (first + (pos - began)) % n


@dataclass(frozen=True, slots=True)
class ConfidenceInterval:
    """A percentile bootstrap interval of one statistic.

    Attributes
    ----------
    estimate : float
        The statistic on the series itself.
    low, high : float
        The ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the statistic over the resamples.
    alpha : float
        ``1 -`` the nominal coverage.
    block : int
        Block length (mean length for the stationary bootstrap).
    n_resamples : int
    method : str
        ``stationary`` or ``moving``.
    seed : int
        The seed of the resampling generator.
    """

    estimate: float
    low: float
    high: float
    alpha: float
    block: int
    n_resamples: int
    method: str
    seed: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def block_bootstrap_cis(
    values: Any,
    statistics: Mapping[str, Statistic],
    *,
    block: int | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    method: Method = "stationary",
    chunk: int = 256,
) -> dict[str, ConfidenceInterval]:
    """Percentile block-bootstrap intervals of several statistics of one series, on the same resamples.

    Parameters
    ----------
    values : array [n]
        The series (per-step log returns), in time order.
    statistics : mapping of name -> callable
        Each maps an array ``[..., n]`` to ``[...]`` (reducing the last axis), e.g. ``np.mean`` with
        ``axis=-1``, :func:`compound_return`, or ``lambda r: sharpe(r, step_ms)``.
    block : int, optional
        Block length; :func:`block_length` of ``n`` when omitted.
    n_resamples : int
        Resamples (at least 1000 for a 95% interval whose ends are not noise).
    seed : int
        Seeds the resampling generator: the same seed and series give the same interval.
    alpha : float
        In (0, 1); the interval's nominal coverage is ``1 - alpha``.
    method : {"stationary", "moving"}
    chunk : int
        Resamples built at a time (bounds memory at ``chunk * n`` floats).

    Returns
    -------
    dict of name -> ConfidenceInterval
        Interval ends are order statistics (``inverted_cdf`` quantiles), so infinite statistics of resamples
        without spread stay well defined.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise DataError(f"bootstrap values: expected a non-empty 1-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        i = int(np.argmax(~np.isfinite(x)))
        raise DataError(f"bootstrap values[{i}] = {float(x[i])!r} is not finite")
    if not 0.0 < alpha < 1.0:
        raise DataError(f"bootstrap alpha = {alpha!r}: expected in (0, 1)")
    if n_resamples < 1 or chunk < 1:
        raise DataError(f"bootstrap n_resamples = {n_resamples}, chunk = {chunk}: expected >= 1")
    n = x.size
    b = block_length(n) if block is None else int(block)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        sample = x[bootstrap_indices(n, b, rows, rng, method)]
        for name, stat in statistics.items():
            draws[name].append(np.asarray(stat(sample), dtype=np.float64).reshape(rows))
    out: dict[str, ConfidenceInterval] = {}
    for name, stat in statistics.items():
        d = np.concatenate(draws[name])
        d = d[~np.isnan(d)]
        if d.size:
            low, high = np.quantile(d, [alpha / 2.0, 1.0 - alpha / 2.0], method="inverted_cdf")
        else:
            low = high = float("nan")
        estimate = float(np.asarray(stat(x[None, :]), dtype=np.float64).reshape(-1)[0])
        out[name] = ConfidenceInterval(estimate, float(low), float(high), alpha, b, n_resamples, method, int(seed))
    return out


def block_bootstrap_ci(
    values: Any,
    statistic: Statistic,
    block: int | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    method: Method = "stationary",
) -> ConfidenceInterval:
    """Percentile block-bootstrap interval of one statistic of a series (see :func:`block_bootstrap_cis`).

    Parameters
    ----------
    values : array [n]
    statistic : callable
        Maps ``[..., n]`` to ``[...]`` along the last axis.
    block : int, optional
        Block length, :func:`block_length` of ``n`` when omitted.
    n_resamples : int
    seed : int
    alpha : float
    method : {"stationary", "moving"}

    Returns
    -------
    ConfidenceInterval
    """
    return block_bootstrap_cis(
        values, {"stat": statistic}, block=block, n_resamples=n_resamples, seed=seed, alpha=alpha, method=method
    )["stat"]
