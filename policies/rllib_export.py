"""RLlib-trained weights as a project policy checkpoint: the same ``QNetwork``, with who trained it and what it scores.

The RLlib modules (``cluster.rllib_modules``) hold a ``policies.dqn.QNetwork`` as their ``qnet`` attribute, so
its torch ``state_dict`` is loaded into a fresh ``QNetwork`` (strictly: every key and shape must match) and
written with :func:`policies.checkpoint.save_policy`. ``rayscalp evaluate``, the policy service and paper
trading then read it as any other policy. The meta says which engine and algorithm produced it and what the
three scores are: ``q_values`` (DQN) or ``policy_logits`` (PPO, APPO: the network's output is the policy's
logits, so the served "q_values" are logits and the greedy action, their argmax, is the policy's mode).
Pure torch; never imports Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from market.errors import DataError
from market.layout import StateLayout

from .checkpoint import save_policy
from .dqn import QNetwork, QNetworkConfig

#: What the network's three outputs are, by algorithm.
HEADS: dict[str, Literal["q_values", "policy_logits"]] = {
    "DQN": "q_values",
    "PPO": "policy_logits",
    "APPO": "policy_logits",
}
#: The prefix of the Q-network's parameters inside an RLlib module's state.
QNET_PREFIX = "qnet."


def qnet_weights(module_state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The ``QNetwork`` parameters of an RLlib module's state (keys ``qnet.*``; numpy or torch values).

    Raises
    ------
    DataError
        When the state holds no ``qnet.*`` key.
    """
    weights = {
        key[len(QNET_PREFIX) :]: torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        for key, value in module_state.items()
        if key.startswith(QNET_PREFIX)
    }
    if not weights:
        raise DataError(f"RLlib module state has no {QNET_PREFIX}* parameters (keys: {sorted(module_state)[:10]})")
    return weights


def export_rllib_policy(
    path: Path,
    module_state: Mapping[str, Any],
    layout: StateLayout,
    network_config: QNetworkConfig,
    *,
    algo: str,
    version: str,
    updates: int,
    cnn_version: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write an RLlib module's Q-network as a project policy checkpoint and return its path.

    Parameters
    ----------
    path : Path
    module_state : mapping
        The RLlib module's state (``learner_group.get_weights()["default_policy"]``).
    layout, network_config
        The state layout and network shape the module was built with.
    algo : str
        ``DQN``, ``PPO`` or ``APPO``; sets the meta's ``head``.
    version, updates, cnn_version, meta
        As :func:`policies.checkpoint.save_policy`; ``meta`` gains ``engine``, ``algo`` and ``head``.

    Raises
    ------
    DataError
        An unknown ``algo``, or weights that do not fit the network (a missing, extra or misshapen key).
    """
    if algo not in HEADS:
        raise DataError(f"export_rllib_policy: algo={algo!r} is not one of {sorted(HEADS)}")
    network = QNetwork(layout, network_config)
    try:
        network.load_state_dict(qnet_weights(module_state), strict=True)
    except RuntimeError as exc:
        raise DataError(f"export_rllib_policy: the {algo} module's qnet does not fit {network_config}: {exc}") from exc
    tagged = {**(meta or {}), "engine": "rllib", "algo": algo, "head": HEADS[algo]}
    return save_policy(path, network, version=version, updates=updates, cnn_version=cnn_version, meta=tagged)
