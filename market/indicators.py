"""Technical indicators on bar closes (RSI, MACD, Bollinger bands), in batch and incremental form.

Owns the kernels of the built-in indicators and registers each as one entry of ``market.indicator_registry``
(batch, incremental, forming and state features together); :func:`indicator_features`, :class:`IndicatorSet`
and :func:`forming_features` run every registered indicator. Both forms follow the same operations. Strictly
causal: the value at bar i uses bars 0..i only, and never looks at a later bar.

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
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .config import IndicatorConfig
from .errors import ConfigError, DataError
from .indicator_registry import (
    OHLCV,
    Bars,
    IndexView,
    Indicator,
    NameView,
    Ohlcv,
    check_bar,
    check_columns,
    column_names,
    feature_names,
    inputs,
    register,
    registered,
)

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
# The forming bar of the built-in indicators, for every base step at once
# ---------------------------------------------------------------------------------------------------
# Row t is one step of each state after closed bar last[t]: the batch state arrays (computed once over the
# closed bars) are read at index ``seen = last + 1`` of arrays led by the empty state (NaN).

#: Rows per block of Bollinger windows gathered at once in :func:`forming_features` (bounds memory).
_FORMING_BLOCK = 1 << 16


def _state_at(arr: np.ndarray, seen: np.ndarray) -> np.ndarray:
    return np.concatenate(([_NAN], arr))[seen]


def _rsi_forming(closed: Bars, last: np.ndarray, forming: Bars, c: IndicatorConfig) -> np.ndarray:
    window = _check_window("rsi_period", c.rsi_period)
    closes, now = closed["close"], forming["close"]
    seen = last + 1
    bars = seen + 1  # the forming bar counted, as peek counts it
    up_avg, down_avg = _rsi_averages(closes, window)
    change = np.where(seen == 0, 0.0, now - _state_at(closes, seen))
    com = _wilder_com(window)
    up = _ema_next(_state_at(up_avg, seen), np.where(change > 0.0, change, 0.0), com)
    down = _ema_next(_state_at(down_avg, seen), np.where(change < 0.0, -change, 0.0), com)
    return np.where(bars >= window, _rsi_from_averages(up, down), _NAN)[:, None]


def _macd_forming(closed: Bars, last: np.ndarray, forming: Bars, c: IndicatorConfig) -> np.ndarray:
    fast, slow, signal = _check_macd(c.macd_fast, c.macd_slow, c.macd_signal)
    now = forming["close"]
    seen = last + 1
    bars = seen + 1
    ema_fast, ema_slow, _line, sig_ema = _macd_states(closed["close"], fast, slow, signal)
    line = _ema_next(_state_at(ema_fast, seen), now, _span_com(fast)) - _ema_next(
        _state_at(ema_slow, seen), now, _span_com(slow)
    )
    line = np.where(bars >= slow, line, _NAN)
    sig = np.where(bars >= slow + signal - 1, _ema_next(_state_at(sig_ema, seen), line, _span_com(signal)), _NAN)
    return np.column_stack((line, sig, line - sig))


def _bollinger_forming(closed: Bars, last: np.ndarray, forming: Bars, c: IndicatorConfig) -> np.ndarray:
    window = _check_window("bollinger_period", c.bollinger_period)
    k = _check_k(c.bollinger_k)
    closes, now = closed["close"], forming["close"]
    out = np.full((now.size, 5), _NAN)
    # the window of each defined row, gathered block by block
    rows = np.flatnonzero(last + 2 >= window)
    offsets = np.arange(1 - window, 0, dtype=np.int64)  # closed bars last - window + 2 .. last
    for lo in range(0, rows.size, _FORMING_BLOCK):
        block = rows[lo : lo + _FORMING_BLOCK]
        view = np.empty((block.size, window), dtype=np.float64)
        view[:, :-1] = closes[last[block, None] + 1 + offsets]
        view[:, -1] = now[block]
        out[block] = np.column_stack(_bands(view, k))
    return out


# ---------------------------------------------------------------------------------------------------
# The built-in indicators: one registry entry each
# ---------------------------------------------------------------------------------------------------


class _CloseInput:
    """An incremental state of the close alone (the kernels above), taking whole bars as the registry does."""

    __slots__ = ("_state",)

    def __init__(self, state: RsiState | MacdState | BollingerState) -> None:
        self._state = state

    def update(self, bar: Ohlcv) -> tuple[float, ...]:
        value = self._state.update(bar.close)
        return value if isinstance(value, tuple) else (value,)

    def peek(self, bar: Ohlcv) -> tuple[float, ...]:
        value = self._state.peek(bar.close)
        return value if isinstance(value, tuple) else (value,)


RSI = register(
    Indicator(
        name="rsi",
        inputs=("close",),
        columns=("rsi",),
        warmup=lambda c: (c.rsi_period,),
        batch=lambda bars, c: rsi(bars["close"], c.rsi_period)[:, None],
        state=lambda c: _CloseInput(RsiState(c.rsi_period)),
        forming=_rsi_forming,
        # RSI / 100 - 0.5
        features=(("rsi", lambda raw, bars: raw[:, 0] / 100.0 - 0.5),),
    )
)
MACD = register(
    Indicator(
        name="macd",
        inputs=("close",),
        columns=("macd", "macd_signal", "macd_hist"),
        warmup=lambda c: (c.macd_slow, c.macd_slow + c.macd_signal - 1, c.macd_slow + c.macd_signal - 1),
        batch=lambda bars, c: np.column_stack(macd(bars["close"], c.macd_fast, c.macd_slow, c.macd_signal)),
        state=lambda c: _CloseInput(MacdState(c.macd_fast, c.macd_slow, c.macd_signal)),
        forming=_macd_forming,
        # the histogram in percent of the close
        features=(("macd", lambda raw, bars: raw[:, 2] / bars["close"] * 100.0),),
    )
)
BOLLINGER = register(
    Indicator(
        name="bollinger",
        inputs=("close",),
        columns=("bb_mid", "bb_upper", "bb_lower", "bb_pct_b", "bb_width"),
        warmup=lambda c: (c.bollinger_period,) * 5,
        batch=lambda bars, c: np.column_stack(bollinger(bars["close"], c.bollinger_period, c.bollinger_k)),
        state=lambda c: _CloseInput(BollingerState(c.bollinger_period, c.bollinger_k)),
        forming=_bollinger_forming,
        # %b - 0.5
        features=(("bb_pct_b", lambda raw, bars: raw[:, 3] - 0.5),),
    )
)

#: Columns of :func:`indicator_features` and of :meth:`IndicatorSet.update`, in order (follows the registry).
FEATURE_NAMES: Sequence[str] = NameView(column_names)
#: Column index by name (follows the registry).
FEATURE_INDEX: Mapping[str, int] = IndexView(column_names)


def state_feature_names() -> tuple[str, ...]:
    """The scaled indicator columns a bar puts in the state (``market.layout.BAR_FEATURES`` after OHLCV)."""
    return feature_names()


def warmup_bars(config: IndicatorConfig | None = None) -> dict[str, int]:
    """Number of bars each raw column needs before it is defined (not NaN).

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
    out: dict[str, int] = {}
    for ind in registered():
        out.update(zip(ind.columns, ind.warmup(c), strict=True))
    return out


