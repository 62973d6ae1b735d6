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
