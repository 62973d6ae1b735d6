"""Tests of ``rayscalp train --engine rllib``: RLlib's own PPO (and DQN) train on the project's env and network, and
the exported checkpoint is served by the policy service (real Serve on 127.0.0.1) and read by ``rayscalp
evaluate`` with the same report as the project's own policies. Also the export itself: the served scores of an
exported module are exactly its RLlib outputs (logits for PPO), and weights that do not fit are refused."""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import orjson
import pytest
import torch
from click.testing import CliRunner

from cluster.cli import main
from cluster.config import load_config
from cluster.train_rllib import RllibSettings
from market.errors import ConfigError, DataError
from market.layout import StateConfig, build_layout
from policies.checkpoint import load_policy
from policies.dqn import QNetworkConfig
from policies.policy_inference import PolicyPredictor
from policies.rllib_export import export_rllib_policy
from tests.policies.test_policy_inference import make_policy
from tests.wire import api_key_in_env, free_port, npy_bytes

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
SMALL = QNetworkConfig(window_channels=4, window_kernel=3, vector_width=16, trunk=64)
KEY_ENV = "RAYSCALP_TEST_RLLIB_KEY"
api_key_in_env(KEY_ENV)


def policy_module(cls: type, profile: str = "tiny"):
    from cluster.rllib_modules import QNET_KEY, STATE_PROFILE_KEY

    size = build_layout(StateConfig(profile=profile)).size
    return cls(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (size,), np.float32),
        action_space=gym.spaces.Discrete(3),
        model_config={STATE_PROFILE_KEY: profile, QNET_KEY: SMALL.model_dump(mode="json")},
    )


def test_the_budget_in_env_steps_is_train_locals_and_an_unknown_algo_is_refused() -> None:
    config = load_config(TINY)
    settings = RllibSettings.from_config(config, "PPO")
    assert settings.env_steps == 512 + int(300 / 0.25) and settings.num_envs == 8
    with pytest.raises(ConfigError, match="'SAC' is not one of"):
        RllibSettings.from_config(config, "SAC")


def test_an_exported_ppo_module_serves_its_rllib_logits_and_misfit_weights_are_refused(tmp_path: Path) -> None:
    from ray.rllib.core.columns import Columns

    from cluster.rllib_modules import QNetworkPolicyModule

    torch.manual_seed(3)
    module = policy_module(QNetworkPolicyModule)
    obs = torch.randn(5, module.observation_space.shape[0])
    out = module.forward_train({Columns.OBS: obs})
    logits = out[Columns.ACTION_DIST_INPUTS].detach()
    np.testing.assert_allclose(logits, module.qnet(obs).detach(), atol=1e-5)  # the trunk split is qnet itself
    assert module.compute_values({Columns.OBS: obs}, out[Columns.EMBEDDINGS]).shape == (5,)

    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}  # as RLlib's get_weights returns it
    layout = build_layout(StateConfig(profile="tiny"))
    path = export_rllib_policy(tmp_path / "p.pt", state, layout, SMALL, algo="PPO", version="ppo-t", updates=7)
    _, info = load_policy(path)
    assert info.meta["engine"] == "rllib" and info.meta["algo"] == "PPO" and info.meta["head"] == "policy_logits"
    answer = PolicyPredictor.from_checkpoint(path, device="cpu").act(obs.numpy())
    np.testing.assert_allclose(answer.q_values, logits.numpy(), atol=1e-5)
    assert list(answer.actions) == logits.argmax(dim=1).tolist()  # greedy = the policy's mode

    with pytest.raises(DataError, match="does not fit"):
        bigger = SMALL.model_copy(update={"trunk": 128})
        export_rllib_policy(tmp_path / "q.pt", state, layout, bigger, algo="PPO", version="x", updates=0)
    with pytest.raises(DataError, match=r"no qnet\.\* parameters"):
        export_rllib_policy(tmp_path / "q.pt", {"vf.weight": state["vf.weight"]}, layout, SMALL, algo="PPO",
                            version="x", updates=0)
    with pytest.raises(DataError, match="algo='SAC'"):
        export_rllib_policy(tmp_path / "q.pt", state, layout, SMALL, algo="SAC", version="x", updates=0)


