"""The multi-timeframe CNN: per-window 1-D conv encoders fused into a hidden vector, with prediction heads.

Reads the market part of a state (the layout's windows, Williams structure and regime; never the CNN's own
slots or the agent's) and returns the hidden features and predictions that fill the state's CNN slots.
Pure torch; checkpoints are plain tensors + JSON-able metadata, loaded with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from market.config import StrictModel
from market.layout import ROLE_CNN_HIDDEN, StateConfig, StateLayout, build_layout, upgrade_component_name

#: Outputs per prediction horizon: P(up), P(flat), P(down), expected move (in units of the horizon's
#: typical absolute move). Four horizons x four outputs fill the layout's 16 ``cnn_pred`` slots.
PRED_OUTPUTS = ("p_up", "p_flat", "p_down", "expected_move")
N_PIVOT_LEVELS = 5
#: Per Williams level: logits of the next confirmed pivot's type (high, low) and its distance.
PIVOT_OUTPUTS = ("logit_high", "logit_low", "distance")


class CnnConfig(StrictModel):
    """Size of the CNN (see ``describe_budget`` for its FLOPs and parameters per sample)."""

    channels: int = Field(32, ge=4, le=512)
    kernel: int = Field(5, ge=3, le=15)
    hidden: int = Field(512, ge=8, le=8192)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    horizons: tuple[int, int, int, int] = (5, 15, 60, 240)


class WindowEncoder(nn.Module):
    """Two strided 1-D convolutions over one window (channels = features, length = rows), then mean- and
    max-pooling over time: ``[B, F, W] -> [B, 2 C]``."""

    def __init__(self, features: int, channels: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.net = nn.Sequential(
            nn.Conv1d(features, channels, kernel, stride=2, padding=pad),
            nn.GELU(),
            nn.Conv1d(channels, channels, kernel, stride=2, padding=pad),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)


@dataclass(frozen=True, slots=True)
class CnnOutput:
    """One forward pass: the hidden vector, the 16 state predictions, and the pivot heads (training only)."""

    hidden: torch.Tensor
    direction_logits: torch.Tensor
    expected_move: torch.Tensor
    pivot: torch.Tensor

    @property
    def predictions(self) -> torch.Tensor:
        """[B, 16]: per horizon softmax(direction) then expected move, as the state's ``cnn_pred`` holds."""
        probs = torch.softmax(self.direction_logits, dim=-1)
        return torch.cat([probs, self.expected_move.unsqueeze(-1)], dim=-1).flatten(1)


class MultiTimeframeCNN(nn.Module):
    """Encoders per window component of the layout, fused with the Williams and regime vectors."""

    def __init__(self, layout: StateLayout, config: CnnConfig | None = None) -> None:
        super().__init__()
        self.config = config or CnnConfig()
        self.layout = layout
        hidden = layout.by_role(ROLE_CNN_HIDDEN)
        if hidden and hidden[0].size != self.config.hidden:
            raise ValueError(
                f"cnn.hidden {self.config.hidden} != layout cnn_hidden {hidden[0].size}: they must agree"
            )
        self.windows = [c for c in layout.components if c.kind == "window"]
        self.vectors = [c for c in layout.components if c.kind == "vector" and c.market_input]
        self.encoders = nn.ModuleDict(
            {c.name: WindowEncoder(c.features, self.config.channels, self.config.kernel) for c in self.windows}
        )
        fused = 2 * self.config.channels * len(self.windows) + sum(c.size for c in self.vectors)
        self.fuse = nn.Sequential(nn.Linear(fused, self.config.hidden), nn.GELU(), nn.Dropout(self.config.dropout))
        n_h = len(self.config.horizons)
        self.direction = nn.Linear(self.config.hidden, n_h * 3)
        self.move = nn.Linear(self.config.hidden, n_h)
        self.pivot = nn.Linear(self.config.hidden, N_PIVOT_LEVELS * len(PIVOT_OUTPUTS))

    def forward(self, states: torch.Tensor) -> CnnOutput:
        """Map states ``[B, S]`` (CNN slots ignored) to hidden features and predictions."""
        batch = states.shape[0]
        parts = []
        for comp in self.windows:
            x = states[:, comp.slice].reshape(batch, comp.features, comp.rows)
            parts.append(self.encoders[comp.name](x))
        parts.extend(states[:, comp.slice] for comp in self.vectors)
        hidden = self.fuse(torch.cat(parts, dim=1))
        n_h = len(self.config.horizons)
        return CnnOutput(
            hidden=hidden,
            direction_logits=self.direction(hidden).reshape(batch, n_h, 3),
            expected_move=self.move(hidden),
            pivot=self.pivot(hidden).reshape(batch, N_PIVOT_LEVELS, len(PIVOT_OUTPUTS)),
        )


def describe_budget(model: MultiTimeframeCNN) -> dict[str, int]:
    """Parameters and multiply-accumulates per sample (convolutions and linear layers)."""
    params = sum(p.numel() for p in model.parameters())
    macs = 0
    for comp in model.windows:
        length = comp.rows
        for layer in model.encoders[comp.name].net:
            if isinstance(layer, nn.Conv1d):
                length = (length + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
                macs += layer.in_channels * layer.out_channels * layer.kernel_size[0] * length
    for layer in (model.fuse[0], model.direction, model.move, model.pivot):
        macs += layer.in_features * layer.out_features
    return {"parameters": params, "macs_per_sample": macs}


def save_checkpoint(path: Path, model: MultiTimeframeCNN, *, version: str, meta: dict[str, Any]) -> Path:
    """Write weights and metadata (config, state config, version, data fingerprint, spans) to ``path``."""
    payload = {
        "state_dict": model.state_dict(),
        "cnn_config": model.config.model_dump(mode="json"),
        "state_config": model.layout.config.model_dump(mode="json"),
        "version": version,
        "meta": meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[MultiTimeframeCNN, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (data only: ``weights_only=True``)."""
    payload = torch.load(path, map_location=device, weights_only=True)
    layout = build_layout(StateConfig.model_validate(payload["state_config"]))
    model = MultiTimeframeCNN(layout, CnnConfig.model_validate(payload["cnn_config"]))
    # Checkpoints written before the roles rename key their encoders by the old component names.
    model.load_state_dict({upgrade_component_name(key): value for key, value in payload["state_dict"].items()})
    model.to(device).eval()
    return model, {"version": payload["version"], **payload["meta"]}
