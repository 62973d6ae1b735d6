"""Finds the history a run reads: the recorded files, else fetched Parquet, else the synthetic market.

Says which one it used (``History.kind``) and fingerprints the files, so the run record names its data.
Synthetic history is labelled synthetic and must be said so wherever a figure from it is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from market.config import DataConfig, SymbolsConfig
from market.datasets import load_klines, load_ws_capture, read_parquet
from market.errors import DataError
from market.fingerprint import array_fingerprint, files_fingerprint
from market.synthetic import synthetic_bars, synthetic_trades
from market.timeline_builder import MarketData

Kind = Literal["real", "fetched", "synthetic"]
SYNTHETIC_START_MS = 1_735_700_400_000  # 2025-01-01 03:00 UTC: the synthetic market's clock starts here


@dataclass(frozen=True, slots=True)
class History:
    """History of both markets: kline bars per timeframe and, where recorded, trades."""

    kind: Kind
    bars: dict[str, dict[str, np.ndarray]]
    trades: dict[str, np.ndarray] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    fingerprint: str = ""
    description: str = ""

    @property
    def synthetic(self) -> bool:
        """True when the history was synthesized (never for recorded or fetched files)."""
        return self.kind == "synthetic"

    def label(self) -> str:
        """What to print beside any figure computed from this history."""
        return "SYNTHETIC data" if self.synthetic else f"{self.kind} Binance data"

    def market_data(self, symbols: SymbolsConfig, *, ticks: bool) -> MarketData:
        """The builder's input: ticks (when asked and recorded) or bars, traded market then reference."""
        traded, reference = symbols.traded, symbols.reference
        if ticks:
            if traded not in self.trades or reference not in self.trades:
                raise DataError(f"no recorded trades of {traded} and {reference} in {self.description}")
            return MarketData(
                eth_trades=self.trades[traded],
                btc_trades=self.trades[reference],
                synthetic=self.synthetic,
                source=self.description,
            )
        return MarketData(
            eth_bars=self.bars.get(traded, {}),
            btc_bars=self.bars.get(reference, {}),
            synthetic=self.synthetic,
            source=self.description,
        )


def _shared(config: DataConfig, symbols: SymbolsConfig) -> History | None:
    root = config.shared_dir / "binance"
    klines_dir, ws_dir = root / "klines", root / "ws"
    if not klines_dir.is_dir():
        return None
    bars: dict[str, dict[str, np.ndarray]] = {}
    files: list[Path] = []
    for symbol in symbols.all:
        for tf in ("1m", "1h", "1d"):
            found = sorted(klines_dir.glob(f"{symbol}-{tf}-*.csv"))
            if found:
                bars.setdefault(symbol, {})[tf] = load_klines(found[0])
                files.append(found[0])
    if any("1m" not in bars.get(s, {}) for s in symbols.all):
        return None
    trades: dict[str, np.ndarray] = {}
    for symbol in symbols.all:
        captures = sorted(ws_dir.glob(f"spot_{symbol.lower()}_*.gz")) if ws_dir.is_dir() else []
        if captures:
            trades[symbol] = load_ws_capture(*captures, symbol=symbol).trades
            files.extend(captures)
    return History(
        kind="real",
        bars=bars,
        trades=trades,
        files=tuple(files),
        fingerprint=files_fingerprint(files),
        description=f"recorded Binance files in {config.shared_dir}",
    )


def _fetched(config: DataConfig, symbols: SymbolsConfig) -> History | None:
    bars: dict[str, dict[str, np.ndarray]] = {}
    files: list[Path] = []
    for symbol in symbols.all:
        for tf in ("1m", "1h", "1d"):
            found = sorted((config.data_dir / "spot").glob(f"*/klines/{symbol}/{tf}/*.parquet"))
            if found:
                parts = [read_parquet(p) for p in found]
                merged = np.concatenate(parts)
                merged = merged[np.unique(merged["open_time_ms"], return_index=True)[1]]
                bars.setdefault(symbol, {})[tf] = merged
                files.extend(found)
    if any("1m" not in bars.get(s, {}) for s in symbols.all):
        return None
    return History(
        kind="fetched",
        bars=bars,
        files=tuple(files),
        fingerprint=files_fingerprint(files),
        description=f"fetched public data in {config.data_dir}",
    )


def _synthetic(config: DataConfig, symbols: SymbolsConfig, days: int, tick_minutes: int) -> History:
    made = synthetic_bars(SYNTHETIC_START_MS, days * 86_400_000, seed=config.synthetic_seed, interval="1m")
    ticks = synthetic_trades(SYNTHETIC_START_MS, tick_minutes * 60_000, seed=config.synthetic_seed)
    names = dict(zip(("ETHUSDT", "BTCUSDT"), symbols.all, strict=True))
    bars = {names[s]: {"1m": b} for s, b in made.bars.items()}
    trades = {names[s]: t for s, t in ticks.trades.items()}
    fingerprint = array_fingerprint(*[b["1m"] for b in bars.values()], *trades.values())
    return History(
        kind="synthetic",
        bars=bars,
        trades=trades,
        fingerprint=fingerprint,
        description=(
            f"SYNTHETIC market (seed {config.synthetic_seed}, {days} days of 1m bars, {tick_minutes} min of ticks)"
        ),
    )


def load_history(
    config: DataConfig, symbols: SymbolsConfig, *, synthetic_days: int = 14, synthetic_tick_minutes: int = 15
) -> History:
    """Find the history ``config.source`` asks for (``auto``: recorded, then fetched, then synthetic).

    Raises
    ------
    DataError
        When a source named explicitly (``shared`` or ``fetched``) is not there.
    """
    if config.source in ("auto", "shared"):
        found = _shared(config, symbols)
        if found is not None:
            return found
        if config.source == "shared":
            raise DataError(f"no recorded kline files for {list(symbols.all)} under {config.shared_dir}/binance/klines")
    if config.source in ("auto", "fetched"):
        found = _fetched(config, symbols)
        if found is not None:
            return found
        if config.source == "fetched":
            raise DataError(
                f"no fetched 1m klines for {list(symbols.all)} under {config.data_dir}; run `rayscalp data fetch` first"
            )
    return _synthetic(config, symbols, synthetic_days, synthetic_tick_minutes)