def train_cli(tmp_path: Path, algo: str, updates: int) -> dict:
    argv = ["train", "--engine", "rllib", "--algo", algo, "--config", str(TINY)]
    for item in (f"output_dir={tmp_path}", f"apex.budget.updates={updates}", "apex.progress_every_s=0.1"):
        argv += ["--set", item]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"RLlib {algo}" in result.output and "greedy evaluation on steps" in result.output
    (run_dir,) = [d for d in (tmp_path / "tiny" / "runs").iterdir() if orjson.loads((d / "run.json").read_bytes())
                  ["extra"]["mode"].startswith(f"RLlib {algo} ")]
    record = orjson.loads((run_dir / "run.json").read_bytes())
    done = orjson.loads((run_dir / "result.json").read_bytes())
    budget = record["extra"]["rllib"]["env_steps"]
    assert done["algo"] == algo and budget <= done["counters"]["env_steps"] < budget + 4 * 64 + 8
    assert done["counters"]["iterations"] >= 2 and done["counters"]["updates"] > 0
    assert done["evaluation"]["start_step"] >= record["extra"]["validation_steps"][1]  # never trained on
    assert record["extra"]["train_steps"][1] <= record["extra"]["spans"]["dqn"]["end"]
    assert np.isfinite(done["evaluation"]["greedy_log_return"])
    return done


def evaluate_cli(checkpoint: str, tmp_path: Path, out: Path) -> str:
    argv = ["evaluate", "--checkpoint", checkpoint, "--config", str(TINY), "--set", f"output_dir={tmp_path}"]
    result = CliRunner().invoke(main, argv + ["--resamples", "100", "--folds", "2", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def table_shape(report: str) -> list[str]:
    """The report's section titles, table headers and row names (the figures aside)."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Whole evaluation span"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Lag test"))
    return [line.split()[0] if line.strip() else "" for line in lines[start:end]]


@pytest.mark.timeout(420)
def test_rllib_ppo_trains_and_its_checkpoint_is_served_and_evaluated_like_ours(ray_session, tmp_path: Path) -> None:
    import requests
    from ray import serve

    from serve.auth import API_KEY_HEADER
    from serve.policy import PolicyServeConfig, deploy

    done = train_cli(tmp_path, "PPO", updates=60)
    checkpoint = done["latest_policy"]
    predictor = PolicyPredictor.from_checkpoint(checkpoint, device="cpu")
    _, info = load_policy(Path(checkpoint))
    assert info.meta["engine"] == "rllib" and info.meta["head"] == "policy_logits"
    assert predictor.version.startswith("tiny-rllib-ppo-s")

    # The policy service, on real Serve at 127.0.0.1.
    port = free_port()
    config = PolicyServeConfig(checkpoint=Path(checkpoint), port=port, api_key_env=KEY_ENV, device="cpu",
                               ray_actor_options={"num_cpus": 0.5}, app_name="rllib-policy", route_prefix="/rllib")
    try:
        deploy(config)
        states = np.random.default_rng(1).normal(0, 0.5, (3, predictor.state_size)).astype(np.float32)
        headers = {"content-type": "application/x-npy", API_KEY_HEADER: os.environ[KEY_ENV]}
        r = requests.post(f"http://127.0.0.1:{port}/rllib/v1/act", data=npy_bytes(states), headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_version"] == predictor.version
        bare = predictor.act(states)
        assert [d["action_index"] for d in doc["decisions"]] == [int(a) for a in bare.actions]
        np.testing.assert_allclose([d["q_values"] for d in doc["decisions"]], bare.q_values, atol=1e-5)
    finally:
        serve.shutdown()

    # rayscalp evaluate: the same report as for a policy in the project's own format.
    theirs = evaluate_cli(checkpoint, tmp_path, tmp_path / "eval-rllib")
    assert f"EVALUATION of policy {predictor.version}" in theirs
    ours_path = make_policy(tmp_path / "ours.pt", "ours", 10, seed=0, cnn_version=None)
    ours = evaluate_cli(str(ours_path), tmp_path, tmp_path / "eval-ours")
    assert table_shape(theirs) == table_shape(ours) and "policy" in table_shape(theirs)
    results = orjson.loads((tmp_path / "eval-rllib" / "results.json").read_bytes())
    assert set(results) == set(orjson.loads((tmp_path / "eval-ours" / "results.json").read_bytes()))


@pytest.mark.timeout(300)
def test_rllib_dqn_trains_and_exports_q_values(ray_session, tmp_path: Path) -> None:
    done = train_cli(tmp_path, "DQN", updates=40)
    _, info = load_policy(Path(done["latest_policy"]))
    assert info.meta["algo"] == "DQN" and info.meta["head"] == "q_values"
    assert info.updates == done["counters"]["updates"]
    assert done["counters"]["updates"] == pytest.approx(40, abs=8)  # the replay ratio of the local trainer
