"""The one transition schema: ``M`` compact n-step transitions, from the rollout worker to the learning step.

A rollout worker builds :class:`Transitions` of numpy arrays, ``PrioritizedReplay.add(transitions, priorities)``
stores them, and ``PrioritizedReplay.sample`` hands the learning step the same fields as torch tensors
inside a ``ReplayBatch``. Never a whole state: states are rebuilt from the steps by ``gather``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

#: numpy dtype of each field, in order (torch tensors of a sampled batch carry the matching torch dtypes).
DTYPES: dict[str, Any] = {
    "step": np.int64,
    "next_step": np.int64,
    "agent": np.float32,
    "next_agent": np.float32,
    "action": np.int64,
    "n_return": np.float32,
    "discount": np.float32,
}


@dataclass(frozen=True, slots=True)
class Transitions:
    """``M`` compact n-step transitions; every field is an array (numpy) or a tensor (torch) of length ``M``.

    Attributes
    ----------
    step, next_step : int64 [M]
        Timeline steps of s and of the bootstrap state s' (``n`` steps later, fewer at an episode's end).
    agent, next_agent : float32 [M, A]
        The agent's own features at s and at s'.
    action : int64 [M]
        The action taken at s, in ``[0, num_actions)``.
    n_return : float32 [M]
        ``sum_{k<m} gamma^k r_{t+k}``.
    discount : float32 [M]
        Bootstrap discount ``gamma^m``: 0 on termination, kept on truncation.
    """

    step: Any
    next_step: Any
    agent: Any
    next_agent: Any
    action: Any
    n_return: Any
    discount: Any

    def __len__(self) -> int:
        return int(self.step.shape[0])

    @staticmethod
    def names() -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in fields(Transitions))

    @staticmethod
    def empty(agent_dim: int) -> Transitions:
        """No transitions (numpy, at agent width ``agent_dim``)."""
        return Transitions(
            **{
                name: np.zeros((0, agent_dim) if name in ("agent", "next_agent") else 0, dtype)
                for name, dtype in DTYPES.items()
            }
        )

    @staticmethod
    def concat(parts: list[Transitions]) -> Transitions:
        """Join numpy batches into one, in order."""
        return Transitions(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in DTYPES})

    def to_numpy(self) -> Transitions:
        """The same transitions as numpy arrays of the schema's dtypes (no copy where they already are)."""
        return Transitions(**{name: _as_numpy(getattr(self, name), dtype) for name, dtype in DTYPES.items()})

    def to_torch(self, device: torch.device | str = "cpu") -> Transitions:
        """The same transitions as torch tensors on ``device`` (for a local TD error, as the learner takes it)."""
        return Transitions(
            **{
                name: torch.as_tensor(_as_numpy(getattr(self, name), dtype), device=device)
                for name, dtype in DTYPES.items()
            }
        )


def _as_numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)
