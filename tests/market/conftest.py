"""Fixtures of the market tests that replay the real captures through the live path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.captures import load_captures, trades_of, warm_klines


@pytest.fixture(scope="module")
def capture(shared_data: Path) -> dict[str, np.ndarray]:
    """Real ETHUSDT and BTCUSDT trades of the recorded websocket captures (same 11 minutes)."""
    return trades_of(load_captures(shared_data))


@pytest.fixture(scope="module")
def warm_bars(shared_data: Path) -> dict[str, np.ndarray]:
    """Real ETH hourly and daily klines reaching months back before the captures."""
    return warm_klines(shared_data)
