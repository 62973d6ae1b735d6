"""What the unified stream hands its consumers: training windows, UI status and bar updates (frozen records).

Owns the shape of those packets only; builds nothing and never imports Ray. Every array in a packet is a
copy the stream no longer touches, so a consumer may keep it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DATA_TYPES",
    "OhlcvUpdate",
    "SymbolStatus",
    "SymbolWindows",
    "TrainingDataPacket",
    "UIDataPacket",
]

#: The data types a consumer may register for (``books``: the book tickers received, for the spread).
DATA_TYPES: tuple[str, ...] = ("ticks", "ohlcv", "training_data", "ui_data", "books")


@dataclass(frozen=True, slots=True)
class OhlcvUpdate:
    """Bars of one symbol and timeframe that closed since a consumer's ``since_seq``, and the forming bar.

    Attributes
    ----------
    closed : np.ndarray
        BAR_DTYPE, oldest first (empty when none closed).
    forming : np.ndarray
        BAR_DTYPE of length 1, or 0 while no bar is forming (before the first trade).
    """

    closed: np.ndarray
    forming: np.ndarray


@dataclass(frozen=True, slots=True)
class SymbolWindows:
    """The windows of one symbol as of one stream sequence number.

    Attributes
    ----------
    symbol : str
    bars : mapping of timeframe -> np.ndarray
        BAR_DTYPE, the last ``window`` closed bars (fewer while the stream holds fewer), oldest first.
    features : mapping of timeframe -> np.ndarray
        float64 ``[len(bars[tf]), len(feature_names)]``: the indicator row of each closed bar.
    forming : mapping of timeframe -> np.ndarray
        BAR_DTYPE of length 1 (the bar holding the stream's clock) or 0.
    forming_features : mapping of timeframe -> np.ndarray
        float64 ``[len(forming[tf]), len(feature_names)]``: indicators of the forming bar as it stands.
    ticks : np.ndarray
        TRADE_DTYPE, the last ``tick_window`` trades of the tick cache (fewer while it holds fewer).
    """

    symbol: str
    bars: Mapping[str, np.ndarray]
    features: Mapping[str, np.ndarray]
    forming: Mapping[str, np.ndarray]
    forming_features: Mapping[str, np.ndarray]
    ticks: np.ndarray


@dataclass(frozen=True, slots=True)
class TrainingDataPacket:
    """Windows of the traded and the reference symbol, from one state of the stream.

    Attributes
    ----------
    seq : int
        The stream sequence number the packet was built at.
    time_ms : int
        Time of the newest trade of either symbol (the data's clock), or -1 before any.
    built_ms : int
        Wall time the packet was built.
    window : int
        Closed bars asked per timeframe.
    tick_window : int
        Ticks asked per symbol.
    feature_names : tuple of str
        Column names of the feature arrays (``market.indicators.FEATURE_NAMES``).
    traded, reference : SymbolWindows
    """

    seq: int
    time_ms: int
    built_ms: int
    window: int
    tick_window: int
    feature_names: tuple[str, ...]
    traded: SymbolWindows
    reference: SymbolWindows


@dataclass(frozen=True, slots=True)
class SymbolStatus:
    """What the UI shows of one symbol.

    ``last_price``, ``bid``, ``ask`` and ``spread`` are NaN until known; ``last_trade_ms`` is -1 before any
    trade. ``bars_1s`` counts the closed 1s bars the stream holds (0 when 1s is not a configured timeframe).
    """

    symbol: str
    tick_cache_count: int
    bars_1s: int
    last_price: float
    last_trade_ms: int
    bid: float
    ask: float
    spread: float
    gaps: int
    missing_trade_ids: int


@dataclass(frozen=True, slots=True)
class UIDataPacket:
    """Stream status for the live page, built from the same state as :class:`TrainingDataPacket`.

    Attributes
    ----------
    seq, time_ms, built_ms : int
        As in :class:`TrainingDataPacket`.
    status : str
        ``"LIVE"`` when the stream took in a trade of the traded symbol within ``stale_after_ms`` of
        ``built_ms``, else ``"STALE"``.
    stale_after_ms : int
    lag_ms : int
        ``built_ms`` minus the traded symbol's last trade time (-1 before any trade).
    traded, reference : SymbolStatus
    reconnects, bad_frames, backfilled_trades : int
        As reported by ingestion (0 when its batches carry no counters).
    gaps : int
        Trade gaps recorded, all symbols.
    chart : mapping of timeframe -> np.ndarray
        BAR_DTYPE, the traded symbol's latest closed bars followed by the forming one.
    """

    seq: int
    time_ms: int
    built_ms: int
    status: str
    stale_after_ms: int
    lag_ms: int
    traded: SymbolStatus
    reference: SymbolStatus
    reconnects: int
    bad_frames: int
    backfilled_trades: int
    gaps: int
    chart: Mapping[str, np.ndarray]
