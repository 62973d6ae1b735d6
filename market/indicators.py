"""Technical indicators on bar closes (RSI, MACD, Bollinger bands), in batch and incremental form.

Owns the one definition of each indicator, which both forms follow operation for operation. Strictly
causal: the value at bar i uses closes 0..i only, and never looks at a later bar.

Conventions (those of the ``ta`` package, which the tests hold us to):

* **EMA** ``y_0 = x_0``, ``y_t = ((1 - a) y_{t-1} + a x_t) / ((1 - a) + a)``, skipping the update when
  ``y_{t-1} == x_t``: the exact arithmetic of ``pandas`` ``ewm(adjust=False).mean()``, so the batch
  form (pandas) and the incremental form (Python floats) agree bit for bit wherever the compiled pandas
  fuses no multiply-add (the tested contract is 1e-9 relative). MACD EMAs use
  ``a = 2 / (span + 1)``, RSI uses Wilder's ``a = 1 / window``.
* **RSI(window)**: Wilder-smoothed average gain and loss of the close-to-close changes, seeded at bar 0
  with a zero change (not the textbook SMA of the first ``window`` changes; that seed differs from this
  one by a factor ``(1 - 1/window)^t`` that fades with the bar count ``t``).
  ``RSI = 100 - 100 / (1 + gain / loss)``; ``100`` when the average loss is zero, and ``50`` when both
  averages are zero (no price change since bar 0; ``ta`` says 100 there).
  Defined from bar ``window - 1`` (the ``window``-th bar), as in ``ta``.
* **MACD(fast, slow, signal)**: ``macd = EMA_fast - EMA_slow`` (both EMAs run from bar 0), defined from
  bar ``slow - 1``; ``signal`` is the EMA of ``macd`` seeded with its first defined value and defined
  ``signal - 1`` bars later (bar ``slow + signal - 2``); ``hist = macd - signal``.
* **Bollinger(window, k)**: middle = mean of the last ``window`` closes, upper/lower = middle +- k *
  *population* standard deviation (``ddof=0``, as ``ta``), defined from bar ``window - 1``.
  ``pct_b = (close - lower) / (upper - lower)``, ``0.5`` when the band has zero width, as in a window of
  equal closes (``ta`` says NaN there); ``width = (upper - lower) / middle`` as a fraction (``ta``'s
  ``bollinger_wband`` is this times 100). Each window is summed afresh, so the deviation is exact to a
  few ulp; ``ta`` (pandas' running variance) drifts from it by up to ~4e-8 relative over 50k real bars.

The forming bar of a higher timeframe (the values :meth:`IndicatorSet.peek` gives) has a batch form
too, :func:`forming_features`, for every base step of a history at once.

Values before an indicator is defined are NaN. With the defaults (14; 12, 26, 9; 20, 2) the first
defined bar (0-based) is: rsi 13, macd 25, macd_signal and macd_hist 33, every Bollinger column 19.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from .config import IndicatorConfig
from .errors import ConfigError, DataError

#: Columns of :func:`indicator_features` and of :meth:`IndicatorSet.update`, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_mid",
    "bb_upper",
    "bb_lower",
    "bb_pct_b",
    "bb_width",
)
#: Column index by name.
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

_NAN = math.nan


# ---------------------------------------------------------------------------------------------------
# Parameters and their warm-up
# ---------------------------------------------------------------------------------------------------


def _check_window(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"indicator parameter {name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def _check_macd(fast: int, slow: int, signal: int) -> tuple[int, int, int]:
    fast = _check_window("macd_fast", fast)
    slow = _check_window("macd_slow", slow)
    signal = _check_window("macd_signal", signal)
    if fast >= slow:
        raise ConfigError(f"indicator parameter macd_fast must be < macd_slow (got {fast} >= {slow})")
    return fast, slow, signal


def _check_k(k: float) -> float:
    if isinstance(k, bool) or not isinstance(k, int | float | np.floating | np.integer):
        raise ConfigError(f"indicator parameter bollinger_k must be a number > 0 (got {k!r})")
    k = float(k)
    if not (math.isfinite(k) and k > 0):
        raise ConfigError(f"indicator parameter bollinger_k must be a finite number > 0 (got {k!r})")
    return k


def warmup_bars(config: IndicatorConfig | None = None) -> dict[str, int]:
    """Number of bars each feature column needs before it is defined (not NaN).

    Column ``name`` is NaN at bars ``0 .. warmup_bars()[name] - 2`` and defined from bar
    ``warmup_bars()[name] - 1`` on (0-based).

    Parameters
    ----------
    config : IndicatorConfig, optional
        Indicator parameters; the defaults when omitted.

    Returns
    -------
    dict[str, int]
        Bars needed, for every name in :data:`FEATURE_NAMES`.
    """
    c = config if config is not None else IndicatorConfig()
    macd_bars = c.macd_slow
    signal_bars = c.macd_slow + c.macd_signal - 1
    return {
        "rsi": c.rsi_period,
        "macd": macd_bars,
        "macd_signal": signal_bars,
        "macd_hist": signal_bars,
        "bb_mid": c.bollinger_period,
        "bb_upper": c.bollinger_period,
        "bb_lower": c.bollinger_period,
        "bb_pct_b": c.bollinger_period,
        "bb_width": c.bollinger_period,
    }


# ---------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------


def _as_closes(close: np.ndarray, what: str = "close") -> np.ndarray:
    arr = np.asarray(close, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of prices (got shape {arr.shape})")
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{what}[{i}] = {float(arr[i])!r} is not a finite positive price")
    return arr


def _check_close(value: float, bar: int) -> float:
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise DataError(f"close of bar {bar} = {value!r} is not a finite positive price")
    return x


# ---------------------------------------------------------------------------------------------------
# EMA: the shared arithmetic
# ---------------------------------------------------------------------------------------------------


def _span_com(span: int) -> float:
    """Centre of mass of an EMA of ``span`` bars (``a = 2 / (span + 1)``), as pandas derives it."""
    return (span - 1) / 2


def _wilder_com(window: int) -> float:
    """Centre of mass of Wilder's smoothing (``a = 1 / window``)."""
    return float(window - 1)


