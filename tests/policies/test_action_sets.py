"""The Q-network in each action set: as many outputs as the set has actions, epsilon-greedy over all of them, the set
recorded in the checkpoint (an old one reads as ``market``), refused where another set acts, and named in answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from market.errors import ConfigError, DataError
from market.layout import StateConfig, build_layout
from market.venue import ACTION_SETS
from policies.acting import act
from policies.checkpoint import load_policy, save_policy
from policies.dqn import QNetwork, QNetworkConfig, check_action_set
from policies.policy_inference import PolicyPredictor, action_names, encode_act_json

LAYOUT = build_layout(StateConfig(profile="tiny"))
SMALL = {"trunk": 32, "window_channels": 4, "vector_width": 8}


def network(actions: str, seed: int = 0) -> QNetwork:
    torch.manual_seed(seed)
    return QNetwork(LAYOUT, QNetworkConfig(actions=actions, **SMALL)).eval()


@pytest.mark.parametrize("actions", list(ACTION_SETS))
def test_the_network_has_one_output_per_action_and_explores_over_every_one(actions: str) -> None:
    net = network(actions)
    n = len(ACTION_SETS[actions])
    obs = np.random.default_rng(0).normal(0, 0.5, (600, LAYOUT.size)).astype(np.float32)
    chosen, q = act(net, obs, 1.0, np.random.default_rng(1), torch.device("cpu"))
    assert q.shape == (600, n) and set(chosen.tolist()) == set(range(n))  # uniform over the set, nothing beyond
    greedy, _ = act(net, obs, 0.0, np.random.default_rng(1), torch.device("cpu"))
    assert (greedy == q.argmax(axis=1)).all()


def test_a_checkpoint_records_its_action_set_and_an_old_one_reads_as_market(tmp_path: Path) -> None:
    path = save_policy(tmp_path / "scalper.pt", network("scalper"), version="s", updates=3)
    qnet, info = load_policy(path, actions="scalper")
    assert info.actions == "scalper" and qnet.advantage.out_features == 6

    old = torch.load(save_policy(tmp_path / "m.pt", network("market"), version="m", updates=1), weights_only=True)
    del old["network_config"]["actions"]  # as written before action sets existed
    torch.save(old, tmp_path / "old.pt")
    _, info = load_policy(tmp_path / "old.pt", actions="market")
    assert info.actions == "market"


def test_a_checkpoint_of_another_action_set_is_refused_with_both_sets_named(tmp_path: Path) -> None:
    path = save_policy(tmp_path / "scalper.pt", network("scalper"), version="s", updates=3)
    with pytest.raises(ConfigError, match=r"scalper\.pt: the policy acts in the 'scalper' action set .* actions is "
                       r"'market' \(buy, sell, hold\)"):
        load_policy(path, actions="market")
    with pytest.raises(ConfigError, match="'market' action set"):
        check_action_set("market", "scalper", "paper")


def test_weights_that_do_not_have_the_action_sets_outputs_are_refused(tmp_path: Path) -> None:
    payload = torch.load(save_policy(tmp_path / "s.pt", network("scalper"), version="s", updates=3), weights_only=True)
    payload["network_config"]["actions"] = "market"  # a forged set: six advantage rows for three actions
    torch.save(payload, tmp_path / "forged.pt")
    with pytest.raises(DataError, match=r"advantage\.weight has shape \(6, 32\); the 'market' action set has 3"):
        load_policy(tmp_path / "forged.pt")


def test_the_predictor_names_the_scalper_actions_and_says_the_set(tmp_path: Path) -> None:
    path = save_policy(tmp_path / "scalper.pt", network("scalper", seed=4), version="s", updates=3)
    predictor = PolicyPredictor.from_checkpoint(path, "cpu")
    info = predictor.describe()
    assert info["action_set"] == "scalper"
    assert info["actions"] == ["BUY", "SELL", "HOLD", "POST_BID", "POST_ASK", "CANCEL"] == list(action_names("scalper"))
    states = np.random.default_rng(2).normal(0, 3.0, (64, predictor.state_size)).astype(np.float32)
    answer = predictor.act(states)
    assert answer.q_values.shape == (64, 6) and answer.action_set == "scalper"
    doc = orjson.loads(encode_act_json(answer, single=False))
    assert doc["action_set"] == "scalper" and doc["actions"] == info["actions"]
    for i, d in enumerate(doc["decisions"]):
        assert d["action"] == info["actions"][int(answer.actions[i])] and len(d["q_values"]) == 6
