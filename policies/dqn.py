"""The Q-network: a dueling DQN over the state layout, with one small encoder per layout component.

Windows go through 1-D conv encoders, the CNN parts pass through, vectors through small linear layers; a
shared trunk feeds the value and advantage heads. The plain MLP over the flat state stays available
(``encoder: mlp``). Pure torch; never imports Ray.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from market.config import StrictModel
from market.errors import ConfigError
from market.layout import StateLayout
from market.venue import ACTION_SETS

from .cnn import WindowEncoder

#: The action sets a Q-network can act in (``market.venue.ACTION_SETS``; the env's ``actions``).
ActionSet = Literal["market", "scalper"]


class QNetworkConfig(StrictModel):
    """Shape of the Q-network.

    ``actions`` is the action set its outputs are the Q-values of (one output per action, in
    ``market.venue.ACTION_SETS`` order); the experiment config sets it from ``env.actions``.
    """

    actions: ActionSet = "market"
    encoder: Literal["structured", "mlp"] = "structured"
    window_channels: int = Field(16, ge=2, le=256)
    window_kernel: int = Field(5, ge=3, le=15)
    vector_width: int = Field(64, ge=4, le=1024)
    trunk: int = Field(1024, ge=8, le=8192)
    mlp_hidden: tuple[int, ...] = (1024, 512)

    @property
    def n_actions(self) -> int:
        """How many actions (outputs) the network has."""
        return len(ACTION_SETS[self.actions])


def check_action_set(policy: str, acting: str, where: str) -> None:
    """Refuse a policy of the ``policy`` action set where the env or paper account acts in ``acting``.

    Raises
    ------
    ConfigError
        Naming ``where``, both action sets and their actions.
    """
    if policy != acting:
        raise ConfigError(
            f"{where}: the policy acts in the {policy!r} action set ({', '.join(ACTION_SETS[policy])}) but "
            f"actions is {acting!r} ({', '.join(ACTION_SETS[acting])}): train a policy on that action set "
            f"or set actions: {policy}"
        )


class StructuredEncoder(nn.Module):
    """One encoder per component of the layout, concatenated: ``[B, S] -> [B, E]``."""

    def __init__(self, layout: StateLayout, config: QNetworkConfig) -> None:
        super().__init__()
        self.layout = layout
        self.windows = [c for c in layout.components if c.kind == "window"]
        self.passthrough = [c for c in layout.components if c.name.startswith("cnn_")]
        self.vectors = [c for c in layout.components if c.kind in ("vector", "agent") and not c.name.startswith("cnn_")]
        self.window_encoders = nn.ModuleDict(
            {c.name: WindowEncoder(c.features, config.window_channels, config.window_kernel) for c in self.windows}
        )
        self.vector_encoders = nn.ModuleDict(
            {c.name: nn.Sequential(nn.Linear(c.size, config.vector_width), nn.GELU()) for c in self.vectors}
        )
        self.out_features = (
            2 * config.window_channels * len(self.windows)
            + sum(c.size for c in self.passthrough)
            + config.vector_width * len(self.vectors)
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        batch = states.shape[0]
        parts = [
            self.window_encoders[c.name](states[:, c.slice].reshape(batch, c.features, c.rows)) for c in self.windows
        ]
        parts.extend(states[:, c.slice] for c in self.passthrough)
        parts.extend(self.vector_encoders[c.name](states[:, c.slice]) for c in self.vectors)
        return torch.cat(parts, dim=1)


class QNetwork(nn.Module):
    """Dueling Q-network: ``Q(s, a) = V(s) + A(s, a) - mean_a A(s, a)`` over the config's action set."""

    def __init__(self, layout: StateLayout, config: QNetworkConfig | None = None) -> None:
        super().__init__()
        self.config = config or QNetworkConfig()
        self.layout = layout
        if self.config.encoder == "structured":
            self.encoder: nn.Module = StructuredEncoder(layout, self.config)
            width = self.encoder.out_features
        else:
            layers: list[nn.Module] = []
            width = layout.size
            for hidden in self.config.mlp_hidden:
                layers += [nn.Linear(width, hidden), nn.GELU()]
                width = hidden
            self.encoder = nn.Sequential(*layers)
        self.trunk = nn.Sequential(nn.Linear(width, self.config.trunk), nn.GELU())
        self.value = nn.Linear(self.config.trunk, 1)
        self.advantage = nn.Linear(self.config.trunk, self.config.n_actions)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Q-values ``[B, A]`` (A = ``config.n_actions``) for states ``[B, S]``."""
        h = self.trunk(self.encoder(states))
        advantage = self.advantage(h)
        return self.value(h) + advantage - advantage.mean(dim=1, keepdim=True)


def describe_budget(model: QNetwork) -> dict[str, int]:
    """Parameters and multiply-accumulates per sample."""
    params = sum(p.numel() for p in model.parameters())
    macs = 0
    if isinstance(model.encoder, StructuredEncoder):
        for comp in model.encoder.windows:
            length = comp.rows
            for layer in model.encoder.window_encoders[comp.name].net:
                if isinstance(layer, nn.Conv1d):
                    length = (length + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
                    macs += layer.in_channels * layer.out_channels * layer.kernel_size[0] * length
    for module in model.modules():
        if isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features
    return {"parameters": params, "macs_per_sample": macs}