# ---------------------------------------------------------------------------------------------------
# Every registered indicator at once: batch, incremental and forming
# ---------------------------------------------------------------------------------------------------


def _run_batch(columns: Mapping[str, np.ndarray], n: int, config: IndicatorConfig) -> np.ndarray:
    indicators = registered()
    out = np.empty((n, sum(len(ind.columns) for ind in indicators)), dtype=np.float64)
    j = 0
    for ind in indicators:
        k = len(ind.columns)
        out[:, j : j + k] = ind.batch(columns, config)
        j += k
    return out


def close_features(close: np.ndarray, config: IndicatorConfig | None = None) -> np.ndarray:
    """All indicator columns of :data:`FEATURE_NAMES` for a close series (every indicator must read the close only).

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
    ConfigError
        A registered indicator reads more than the close (use :func:`indicator_features` with whole bars).
    """
    c = config if config is not None else IndicatorConfig()
    more = [ind.name for ind in registered() if set(ind.inputs) - {"close"}]
    if more:
        raise ConfigError(f"indicator(s) {more} read more than the close: pass whole bars to indicator_features")
    x = _as_closes(close)
    return _run_batch({"close": x}, x.size, c)


def indicator_features(bars: Bars, config: IndicatorConfig | None = None) -> np.ndarray:
    """All indicator columns of :data:`FEATURE_NAMES` for a bar array (``records.BAR_DTYPE``).

    Parameters
    ----------
    bars : numpy.ndarray or mapping
        Structured array (or mapping of field to 1-D array) with the fields the indicators read, oldest first.
    config : IndicatorConfig, optional
        Indicator parameters; the defaults when omitted.

    Returns
    -------
    numpy.ndarray
        float64 ``[N, len(FEATURE_NAMES)]``, columns named by :data:`FEATURE_NAMES`.

    Raises
    ------
    DataError
        A field an indicator reads is missing, or holds a non-finite or non-positive price (negative volume).
    """
    c = config if config is not None else IndicatorConfig()
    columns = check_columns(bars, inputs(), "bars")
    return _run_batch(columns, next(iter(columns.values())).size, c)


