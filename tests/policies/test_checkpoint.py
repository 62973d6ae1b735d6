"""Policy checkpoints round-trip exactly and load as data only."""

from __future__ import annotations

from pathlib import Path

import torch

from market.layout import StateConfig, build_layout
from policies.checkpoint import load_policy, save_policy
from policies.dqn import QNetwork, QNetworkConfig


def test_policy_round_trips_with_its_layout_and_versions(tmp_path: Path) -> None:
    layout = build_layout(StateConfig(profile="tiny"))
    net = QNetwork(layout, QNetworkConfig(trunk=32, window_channels=4, vector_width=8)).eval()
    path = save_policy(tmp_path / "p.pt", net, version="run-1/u100", updates=100, cnn_version="cnn-a", meta={"seed": 3})
    loaded, info = load_policy(path)
    assert (info.version, info.cnn_version, info.updates, info.meta) == ("run-1/u100", "cnn-a", 100, {"seed": 3})
    assert info.layout.size == layout.size
    x = torch.randn(5, layout.size)
    assert torch.equal(net(x), loaded(x))


def test_a_checkpoint_written_with_the_old_eth_btc_names_loads_and_answers_the_same(tmp_path: Path) -> None:
    layout = build_layout(StateConfig(profile="tiny"))
    net = QNetwork(layout, QNetworkConfig(trunk=32, window_channels=4, vector_width=8)).eval()
    path = save_policy(tmp_path / "p.pt", net, version="v", updates=1)
    payload = torch.load(path, weights_only=True)
    legacy = {k.replace("traded_", "eth_").replace("reference_", "btc_"): v for k, v in payload["weights"].items()}
    assert legacy.keys() != payload["weights"].keys()  # the old names really differ
    payload["weights"] = legacy
    state = dict(payload["state_config"])
    state["eth_timeframes"] = state.pop("traded_timeframes")
    state["btc_window"] = state.pop("reference_window")
    payload["state_config"] = state
    torch.save(payload, tmp_path / "old.pt")
    loaded, info = load_policy(tmp_path / "old.pt")
    x = torch.randn(3, layout.size)
    assert info.layout.names == layout.names and torch.equal(net(x), loaded(x))
