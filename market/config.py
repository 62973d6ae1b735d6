"""Typed configuration of the market domain: symbols, bars, indicators, data sources, endpoints.

One pydantic model per concern; unknown keys, wrong types and out-of-range values are errors.
Composed into the experiment config by ``cluster.config``; never reads files itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .timeframes import TIMEFRAME_MS

_SYMBOL = re.compile(r"^[A-Z0-9]{5,20}$")


class StrictModel(BaseModel):
    """Base of every config model: frozen, no unknown keys, validated defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SymbolsConfig(StrictModel):
    """Which market is traded and which one is the reference."""

    traded: str = "ETHUSDT"
    reference: str = "BTCUSDT"

    @field_validator("traded", "reference")
    @classmethod
    def _binance_symbol(cls, value: str) -> str:
        if not _SYMBOL.match(value):
            raise ValueError(f"must be an upper-case Binance symbol such as ETHUSDT (got {value!r})")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> SymbolsConfig:
        if self.traded == self.reference:
            raise ValueError(f"traded and reference must differ (both {self.traded!r})")
        return self

    @property
    def all(self) -> tuple[str, str]:
        """Traded symbol first, then the reference."""
        return (self.traded, self.reference)


class BarsConfig(StrictModel):
    """Bar timeframes kept per symbol and the window length of each in the state."""

    timeframes: tuple[str, ...] = ("1s", "1m", "1h", "1d")
    window: int = Field(300, gt=0, le=10_000)

    @field_validator("timeframes")
    @classmethod
    def _known_and_increasing(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [tf for tf in value if tf not in TIMEFRAME_MS]
        if unknown:
            raise ValueError(f"unknown timeframe(s) {unknown}; expected some of {list(TIMEFRAME_MS)}")
        lengths = [TIMEFRAME_MS[tf] for tf in value]
        if not value or lengths != sorted(set(lengths)):
            raise ValueError(f"must be non-empty, distinct and increasing (got {list(value)})")
        return value


class IndicatorConfig(StrictModel):
    """Indicator parameters: RSI, MACD and Bollinger bands."""

    rsi_period: int = Field(14, ge=2)
    macd_fast: int = Field(12, ge=1)
    macd_slow: int = Field(26, ge=2)
    macd_signal: int = Field(9, ge=1)
    bollinger_period: int = Field(20, ge=2)
    bollinger_k: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> IndicatorConfig:
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast must be < macd_slow (got {self.macd_fast} >= {self.macd_slow})")
        return self


class EndpointsConfig(StrictModel):
    """Where market data comes from. Binance refuses some regions: point these at another endpoint
    (for example ``wss://data-stream.binance.vision`` for market data only) or at the local replay
    exchange (``ws://127.0.0.1:<port>``)."""

    ws_url: str = "wss://stream.binance.com:9443"
    rest_url: str = "https://api.binance.com"
    public_data_url: str = "https://data.binance.vision"

    @field_validator("ws_url")
    @classmethod
    def _ws_scheme(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"must start with ws:// or wss:// (got {value!r})")
        return value.rstrip("/")

    @field_validator("rest_url", "public_data_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {value!r})")
        return value.rstrip("/")


class DataConfig(StrictModel):
    """Where history is read from.

    ``auto`` uses the recorded files in ``shared_dir`` when present, then fetched data in
    ``data_dir``, and falls back to the seeded synthetic market (labelled synthetic everywhere).
    """

    source: Literal["auto", "shared", "fetched", "synthetic"] = "auto"
    shared_dir: Path = Path("../shared/data")
    data_dir: Path = Path("data")
    snapshot: str | None = None
    synthetic_seed: int = Field(7, ge=0)
