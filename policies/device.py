"""Which torch device to run on: ``auto`` takes CUDA when there is one, the CPU otherwise.

Also the one place that turns a market timeline's numpy arrays into tensors on that device.
"""

from __future__ import annotations

import numpy as np
import torch

from market.errors import ConfigError
from market.timeline import MarketTimeline


def check_device_name(name: str) -> str:
    """Validate a device setting (``auto``, ``cpu`` or ``cuda[:N]``) for config models; return it."""
    if name not in {"auto", "cpu"} and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N] (got {name!r})")
    return name


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cpu``/``cuda[:N]`` (or a torch device) as given.

    Raises
    ------
    ConfigError
        When CUDA is asked for by name and none is present (a ``ValueError`` too).
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(name)!r}: CUDA is not available on this machine (torch sees no CUDA device)")
    return device


def timeline_to_device(timeline: MarketTimeline, device: torch.device) -> MarketTimeline:
    """A copy of ``timeline`` whose arrays are tensors on ``device`` (for gather on the learner's device)."""

    def move(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), device=device)

    return timeline.map_arrays(move)
