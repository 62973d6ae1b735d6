"""Timeframe names and their lengths in milliseconds.

Bars follow Binance's convention: a bar opening at ``open_time_ms`` closes at
``open_time_ms + interval_ms - 1`` and is *known* once ``t >= close_time_ms``.
"""

from __future__ import annotations

from .errors import ConfigError

TIMEFRAME_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


def timeframe_ms(name: str) -> int:
    """Return the length of timeframe ``name`` in milliseconds.

    Parameters
    ----------
    name : str
        A Binance interval name such as ``"1s"``, ``"1m"``, ``"1h"`` or ``"1d"``.

    Raises
    ------
    ConfigError
        If the name is not a supported timeframe.
    """
    try:
        return TIMEFRAME_MS[name]
    except KeyError:
        raise ConfigError(f"unknown timeframe {name!r}; expected one of {sorted(TIMEFRAME_MS)}") from None


def bar_close_time_ms(open_time_ms: int, interval_ms: int) -> int:
    """Close time of a bar (inclusive last millisecond), as Binance reports it."""
    return open_time_ms + interval_ms - 1
