"""Policy checkpoints: the Q-network's weights with everything needed to rebuild and serve it.

A checkpoint is data, never code: tensors plus JSON-able metadata, loaded with ``weights_only=True``.
Written by the learner (with each full checkpoint) and read by rollout workers, evaluation and serving.
Never trusted: its sizes and counters are checked against bounds, and its network counted on the meta
device, before a single parameter is allocated. It records the action set its network's outputs are over
(``network_config.actions``); one written before action sets existed reads as ``market``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from market.errors import DataError
from market.layout import StateConfig, StateLayout, build_layout, upgrade_component_name

from .dqn import QNetwork, QNetworkConfig, check_action_set

#: A policy network with more parameters than this is refused before it is built (400 MB of float32).
MAX_POLICY_PARAMETERS = 100_000_000
#: A checkpoint claiming more learner updates than this is refused (1000 updates/s for 30 years).
MAX_UPDATES = 10**12
#: The widest state a checkpoint may ask for, and the most / widest hidden layers of the MLP encoder.
MAX_STATE_SIZE = 1_000_000
MAX_MLP_LAYERS, MAX_MLP_WIDTH = 16, 65_536


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

    @property
    def actions(self) -> str:
        """The action set the network's outputs are the Q-values of (``market.venue.ACTION_SETS``)."""
        return self.network_config.actions


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


def load_policy(
    path: Path, device: torch.device | str = "cpu", *, actions: str | None = None
) -> tuple[QNetwork, PolicyInfo]:
    """Rebuild the Q-network of a policy checkpoint (``weights_only=True``) in eval mode on ``device``.

    Parameters
    ----------
    path : Path
    device : torch.device or str
    actions : str, optional
        The action set the caller acts in (its env's or paper account's ``actions``); a checkpoint of another
        action set is refused. None takes the checkpoint's.

    Raises
    ------
    ConfigError
        The checkpoint's action set is not ``actions``.
    DataError
        A counter, size or weight outside what the checkpoint's configs allow.
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    updates = payload["updates"]
    if type(updates) is not int or not 0 <= updates <= MAX_UPDATES:
        raise DataError(f"{path}: updates={updates!r} is not a count of learner updates in 0..{MAX_UPDATES}")
    info = PolicyInfo(
        version=str(payload["version"]),
        cnn_version=payload.get("cnn_version"),
        updates=updates,
        state_config=StateConfig.model_validate(payload["state_config"]),
        network_config=QNetworkConfig.model_validate(payload["network_config"]),
        meta=dict(payload.get("meta", {})),
    )
    check_network_bounds(info, path)
    if actions is not None:
        check_action_set(info.actions, actions, f"policy checkpoint {path}")
    head = payload["weights"].get("advantage.weight")
    if head is None or tuple(head.shape[:1]) != (info.network_config.n_actions,):
        raise DataError(
            f"{path}: weights advantage.weight has shape {None if head is None else tuple(head.shape)}; the "
            f"{info.actions!r} action set has {info.network_config.n_actions} actions"
        )
    network = QNetwork(info.layout, info.network_config)
    # checkpoints written before the roles rename key their encoders by market (``eth_1m``): map, then load
    network.load_state_dict({upgrade_component_name(k): v for k, v in payload["weights"].items()})
    return network.to(device).eval(), info


def check_network_bounds(info: PolicyInfo, path: Path | str = "checkpoint") -> int:
    """Count the parameters of the network ``info`` describes without allocating them; refuse one too large.

    Returns
    -------
    int
        The parameter count.

    Raises
    ------
    DataError
        Naming ``path``, the key and its value: a state wider than :data:`MAX_STATE_SIZE`, more than
        :data:`MAX_MLP_LAYERS` hidden layers or one wider than :data:`MAX_MLP_WIDTH`, or more than
        :data:`MAX_POLICY_PARAMETERS` parameters in all.
    """
    config = info.network_config
    hidden = tuple(config.mlp_hidden)
    if len(hidden) > MAX_MLP_LAYERS or any(not 1 <= int(w) <= MAX_MLP_WIDTH for w in hidden):
        raise DataError(
            f"{path}: network_config.mlp_hidden={list(hidden)[:20]} is outside the limits "
            f"(at most {MAX_MLP_LAYERS} layers of 1..{MAX_MLP_WIDTH} units)"
        )
    layout = info.layout
    if layout.size > MAX_STATE_SIZE:
        raise DataError(f"{path}: state_config gives a state of {layout.size} floats; at most {MAX_STATE_SIZE}")
    with torch.device("meta"):  # shapes only: nothing is allocated
        count = sum(p.numel() for p in QNetwork(layout, config).parameters())
    if count > MAX_POLICY_PARAMETERS:
        raise DataError(
            f"{path}: network_config {config.model_dump(mode='json')} has {count:,} parameters; "
            f"at most {MAX_POLICY_PARAMETERS:,}"
        )
    return count
