"""The rayscalp CLI: errors are one clear line with exit code 2; commands print what they say."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cluster.cli import main


def test_bad_override_is_one_line_naming_the_key() -> None:
    result = CliRunner().invoke(main, ["config", "show", "--set", "training.batch_size=-5"])
    assert result.exit_code != 0
    assert "training.batch_size: must be > 0 (got -5)" in str(result.exception)


def test_config_show_prints_the_resolved_config() -> None:
    result = CliRunner().invoke(main, ["config", "show", "--set", "training.lr=3e-4"])
    assert result.exit_code == 0, result.output
    assert "lr: 0.0003" in result.output and "profile: kline-1m" in result.output


def test_baselines_on_the_real_klines_prints_the_table(shared_data: Path) -> None:
    result = CliRunner().invoke(
        main, ["baselines", "--max-steps", "3000", "--seeds", "0", "--set", f"data.shared_dir={shared_data}"]
    )
    assert result.exit_code == 0, result.output
    assert "real Binance data" in result.output
    for name in ("flat", "buy_and_hold", "random", "momentum"):
        assert name in result.output