def _ema_batch(x: np.ndarray, com: float) -> np.ndarray:
    """EMA of ``x`` from its first element on (``x`` has no NaN)."""
    if x.size == 0:
        return np.empty(0, dtype=np.float64)
    return pd.Series(x, copy=False).ewm(com=com, adjust=False).mean().to_numpy(dtype=np.float64)


class _Ema:
    """Incremental EMA with exactly the operations of pandas' ``ewm(adjust=False)``."""

    __slots__ = ("_alpha", "_beta", "_denom", "value")

    def __init__(self, com: float) -> None:
        self._alpha = 1.0 / (1.0 + com)
        self._beta = 1.0 - self._alpha
        # Equal to 1.0 for every common window, but pandas divides by it, so do we.
        self._denom = self._beta + self._alpha
        self.value = _NAN

    def next(self, x: float) -> float:
        """The EMA after ``x``, without committing it."""
        y = self.value
        if y != y:  # first observation seeds the average
            return x
        if y == x:  # pandas skips the update here (it would not return exactly x)
            return y
        return (self._beta * y + self._alpha * x) / self._denom


def _ema_next(y: np.ndarray, x: np.ndarray, com: float) -> np.ndarray:
    """:meth:`_Ema.next` elementwise: the EMA at state ``y`` (NaN: not seeded) after ``x``."""
    alpha = 1.0 / (1.0 + com)
    beta = 1.0 - alpha
    denom = beta + alpha
    stepped = (beta * y + alpha * x) / denom
    return np.where(np.isnan(y), x, np.where(y == x, y, stepped))


