"""Tests of cluster/train_local.py: ``rayscalp train --local`` trains in one process, prints progress, evaluates
greedily, and writes a run record and a policy checkpoint that evaluation and the policy service read; its
settings come from the experiment config. The data is the recorded sample when present, else the seeded
synthetic market (the run says which)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from actors.apex_config import ApexConfig, BudgetConfig, ExplorationConfig
from cluster.cli import main
from cluster.config import ExperimentConfig, load_config
from cluster.train_local import LocalSettings
from policies.policy_inference import PolicyPredictor

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def test_the_settings_come_from_the_config_and_the_epsilon_decays_over_the_budget() -> None:
    apex = ApexConfig(
        envs_per_worker=4,
        learning_starts=100,
        replay_ratio=0.5,
        budget=BudgetConfig(env_steps=1_100, updates=300),
        exploration=ExplorationConfig(decay_start=1.0, decay_end=0.1, decay_fraction=0.5),
    )
    settings = LocalSettings.from_config(ExperimentConfig(apex=apex))
    assert (settings.num_envs, settings.learning_starts, settings.replay_ratio) == (4, 100, 0.5)
    assert settings.planned_updates() == 300  # the update budget binds before the env budget's 500
    assert settings.target_updates(90) == 0 and settings.target_updates(300) == 100
    assert settings.target_updates(10_000) == 300
    assert settings.spent(550, 0, 0.0) == pytest.approx(0.5) and settings.spent(0, 300, 0.0) == 1.0
    assert settings.epsilon(0.0) == 1.0 and settings.epsilon(0.25) == pytest.approx(0.55)
    assert settings.epsilon(0.5) == pytest.approx(0.1) and settings.epsilon(0.9) == pytest.approx(0.1)


@pytest.mark.timeout(300)
def test_train_local_trains_evaluates_and_writes_a_policy_that_evaluate_and_the_service_read(tmp_path: Path) -> None:
    sets = [f"output_dir={tmp_path}", "apex.budget.updates=20", "apex.learning_starts=128", "apex.progress_every_s=0.2"]
    sets += ["apex.curves.every_updates=5", "apex.curves.validation_steps=60"]
    argv = ["train", "--local", "--config", str(TINY)]
    for item in sets:
        argv += ["--set", item]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "single process" in result.output and "updates 20 |" in result.output  # progress lines, then the end
    assert "greedy evaluation on steps" in result.output
    (run_dir,) = (tmp_path / "tiny" / "runs").iterdir()
    record = orjson.loads((run_dir / "run.json").read_bytes())
    assert record["extra"]["mode"].startswith("single process") and record["config"]["apex"]["budget"]["updates"] == 20
    done = orjson.loads((run_dir / "result.json").read_bytes())
    assert done["counters"]["updates"] == 20 and done["counters"]["env_steps"] >= 128 + 20 * 4
    assert np.isfinite(done["evaluation"]["greedy_log_return"])
    train_end = record["extra"]["train_steps"][1]
    assert record["extra"]["validation_steps"] == [train_end, train_end + 60]
    assert done["evaluation"]["start_step"] >= train_end + 60  # evaluated on a span it never trained on

    # Learning curves: a point each time the updates pass a multiple of 5, the last at the budget's 20.
    curves = orjson.loads((run_dir / "curves.json").read_bytes())
    updates = curves["updates"]
    assert [u // 5 for u in updates] == [1, 2, 3, 4] and updates[-1] == 20
    assert len(curves["env_steps"]) == 4 and curves["env_steps"] == sorted(curves["env_steps"])
    series = curves["series"]
    assert set(series) == {"loss", "mean_q", "mean_abs_td", "episode_return", "validation_return"}
    for name in ("loss", "mean_q", "mean_abs_td", "validation_return"):
        assert len(series[name]) == 4 and all(v is not None and np.isfinite(v) for v in series[name]), name
    assert all(v >= 0 for v in series["loss"] + series["mean_abs_td"])
    assert len(series["episode_return"]) == 4  # None until an episode has ended
    png = (run_dir / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    policy = PolicyPredictor.from_checkpoint(done["latest_policy"], device="cpu")
    assert policy.updates == 20 and policy.version == "tiny-local-u20"
    answer = policy.act(np.zeros((2, policy.state_size), np.float32))
    assert len(answer.actions) == 2

    out = tmp_path / "eval"
    evaluated = CliRunner().invoke(
        main,
        ["evaluate", "--checkpoint", done["latest_policy"], "--config", str(TINY), "--set", f"output_dir={tmp_path}"]
        + ["--resamples", "100", "--folds", "2", "--out", str(out)],
        catch_exceptions=False,
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "policy" in evaluated.output and any(out.iterdir())


def test_local_runs_refuse_resume() -> None:
    result = CliRunner().invoke(main, ["train", "--local", "--resume", "--config", str(TINY)])
    assert result.exit_code == 2 and "--resume is for Ape-X runs" in result.output


def test_the_tiny_config_loads_for_a_local_run() -> None:
    settings = LocalSettings.from_config(load_config(TINY))
    assert settings.updates == 300 and settings.num_envs == 8 and 0 < settings.eps_end < settings.eps_start
