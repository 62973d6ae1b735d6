"""Typed configuration of learning: the optimiser, n-step returns, replay and the batch.

Pydantic models (the device rule is policies.device's); imports no Ray.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from market.config import StrictModel

from .device import check_device_name


class ReplayConfig(StrictModel):
    """Prioritized replay: capacity and the proportional prioritisation exponents."""

    capacity: int = Field(1_000_000, gt=0)
    alpha: float = Field(0.6, ge=0.0, le=1.0)
    beta_start: float = Field(0.4, ge=0.0, le=1.0)
    beta_end: float = Field(1.0, ge=0.0, le=1.0)
    #: Added to |TD| in every priority (the learner's updates and the workers' initial ones), so none is zero.
    priority_eps: float = Field(1e-6, gt=0.0)


class TrainingConfig(StrictModel):
    """The learning step: batch, optimiser, discount, n-step and target-network sync."""

    batch_size: int = Field(512, gt=0)
    lr: float = Field(1e-4, gt=0.0, lt=1.0)
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    n_step: int = Field(3, ge=1, le=100)
    grad_clip: float = Field(10.0, gt=0.0)
    target_sync_every: int = Field(2_500, gt=0)
    target_tau: float | None = Field(None, gt=0.0, le=1.0)
    device: str = "auto"

    @model_validator(mode="after")
    def _device_name(self) -> TrainingConfig:
        check_device_name(self.device)
        return self
