"""Market-regime features: 20 bounded numbers per base step from the traded and the reference market's bars.

Owns the one definition of the regime vector (volatility percentiles, trend strength, range ratio, volume
z-scores, traded-reference co-movement). Strictly causal: row t uses bars 0..t of both inputs and never a later one.

Definitions (``r_t = log(close_t / close_{t-1})``, windows ``(short, medium, long)`` of ``n`` base steps;
every column is finite and on an O(1) scale; before its window is filled a column holds its neutral value,
:data:`NEUTRAL`, and so does a degenerate window such as a flat price, where a ratio would be 0/0):

* ``vol_pct_*``: realised volatility ``sqrt(mean r^2)`` over the last ``n`` returns, ranked within its own
  values over the trailing ``history`` steps (rows ``t - history + 1 .. t``); ``(rank - 1) / (count - 1)``
  with ties averaged, so 1 is the highest of the history and 0 the lowest. Needs ``long`` defined values
  in the history (from row ``n + long - 1``); neutral 0.5.
* ``vol_ratio_{short,medium}_long``: ``tanh(log(vol_x / vol_long))``, written as
  ``(ms_x - ms_long) / (ms_x + ms_long)`` with ``ms`` the mean square return; 0 when both are 0.
* ``trend_efficiency_*``: ``tanh(sqrt(n) * e / 2)`` of Kaufman's efficiency ratio
  ``e = |log close_t - log close_{t-n}| / sum |r|`` over the window. ``e`` is about ``1 / sqrt(n)`` for a
  random walk and 1 for a straight line, so the scaled column is about 0.46 for a random walk and near 1
  for a trend, in [0, 1] at every window length.
* ``trend_tstat_*``: ``tanh(z / 2)``, ``z = sum r / (sqrt(n) * vol_n)`` (signed; ``|z| <= sqrt(n)``; ~N(0, 1)
  for a driftless walk).
* ``trend_r2_long``: signed R^2 of the least-squares line through the last ``long + 1`` log closes,
  ``sign(slope) * corr(k, log close)^2``.
* ``range_ratio_*``: ``tanh(log(q))``, ``q = (max high - min low) / (sqrt(n) * ATR_n)`` over the last ``n``
  bars, ``ATR_n`` the mean true range (which uses the close before the window). ``q`` is about 1 for a random
  walk, up to ``sqrt(n)`` for a trend and small for a range-bound market; the column is
  ``(q^2 - 1) / (q^2 + 1)`` in [-1, 1].
* ``volume_z_*``: ``tanh(z / 2)`` of the z-score of ``x_t = log1p(volume_t / mean volume_{0..t})`` within the
  last ``n`` bars (population deviation); 0 when the window's deviation is below 1e-9.
* ``corr_traded_reference_*``: Pearson correlation of the traded and the reference returns over the window,
  clipped to [-1, 1].
* ``beta_traded_reference_long``: ``tanh(beta / 2)``, ``beta = cov(r_traded, r_reference) / var(r_reference)``
  over the long window.

Rolling statistics are pandas' trailing windows (online sums and Welford variances run from row 0), the R^2
slope is a direct dot product per window; none of them reads past its window's last row, so a row is
bit-for-bit the same however the bars after it change.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError

#: Columns of :func:`regime_features`, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "vol_pct_short",
    "vol_pct_medium",
    "vol_pct_long",
    "vol_ratio_short_long",
    "vol_ratio_medium_long",
    "trend_efficiency_short",
    "trend_efficiency_medium",
    "trend_efficiency_long",
    "trend_tstat_medium",
    "trend_tstat_long",
    "trend_r2_long",
    "range_ratio_short",
    "range_ratio_long",
    "volume_z_short",
    "volume_z_medium",
    "volume_z_long",
    "corr_traded_reference_short",
    "corr_traded_reference_medium",
    "corr_traded_reference_long",
    "beta_traded_reference_long",
)
#: Column index by name.
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
#: Value of each column during its warm-up and over a degenerate window (0.5 for percentiles, else 0).
NEUTRAL: tuple[float, ...] = tuple(0.5 if name.startswith("vol_pct") else 0.0 for name in FEATURE_NAMES)
#: Closed range every column lies in.
BOUNDS: dict[str, tuple[float, float]] = {
    name: (0.0, 1.0) if name.startswith(("vol_pct", "trend_efficiency")) else (-1.0, 1.0) for name in FEATURE_NAMES
}
#: Default window lengths in base steps: short, medium, long.
DEFAULT_WINDOWS: tuple[int, int, int] = (30, 120, 600)
#: Default percentile history, in multiples of the long window.
HISTORY_LONG_WINDOWS = 10

_FIELDS = ("open_time_ms", "high", "low", "close", "volume")
_VOLUME_STD_FLOOR = 1e-9


# ---------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------


def _check_windows(windows: tuple[int, int, int], history: int | None) -> tuple[int, int, int, int]:
    if len(tuple(windows)) != 3:
        raise ConfigError(f"regime windows must be three lengths (short, medium, long); got {windows!r}")
    for name, value in zip(("short", "medium", "long"), windows, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 2:
            raise ConfigError(f"regime window {name} must be an integer >= 2 (got {value!r})")
    short, medium, long = (int(w) for w in windows)
    if not short < medium < long:
        raise ConfigError(f"regime windows must increase, short < medium < long (got {windows!r})")
    if history is None:
        history = HISTORY_LONG_WINDOWS * long
    if isinstance(history, bool) or not isinstance(history, int | np.integer) or history < long:
        raise ConfigError(f"regime history must be an integer >= the long window {long} (got {history!r})")
    return short, medium, long, int(history)


def _check_bars(bars: np.ndarray, what: str) -> None:
    names = getattr(getattr(bars, "dtype", None), "names", None) or ()
    missing = [f for f in _FIELDS if f not in names]
    if missing or np.ndim(bars) != 1:
        raise DataError(
            f"{what} must be a 1-D bar array (records.BAR_DTYPE) with fields {_FIELDS}; "
            f"missing {missing}, shape {np.shape(bars)}"
        )
    for field in ("high", "low", "close"):
        col = bars[field]
        bad = ~(np.isfinite(col) & (col > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{what}[{i}].{field} = {float(col[i])!r} is not a finite positive price")
    bad = bars["high"] < bars["low"]
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{what}[{i}]: high {bars['high'][i]!r} < low {bars['low'][i]!r}")
    vol = bars["volume"]
    bad = ~(np.isfinite(vol) & (vol >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{what}[{i}].volume = {float(vol[i])!r} is not a finite volume >= 0")


def _check_aligned(traded: np.ndarray, reference: np.ndarray) -> None:
    if traded.size != reference.size:
        raise DataError(
            f"regime inputs misaligned: traded_bars has {traded.size} bars, reference_bars {reference.size}"
        )
    t_traded, t_reference = traded["open_time_ms"], reference["open_time_ms"]
    bad = t_traded != t_reference
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"regime inputs misaligned at row {i}: traded_bars open_time_ms {int(t_traded[i])}, "
            f"reference_bars {int(t_reference[i])}"
        )
    if t_traded.size > 1:
        steps = np.diff(t_traded)
        bad = steps != steps[0]
        if steps[0] <= 0 or bad.any():
            i = int(np.argmax(bad)) + 1 if steps[0] > 0 else 1
            raise DataError(
                f"regime inputs are not contiguous base-step bars: open_time_ms[{i}] = {int(t_traded[i])} "
                f"follows {int(t_traded[i - 1])} (step {int(t_traded[i] - t_traded[i - 1])}, "
                f"first step {int(steps[0])})"
            )


# ---------------------------------------------------------------------------------------------------
# Pieces (float64, NaN where undefined)
# ---------------------------------------------------------------------------------------------------


def _returns(logc: np.ndarray) -> np.ndarray:
    """``r_t = log close_t - log close_{t-1}``; NaN at row 0."""
    r = np.empty_like(logc)
    r[0] = np.nan
    np.subtract(logc[1:], logc[:-1], out=r[1:])
    return r


def _drift(logc: np.ndarray, n: int) -> np.ndarray:
    """``log close_t - log close_{t-n}``, the sum of the window's returns; NaN before row ``n``."""
    out = np.full(logc.size, np.nan)
    out[n:] = logc[n:] - logc[:-n]
    return out


