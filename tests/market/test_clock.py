"""Tests of market/clock.py: the wall clock is integer ms since the epoch and follows the system time."""

from __future__ import annotations

import time

from market.clock import wall_ms


def test_wall_ms_is_integer_milliseconds_of_the_system_clock() -> None:
    before = time.time_ns() // 1_000_000
    now = wall_ms()
    after = time.time_ns() // 1_000_000
    assert isinstance(now, int) and before <= now <= after
    assert now > 1_600_000_000_000  # after September 2020: milliseconds, not seconds
