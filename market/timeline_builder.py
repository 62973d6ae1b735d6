"""Builds the market timeline from trades and/or bars: rows per component and what is known at each step.

The one place where "known at t" is decided: a bar is known once its close time is <= t, the forming bar
as of t is built from base bars up to t only, a tick is known once its time is <= t. Never reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .bars import aggregate_bars, ticks_to_bars
from .config import IndicatorConfig
from .errors import DataError
from .indicator_registry import registered
from .indicators import forming_features, indicator_features
from .layout import (
    BAR_FEATURES,
    MARKETS,
    REFERENCE,
    ROLE_REGIME,
    ROLE_STRUCTURE,
    ROLE_TICKS,
    TICK_FEATURES,
    TRADED,
    StateConfig,
    StateLayout,
    build_layout,
)
from .pivots import WilliamsConfig, williams_features
from .records import BAR_DTYPE, TRADE_DTYPE
from .regime import regime_features
from .timeframes import TIMEFRAME_MS
from .timeline import MarketTimeline, WindowSource

_CLIP = 5.0


@dataclass(frozen=True, slots=True)
class MarketData:
    """The inputs of a timeline: trades and/or closed bars of the traded and the reference market.

    Attributes
    ----------
    traded_trades, reference_trades : TRADE_DTYPE arrays, optional
        Ticks; required for a profile with a tick window or a 1s base.
    traded_bars, reference_bars : dict of timeframe -> BAR_DTYPE, optional
        Closed bars from files (e.g. real 1m klines, and 1h/1d files that reach further back than the
        base data, for the long windows). Bars of the base timeframe are the steps where no ticks are given.
    synthetic : bool
        True when any of it was synthesized; carried onto the timeline and every figure printed from it.
    source : str
        Human-readable provenance (files, snapshot fingerprint).
    """

    traded_trades: np.ndarray | None = None
    reference_trades: np.ndarray | None = None
    traded_bars: dict[str, np.ndarray] = field(default_factory=dict)
    reference_bars: dict[str, np.ndarray] = field(default_factory=dict)
    synthetic: bool = False
    source: str = ""


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def _clean(x: np.ndarray) -> np.ndarray:
    """Warm-up NaNs become 0 (neutral), everything is clipped to an O(1) range."""
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=_CLIP, neginf=-_CLIP), -_CLIP, _CLIP)


def bar_rows(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    indicators: np.ndarray,
    anchor: float,
) -> np.ndarray:
    """Per-bar features in ``BAR_FEATURES`` order, float32 [F, N] (feature-major).

    Prices are log prices less ``anchor`` (made relative to the reference close at gather time); then each
    registered indicator's feature columns from its raw columns in ``indicators`` (``[N, len(FEATURE_NAMES)]``),
    scaled to O(1) by the registry entry, warm-up NaNs made neutral (0) and clipped.
    """
    bars = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    columns = [
        _log(open_) - anchor,
        _log(high) - anchor,
        _log(low) - anchor,
        _log(close) - anchor,
        np.log1p(np.maximum(volume, 0.0)),
    ]
    j = 0
    for indicator in registered():
        k = len(indicator.columns)
        raw = indicators[:, j : j + k]
        columns.extend(_clean(feature(raw, bars)) for _, feature in indicator.features)
        j += k
    rows = np.stack(columns)
    if rows.shape[0] != len(BAR_FEATURES) or j != indicators.shape[1]:
        raise DataError(
            f"bar rows: {rows.shape[0]} features from {indicators.shape[1]} indicator columns, the registry has "
            f"{len(BAR_FEATURES)} features of {j} columns (an indicator was registered after these rows were made)"
        )
    return rows.astype(np.float32)


def tick_rows(trades: np.ndarray, anchor: float) -> np.ndarray:
    """Per-tick features in ``TICK_FEATURES`` order, float32 [F, N], each from this and earlier ticks only."""
    price = trades["price"]
    qty = trades["qty"]
    t = trades["time_ms"]
    side = np.where(trades["is_buyer_maker"], -1.0, 1.0)
    dt = np.diff(t, prepend=t[:1]).astype(np.float64)
    ret_bp = np.diff(np.log(price), prepend=np.log(price[:1])) * 1e4
    in_last_second = np.arange(t.size) - np.searchsorted(t, t - 999, side="left") + 1
    notional = pd.Series(price * qty)
    qty_s = pd.Series(qty)
    vwap20 = (notional.rolling(20, min_periods=1).sum() / qty_s.rolling(20, min_periods=1).sum()).to_numpy()
    buy_qty = pd.Series(np.where(side > 0, qty, 0.0))
    buy_ratio = (buy_qty.rolling(20, min_periods=1).sum() / qty_s.rolling(20, min_periods=1).sum()).to_numpy()
    log_qty = np.log1p(qty)
    rows = np.stack(
        [
            np.log(price) - anchor,
            _log(vwap20) - anchor,
            log_qty,
            side,
            np.log1p(dt),
            np.clip(ret_bp, -_CLIP * 10, _CLIP * 10) / 10.0,
            np.log1p(in_last_second),
            side * log_qty,
            buy_ratio - 0.5,
            np.zeros_like(price),
        ]
    )
    assert rows.shape[0] == len(TICK_FEATURES)
    return rows.astype(np.float32)


def padded(rows: np.ndarray, pad: int) -> np.ndarray:
    """``rows`` [F, N] after ``pad`` leading zero columns, float32 (so a window ending at any row stays in bounds)."""
    out = np.zeros((rows.shape[0], pad + rows.shape[1]), dtype=np.float32)
    out[:, pad:] = rows
    return out


def tick_window(rows: np.ndarray, times_ms: np.ndarray, last: np.ndarray, pad: int, pad_time_ms: int) -> WindowSource:
    """The source of the tick window: ``rows`` [F, N] of :func:`tick_rows` at ``times_ms`` [N], after ``pad`` zero
    rows stamped ``pad_time_ms``; ``last`` [T] indexes the padded rows. Price and VWAP are the two price columns,
    relative to the traded market."""
    return WindowSource(
        rows=padded(rows, pad),
        last=last,
        pad=pad,
        price_columns=2,
        ref=TRADED,
        times_ms=np.concatenate([np.full(pad, pad_time_ms, dtype=np.int64), times_ms]),
        age_column=TICK_FEATURES.index("age_s"),
    )


def bar_window(
    rows: np.ndarray,
    last: np.ndarray,
    pad: int,
    ref: str,
    forming: np.ndarray | None = None,
    forming_valid: np.ndarray | None = None,
) -> WindowSource:
    """The source of a bar window: ``rows`` [F, N] of :func:`bar_rows` after ``pad`` zero rows; ``last`` [T] indexes
    the padded rows; ``forming`` [T, F] fills the last slot where the bars close after the step. Open, high, low and
    close are the four price columns, relative to the ``ref`` market."""
    return WindowSource(
        rows=padded(rows, pad),
        last=last,
        pad=pad,
        forming=forming,
        forming_valid=forming_valid,
        price_columns=4,
        ref=ref,
    )


def _known_index(close_time_ms: np.ndarray, step_time_ms: np.ndarray) -> np.ndarray:
    """Index of the last row whose close time is <= each step's time (-1 when none)."""
    return np.searchsorted(close_time_ms, step_time_ms, side="right").astype(np.int64) - 1


