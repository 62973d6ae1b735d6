"""The one wall clock of the project: integer milliseconds since the epoch, UTC (the time unit used inside).

Every live component that needs "now" takes a ``clock`` callable defaulting to :func:`wall_ms`, so tests can
pass a fake one. Never used to time data: a trade's or a bar's time always comes from the data itself.
"""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Wall-clock time in integer ms since the epoch (UTC)."""
    return time.time_ns() // 1_000_000
