"""Tests of cluster/data/history.py: every file per symbol and timeframe is read and merged in time, a folder
without 1m files says so (never a silent synthetic market), a reference market ending early is refused naming
both spans, partial last bars are dropped and said, and ``data.snapshot`` is what a run reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cluster.data.history import load_history, load_paths
from cluster.data.snapshot import arrays_from_kline_files, write_snapshot
from market.config import DataConfig, SymbolsConfig
from market.errors import DataError

SYMBOLS = SymbolsConfig()
KLINES = "binance/klines/{symbol}-{tf}-{span}.csv"
SPANS = {"1m": "2025-01-01_2025-02-04", "1h": {"ETHUSDT": "2024-05-13_2025-02-04", "BTCUSDT": "2023-01-01_2025-01-20"}}


def _source(shared: Path, symbol: str, tf: str = "1m") -> Path:
    span = SPANS[tf] if tf == "1m" else SPANS[tf][symbol]
    return shared / KLINES.format(symbol=symbol, tf=tf, span=span)


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _lines(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text().splitlines()
    return lines[0], lines[1:]


def test_the_recorded_folder_reads_every_file_of_a_series_not_only_the_first(shared_data: Path, tmp_path) -> None:
    klines = tmp_path / "binance" / "klines"
    for symbol in SYMBOLS.all:
        header, rows = _lines(_source(shared_data, symbol))
        _write(klines / f"{symbol}-1m-2025-01-01_2025-01-02.csv", header, rows[:1_000])
        _write(klines / f"{symbol}-1m-2025-01-20_2025-01-21.csv", header, rows[30_000:31_000])
    history = load_history(DataConfig(source="shared", shared_dir=tmp_path), SYMBOLS)
    eth = history.bars["ETHUSDT"]["1m"]
    assert eth.size == 2_000 and len(history.files) == 4
    note = next(n for n in history.notes if n.startswith("ETHUSDT 1m"))
    assert "2 file(s)" in note and "1 gap(s) of 29,000 missing bar(s)" in note


def test_a_folder_with_1h_and_1d_but_no_1m_files_says_exactly_that(shared_data: Path, tmp_path) -> None:
    klines = tmp_path / "binance" / "klines"
    klines.mkdir(parents=True)
    for symbol in SYMBOLS.all:
        shutil.copy(_source(shared_data, symbol, "1h"), klines)
    for source in ("auto", "shared"):
        with pytest.raises(DataError, match="ETHUSDT: 1h files but no 1m; BTCUSDT: 1h files but no 1m"):
            load_history(DataConfig(source=source, shared_dir=tmp_path), SYMBOLS)
    with pytest.raises(DataError, match="1h files but no 1m"):
        load_paths([klines], SYMBOLS)


def test_a_reference_market_that_ends_early_is_refused_naming_both_spans(shared_data: Path, tmp_path) -> None:
    header, eth = _lines(_source(shared_data, "ETHUSDT"))
    _, btc = _lines(_source(shared_data, "BTCUSDT"))
    _write(tmp_path / "ETHUSDT.csv", header, eth[:2_000])
    _write(tmp_path / "BTCUSDT.csv", header, btc[:1_500])
    with pytest.raises(
        DataError,
        match=r"reference market BTCUSDT \(2025-01-01 03:00 -> 2025-01-02 04:00 UTC\) ends "
        r"before the traded market ETHUSDT \(2025-01-01 03:00 -> 2025-01-02 12:20 UTC\)",
    ):
        load_paths([tmp_path], SYMBOLS)


def test_partial_last_bars_are_dropped_and_said(shared_data: Path, tmp_path) -> None:
    header, eth = _lines(_source(shared_data, "ETHUSDT"))
    _, btc = _lines(_source(shared_data, "BTCUSDT"))
    # 1m data ends at 03:30 on Jan 2; the 1h file's bar of 03:00 on Jan 2 had not closed then.
    cut = 24 * 60 + 30
    _write(tmp_path / "ETHUSDT-1m.csv", header, eth[:cut])
    _write(tmp_path / "BTCUSDT-1m.csv", header, btc[:cut])
    h_header, hours = _lines(_source(shared_data, "ETHUSDT", "1h"))
    jan2_0300 = "1735786800000"  # 2025-01-02 03:00 UTC, epoch ms as the 1h file writes it
    last = next(i for i, line in enumerate(hours) if line.startswith(jan2_0300))
    _write(tmp_path / "ETHUSDT-1h.csv", h_header, hours[: last + 1])
    history = load_paths([tmp_path], SYMBOLS)
    assert int(history.bars["ETHUSDT"]["1h"]["close_time_ms"][-1]) <= int(
        history.bars["ETHUSDT"]["1m"]["close_time_ms"][-1]
    )
    assert any("ETHUSDT 1h: 1 partial last bar(s) dropped (opening 2025-01-02 03:00 UTC" in n for n in history.notes)


def test_two_files_disagreeing_on_a_bar_are_refused_naming_both(shared_data: Path, tmp_path) -> None:
    header, eth = _lines(_source(shared_data, "ETHUSDT"))
    _write(tmp_path / "ETHUSDT-a.csv", header, eth[:100])
    changed = eth[99].split(",")
    changed[5] = str(float(changed[5]) + 1.0)  # another volume, same open time
    _write(tmp_path / "ETHUSDT-b.csv", header, [",".join(changed), *eth[100:200]])
    with pytest.raises(DataError, match="ETHUSDT-a.csv and .*ETHUSDT-b.csv both hold the bar opening"):
        load_paths([tmp_path], SYMBOLS)


def test_data_snapshot_is_what_the_history_reads(shared_data: Path, tmp_path) -> None:
    files = []
    for symbol in SYMBOLS.all:
        header, rows = _lines(_source(shared_data, symbol))
        files.append(_write(tmp_path / "src" / f"{symbol}-1m-x.csv", header, rows[5_000:6_000]))
    snap = write_snapshot(arrays_from_kline_files(files), tmp_path / "data" / "snapshots", "jan", sources=["test"])
    config = DataConfig(source="shared", shared_dir=shared_data, data_dir=tmp_path / "data", snapshot="jan")
    history = load_history(config, SYMBOLS)
    assert history.kind == "snapshot" and history.fingerprint == snap.fingerprint
    assert history.bars["ETHUSDT"]["1m"].size == 1_000  # not the 50,000 minutes of shared_dir
    with pytest.raises(DataError, match="data.snapshot 'nope'"):
        load_history(config.model_copy(update={"snapshot": "nope"}), SYMBOLS)