def _forming(
    base: np.ndarray, interval_ms: int, step_time_ms: np.ndarray, first_open_ms: int
) -> tuple[np.ndarray, ...]:
    """The bar of ``interval_ms`` forming as of each step, from the base bars up to that step only.

    At a step that closes the interval the forming bar is the next one, still empty: the previous close
    carried, zero volume (the bars' empty-interval rule). A forming bar whose interval opened before the
    first base bar is only partly covered by the data and is marked not valid.
    """
    group = base["open_time_ms"] // interval_ms
    frame = pd.DataFrame({"g": group, "h": base["high"], "l": base["low"], "v": base["volume"]})
    by = frame.groupby("g", sort=False)
    high = by["h"].cummax().to_numpy()
    low = by["l"].cummin().to_numpy()
    volume = by["v"].cumsum().to_numpy()
    first_in_group = np.r_[True, group[1:] != group[:-1]]
    open_idx = np.maximum.accumulate(np.where(first_in_group, np.arange(group.size), 0))
    open_ = base["open"][open_idx]
    close = base["close"].copy()
    valid = group * interval_ms >= first_open_ms
    closes_now = (step_time_ms + 1) % interval_ms == 0
    open_ = np.where(closes_now, close, open_)
    high = np.where(closes_now, close, high)
    low = np.where(closes_now, close, low)
    volume = np.where(closes_now, 0.0, volume)
    valid = valid | closes_now
    return open_, high, low, close, volume, valid


