"""``rayscalp baselines`` closes every position at the end like ``rayscalp evaluate`` (buy-and-hold pays its exit
fee too) and prints the venue it ran with."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cluster.cli import main
from cluster.config import load_config
from market.baselines import real_kline_timeline, run_baselines


def test_baselines_close_out_at_the_end_and_say_the_venue(shared_data: Path) -> None:
    steps = 3_000
    args = ["baselines", "--max-steps", str(steps), "--seeds", "0", "--set", f"data.shared_dir={shared_data}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "closed at market at the end" in result.output and "fills:" in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("buy_and_hold"))
    fees = float(row.split()[-3])
    config = load_config(None)
    timeline = real_kline_timeline(shared_data, profile=config.state.profile, max_steps=steps)
    whole = {"random_start": False, "start_step": 0, "episode_steps": timeline.n_steps}
    closed_env = config.env.model_copy(update={**whole, "close_at_end": True})
    closed = run_baselines(timeline, closed_env, [0], names=("buy_and_hold",))[0]
    held_env = config.env.model_copy(update={**whole, "close_at_end": False})
    held = run_baselines(timeline, held_env, [0], names=("buy_and_hold",))[0]
    assert fees == pytest.approx(closed.fees, abs=0.01) and closed.fees > held.fees * 1.5
