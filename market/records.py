"""Compact record layouts (numpy structured dtypes) shared by parsers, loaders and bars.

Column names follow Binance's meaning. Times are integer milliseconds since the epoch, UTC.
"""

from __future__ import annotations

import numpy as np

#: One trade (``@trade`` stream, ``historicalTrades`` REST, public-data trades files).
#: ``is_buyer_maker`` true means the aggressor sold.
TRADE_DTYPE = np.dtype(
    [
        ("time_ms", np.int64),
        ("trade_id", np.int64),
        ("price", np.float64),
        ("qty", np.float64),
        ("is_buyer_maker", np.bool_),
    ]
)

#: One aggregated trade (``@aggTrade``); ``agg_id`` plays the role of ``trade_id``.
AGG_TRADE_DTYPE = np.dtype(
    [
        ("time_ms", np.int64),
        ("agg_id", np.int64),
        ("first_trade_id", np.int64),
        ("last_trade_id", np.int64),
        ("price", np.float64),
        ("qty", np.float64),
        ("is_buyer_maker", np.bool_),
    ]
)

#: Best bid/ask update (``@bookTicker``). Spot frames carry no time: ``time_ms`` is the receive time.
BOOK_TICKER_DTYPE = np.dtype(
    [
        ("time_ms", np.int64),
        ("update_id", np.int64),
        ("bid", np.float64),
        ("bid_qty", np.float64),
        ("ask", np.float64),
        ("ask_qty", np.float64),
    ]
)

#: One OHLCV bar. Bars built from ticks fill every field; bars from klines fill ``buy_volume`` from the
#: taker-buy column where the file has it (else NaN, and ``sell_volume`` NaN too) and ``vwap`` from
#: quote volume / volume where the file has it (else the bar's (high + low + close) / 3).
BAR_DTYPE = np.dtype(
    [
        ("open_time_ms", np.int64),
        ("close_time_ms", np.int64),
        ("open", np.float64),
        ("high", np.float64),
        ("low", np.float64),
        ("close", np.float64),
        ("volume", np.float64),
        ("tick_count", np.int64),
        ("buy_volume", np.float64),
        ("sell_volume", np.float64),
        ("vwap", np.float64),
    ]
)


def empty(dtype: np.dtype, n: int = 0) -> np.ndarray:
    """Return a zero-filled structured array of ``n`` records of ``dtype``."""
    return np.zeros(n, dtype=dtype)


#: One kline event from the ``@kline_<interval>`` stream: a bar plus whether Binance marked it closed
#: (``x``) and the event time. The interval travels beside the array (one array per symbol and interval).
KLINE_EVENT_DTYPE = np.dtype(BAR_DTYPE.descr + [("is_closed", np.bool_), ("event_time_ms", np.int64)])
