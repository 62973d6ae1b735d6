"""The rayscalp CLI: errors are one clear line with exit code 2; commands print what they say."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from cluster.cli import main
from cluster.demo_live import DEFAULT_HTTP_PORT, http_port
from market.errors import ConfigError


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


def test_demo_port_out_of_range_is_refused_by_the_option() -> None:
    result = CliRunner().invoke(main, ["demo", "--port", "70000"])
    assert result.exit_code == 2
    assert "--port" in result.output and "0<=x<=65535" in result.output


def test_demo_on_a_taken_port_is_refused_before_any_stage_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    # Ray may already run in this test process (other tests' session): what must not happen is the demo starting it
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("the demo started Ray before refusing"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["demo", "--port", str(port), "--set", f"output_dir={tmp_path}"])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert f"--port {port}: cannot bind" in message and "--port 0 for a free one" in message
    assert not any(tmp_path.iterdir())


def test_demo_on_a_public_host_without_a_key_is_refused_before_any_stage_runs(tmp_path: Path) -> None:
    result = CliRunner(env={"RAYSCALP_API_KEY": None}).invoke(
        main, ["demo", "--host", "0.0.0.0", "--port", "0", "--set", f"output_dir={tmp_path}"]
    )
    assert isinstance(result.exception, ConfigError), result.output
    assert "refusing to serve on host '0.0.0.0' without an API key" in str(result.exception)
    assert not any(tmp_path.iterdir())


def test_demo_http_port_picks_a_free_port_or_checks_the_one_asked_for() -> None:
    picked = http_port("127.0.0.1", 0, pick_free=False)
    assert 0 < picked <= 65_535 and http_port("127.0.0.1", picked, pick_free=False) == picked
    assert http_port("127.0.0.1", None, pick_free=True) not in (0, DEFAULT_HTTP_PORT)
    with pytest.raises(ConfigError, match="cannot bind"):
        http_port("no-such-host.invalid", 0, pick_free=False)
