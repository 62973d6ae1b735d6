"""``rayscalp data inspect`` reports each file, then the files as one history: a partial last bar is flagged
(and dropped), and a folder without 1m files says so."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cluster.cli import main


def test_inspect_flags_a_partial_last_bar_and_a_missing_timeframe(shared_data: Path, tmp_path: Path) -> None:
    for symbol in ("ETHUSDT", "BTCUSDT"):
        lines = (shared_data / f"binance/klines/{symbol}-1m-2025-01-01_2025-02-04.csv").read_text().splitlines()
        (tmp_path / f"{symbol}-1m.csv").write_text("\n".join(lines[: 24 * 60 + 31]) + "\n")  # to Jan 2, 03:30
    hours = (shared_data / "binance/klines/ETHUSDT-1h-2024-05-13_2025-02-04.csv").read_text().splitlines()
    last = next(i for i, line in enumerate(hours) if line.startswith("1735786800000"))  # Jan 2, 03:00
    (tmp_path / "ETHUSDT-1h.csv").write_text("\n".join(hours[: last + 1]) + "\n")
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "ETHUSDT 1h: 1 partial last bar(s) dropped (opening 2025-01-02 03:00 UTC" in result.output

    only_hours = tmp_path / "hours"
    only_hours.mkdir()
    (only_hours / "ETHUSDT-1h.csv").write_text("\n".join(hours[:100]) + "\n")
    result = CliRunner().invoke(main, ["data", "inspect", str(only_hours / "ETHUSDT-1h.csv")])
    assert result.exit_code == 0 and "99 bars of 3600000 ms" in result.output
    assert "not usable" in result.output and "ETHUSDT: 1h files but no 1m" in result.output
