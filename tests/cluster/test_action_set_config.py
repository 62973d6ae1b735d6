"""The Q-network's action set comes from the env's: the experiment config sets ``network.actions`` from
``env.actions`` and refuses a mismatch naming both keys; the RLlib modules need the action space of their network's
action set; an Ape-X run of scalper actions checkpoints a scalper policy."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from cluster.config import ExperimentConfig, load_config
from market.env import EnvConfig
from market.errors import ConfigError
from market.layout import StateConfig, build_layout
from policies.checkpoint import load_policy

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def test_network_actions_follow_env_actions_and_a_mismatch_names_both_keys() -> None:
    assert load_config(TINY).network.actions == "market"
    scalper = load_config(TINY, ["env.actions=scalper"])
    assert scalper.network.actions == "scalper" and scalper.network.n_actions == 6
    assert ExperimentConfig.model_validate(scalper.model_dump(mode="json")).network.actions == "scalper"
    assert ExperimentConfig(env=EnvConfig(actions="scalper")).network.n_actions == 6
    with pytest.raises(ConfigError, match=r"tiny\.yaml .*: network: network\.actions is 'market' but env\.actions is "
                       r"'scalper'"):
        load_config(TINY, ["env.actions=scalper", "network.actions=market"])


def test_the_rllib_module_needs_the_action_space_of_its_networks_action_set() -> None:
    from cluster.rllib_modules import QNET_KEY, STATE_PROFILE_KEY, QNetworkDQNModule

    size = build_layout(StateConfig(profile="tiny")).size
    qnet = load_config(TINY, ["env.actions=scalper"]).network.model_dump(mode="json")

    def module(n: int) -> QNetworkDQNModule:
        return QNetworkDQNModule(
            observation_space=gym.spaces.Box(-np.inf, np.inf, (size,), np.float32),
            action_space=gym.spaces.Discrete(n),
            model_config={STATE_PROFILE_KEY: "tiny", QNET_KEY: qnet, "double_q": True, "epsilon": 1.0},
        )

    with pytest.raises(ConfigError, match=r"is not Discrete\(6\), the 'scalper' action set"):
        module(3)
    explorer = module(6)
    from ray.rllib.core.columns import Columns

    out = explorer.forward_exploration({Columns.OBS: torch.zeros((400, size))}, t=0)
    assert set(out[Columns.ACTIONS].tolist()) == set(range(6))  # epsilon 1: uniform over the six scalper actions


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_an_apex_run_with_scalper_actions_checkpoints_a_scalper_policy(ray_session, tmp_path: Path) -> None:
    from cluster.train import entry

    storage = tmp_path / "ck"
    sets = [f"output_dir={tmp_path}", "env.actions=scalper", "env.venue.kind=perp", "apex.budget.updates=20"]
    sets += ["apex.learning_starts=256", f"apex.checkpoint.storage={storage}", "apex.checkpoint.every_updates=10"]
    argv = ["--config", str(TINY)]
    for item in sets:
        argv += ["--set", item]
    assert entry(argv) == 0
    latest = sorted(storage.glob("ckpt-*/policy.pt"))[-1]
    qnet, info = load_policy(latest, actions="scalper")
    assert info.actions == "scalper" and info.updates == 20 and qnet.advantage.out_features == 6
