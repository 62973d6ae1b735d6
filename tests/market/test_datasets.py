"""market.datasets: every real kline layout, public-data trades, quality reports, refusals, Parquet, captures."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.datasets import (
    Gap,
    inspect_klines,
    interval_to_ms,
    iter_capture_lines,
    kline_quality,
    load_agg_trades,
    load_klines,
    load_trades,
    load_ws_capture,
    read_klines,
    read_parquet,
    read_parquet_metadata,
    to_ms,
    write_parquet,
)
from market.errors import DataError
from market.records import AGG_TRADE_DTYPE, BAR_DTYPE, BOOK_TICKER_DTYPE, TRADE_DTYPE

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def _ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


def _write_zip(path: Path, member: str, text: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, text)
    return path


# --------------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    ("name", "rows", "interval", "first_open", "first_ohlcv"),
    [
        (
            "ETHUSDT-1m-2025-01-01_2025-02-04.csv",
            50_000,
            MINUTE,
            "2025-01-01 03:00",
            (3362.61, 3362.75, 3360.54, 3360.54, 70.1338),
        ),
        (
            "BTCUSDT-1m-2025-01-01_2025-02-04.csv",
            50_000,
            MINUTE,
            "2025-01-01 03:00",
            (94098.9, 94098.91, 94049.47, 94049.47, 7.50148),
        ),
        (
            "ETHUSDT-1d-2022-11-11_2025-02-04.csv",
            817,
            DAY,
            "2022-11-11",
            (1299.28, 1310.0, 1201.26, 1289.28, 1308087.1498),
        ),
        (
            "BTCUSDT-1d-2022-11-11_2025-02-04.csv",
            817,
            DAY,
            "2022-11-11",
            (17602.45, 17695.0, 16361.6, 17070.31, 393552.86492),
        ),
        (
            "BTCUSDT-1h-2023-01-01_2025-01-20.csv",
            18_000,
            HOUR,
            "2023-01-01",
            (16541.77, 16545.7, 16508.39, 16529.67, 4364.8357),
        ),
    ],
)
def test_real_ohlcv_files_load_with_inferred_interval_and_typical_price_vwap(
    shared_data: Path, name: str, rows: int, interval: int, first_open: str, first_ohlcv: tuple
) -> None:
    bars, quality = read_klines(shared_data / "binance" / "klines" / name)
    assert bars.dtype == BAR_DTYPE and bars.size == rows == quality.rows
    assert quality.interval_ms == interval and quality.duplicates == 0
    assert bars["open_time_ms"][0] == _ms(first_open) == quality.first_open_ms
    assert tuple(bars[0][["open", "high", "low", "close", "volume"]].tolist()) == first_ohlcv
    assert np.all(bars["close_time_ms"] == bars["open_time_ms"] + interval - 1)
    # no taker-buy, trades or quote columns in these files
    assert np.all(bars["tick_count"] == 0)
    assert np.isnan(bars["buy_volume"]).all() and np.isnan(bars["sell_volume"]).all()
    np.testing.assert_allclose(bars["vwap"], (bars["high"] + bars["low"] + bars["close"]) / 3)


def test_real_btc_1h_reports_the_2023_03_24_exchange_outage_as_its_only_gap(shared_data: Path) -> None:
    quality = inspect_klines(shared_data / "binance" / "klines" / "BTCUSDT-1h-2023-01-01_2025-01-20.csv")
    assert quality.gaps == (Gap(_ms("2023-03-24 13:00"), _ms("2023-03-24 13:00"), 1),)
    assert quality.missing_bars == 1 and not quality.is_complete
    assert "1 gaps (1 bars missing: 2023-03-24 13:00 x1)" in str(quality)


def test_real_eth_1h_full_binance_columns_fill_trades_taker_buy_and_vwap(shared_data: Path) -> None:
    bars = load_klines(shared_data / "binance" / "klines" / "ETHUSDT-1h-2024-05-13_2025-02-04.csv")
    assert bars.size == 6416 and bars["open_time_ms"][0] == 1715616000000
    first = bars[0]
    assert first["close_time_ms"] == 1715619599999  # the file's own close_time
    assert first["tick_count"] == 41899 and first["buy_volume"] == 12180.3407
    assert first["sell_volume"] == pytest.approx(19006.39 - 12180.3407)
    assert first["vwap"] == pytest.approx(56397441.38 / 19006.39)
    assert np.all((bars["vwap"] >= bars["low"]) & (bars["vwap"] <= bars["high"]))
    assert inspect_klines(shared_data / "binance" / "klines" / "ETHUSDT-1h-2024-05-13_2025-02-04.csv").is_complete


@pytest.mark.parametrize(
    ("name", "interval", "header"),
    [
        ("ETHUSDT-1m-2022-08-14.zip", MINUTE, None),
        ("ETHUSDT-1m-2022-08-15.zip", MINUTE, None),
        ("BTCUSDT-1h-2022-09-07.zip", HOUR, None),
        ("BTCUSDT-1h-2022-09-08.zip", HOUR, None),
        ("BTCUSDT-1m-2022-09-05.zip", MINUTE, 0),  # USD-M futures files carry a header
        ("BTCUSDT-1m-2022-09-06.zip", MINUTE, 0),
        ("ETHUSDT-1h-2022-08-24.zip", HOUR, 0),
        ("ETHUSDT-1h-2022-08-25.zip", HOUR, 0),
    ],
)
def test_real_public_data_zips_match_their_twelve_columns(shared_data: Path, name: str, interval: int, header) -> None:
    path = shared_data / "binance" / "vision" / name
    bars, quality = read_klines(path)
    raw = pd.read_csv(path, header=header).to_numpy()
    assert quality.interval_ms == interval and quality.is_complete and bars.size == DAY // interval
    np.testing.assert_array_equal(bars["open_time_ms"], raw[:, 0].astype(np.int64))
    np.testing.assert_array_equal(bars["close_time_ms"], raw[:, 6].astype(np.int64))
    for k, field in enumerate(["open", "high", "low", "close", "volume"], start=1):
        np.testing.assert_array_equal(bars[field], raw[:, k].astype(float))
    np.testing.assert_array_equal(bars["tick_count"], raw[:, 8].astype(np.int64))
    np.testing.assert_array_equal(bars["buy_volume"], raw[:, 9].astype(float))
    np.testing.assert_allclose(bars["vwap"], raw[:, 7].astype(float) / raw[:, 5].astype(float))


def test_public_data_in_microseconds_reads_the_same_as_in_milliseconds(shared_data: Path, tmp_path: Path) -> None:
    original = shared_data / "binance" / "vision" / "ETHUSDT-1m-2022-08-14.zip"
    text = zipfile.ZipFile(original).read("ETHUSDT-1m-2022-08-14.csv").decode()
    rows = [line.split(",") for line in text.splitlines()]
    for row in rows:
        row[0] = str(int(row[0]) * 1000 + 123)  # us, with a sub-millisecond part
        row[6] = str(int(row[6]) * 1000 + 999)
    us = _write_zip(tmp_path / "us.zip", "us.csv", "\n".join(",".join(r) for r in rows) + "\n")
    a, b = load_klines(original), load_klines(us)
    for field in BAR_DTYPE.names:
        np.testing.assert_array_equal(a[field], b[field], err_msg=field)


# --------------------------------------------------------------------------------------------- round trip


def _random_bars(seed: int, n: int, interval: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start = (1_600_000_000_000 // interval) * interval
    bars = np.zeros(n, dtype=BAR_DTYPE)
    bars["open_time_ms"] = start + np.arange(n) * interval
    bars["close_time_ms"] = bars["open_time_ms"] + interval - 1
    o = np.round(1000 + rng.random(n) * 100, 2)
    c = np.round(1000 + rng.random(n) * 100, 2)
    bars["open"], bars["close"] = o, c
    bars["high"] = np.maximum(o, c) + np.round(rng.random(n), 2)
    bars["low"] = np.minimum(o, c) - np.round(rng.random(n), 2)
    bars["volume"] = np.round(rng.random(n) * 50, 4)
    bars["tick_count"] = rng.integers(0, 1000, n)
    bars["buy_volume"] = np.round(bars["volume"] * rng.random(n), 4)
    bars["sell_volume"] = bars["volume"] - bars["buy_volume"]
    return bars


def _render(bars: np.ndarray, layout: str) -> str:
    def fmt_time(t: int) -> str:
        return pd.Timestamp(int(t), unit="ms").strftime("%Y-%m-%d %H:%M:%S")

    lines = []
    for b in bars:
        ohlcv = ",".join(repr(float(b[f])) for f in ("open", "high", "low", "close", "volume"))
        if layout == "datetime":
            lines.append(f"{fmt_time(b['open_time_ms'])},{ohlcv}")
        elif layout == "epoch_ms":
            lines.append(f"{b['open_time_ms']},{ohlcv}")
        else:  # public data, 12 columns, ms or us
            scale = 1000 if layout == "public_us" else 1
            quote = float(b["vwap"]) * float(b["volume"])
            lines.append(
                f"{b['open_time_ms'] * scale},{ohlcv},{b['close_time_ms'] * scale},{quote!r},"
                f"{b['tick_count']},{float(b['buy_volume'])!r},0,0"
            )
    header = {
        "datetime": "timestamp,open,high,low,close,volume\n",
        "epoch_ms": "open_time,Open,High,Low,Close,Volume\n",
    }
    return header.get(layout, "") + "\n".join(lines) + "\n"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 60),
    interval=st.sampled_from([1000, MINUTE, HOUR, DAY]),
    layout=st.sampled_from(["datetime", "epoch_ms", "public_ms", "public_us"]),
)
def test_every_layout_round_trips_bars_exactly(tmp_path: Path, seed: int, n: int, interval: int, layout: str) -> None:
    bars = _random_bars(seed, n, interval)
    full = layout.startswith("public")
    if full:
        bars["vwap"] = np.round((bars["high"] + bars["low"]) / 2, 2)
    else:
        bars["tick_count"], bars["buy_volume"], bars["sell_volume"] = 0, np.nan, np.nan
        bars["vwap"] = (bars["high"] + bars["low"] + bars["close"]) / 3
    path = tmp_path / f"{layout}-{seed}-{n}.csv"
    path.write_text(_render(bars, layout))
    got, quality = read_klines(path)
    assert quality.interval_ms == interval and quality.is_complete
    for field in ("open_time_ms", "close_time_ms", "open", "high", "low", "close", "volume", "tick_count"):
        np.testing.assert_array_equal(got[field], bars[field], err_msg=field)
    np.testing.assert_allclose(got["vwap"], bars["vwap"], rtol=1e-12)
    np.testing.assert_allclose(got["buy_volume"], bars["buy_volume"], rtol=1e-12)
    if full:
        np.testing.assert_allclose(got["sell_volume"], np.maximum(bars["volume"] - bars["buy_volume"], 0), atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 200), drops=st.integers(0, 20))
def test_quality_report_lists_exactly_the_missing_bars(seed: int, n: int, drops: int) -> None:
    rng = np.random.default_rng(seed)
    bars = _random_bars(seed, n, MINUTE)
    removed = rng.choice(np.arange(1, n - 1), size=min(drops, n - 2), replace=False)
    kept = np.delete(bars, removed)
    quality = kline_quality(kept, MINUTE)
    missing = sorted(int(t) for g in quality.gaps for t in range(g.start_ms, g.end_ms + 1, MINUTE))
    assert missing == sorted(int(t) for t in bars["open_time_ms"][removed])
    assert quality.missing_bars == removed.size and quality.rows == n - removed.size


# --------------------------------------------------------------------------------------------- refusals

GOOD = [
    "timestamp,open,high,low,close,volume",
    "2024-01-01 00:00:00,100.0,101.0,99.0,100.5,10.0",
    "2024-01-01 00:01:00,100.5,102.0,100.0,101.0,11.0",
    "2024-01-01 00:02:00,101.0,101.5,100.5,101.2,12.0",
    "2024-01-01 00:03:00,101.2,101.9,100.9,101.5,13.0",
]


def _with_row(tmp_path: Path, index: int, row: str) -> Path:
    lines = list(GOOD)
    lines[index] = row
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("index", "row", "fragments"),
    [
        (3, "2024-01-01 00:02:00,101.0,101.5,100.5,NaN,12.0", ["data row 3", "close", "NaN"]),
        (2, "2024-01-01 00:01:00,100.5,102.0,100.0,,11.0", ["data row 2", "close", "''"]),
        (4, "2024-01-01 00:03:00,101.2,101.9,100.9,101.5,abc", ["data row 4", "volume", "abc"]),
        (2, "2024-01-01 00:01:00,100.5,102.0,100.0,101.0,-11.0", ["data row 2", "volume", "-11.0", "negative"]),
        (1, "2024-01-01 00:00:00,-100.0,101.0,99.0,100.5,10.0", ["data row 1", "open", "-100.0"]),
        (3, "2024-01-01 00:02:00,101.0,101.5,100.5,inf,12.0", ["data row 3", "close", "inf"]),
        (3, "2024-01-01 00:00:30,101.0,101.5,100.5,101.2,12.0", ["data row 3", "not sorted"]),
        (3, "2024-01-01 00:01:00,101.0,101.5,100.5,101.2,12.0", ["data row 3", "repeats row 2"]),
        (3, "2024-01-01 00:02:00,101.0,100.0,100.5,101.2,12.0", ["data row 3", "inconsistent"]),
        (4, "2024-01-01 00:03:30,101.2,101.9,100.9,101.5,13.0", ["data row 4", "60000 ms"]),
        (2, "yesterday,100.5,102.0,100.0,101.0,11.0", ["data row 2", "timestamp", "yesterday"]),
    ],
)
def test_bad_rows_are_refused_naming_file_row_and_value(
    tmp_path: Path, index: int, row: str, fragments: list[str]
) -> None:
    path = _with_row(tmp_path, index, row)
    with pytest.raises(DataError) as info:
        load_klines(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_exact_duplicate_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("\n".join([*GOOD[:3], GOOD[2], *GOOD[3:], GOOD[4]]) + "\n")
    bars, quality = read_klines(path)
    assert bars.size == 4 and quality.rows == 4 and quality.duplicates == 2 and not quality.is_complete
    assert np.all(np.diff(bars["open_time_ms"]) == MINUTE)


def test_gaps_and_explicit_interval(tmp_path: Path) -> None:
    path = tmp_path / "gappy.csv"
    path.write_text("\n".join([GOOD[0], GOOD[1], GOOD[4]]) + "\n")
    bars, quality = read_klines(path, interval="1m")
    assert quality.gaps == (Gap(_ms("2024-01-01 00:01"), _ms("2024-01-01 00:02"), 2),)
    one = tmp_path / "one.csv"
    one.write_text("\n".join(GOOD[:2]) + "\n")
    with pytest.raises(DataError, match="interval="):
        load_klines(one)
    assert load_klines(one, interval=MINUTE)["close_time_ms"][0] == _ms("2024-01-01") + MINUTE - 1


def test_corrupt_or_empty_archives_are_refused(shared_data: Path, tmp_path: Path) -> None:
    data = bytearray((shared_data / "binance" / "vision" / "BTCUSDT-1h-2022-09-07.zip").read_bytes())
    data[100:140] = bytes(40)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match="broken.zip"):
        load_klines(broken)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_klines(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="no such file"):
        load_klines(tmp_path / "absent.csv")


def test_interval_names_and_time_units() -> None:
    assert interval_to_ms("1m") == MINUTE and interval_to_ms("3m") == 3 * MINUTE and interval_to_ms("1w") == 7 * DAY
    assert interval_to_ms(5000) == 5000
    for bad in ("1M", "m1", 0, "0m"):
        with pytest.raises(DataError):
            interval_to_ms(bad)
    t = 1_735_689_600_000
    np.testing.assert_array_equal(to_ms(np.array([t // 1000, t, t * 1000 + 999, t * 1_000_000])), [t, t, t, t])


# --------------------------------------------------------------------------------------------- trades


def test_spot_trades_headerless_with_best_match_in_microseconds(tmp_path: Path) -> None:
    text = (
        "10,3300.50,0.1000,330.05,1735689600123456,True,True\n11,3300.49,0.2000,660.098,1735689600123999,False,True\n"
    )
    trades = load_trades(_write_zip(tmp_path / "ETHUSDT-trades-2025-01-01.zip", "ETHUSDT-trades-2025-01-01.csv", text))
    assert trades.dtype == TRADE_DTYPE
    assert trades.tolist() == [(1735689600123, 10, 3300.5, 0.1, True), (1735689600123, 11, 3300.49, 0.2, False)]


def test_futures_trades_with_header_in_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n5,20000.1,0.003,60.0003,1662336000001,false\n6,20000.2,0.001,20.0002,1662336000002,true\n"
    )
    trades = load_trades(path)
    assert trades["trade_id"].tolist() == [5, 6] and trades["is_buyer_maker"].tolist() == [False, True]
    assert trades["time_ms"].tolist() == [1662336000001, 1662336000002]


def test_agg_trades_both_layouts(tmp_path: Path) -> None:
    spot = tmp_path / "a.csv"
    spot.write_text("100,1.5,2.0,7,9,1735689600000000,True,True\n101,1.6,1.0,10,10,1735689600500000,False,True\n")
    um = tmp_path / "b.csv"
    um.write_text(
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n100,1.5,2.0,7,9,1735689600000,true\n101,1.6,1.0,10,10,1735689600500,false\n"
    )
    a, b = load_agg_trades(spot), load_agg_trades(um)
    assert a.dtype == AGG_TRADE_DTYPE
    np.testing.assert_array_equal(a, b)
    assert a.tolist()[0] == (1735689600000, 100, 7, 9, 1.5, 2.0, True)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("1,10.0,1.0,10.0,1000000000000,True,True\n1,10.0,1.0,10.0,1000000000001,True,True\n", ["data row 2", "id 1"]),
        (
            "1,10.0,1.0,10.0,1000000000000,True,True\n2,10.0,1.0,10.0,1000000000001,maybe,True\n",
            ["data row 2", "maybe"],
        ),
        ("1,0.0,1.0,10.0,1000000000000,True,True\n", ["data row 1", "price", "positive"]),
        (
            "1,10.0,1.0,10.0,1000000000005,True,True\n2,10.0,1.0,10.0,1000000000001,True,True\n",
            ["data row 2", "not sorted"],
        ),
        ("1,10.0,1.0,True,True\n", ["5 columns"]),
    ],
)
def test_bad_trades_are_refused_naming_the_row(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_trades(path)
    assert str(path) in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


# --------------------------------------------------------------------------------------------- parquet


@pytest.mark.parametrize("dtype", [BAR_DTYPE, TRADE_DTYPE, AGG_TRADE_DTYPE, BOOK_TICKER_DTYPE])
def test_parquet_round_trips_every_record_dtype_with_metadata(tmp_path: Path, dtype: np.dtype) -> None:
    rng = np.random.default_rng(0)
    records = np.zeros(257, dtype=dtype)
    for name in dtype.names:
        kind = dtype[name].kind
        records[name] = (
            rng.random(257) < 0.5 if kind == "b" else (rng.integers(0, 2**40, 257) if kind == "i" else rng.random(257))
        )
    if "buy_volume" in dtype.names:
        records["buy_volume"][::3] = np.nan
    path = write_parquet(records, tmp_path / "x" / "y.parquet", metadata={"source": "test", "synthetic": "false"})
    back = read_parquet(path)
    assert back.dtype == dtype
    for name in dtype.names:
        np.testing.assert_array_equal(back[name], records[name])
    assert read_parquet_metadata(path) == {"source": "test", "synthetic": "false"}
    assert [p.name for p in path.parent.iterdir()] == ["y.parquet"]  # no temporary file left


def test_parquet_refuses_missing_columns_and_garbage(tmp_path: Path) -> None:
    trades = np.zeros(3, dtype=TRADE_DTYPE)
    path = write_parquet(trades, tmp_path / "t.parquet")
    with pytest.raises(DataError, match="'open_time_ms' missing"):
        read_parquet(path, BAR_DTYPE)
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="g.parquet"):
        read_parquet(garbage)
    with pytest.raises(DataError, match="structured"):
        write_parquet(np.zeros(3), tmp_path / "plain.parquet")


# --------------------------------------------------------------------------------------------- captures


def test_capture_lines_of_the_real_eth_capture(shared_data: Path) -> None:
    path = shared_data / "binance" / "ws" / "spot_ethusdt_20240808.gz"
    lines = list(iter_capture_lines(path))
    assert len(lines) == 33_618
    ns, payload = lines[0]
    assert ns == 1723161254024619568 and payload.startswith(b'{"stream":"ethusdt@bookTicker"')
    assert all(isinstance(n, int) and p[:1] == b"{" for n, p in lines)
    assert lines[-1][0] == 1723161599900862584


def test_malformed_capture_lines_raise_or_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "cap.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'1 {"a":1}\nnot-a-number {"b":2}\n\n3 {"c":3}\n4\n')
    with pytest.raises(DataError, match="line 2"):
        list(iter_capture_lines(path))
    bad: list[int] = []
    good = list(iter_capture_lines(path, on_malformed=lambda n, line, why: bad.append(n)))
    assert good == [(1, b'{"a":1}'), (3, b'{"c":3}')] and bad == [2, 5]


def test_truncated_capture_gzip_is_reported(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as fh:
        fh.write(b"".join(b'%d {"n":%d}\n' % (i, i) for i in range(1, 5000)))
    path = tmp_path / "cut.gz"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        list(iter_capture_lines(path))
    reasons: list[str] = []
    got = list(iter_capture_lines(path, on_malformed=lambda n, line, why: reasons.append(why)))
    assert 0 < len(got) < 4999 and len(reasons) == 1
    assert [n for n, _ in got] == list(range(1, len(got) + 1))


# --------------------------------------------------------------------------------------------- ws capture


def _ws(shared: Path, symbol: str, day: str) -> Path:
    return shared / "binance" / "ws" / f"spot_{symbol}usdt_{day}.gz"


def _trades_by_json(*paths: Path) -> list[tuple]:
    """Independent reference: the trade frames of a capture read with the json module."""
    out = {}
    for path in paths:
        with gzip.open(path, "rt") as fh:
            for line in fh:
                frame = json.loads(line.split(" ", 1)[1]).get("data", {})
                if frame.get("e") == "trade":
                    out[frame["t"]] = (frame["T"], frame["t"], float(frame["p"]), float(frame["q"]), frame["m"])
    return [out[k] for k in sorted(out)]


def test_real_eth_capture_split_in_two_files_loads_as_one(shared_data: Path) -> None:
    paths = (_ws(shared_data, "eth", "20240808"), _ws(shared_data, "eth", "20240809"))
    capture = load_ws_capture(*paths)
    assert capture.symbol == "ETHUSDT" and capture.sources == tuple(map(str, paths))
    assert capture.trades.dtype == TRADE_DTYPE and capture.book_tickers.dtype == BOOK_TICKER_DTYPE
    assert capture.trades.tolist() == _trades_by_json(*paths)
    assert capture.trades.size == 14_515 and capture.duplicate_trades == 0 and capture.missing_trade_ids == 0
    assert np.all(np.diff(capture.trades["trade_id"]) == 1)
    assert dict(capture.frames) == {"trade": 14_515, "book_ticker": 58_758, "depthUpdate": 6_470, "depth_snapshot": 1}
    assert sum(capture.frames.values()) == 33_618 + 46_126  # every line of both files, counted once
    assert capture.malformed == 0 and dict(capture.rejected) == {}
    assert capture.first_recv_ms == 1723161254024 and capture.last_recv_ms == 1723161904543
    books = capture.book_tickers
    assert books[0].tolist() == (1723161254024, 35346513501, 2683.8, 3.0292, 2683.81, 31.4395)
    assert np.all(books["bid"] < books["ask"]) and np.all(np.diff(books["time_ms"]) >= 0)


def test_overlapping_capture_files_count_repeated_trades_once(shared_data: Path) -> None:
    first, second = _ws(shared_data, "eth", "20240808"), _ws(shared_data, "eth", "20240809")
    once = load_ws_capture(first, second)
    twice = load_ws_capture(first, second, first)
    np.testing.assert_array_equal(twice.trades, once.trades)
    assert twice.duplicate_trades == load_ws_capture(first).trades.size > 0


def test_capture_of_two_symbols_needs_a_choice(shared_data: Path) -> None:
    eth, btc = _ws(shared_data, "eth", "20240808"), _ws(shared_data, "btc", "20240808")
    with pytest.raises(DataError, match="BTCUSDT.*ETHUSDT"):
        load_ws_capture(eth, btc)
    capture = load_ws_capture(eth, btc, symbol="btcusdt")
    assert capture.symbol == "BTCUSDT" and capture.trades.tolist() == _trades_by_json(btc)
    with pytest.raises(DataError, match="SOLUSDT"):
        load_ws_capture(eth, symbol="SOLUSDT")


def test_malformed_capture_lines_and_frames_are_counted_not_fatal(tmp_path: Path) -> None:
    def trade(tid: int, price: str) -> bytes:
        return (
            b'{"stream":"ethusdt@trade","data":{"e":"trade","E":1700000000001,"s":"ETHUSDT","t":%d,'
            b'"p":"%s","q":"0.5","T":1700000000000,"m":false,"M":true}}' % (tid, price.encode())
        )

    lines = [
        b"1700000000000000000 " + trade(7, "2000.5"),
        b"1700000000100000000 {not json",
        b"1700000000200000000 " + trade(8, "NaN"),
        b"garbage without a time",
        b"1700000000300000000 " + trade(9, "2000.6"),
        b"1700000000400000000 " + trade(7, "2000.5"),  # repeated after a reconnect
        b'1700000000500000000 {"u":1,"s":"ETHUSDT","b":"2000.4","B":"1.0","a":"2000.5","A":"2.0"}',
    ]
    path = tmp_path / "cap.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    capture = load_ws_capture(path)
    assert capture.trades["trade_id"].tolist() == [7, 9] and capture.duplicate_trades == 1
    assert capture.missing_trade_ids == 1  # id 8 was the NaN frame
    assert capture.malformed == 3
    assert dict(capture.rejected) == {"bad_json": 1, "non_finite": 1, "bad_line": 1}
    assert capture.book_tickers.tolist() == [(1700000000500, 1, 2000.4, 1.0, 2000.5, 2.0)]
    assert capture.first_recv_ms == 1700000000000 and capture.last_recv_ms == 1700000000500
