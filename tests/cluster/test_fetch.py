"""cluster.data.fetch against a real HTTP server on loopback laid out like data.binance.vision."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cluster.data.fetch import PublicDataRequest, fetch_public_data, public_data_files
from market.datasets import load_klines, load_trades, read_parquet, read_parquet_metadata
from market.errors import ConfigError
from market.records import BAR_DTYPE, TRADE_DTYPE

# (market folder, symbol, interval, days) of the real zips in ../shared/data/binance/vision
REAL_ZIPS = [
    ("spot", "ETHUSDT", "1m", ("2022-08-14", "2022-08-15")),
    ("futures/um", "BTCUSDT", "1m", ("2022-09-05", "2022-09-06")),
    ("spot", "BTCUSDT", "1h", ("2022-09-07", "2022-09-08")),
    ("futures/um", "ETHUSDT", "1h", ("2022-08-24", "2022-08-25")),
]
OUR_MARKET = {"spot": "spot", "futures/um": "um"}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


@pytest.fixture()
def server_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 (ephemeral port) serving an empty public-data tree."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _publish(
    root: Path, market_dir: str, symbol: str, interval: str, day: str, payload: bytes, checksum_of: bytes
) -> None:
    """Put a kline zip and its .CHECKSUM (of ``checksum_of``) where data.binance.vision has them."""
    name = f"{symbol}-{interval}-{day}.zip"
    folder = root / "data" / market_dir / "daily" / "klines" / symbol / interval
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(payload)
    (folder / f"{name}.CHECKSUM").write_text(f"{hashlib.sha256(checksum_of).hexdigest()}  {name}\n")


def _publish_real(root: Path, vision: Path) -> None:
    for market_dir, symbol, interval, days in REAL_ZIPS:
        for day in days:
            data = (vision / f"{symbol}-{interval}-{day}.zip").read_bytes()
            _publish(root, market_dir, symbol, interval, day, data, data)


def _parquets(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet")) if folder.exists() else []


def _assert_bars_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == BAR_DTYPE
    for name in BAR_DTYPE.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_fetch_verifies_and_stores_parquet_equal_to_the_loader_then_skips_everything_on_rerun(
    shared_data: Path, server_root: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = server_root
    vision = shared_data / "binance" / "vision"
    _publish_real(root, vision)
    data_dir = tmp_path / "data"
    lines: list[str] = []

    for market_dir, symbol, interval, days in REAL_ZIPS:
        report = fetch_public_data(
            [symbol],
            "klines",
            days[0],
            days[-1],
            interval=interval,
            market=OUR_MARKET[market_dir],
            data_dir=data_dir,
            base_url=url,
            progress=lines.append,
        )
        assert report.ok and not report.missing and not report.skipped
        assert [f.url.rsplit("/", 1)[-1] for f in report.downloaded] == [f"{symbol}-{interval}-{d}.zip" for d in days]
        for fetched, day in zip(report.downloaded, days, strict=True):
            original = vision / f"{symbol}-{interval}-{day}.zip"
            expected = load_klines(original)
            assert (
                fetched.path
                == data_dir / OUR_MARKET[market_dir] / "daily" / "klines" / symbol / interval / f"{day}.parquet"
            )
            assert fetched.rows == expected.size
            assert fetched.sha256 == hashlib.sha256(original.read_bytes()).hexdigest()
            _assert_bars_equal(read_parquet(fetched.path), expected)
            meta = read_parquet_metadata(fetched.path)
            assert meta["source"] == fetched.url and meta["sha256"] == fetched.sha256
            assert meta["synthetic"] == "false" and meta["interval"] == interval

    assert len(_parquets(data_dir)) == 8
    assert sum("downloaded" in line for line in lines) == 8
    # no temporary file or folder is left beside the Parquet
    assert not [p for p in data_dir.rglob("*") if p.name.startswith(".")]

    for market_dir, symbol, interval, days in REAL_ZIPS:
        again = fetch_public_data(
            [symbol], "klines", days[0], days[-1], interval=interval,
            market=OUR_MARKET[market_dir], data_dir=data_dir, base_url=url,
        )  # fmt: skip
        assert not again.downloaded and not again.failed and not again.missing
        assert len(again.skipped) == 2


def test_corrupted_zip_is_refused_and_leaves_no_parquet(
    shared_data: Path, server_root: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = server_root
    original = (shared_data / "binance" / "vision" / "ETHUSDT-1m-2022-08-14.zip").read_bytes()
    corrupted = bytearray(original)
    for i in range(200, 260):
        corrupted[i] ^= 0xFF
    _publish(root, "spot", "ETHUSDT", "1m", "2022-08-14", bytes(corrupted), original)
    data_dir = tmp_path / "data"

    report = fetch_public_data(
        ["ETHUSDT"], "klines", "2022-08-14", "2022-08-14", interval="1m", data_dir=data_dir, base_url=url
    )

    assert not report.ok and not report.downloaded
    (failure,) = report.failed
    assert failure.url.endswith("/data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2022-08-14.zip")
    assert failure.reason.startswith(failure.url + ": ")
    assert "SHA-256" in failure.reason and hashlib.sha256(original).hexdigest() in failure.reason
    assert _parquets(data_dir) == []
    assert not [p for p in data_dir.rglob("*") if p.is_file()] if data_dir.exists() else True


def test_unpublished_day_is_reported_as_missing_and_the_rest_is_fetched(
    shared_data: Path, server_root: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = server_root
    _publish_real(root, shared_data / "binance" / "vision")
    data_dir = tmp_path / "data"
    messages: list[str] = []

    report = fetch_public_data(
        ["ETHUSDT"], "klines", "2022-08-13", "2022-08-16", interval="1m", data_dir=data_dir, base_url=url,
        progress=messages.append,
    )  # fmt: skip

    assert report.ok
    assert [m.rsplit("/", 1)[-1] for m in report.missing] == ["ETHUSDT-1m-2022-08-13.zip", "ETHUSDT-1m-2022-08-16.zip"]
    assert [p.name for p in _parquets(data_dir)] == ["2022-08-14.parquet", "2022-08-15.parquet"]
    assert sum(m.split()[1] == "missing" for m in messages) == 2
    assert "missing 2 (not published)" in report.summary()


def test_missing_checksum_file_is_a_failure_and_nothing_is_written(
    shared_data: Path, server_root: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = server_root
    data = (shared_data / "binance" / "vision" / "BTCUSDT-1h-2022-09-07.zip").read_bytes()
    _publish(root, "spot", "BTCUSDT", "1h", "2022-09-07", data, data)
    next(root.rglob("*.CHECKSUM")).unlink()

    report = fetch_public_data(
        ["BTCUSDT"],
        "klines",
        "2022-09-07",
        "2022-09-07",
        interval="1h",
        data_dir=tmp_path / "d",
        base_url=url,
        retries=0,
    )

    assert not report.downloaded and len(report.failed) == 1
    assert report.failed[0].url.endswith("BTCUSDT-1h-2022-09-07.zip")
    assert "checksum not published" in report.failed[0].reason
    assert _parquets(tmp_path / "d") == []


def _zip_bytes(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, text)
    return buf.getvalue()


def test_zip_with_valid_checksum_but_bad_rows_fails_naming_the_row(
    server_root: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = server_root
    rows = (
        "1660435200000,1983.55,1983.90,1982.14,1982.29,205.131,1660435259999,406814.9,288,105.3,208854.9,0\n"
        "1660435260000,1982.30,1983.28,1982.01,NaN,66.8131,1660435319999,132465.1,217,36.2,71839.2,0\n"
    )
    payload = _zip_bytes("ETHUSDT-1m-2022-08-14.csv", rows)
    _publish(root, "spot", "ETHUSDT", "1m", "2022-08-14", payload, payload)

    report = fetch_public_data(
        ["ETHUSDT"], "klines", "2022-08-14", "2022-08-14", interval="1m", data_dir=tmp_path / "d", base_url=url
    )

    (failure,) = report.failed
    assert "data row 2" in failure.reason and "close" in failure.reason
    assert _parquets(tmp_path / "d") == []


def test_trades_archive_is_stored_as_trade_records(server_root: tuple[Path, str], tmp_path: Path) -> None:
    root, url = server_root
    # a hand-written two-row file in the public-data trades layout (microsecond times, as from 2025)
    text = "1,3300.5,0.1,330.05,1735689600123456,True,True\n2,3300.6,0.2,660.12,1735689600223456,False,True\n"
    name = "ETHUSDT-trades-2025-01-01.zip"
    payload = _zip_bytes("ETHUSDT-trades-2025-01-01.csv", text)
    folder = root / "data" / "spot" / "daily" / "trades" / "ETHUSDT"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(payload)
    (folder / f"{name}.CHECKSUM").write_text(f"{hashlib.sha256(payload).hexdigest()}  {name}\n")

    report = fetch_public_data(["ethusdt"], "trades", "2025-01-01", "2025-01-01", data_dir=tmp_path / "d", base_url=url)

    (fetched,) = report.downloaded
    assert fetched.path == tmp_path / "d" / "spot" / "daily" / "trades" / "ETHUSDT" / "2025-01-01.parquet"
    stored = read_parquet(fetched.path)
    assert stored.dtype == TRADE_DTYPE
    np.testing.assert_array_equal(stored, load_trades(folder / name))
    assert stored["time_ms"].tolist() == [1735689600123, 1735689600223]


def test_unreachable_server_is_a_failure_naming_the_url(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"

    report = fetch_public_data(
        ["ETHUSDT"], "klines", "2022-08-14", "2022-08-14", interval="1m", data_dir=tmp_path / "d",
        base_url=base, timeout_s=2, retries=0,
    )  # fmt: skip

    (failure,) = report.failed
    assert failure.reason.startswith(f"{base}/data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2022-08-14.zip")
    assert not (tmp_path / "d").exists() or _parquets(tmp_path / "d") == []


def test_urls_and_targets_follow_the_public_data_layout(tmp_path: Path) -> None:
    (monthly,) = public_data_files(
        PublicDataRequest(
            ("BTCUSDT",), "klines", "2022-09", "2022-09", tmp_path, interval="1h", market="um", period="monthly",
            base_url="https://example.test/",
        )
    )  # fmt: skip
    assert monthly.url == "https://example.test/data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2022-09.zip"
    assert monthly.checksum_url == monthly.url + ".CHECKSUM"
    assert monthly.target == tmp_path / "um" / "monthly" / "klines" / "BTCUSDT" / "1h" / "2022-09.parquet"

    agg = public_data_files(PublicDataRequest(("ETHUSDT",), "aggTrades", "2024-12-31", "2025-01-01", tmp_path))
    assert [f.url for f in agg] == [
        "https://data.binance.vision/data/spot/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-12-31.zip",
        "https://data.binance.vision/data/spot/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2025-01-01.zip",
    ]
    months = public_data_files(
        PublicDataRequest(("ETHUSDT",), "trades", "2024-11", "2025-02", tmp_path, period="monthly")
    )
    assert [f.date for f in months] == ["2024-11", "2024-12", "2025-01", "2025-02"]


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"kind": "candles", "interval": "1m"}, "kind"),
        ({"kind": "klines"}, "interval"),
        ({"kind": "trades", "interval": "1m"}, "interval"),
        ({"kind": "klines", "interval": "1m", "market": "cm"}, "market"),
        ({"kind": "klines", "interval": "1m", "period": "weekly"}, "period"),
        ({"kind": "klines", "interval": "1m", "start": "2022-08-15", "end": "2022-08-14"}, "after"),
        ({"kind": "klines", "interval": "1m", "start": "14/08/2022"}, "start"),
    ],
)
def test_bad_arguments_raise_config_error_naming_them(kwargs: dict, word: str, tmp_path: Path) -> None:
    args = {"start": "2022-08-14", "end": "2022-08-14", **kwargs}
    with pytest.raises(ConfigError, match=word):
        fetch_public_data(["ETHUSDT"], args.pop("kind"), args.pop("start"), args.pop("end"), data_dir=tmp_path, **args)
    assert list(tmp_path.iterdir()) == []


def test_a_run_with_every_day_unpublished_leaves_no_folders_behind(
    server_root: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = server_root
    data_dir = tmp_path / "d"
    data_dir.mkdir()

    report = fetch_public_data(
        ["ETHUSDT", "BTCUSDT"], "aggTrades", "2022-01-01", "2022-01-02", data_dir=data_dir, base_url=url
    )

    assert report.ok and len(report.missing) == 4 and not report.downloaded
    assert list(data_dir.iterdir()) == []