class IndicatorSet:
    """Incremental form of :func:`indicator_features`, one closed bar at a time, over the registered indicators.

    ``update(bar)`` commits a closed bar (an :class:`~market.indicator_registry.Ohlcv`, a ``BAR_DTYPE`` record
    or an (o, h, l, c, v) sequence) and returns its row; ``peek(bar)`` returns the row of the forming bar and
    leaves the state as it was. Row ``i`` of the batch form equals what ``update`` returns for bar ``i``.
    The indicators are those registered when the set is made.
    """

    __slots__ = ("config", "_inputs", "_states", "count")

    def __init__(self, config: IndicatorConfig | None = None) -> None:
        self.config = config if config is not None else IndicatorConfig()
        indicators = registered()
        used = {f for ind in indicators for f in ind.inputs}
        self._inputs = tuple(f for f in OHLCV if f in used)
        self._states = tuple(ind.state(self.config) for ind in indicators)
        #: Closed bars committed so far.
        self.count = 0

    def update(self, bar: object) -> np.ndarray:
        """Commit one closed bar; return its float64 row (order of :data:`FEATURE_NAMES`)."""
        b = check_bar(bar, self.count, self._inputs)
        row = np.array([x for state in self._states for x in state.update(b)], dtype=np.float64)
        self.count += 1
        return row

    def peek(self, bar: object) -> np.ndarray:
        """Row of the forming bar ``bar``; the state does not change."""
        b = check_bar(bar, self.count, self._inputs)
        return np.array([x for state in self._states for x in state.peek(b)], dtype=np.float64)


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


def _replay_forming(
    ind: Indicator,
    closed: Mapping[str, np.ndarray],
    last: np.ndarray,
    forming: Mapping[str, np.ndarray],
    c: IndicatorConfig,
) -> np.ndarray:
    """``ind``'s forming rows by its incremental state: fed closed bars in order of ``last``, peeked per step."""

    def bar(cols: Mapping[str, np.ndarray], i: int) -> Ohlcv:
        return Ohlcv(*(float(cols[f][i]) if f in cols else _NAN for f in OHLCV))

    state = ind.state(c)
    out = np.empty((last.size, len(ind.columns)), dtype=np.float64)
    count = 0
    for t in np.argsort(last, kind="stable").tolist():
        while count <= last[t]:
            state.update(bar(closed, count))
            count += 1
        out[t] = state.peek(bar(forming, t))
    return out


def forming_features(
    closed: Bars,
    last_closed: np.ndarray,
    forming: Bars,
    config: IndicatorConfig | None = None,
) -> np.ndarray:
    """Rows of a forming bar at every base step: :meth:`IndicatorSet.peek` in batch.

    Row ``t`` is what an :class:`IndicatorSet` fed with closed bars ``0 .. last_closed[t]`` returns from
    ``peek`` of forming bar ``t``. Each indicator's forming kernel gives its columns (RSI and MACD are one
    EMA step from the batch state after bar ``last_closed[t]``; Bollinger bands sum each window as the
    incremental form does); one without a kernel replays its incremental state. Row ``t`` reads closed bars
    ``0 .. last_closed[t]`` only.

    Parameters
    ----------
    closed : numpy.ndarray or mapping
        The closed bars, oldest first: a bar array or mapping of fields, or (when every indicator reads the
        close only) a float64 ``[N]`` array of their closes.
    last_closed : numpy.ndarray
        Integer ``[T]``, the index into ``closed`` of the last bar closed by step ``t``; ``-1`` when none has
        closed yet. Any order (non-decreasing is typical, not required).
    forming : numpy.ndarray or mapping
        The forming bar as of step ``t``, ``[T]``, in the form of ``closed``.
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
        A value an indicator reads is not finite or not positive, ``last_closed`` is not an integer array as
        long as ``forming``, or one of its entries is outside ``-1 .. N - 1`` (the message names it).
    ConfigError
        Closes alone are given while an indicator reads more than the close.
    """
    c = config if config is not None else IndicatorConfig()
    if getattr(getattr(closed, "dtype", None), "names", None) is None and not isinstance(closed, Mapping):
        more = [ind.name for ind in registered() if set(ind.inputs) - {"close"}]
        if more:
            raise ConfigError(f"indicator(s) {more} read more than the close: pass whole bars to forming_features")
        closed_cols = {"close": _as_closes(closed, "closed_close")}
        forming_cols = {"close": _as_closes(forming, "forming_close")}
    else:
        closed_cols = check_columns(closed, inputs(), "closed")
        forming_cols = check_columns(forming, inputs(), "forming")
    n_closed = next(iter(closed_cols.values())).size
    n_steps = next(iter(forming_cols.values())).size
    last = _as_last_closed(last_closed, n_closed, n_steps)
    indicators = registered()
    out = np.empty((n_steps, sum(len(ind.columns) for ind in indicators)), dtype=np.float64)
    j = 0
    for ind in indicators:
        k = len(ind.columns)
        kernel = ind.forming
        out[:, j : j + k] = (
            kernel(closed_cols, last, forming_cols, c)
            if kernel is not None
            else _replay_forming(ind, closed_cols, last, forming_cols, c)
        )
        j += k
    return out