def _closed_bars(data: dict[str, np.ndarray], base: np.ndarray, timeframe: str) -> np.ndarray:
    """Closed bars of ``timeframe``: from the base bars where they cover a whole interval, and before that
    from the given files (which reach further back)."""
    interval = TIMEFRAME_MS[timeframe]
    built = aggregate_bars(base, timeframe)
    first_base_open = int(base["open_time_ms"][0])
    last_base_close = int(base["close_time_ms"][-1])
    complete = (built["open_time_ms"] >= first_base_open) & (built["close_time_ms"] <= last_base_close)
    built = built[complete]
    files = data.get(timeframe)
    if files is not None and files.size:
        if files.dtype != BAR_DTYPE:
            raise DataError(f"{timeframe} bars must be BAR_DTYPE records (got {files.dtype})")
        if np.any(np.diff(files["open_time_ms"]) != interval):
            files = aggregate_bars(files, timeframe)
        cutoff = int(built["open_time_ms"][0]) if built.size else last_base_close + 1
        files = files[files["close_time_ms"] < cutoff]
        built = np.concatenate([files, built]) if files.size else built
    return built


def _bar_window(
    bars_closed: np.ndarray,
    base: np.ndarray,
    timeframe: str,
    base_ms: int,
    step_time_ms: np.ndarray,
    window: int,
    ref: str,
    indicator_config: IndicatorConfig,
    anchor: float,
) -> WindowSource:
    interval = TIMEFRAME_MS[timeframe]
    closed_ind = indicator_features(bars_closed, indicator_config)
    rows = bar_rows(
        bars_closed["open"],
        bars_closed["high"],
        bars_closed["low"],
        bars_closed["close"],
        bars_closed["volume"],
        closed_ind,
        anchor,
    )
    last = _known_index(bars_closed["close_time_ms"], step_time_ms)
    if interval == base_ms:
        return bar_window(rows, last + window, window, ref)
    pad = window - 1
    o, h, lo, c, v, valid = _forming(base, interval, step_time_ms, int(base["open_time_ms"][0]))
    now = {"open": o, "high": h, "low": lo, "close": c, "volume": v}
    ind = forming_features(bars_closed, last, now, indicator_config)
    forming = bar_rows(o, h, lo, c, v, ind, anchor).T.copy()
    forming[~valid] = 0.0
    return bar_window(rows, last + pad, pad, ref, forming, valid)


def _base_bars(trades: np.ndarray | None, bars: dict[str, np.ndarray], base_tf: str, who: str) -> np.ndarray:
    if trades is not None and trades.size:
        if trades.dtype != TRADE_DTYPE:
            raise DataError(f"{who} trades must be TRADE_DTYPE records (got {trades.dtype})")
        return ticks_to_bars(trades, base_tf)
    if base_tf in bars and bars[base_tf].size:
        return aggregate_bars(bars[base_tf], base_tf)
    raise DataError(f"{who}: no trades and no {base_tf} bars to build base steps from")


def _align(bars: np.ndarray, timeframe: str, first_open: int, last_open: int, who: str) -> np.ndarray:
    """Bars of the reference market on exactly the traded market's base steps (gaps filled by the rule)."""
    if bars["open_time_ms"][0] > first_open:
        raise DataError(f"{who} data starts at {int(bars['open_time_ms'][0])}, after the traded market ({first_open})")
    filled = aggregate_bars(bars, timeframe, end_ms=max(last_open, int(bars["open_time_ms"][-1])))
    keep = (filled["open_time_ms"] >= first_open) & (filled["open_time_ms"] <= last_open)
    return filled[keep]