# ---------------------------------------------------------------------------------------------------
# RSI
# ---------------------------------------------------------------------------------------------------


def _rsi_from_averages(up: np.ndarray, down: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + up / down)
    value = np.where(down == 0.0, np.where(up > 0.0, 100.0, 50.0), value)
    return value


def _rsi_value(up: float, down: float) -> float:
    if down == 0.0:
        return 100.0 if up > 0.0 else 50.0
    return 100.0 - 100.0 / (1.0 + up / down)


def rsi(close: np.ndarray, window: int = 14) -> np.ndarray:
    """Relative strength index with Wilder's smoothing, one value per bar.

    Parameters
    ----------
    close : numpy.ndarray
        Closes, 1-D, finite and positive.
    window : int
        Smoothing length (``a = 1 / window``).

    Returns
    -------
    numpy.ndarray
        float64, same length; NaN at bars ``0 .. window - 2``, values in ``[0, 100]`` after.

    Raises
    ------
    DataError
        A close is not finite or not positive (the message names its index and value).
    ConfigError
        ``window`` is not an integer >= 1.
    """
    window = _check_window("rsi_period", window)
    out = _rsi_from_averages(*_rsi_averages(_as_closes(close), window))
    out[: window - 1] = _NAN
    return out


def _rsi_averages(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Wilder averages of gain and loss after each bar: the state :class:`RsiState` holds."""
    change = np.zeros(x.size, dtype=np.float64)
    change[1:] = x[1:] - x[:-1]  # bar 0 counts as a zero change, as in ta
    gain = np.where(change > 0.0, change, 0.0)
    loss = np.where(change < 0.0, -change, 0.0)
    com = _wilder_com(window)
    return _ema_batch(gain, com), _ema_batch(loss, com)


class RsiState:
    """Incremental RSI: :meth:`update` with each closed bar, :meth:`peek` at the forming one."""

    __slots__ = ("_window", "_up", "_down", "_prev", "count")

    def __init__(self, window: int = 14) -> None:
        self._window = _check_window("rsi_period", window)
        com = _wilder_com(self._window)
        self._up = _Ema(com)
        self._down = _Ema(com)
        self._prev = _NAN
        #: Closed bars seen so far.
        self.count = 0

    def _step(self, close: float) -> tuple[float, float, float]:
        change = 0.0 if self.count == 0 else close - self._prev
        up = self._up.next(change if change > 0.0 else 0.0)
        down = self._down.next(-change if change < 0.0 else 0.0)
        value = _rsi_value(up, down) if self.count + 1 >= self._window else _NAN
        return up, down, value

    def update(self, close: float) -> float:
        """Commit one closed bar and return its RSI (NaN during warm-up)."""
        close = _check_close(close, self.count)
        self._up.value, self._down.value, value = self._step(close)
        self._prev = close
        self.count += 1
        return value

    def peek(self, close: float) -> float:
        """RSI of a forming bar closing (for now) at ``close``; the state does not change."""
        return self._step(_check_close(close, self.count))[2]


# ---------------------------------------------------------------------------------------------------
# MACD
# ---------------------------------------------------------------------------------------------------


def macd(
    close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line, signal line and histogram, one value per bar.

    Parameters
    ----------
    close : numpy.ndarray
        Closes, 1-D, finite and positive.
    fast, slow : int
        Spans of the two EMAs of the close (``fast < slow``).
    signal : int
        Span of the EMA of the MACD line.

    Returns
    -------
    tuple of numpy.ndarray
        ``(macd, signal, hist)``, float64, same length as ``close``; ``macd`` is NaN before bar
        ``slow - 1``, ``signal`` and ``hist`` before bar ``slow + signal - 2``.

    Raises
    ------
    DataError
        A close is not finite or not positive.
    ConfigError
        A span is not an integer >= 1, or ``fast >= slow``.
    """
    fast, slow, signal = _check_macd(fast, slow, signal)
    _fast, _slow, line, sig = _macd_states(_as_closes(close), fast, slow, signal)
    sig[: slow + signal - 2] = _NAN
    return line, sig, line - sig


def _macd_states(
    x: np.ndarray, fast: int, slow: int, signal: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ema_fast, ema_slow, macd, signal_ema)`` after each bar: the state :class:`MacdState` holds.

    ``macd`` is NaN before bar ``slow - 1``; ``signal_ema`` runs from that bar on, with no signal
    warm-up mask (the signal column is defined ``signal - 1`` bars later).
    """
    ema_fast = _ema_batch(x, _span_com(fast))
    ema_slow = _ema_batch(x, _span_com(slow))
    line = ema_fast - ema_slow
    start = slow - 1
    line[:start] = _NAN
    sig = np.full(x.size, _NAN)
    sig[start:] = _ema_batch(line[start:], _span_com(signal))
    return ema_fast, ema_slow, line, sig


class MacdState:
    """Incremental MACD: :meth:`update` with each closed bar, :meth:`peek` at the forming one."""

    __slots__ = ("_slow_bars", "_signal_bars", "_fast", "_slow", "_signal", "count")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        fast, slow, signal = _check_macd(fast, slow, signal)
        self._slow_bars = slow
        self._signal_bars = slow + signal - 1
        self._fast = _Ema(_span_com(fast))
        self._slow = _Ema(_span_com(slow))
        self._signal = _Ema(_span_com(signal))
        #: Closed bars seen so far.
        self.count = 0

    def _step(self, close: float) -> tuple[float, float, float, tuple[float, float, float]]:
        fast = self._fast.next(close)
        slow = self._slow.next(close)
        bars = self.count + 1
        if bars < self._slow_bars:
            return fast, slow, self._signal.value, (_NAN, _NAN, _NAN)
        line = fast - slow
        sig = self._signal.next(line)
        if bars < self._signal_bars:
            return fast, slow, sig, (line, _NAN, _NAN)
        return fast, slow, sig, (line, sig, line - sig)

    def update(self, close: float) -> tuple[float, float, float]:
        """Commit one closed bar and return ``(macd, signal, hist)`` (NaN during warm-up)."""
        close = _check_close(close, self.count)
        self._fast.value, self._slow.value, self._signal.value, values = self._step(close)
        self.count += 1
        return values

    def peek(self, close: float) -> tuple[float, float, float]:
        """``(macd, signal, hist)`` of a forming bar at ``close``; the state does not change."""
        return self._step(_check_close(close, self.count))[3]


# ---------------------------------------------------------------------------------------------------
# Bollinger bands
# ---------------------------------------------------------------------------------------------------
# Both forms work on the window shifted by its oldest close (d_j = x_j - x_0, exact for nearby prices)
# and sum in window order, oldest first: the deviations then carry no rounding of the mean to the
# price grid, a window of equal closes gives a deviation of exactly 0, and batch equals incremental.


def bollinger(
    close: np.ndarray, window: int = 20, k: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands with the population standard deviation (``ddof=0``), one value per bar.

    Parameters
    ----------
    close : numpy.ndarray
        Closes, 1-D, finite and positive.
    window : int
        Closes in the moving window.
    k : float
        Band half-width in standard deviations.

    Returns
    -------
    tuple of numpy.ndarray
        ``(mid, upper, lower, pct_b, width)``, float64, NaN before bar ``window - 1``. ``pct_b`` is
        0.5 where the band has zero width; ``width`` is ``(upper - lower) / mid``.

    Raises
    ------
    DataError
        A close is not finite or not positive.
    ConfigError
        ``window`` is not an integer >= 1 or ``k`` is not a finite number > 0.
    """
    window = _check_window("bollinger_period", window)
    k = _check_k(k)
    x = _as_closes(close)
    out = tuple(np.full(x.size, _NAN) for _ in range(5))
    if x.size < window:
        return out
    columns = _bands(np.lib.stride_tricks.sliding_window_view(x, window), k)
    for dst, src in zip(out, columns, strict=True):
        dst[window - 1 :] = src
    return out


def _bands(view: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mid, upper, lower, pct_b, width)`` of each row of ``view`` (one window per row, oldest first)."""
    window = view.shape[1]
    base = view[:, 0]
    total = np.zeros(base.size, dtype=np.float64)
    for j in range(1, window):
        total += view[:, j] - base
    shift = total / window
    dev = -shift
    sq = dev * dev
    for j in range(1, window):
        dev = (view[:, j] - base) - shift
        sq += dev * dev
    band = k * np.sqrt(sq / window)
    mid = base + shift
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_b = np.where(band == 0.0, 0.5, 0.5 + ((view[:, -1] - base) - shift) / (2.0 * band))
    return mid, mid + band, mid - band, pct_b, (2.0 * band) / mid


class BollingerState:
    """Incremental Bollinger bands over the last ``window`` closed bars."""

    __slots__ = ("_window", "_k", "_closes", "count")

    def __init__(self, window: int = 20, k: float = 2.0) -> None:
        self._window = _check_window("bollinger_period", window)
        self._k = _check_k(k)
        self._closes: deque[float] = deque(maxlen=self._window)
        #: Closed bars seen so far.
        self.count = 0

    def _values(self, closes: list[float]) -> tuple[float, float, float, float, float]:
        window = self._window
        if len(closes) < window:
            return (_NAN, _NAN, _NAN, _NAN, _NAN)
        base = closes[0]
        total = 0.0
        for c in closes[1:]:
            total += c - base
        shift = total / window
        dev = -shift
        sq = dev * dev
        for c in closes[1:]:
            dev = (c - base) - shift
            sq += dev * dev
        band = self._k * math.sqrt(sq / window)
        mid = base + shift
        pct_b = 0.5 if band == 0.0 else 0.5 + ((closes[-1] - base) - shift) / (2.0 * band)
        return (mid, mid + band, mid - band, pct_b, (2.0 * band) / mid)

    def update(self, close: float) -> tuple[float, float, float, float, float]:
        """Commit one closed bar; return ``(mid, upper, lower, pct_b, width)`` (NaN during warm-up)."""
        close = _check_close(close, self.count)
        self._closes.append(close)
        self.count += 1
        return self._values(list(self._closes))

    def peek(self, close: float) -> tuple[float, float, float, float, float]:
        """The bands of a forming bar at ``close``; the state does not change."""
        close = _check_close(close, self.count)
        closes = list(self._closes)
        closes.append(close)
        return self._values(closes[-self._window :])


# ---------------------------------------------------------------------------------------------------
# The feature set used downstream
# ---------------------------------------------------------------------------------------------------


def close_features(close: np.ndarray, config: IndicatorConfig | None = None) -> np.ndarray:
    """All indicator columns of :data:`FEATURE_NAMES` for a close series.

    Parameters
    ----------
    close : numpy.ndarray
        Closes, 1-D, finite and positive.
    config : IndicatorConfig, optional
        Indicator parameters; the defaults when omitted.

    Returns
    -------
    numpy.ndarray
        float64 ``[N, len(FEATURE_NAMES)]``; NaN during each column's warm-up (:func:`warmup_bars`).

    Raises
    ------
    DataError
        A close is not finite or not positive (the message names its index and value).
    """
    c = config if config is not None else IndicatorConfig()
    x = _as_closes(close)
    out = np.empty((x.size, len(FEATURE_NAMES)), dtype=np.float64)
    out[:, 0] = rsi(x, c.rsi_period)
    out[:, 1:4] = np.column_stack(macd(x, c.macd_fast, c.macd_slow, c.macd_signal))
    out[:, 4:9] = np.column_stack(bollinger(x, c.bollinger_period, c.bollinger_k))
    return out


def indicator_features(bars: np.ndarray, config: IndicatorConfig | None = None) -> np.ndarray:
    """All indicator columns of :data:`FEATURE_NAMES` for a bar array (``records.BAR_DTYPE``).

    Parameters
    ----------
    bars : numpy.ndarray
        Structured array with a ``close`` field, oldest bar first.
    config : IndicatorConfig, optional
        Indicator parameters; the defaults when omitted.

    Returns
    -------
    numpy.ndarray
        float64 ``[N, len(FEATURE_NAMES)]``, columns named by :data:`FEATURE_NAMES`.

    Raises
    ------
    DataError
        The array has no ``close`` field, or a close is not finite or not positive.
    """
    names = getattr(getattr(bars, "dtype", None), "names", None)
    if not names or "close" not in names:
        raise DataError(f"bars must be a structured array with a 'close' field (got dtype {bars.dtype!r})")
    return close_features(_as_closes(bars["close"], "bars['close']"), config)


class IndicatorSet:
    """Incremental form of :func:`indicator_features`, one closed bar at a time.

    ``update(close)`` commits a closed bar and returns its feature row; ``peek(close)`` returns the
    row of the forming bar at ``close`` and leaves the state as it was. Row ``i`` of the batch form
    equals what ``update`` returns for bar ``i``.
    """

    __slots__ = ("config", "_rsi", "_macd", "_bands")

    def __init__(self, config: IndicatorConfig | None = None) -> None:
        self.config = config if config is not None else IndicatorConfig()
        c = self.config
        self._rsi = RsiState(c.rsi_period)
        self._macd = MacdState(c.macd_fast, c.macd_slow, c.macd_signal)
        self._bands = BollingerState(c.bollinger_period, c.bollinger_k)

    @property
    def count(self) -> int:
        """Closed bars committed so far."""
        return self._rsi.count

    def update(self, close: float) -> np.ndarray:
        """Commit one closed bar; return its float64 feature row (order of :data:`FEATURE_NAMES`)."""
        close = _check_close(close, self.count)
        return np.array(
            (self._rsi.update(close), *self._macd.update(close), *self._bands.update(close)),
            dtype=np.float64,
        )

    def peek(self, close: float) -> np.ndarray:
        """Feature row of the forming bar at ``close``; the state does not change."""
        close = _check_close(close, self.count)
        return np.array(
            (self._rsi.peek(close), *self._macd.peek(close), *self._bands.peek(close)),
            dtype=np.float64,
        )


# ---------------------------------------------------------------------------------------------------
# The forming bar, for every base step at once
# ---------------------------------------------------------------------------------------------------

#: Rows per block of Bollinger windows gathered at once in :func:`forming_features` (bounds memory).
_FORMING_BLOCK = 1 << 16


def _as_last_closed(last_closed: np.ndarray, n_closed: int, n_steps: int) -> np.ndarray:
    arr = np.asarray(last_closed)
    if arr.ndim != 1 or arr.size != n_steps:
        raise DataError(f"last_closed must be a 1-D array as long as forming_close ({n_steps}) (got shape {arr.shape})")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"last_closed must hold integer bar indices (got dtype {arr.dtype})")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < -1) | (arr >= n_closed)
    if bad.any():
        t = int(np.argmax(bad))
        raise DataError(f"last_closed[{t}] = {int(arr[t])} is outside -1 .. {n_closed - 1} (the closed bars' indices)")
    return arr


def forming_features(
    closed_close: np.ndarray,
    last_closed: np.ndarray,
    forming_close: np.ndarray,
    config: IndicatorConfig | None = None,
) -> np.ndarray:
    """Feature rows of a forming bar at every base step: :meth:`IndicatorSet.peek` in batch.

    Row ``t`` is what an :class:`IndicatorSet` fed with ``closed_close[: last_closed[t] + 1]`` returns
    from ``peek(forming_close[t])``. RSI and MACD are one EMA step from the state after bar
    ``last_closed[t]`` (the batch state arrays, computed once over ``closed_close``); Bollinger bands
    sum each window (the last ``window - 1`` closed closes, then the forming close) as the incremental
    form does, so they carry no cancellation of a running sum of squares. Row ``t`` reads closed bars
    ``0 .. last_closed[t]`` only.

    Parameters
    ----------
    closed_close : numpy.ndarray
        float64 ``[N]``, closes of the closed bars, oldest first, finite and positive.
    last_closed : numpy.ndarray
        Integer ``[T]``, the index into ``closed_close`` of the last bar closed by step ``t``; ``-1``
        when none has closed yet. Any order (non-decreasing is typical, not required).
    forming_close : numpy.ndarray
        float64 ``[T]``, the close of the forming bar as of step ``t``, finite and positive.
    config : IndicatorConfig, optional
        Indicator parameters; the defaults when omitted.

    Returns
    -------
    numpy.ndarray
        float64 ``[T, len(FEATURE_NAMES)]``, columns of :data:`FEATURE_NAMES`; a column is NaN where the
        forming bar is within its warm-up (``last_closed[t] + 2 < warmup_bars()[name]``).

    Raises
    ------
    DataError
        A close is not finite or not positive, ``last_closed`` is not an integer array as long as
        ``forming_close``, or one of its entries is outside ``-1 .. N - 1`` (the message names it).
    """
    c = config if config is not None else IndicatorConfig()
    rsi_window = _check_window("rsi_period", c.rsi_period)
    fast, slow, signal = _check_macd(c.macd_fast, c.macd_slow, c.macd_signal)
    window = _check_window("bollinger_period", c.bollinger_period)
    k = _check_k(c.bollinger_k)
    closed = _as_closes(closed_close, "closed_close")
    forming = _as_closes(forming_close, "forming_close")
    last = _as_last_closed(last_closed, closed.size, forming.size)
    # Bars the state has seen, and so the index of its state in arrays led by the empty state (NaN).
    seen = last + 1
    bars = seen + 1  # the forming bar counted, as peek counts it

    def state(arr: np.ndarray) -> np.ndarray:
        return np.concatenate(([_NAN], arr))[seen]

    out = np.full((forming.size, len(FEATURE_NAMES)), _NAN)

    # RSI: one Wilder step with the forming change.
    up_avg, down_avg = _rsi_averages(closed, rsi_window)
    change = np.where(seen == 0, 0.0, forming - state(closed))
    com = _wilder_com(rsi_window)
    up = _ema_next(state(up_avg), np.where(change > 0.0, change, 0.0), com)
    down = _ema_next(state(down_avg), np.where(change < 0.0, -change, 0.0), com)
    out[:, 0] = np.where(bars >= rsi_window, _rsi_from_averages(up, down), _NAN)

    # MACD: one step of each EMA, then of the signal EMA with the forming MACD value.
    ema_fast, ema_slow, _line, sig_ema = _macd_states(closed, fast, slow, signal)
    line = _ema_next(state(ema_fast), forming, _span_com(fast)) - _ema_next(state(ema_slow), forming, _span_com(slow))
    line = np.where(bars >= slow, line, _NAN)
    sig = np.where(bars >= slow + signal - 1, _ema_next(state(sig_ema), line, _span_com(signal)), _NAN)
    out[:, 1] = line
    out[:, 2] = sig
    out[:, 3] = line - sig

    # Bollinger: the window of each defined row, gathered block by block.
    rows = np.flatnonzero(bars >= window)
    offsets = np.arange(1 - window, 0, dtype=np.int64)  # closed bars last - window + 2 .. last
    for lo in range(0, rows.size, _FORMING_BLOCK):
        block = rows[lo : lo + _FORMING_BLOCK]
        view = np.empty((block.size, window), dtype=np.float64)
        view[:, :-1] = closed[last[block, None] + 1 + offsets]
        view[:, -1] = forming[block]
        out[block, 4:9] = np.column_stack(_bands(view, k))
    return out