def _ratio_tanh_log(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` = ``tanh(log(sqrt(a / b)))`` for a, b >= 0; NaN where both are 0."""
    total = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a - b) / total
    out[~(total > 0)] = np.nan
    return out


def _percentile(values: np.ndarray, first: int, history: int, min_count: int) -> np.ndarray:
    """Rank of each value among the defined ones of the trailing ``history`` rows, scaled to [0, 1].

    ``values`` is NaN before row ``first`` and defined from there on, so the count is known in closed form.
    """
    rank = pd.Series(values).rolling(history, min_periods=min_count).rank(method="average").to_numpy()
    count = np.minimum(np.arange(values.size) - first + 1, history)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank - 1.0) / (count - 1.0)


def _signed_r2(logc: np.ndarray, n: int) -> np.ndarray:
    """Signed R^2 of a line through the last ``n + 1`` log closes; NaN before row ``n``."""
    size = n + 1
    out = np.full(logc.size, np.nan)
    if logc.size < size:
        return out
    y = logc - logc[0]
    k = np.arange(size, dtype=np.float64) - n / 2.0
    # a centred ramp sums to zero, so this covariance is unaffected by the level of y
    cov = np.correlate(y, k, mode="valid") / size
    var_k = (size * size - 1) / 12.0
    var_y = pd.Series(y).rolling(size).var(ddof=0).to_numpy()[n:]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.sqrt(var_k * var_y)
    corr[~(var_y > 0)] = np.nan
    corr = np.clip(corr, -1.0, 1.0)
    out[n:] = corr * np.abs(corr)
    return out


def _range_ratio(high: pd.Series, low: pd.Series, atr_sum: pd.Series, n: int) -> np.ndarray:
    span = (high.rolling(n).max() - low.rolling(n).min()).to_numpy()
    atr = atr_sum.rolling(n).mean().to_numpy()
    return _ratio_tanh_log(span * span, n * atr * atr)


def _volume_z(x: pd.Series, n: int) -> np.ndarray:
    roll = x.rolling(n)
    mean = roll.mean().to_numpy()
    std = roll.std(ddof=0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x.to_numpy() - mean) / std
    z[~(std > _VOLUME_STD_FLOOR)] = np.nan
    return np.tanh(z / 2.0)


# ---------------------------------------------------------------------------------------------------
# The feature vector
# ---------------------------------------------------------------------------------------------------


def warmup_rows(windows: tuple[int, int, int] = DEFAULT_WINDOWS) -> dict[str, int]:
    """First row (0-based) at which each column can leave its neutral value.

    Parameters
    ----------
    windows : tuple of int
        ``(short, medium, long)`` window lengths in base steps.

    Returns
    -------
    dict[str, int]
        Row by name; before it the column is :data:`NEUTRAL`.
    """
    short, medium, long, _ = _check_windows(windows, None)
    by_suffix = {"short": short, "medium": medium, "long": long}
    rows = {}
    for name in FEATURE_NAMES:
        n = by_suffix[name.rsplit("_", 1)[1]]
        rows[name] = n + long - 1 if name.startswith("vol_pct") else n
    rows["vol_ratio_short_long"] = rows["vol_ratio_medium_long"] = long
    return rows


def regime_features(
    traded_bars: np.ndarray,
    reference_bars: np.ndarray,
    windows: tuple[int, int, int] = DEFAULT_WINDOWS,
    *,
    history: int | None = None,
) -> np.ndarray:
    """The regime vector of every base step, columns named by :data:`FEATURE_NAMES`.

    Parameters
    ----------
    traded_bars, reference_bars : numpy.ndarray
        Base-step bars (``records.BAR_DTYPE``) of the traded and the reference market, oldest first, with
        the same ``open_time_ms`` row for row and one constant step between rows (gaps filled).
    windows : tuple of int
        ``(short, medium, long)`` window lengths in base steps, increasing, each >= 2.
    history : int, optional
        Trailing steps the volatility percentiles rank within; ``10 * long`` when omitted.

    Returns
    -------
    numpy.ndarray
        float32 ``[N, 20]``, finite, each column within :data:`BOUNDS`; row ``t`` depends on rows ``0..t`` of
        both inputs only. See the module docstring for each column and :func:`warmup_rows`.

    Raises
    ------
    DataError
        An input is not a bar array, has a non-finite or non-positive price, a high below its low, a negative
        volume, or the inputs differ in length or open times or are not contiguous (the message names the row).
    ConfigError
        ``windows`` or ``history`` are out of range.
    """
    short, medium, long, history = _check_windows(windows, history)
    _check_bars(traded_bars, "traded_bars")
    _check_bars(reference_bars, "reference_bars")
    _check_aligned(traded_bars, reference_bars)
    size = traded_bars.size
    # feature-major while computing, so every column is one contiguous run
    out = np.empty((len(FEATURE_NAMES), size), dtype=np.float64)
    if size == 0:
        return np.empty((0, len(FEATURE_NAMES)), dtype=np.float32)
    col = FEATURE_INDEX
    lengths = {"short": short, "medium": medium, "long": long}

    close = np.ascontiguousarray(traded_bars["close"], dtype=np.float64)
    logc = np.log(close)
    logc_reference = np.log(np.ascontiguousarray(reference_bars["close"], dtype=np.float64))
    r, rb = _returns(logc), _returns(logc_reference)
    drift = {key: _drift(logc, n) for key, n in lengths.items()}

    # volatility
    r2s = pd.Series(r * r)
    mean_sq = {key: r2s.rolling(n).mean().to_numpy() for key, n in lengths.items()}
    for key, n in lengths.items():
        out[col[f"vol_pct_{key}"]] = _percentile(np.sqrt(mean_sq[key]), n, history, long)
    out[col["vol_ratio_short_long"]] = _ratio_tanh_log(mean_sq["short"], mean_sq["long"])
    out[col["vol_ratio_medium_long"]] = _ratio_tanh_log(mean_sq["medium"], mean_sq["long"])

    # trend
    abs_rs = pd.Series(np.abs(r))
    for key, n in lengths.items():
        path = abs_rs.rolling(n).sum().to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            efficiency = np.abs(drift[key]) / path
            z = drift[key] / (math.sqrt(n) * np.sqrt(mean_sq[key]))
        efficiency[~(path > 0)] = np.nan
        out[col[f"trend_efficiency_{key}"]] = np.tanh(math.sqrt(n) * np.minimum(efficiency, 1.0) / 2.0)
        if key != "short":
            z[~(mean_sq[key] > 0)] = np.nan
            out[col[f"trend_tstat_{key}"]] = np.tanh(z / 2.0)
    out[col["trend_r2_long"]] = _signed_r2(logc, long)

    # range
    high = np.ascontiguousarray(traded_bars["high"], dtype=np.float64)
    low = np.ascontiguousarray(traded_bars["low"], dtype=np.float64)
    true_range = np.empty(size)
    true_range[0] = np.nan  # the first bar has no previous close
    true_range[1:] = np.fmax(high[1:], close[:-1]) - np.fmin(low[1:], close[:-1])
    hs, ls, trs = pd.Series(high), pd.Series(low), pd.Series(true_range)
    out[col["range_ratio_short"]] = _range_ratio(hs, ls, trs, short)
    out[col["range_ratio_long"]] = _range_ratio(hs, ls, trs, long)

    # volume
    volume = np.ascontiguousarray(traded_bars["volume"], dtype=np.float64)
    running_mean = np.cumsum(volume) / np.arange(1, size + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.log1p(volume / running_mean)
    x[~(running_mean > 0)] = 0.0
    xs = pd.Series(x)
    for key, n in lengths.items():
        out[col[f"volume_z_{key}"]] = _volume_z(xs, n)

    # traded-reference co-movement; a window's mean return is its drift / n
    rs, rbs, product = pd.Series(r), pd.Series(rb), pd.Series(r * rb)
    for key, n in lengths.items():
        cov = product.rolling(n).mean().to_numpy() - drift[key] * _drift(logc_reference, n) / (n * n)
        var_traded = rs.rolling(n).var(ddof=0).to_numpy()
        var_reference = rbs.rolling(n).var(ddof=0).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.sqrt(var_traded * var_reference)
            beta = cov / var_reference
        corr[~(var_traded * var_reference > 0)] = np.nan
        out[col[f"corr_traded_reference_{key}"]] = np.clip(corr, -1.0, 1.0)
        if key == "long":
            beta[~(var_reference > 0)] = np.nan
            out[col["beta_traded_reference_long"]] = np.tanh(beta / 2.0)

    for name, first in warmup_rows((short, medium, long)).items():
        column = out[col[name]]
        column[:first] = NEUTRAL[col[name]]
        column[~np.isfinite(column)] = NEUTRAL[col[name]]
    return np.ascontiguousarray(out.T, dtype=np.float32)