def build_timeline(
    data: MarketData,
    state: StateConfig | None = None,
    indicators: IndicatorConfig | None = None,
    williams: WilliamsConfig | None = None,
) -> MarketTimeline:
    """Build the market timeline of ``data`` for the state ``state`` describes.

    Parameters
    ----------
    data : MarketData
        Trades and/or bars of both markets.
    state : StateConfig, optional
        The state's profile and sizes (default profile when omitted).
    indicators : IndicatorConfig, optional
    williams : WilliamsConfig, optional

    Returns
    -------
    MarketTimeline
        One step per base bar of the traded market; step k's time is that bar's close time.
    """
    state = state or StateConfig()
    indicators = indicators or IndicatorConfig()
    layout: StateLayout = build_layout(state)
    base_tf = state.base_timeframe
    base_ms = TIMEFRAME_MS[base_tf]
    traded_base = _base_bars(data.traded_trades, data.traded_bars, base_tf, "traded market")
    reference_raw = _base_bars(data.reference_trades, data.reference_bars, base_tf, "reference market")
    # Steps start where both markets have data; the traded market's bars before that are dropped.
    traded_base = traded_base[traded_base["open_time_ms"] >= reference_raw["open_time_ms"][0]]
    if traded_base.size == 0:
        raise DataError("the reference market's data starts after the traded market's ends: no common span")
    step_time = traded_base["close_time_ms"].astype(np.int64)
    first_open, last_open = int(traded_base["open_time_ms"][0]), int(traded_base["open_time_ms"][-1])
    reference_base = _align(reference_raw, base_tf, first_open, last_open, "reference market")
    base = {TRADED: traded_base, REFERENCE: reference_base}
    files = {TRADED: data.traded_bars, REFERENCE: data.reference_bars}
    anchors = {m: float(np.log(base[m]["close"][0])) for m in MARKETS}
    windows: dict[str, WindowSource] = {}
    for comp in layout.components:
        if comp.kind != "window":
            continue
        if comp.role == ROLE_TICKS:
            if data.traded_trades is None or not data.traded_trades.size:
                raise DataError("the state has a tick window but the data has no trades of the traded market")
            trades = data.traded_trades
            times = trades["time_ms"]
            pad = comp.rows
            last = _known_index(times, step_time) + pad
            windows[comp.name] = tick_window(tick_rows(trades, anchors[TRADED]), times, last, pad, int(times[0]))
            continue
        market, timeframe = comp.market, comp.timeframe
        closed = base[market] if timeframe == base_tf else _closed_bars(files[market], base[market], timeframe)
        windows[comp.name] = _bar_window(
            closed, base[market], timeframe, base_ms, step_time, comp.rows, market, indicators, anchors[market]
        )
    vectors: dict[str, np.ndarray] = {}
    for comp in layout.by_role(ROLE_STRUCTURE):
        vectors[comp.name] = williams_features(traded_base["high"], traded_base["low"], traded_base["close"], williams)
    for comp in layout.by_role(ROLE_REGIME):
        vectors[comp.name] = regime_features(traded_base, reference_base).astype(np.float32)
    timeline = MarketTimeline(
        layout=layout,
        step_time_ms=step_time,
        refs={m: (np.log(base[m]["close"]) - anchors[m]).astype(np.float32) for m in MARKETS},
        windows=windows,
        vectors=vectors,
        base_close=traded_base["close"].astype(np.float64),
        base_high=traded_base["high"].astype(np.float64),
        base_low=traded_base["low"].astype(np.float64),
        synthetic=data.synthetic,
        source=data.source,
        meta={
            "base_timeframe": base_tf,
            "first_open_ms": first_open,
            "last_open_ms": last_open,
            "anchors": anchors,
            # The venue fills an order decided at t at the next base bar's open (the decision latency), and
            # caps resting fills by that bar's volume: both are the traded market's base bars, per step.
            "base_open": traded_base["open"].astype(np.float64),
            "base_volume": traded_base["volume"].astype(np.float64),
        },
    )
    timeline.validate()
    return timeline
