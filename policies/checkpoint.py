"""Policy checkpoints: the Q-network's weights with everything needed to rebuild and serve it.

A checkpoint is data, never code: tensors plus JSON-able metadata, loaded with ``weights_only=True``.
Written by the learner (with each full checkpoint) and read by rollout workers, evaluation and serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from market.layout import StateConfig, StateLayout, build_layout

from .dqn import QNetwork, QNetworkConfig


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What a policy checkpoint says about itself."""

    version: str
    cnn_version: str | None
    updates: int
    state_config: StateConfig
    network_config: QNetworkConfig
    meta: dict[str, Any]

    @property
    def layout(self) -> StateLayout:
        """The state layout the network reads."""
        return build_layout(self.state_config)


def save_policy(
    path: Path,
    network: QNetwork,
    *,
    version: str,
    updates: int,
    cnn_version: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a policy checkpoint atomically (temp file then rename) and return its path."""
    payload = {
        "weights": {k: v.detach().to("cpu") for k, v in network.state_dict().items()},
        "state_config": network.layout.config.model_dump(mode="json"),
        "network_config": network.config.model_dump(mode="json"),
        "version": version,
        "cnn_version": cnn_version,
        "updates": int(updates),
        "meta": dict(meta or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_policy(path: Path, device: torch.device | str = "cpu") -> tuple[QNetwork, PolicyInfo]:
    """Rebuild the Q-network of a policy checkpoint (``weights_only=True``) in eval mode on ``device``."""
    payload = torch.load(Path(path), map_location=device, weights_only=True)
    info = PolicyInfo(
        version=str(payload["version"]),
        cnn_version=payload.get("cnn_version"),
        updates=int(payload["updates"]),
        state_config=StateConfig.model_validate(payload["state_config"]),
        network_config=QNetworkConfig.model_validate(payload["network_config"]),
        meta=dict(payload.get("meta", {})),
    )
    network = QNetwork(info.layout, info.network_config)
    network.load_state_dict(payload["weights"])
    return network.to(device).eval(), info
