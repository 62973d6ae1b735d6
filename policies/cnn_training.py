"""Supervised training of the multi-timeframe CNN on labelled steps of one span, and its direction scores.

Owns the loss (class-balanced direction CE, expected-move Huber, pivot type CE + distance Huber), the Adam
loop with early stopping on a validation tail, and input standardisation folded exactly into the first
layers (the trained model is a plain ``MultiTimeframeCNN``). Pure torch, no Ray; never computes a label.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional
from torch.nn.utils import parametrize

from market.config import StrictModel
from market.errors import ConfigError
from market.features import gather
from market.labels import MASKED, LabelConfig, Labels
from market.layout import AGENT_FEATURES, StateLayout
from market.timeline import MarketTimeline

from .cnn import CnnConfig, MultiTimeframeCNN
from .device import resolve_device

N_CLASSES = 3


class CnnTrainingConfig(StrictModel):
    """The CNN's supervised training: budget, optimiser, loss weights, early stopping and labels.

    ``max_steps`` (optimiser steps) and ``max_epochs`` (passes over the training part) both bound the run.
    Every ``eval_every`` steps the validation tail (the last ``validation_fraction`` of the CNN span, one
    longest horizon apart from the rest) is scored, and the weights with the best ``select_on`` so far are kept:
    ``balanced_accuracy`` (mean over horizons of the direction balanced accuracy, what the report measures;
    the validation figures are then those of the selected model, the evaluation span's stay untouched) or
    ``loss``. ``patience`` evaluations without improvement stop the run.

    Inputs are standardised from ``stats_samples`` training states (see :func:`standardise_inputs`); a feature
    whose standard deviation there is below ``min_input_std`` is ignored, as is every component named in
    ``ignore_components`` (for ablations).
    """

    batch_size: int = Field(256, ge=2)
    lr: float = Field(3e-4, gt=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    max_epochs: int = Field(20, ge=1)
    max_steps: int | None = Field(None, ge=1)
    eval_every: int = Field(25, ge=1)
    patience: int = Field(12, ge=1)
    validation_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    eval_batch_size: int = Field(1024, ge=1)
    move_weight: float = Field(0.5, ge=0.0)
    pivot_weight: float = Field(0.25, ge=0.0)
    huber_delta: float = Field(1.0, gt=0.0)
    pivot_distance_scale: float = Field(100.0, gt=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    standardise_inputs: bool = True
    stats_samples: int = Field(4096, ge=16)
    min_input_std: float = Field(1e-4, gt=0.0)
    ignore_components: tuple[str, ...] = ()
    select_on: Literal["loss", "balanced_accuracy"] = "balanced_accuracy"
    device: str = "auto"
    labels: LabelConfig = LabelConfig()

    @model_validator(mode="after")
    def _device_name(self) -> CnnTrainingConfig:
        if self.device not in {"auto", "cpu"} and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N] (got {self.device!r})")
        return self


@dataclass(frozen=True, slots=True)
class LabelledSteps:
    """Base steps of a timeline and the labels they are scored against (``labels`` is indexed by step)."""

    steps: np.ndarray
    labels: Labels


@dataclass(frozen=True, slots=True)
class FitResult:
    """What a training run did: budget used, why it stopped, the best validation loss and its curve."""

    steps: int
    epochs: float
    best_step: int
    selected_on: str
    best_validation: dict[str, float]
    stop_reason: str
    seconds: float
    device: str
    class_weights: list[list[float]]
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DirectionScore:
    """Direction accuracy of the model and of two baselines at one horizon on one set of steps."""

    horizon: int
    n: int
    accuracy: float
    balanced_accuracy: float
    majority_accuracy: float
    majority_balanced_accuracy: float
    persistence_accuracy: float
    persistence_balanced_accuracy: float
    class_frequencies: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self) | {"class_frequencies": list(self.class_frequencies)}


def build_model(layout: StateLayout, config: CnnConfig | None, seed: int) -> MultiTimeframeCNN:
    """A freshly initialised CNN whose initial weights depend only on ``seed``."""
    torch.manual_seed(seed)
    return MultiTimeframeCNN(layout, config)


def cnn_states(timeline: MarketTimeline, steps: np.ndarray, device: torch.device) -> torch.Tensor:
    """The CNN's input at ``steps``: the one gather with no CNN parts and a flat agent (the model reads neither)."""
    agent = np.zeros((steps.shape[0], len(AGENT_FEATURES)), dtype=np.float32)
    return torch.from_numpy(gather(timeline, np.asarray(steps, dtype=np.int64), agent)).to(device)


def class_weights(direction: np.ndarray) -> np.ndarray:
    """Per horizon and class ``n / (3 n_c)`` over the labelled rows of ``direction`` [N, H] (0 for an absent class)."""
    weights = np.zeros((direction.shape[1], N_CLASSES))
    for j in range(direction.shape[1]):
        col = direction[:, j]
        counts = np.bincount(col[col != MASKED], minlength=N_CLASSES).astype(np.float64)
        present = counts > 0
        weights[j, present] = counts.sum() / (N_CLASSES * counts[present])
    return weights


def direction_scores(true: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present in ``true``); NaN when empty."""
    if true.size == 0:
        return float("nan"), float("nan")
    accuracy = float(np.mean(true == pred))
    recalls = [float(np.mean(pred[true == c] == c)) for c in range(N_CLASSES) if np.any(true == c)]
    return accuracy, float(np.mean(recalls))


# --------------------------------------------------------------------------------------------------
# input standardisation, folded into the first layers


class _Scale(nn.Module):
    """``weight = original * gain`` (gain per input channel)."""

    def __init__(self, gain: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("gain", gain)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.gain


class _Centre(nn.Module):
    """``bias = original - (effective weight) . mean``: the layer reads ``(x - mean) * gain`` in the interior."""

    def __init__(self, owner: nn.Module, mean: torch.Tensor) -> None:
        super().__init__()
        self._owner = [owner]  # a list, so the owner is not registered as a child module
        self.register_buffer("mean", mean)

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        weight = self._owner[0].weight
        if weight.dim() == 3:
            weight = weight.sum(dim=2)
        return bias - weight @ self.mean


def input_statistics(
    timeline: MarketTimeline, layout: StateLayout, steps: np.ndarray, *, chunk: int = 1024
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and standard deviation per feature of each window (over its rows too) and each vector the CNN reads,
    over the states at ``steps`` (float64 sums, gathered ``chunk`` states at a time)."""
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    cpu = torch.device("cpu")
    read = [c for c in layout.components if c.market_input]
    for part in _batches(np.asarray(steps, dtype=np.int64), chunk):
        states = cnn_states(timeline, part, cpu).numpy().astype(np.float64)
        for comp in read:
            x = states[:, comp.slice]
            if comp.kind == "window":
                x = x.reshape(part.shape[0], comp.features, comp.rows).transpose(0, 2, 1).reshape(-1, comp.features)
            sums[comp.name] = sums.get(comp.name, 0.0) + x.sum(axis=0)
            squares[comp.name] = squares.get(comp.name, 0.0) + np.square(x).sum(axis=0)
            counts[comp.name] = counts.get(comp.name, 0) + x.shape[0]
    stats = {}
    for name, total in sums.items():
        mean = total / counts[name]
        var = np.maximum(squares[name] / counts[name] - np.square(mean), 0.0)
        stats[name] = (mean, np.sqrt(var))
    return stats


def _gain(mean: np.ndarray, std: np.ndarray, min_std: float) -> np.ndarray:
    # A feature that (nearly) never moves in the training span cannot be learned from, and any later value of it
    # would be one training never saw: it gets gain 0, so the model ignores it.
    moves = (std >= min_std) & (std >= 1e-6 * np.abs(mean))
    return np.where(moves, 1.0 / np.maximum(std, min_std), 0.0)


def standardise_inputs(
    model: MultiTimeframeCNN,
    stats: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    min_std: float = 1e-4,
    ignore: tuple[str, ...] = (),
) -> None:
    """Reparametrise the layers that read the state so that training sees standardised inputs.

    Each window's first convolution and the fused layer's columns of the Williams and regime vectors get
    ``weight = P * gain`` and ``bias = c - weight . mean`` (``gain`` = 1/std per feature, 0 for a feature whose
    std is below ``min_std``), and Adam moves ``P`` and ``c``. The model computes on raw states all along (zero
    padding included), so :func:`fold_inputs` makes it a plain ``MultiTimeframeCNN`` again with exactly the
    same outputs.
    """
    device = next(model.parameters()).device

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=device)

    with torch.no_grad():
        for comp in model.windows:
            mean, std = stats[comp.name]
            conv = model.encoders[comp.name].net[0]
            parametrize.register_parametrization(
                conv, "weight", _Scale(tensor(_gain(mean, std, min_std))[None, :, None])
            )
            parametrize.register_parametrization(conv, "bias", _Centre(conv, tensor(mean)))
        fuse = model.fuse[0]
        gain = np.ones(fuse.in_features)
        centre = np.zeros(fuse.in_features)
        col = 2 * model.config.channels * len(model.windows)
        for comp in model.vectors:
            mean, std = stats[comp.name]
            gain[col : col + comp.size] = _gain(mean, std, min_std) * (comp.name not in ignore)
            centre[col : col + comp.size] = mean
            col += comp.size
        parametrize.register_parametrization(fuse, "weight", _Scale(tensor(gain)[None, :]))
        parametrize.register_parametrization(fuse, "bias", _Centre(fuse, tensor(centre)))


def fold_inputs(model: MultiTimeframeCNN) -> MultiTimeframeCNN:
    """Bake the standardisation into plain weights (biases first: they read the scaled weights)."""
    for module in [*(model.encoders[c.name].net[0] for c in model.windows), model.fuse[0]]:
        if parametrize.is_parametrized(module):
            parametrize.remove_parametrizations(module, "bias", leave_parametrized=True)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


# --------------------------------------------------------------------------------------------------
# loss


def _targets(labels: Labels, steps: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype).to(device)

    return {
        "direction": t(labels.direction[steps], torch.long),
        "move": t(labels.expected_move[steps], torch.float32),
        "pivot_kind": t(labels.pivot_kind[steps], torch.long),
        "pivot_distance": t(labels.pivot_distance[steps], torch.float32),
    }


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def cnn_loss(
    out: Any, targets: dict[str, torch.Tensor], weights: torch.Tensor, config: CnnTrainingConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Class-balanced direction CE (mean over horizons) + weighted Huber on the expected move + pivot terms.

    Masked labels (``MASKED`` classes, NaN targets) add nothing; a term with no labelled row is 0.
    """
    logits = out.direction_logits  # [B, H, 3]
    direction = targets["direction"]
    ok = direction != MASKED
    safe = direction.clamp_min(0)
    ce = functional.cross_entropy(logits.reshape(-1, N_CLASSES), safe.reshape(-1), reduction="none").reshape(
        direction.shape
    )
    w = weights.gather(1, safe.T).T * ok  # [B, H]: each row's class weight, 0 where masked
    ce_h = (ce * w).sum(dim=0) / w.sum(dim=0).clamp_min(1e-12)
    direction_loss = ce_h[w.sum(dim=0) > 0].mean() if bool((w.sum(dim=0) > 0).any()) else ce.sum() * 0.0
    move = targets["move"]
    move_ok = torch.isfinite(move)
    move_loss = _masked_mean(
        functional.huber_loss(out.expected_move, torch.nan_to_num(move), reduction="none", delta=config.huber_delta),
        move_ok,
    )
    kind = targets["pivot_kind"]
    kind_ok = kind != MASKED
    type_ce = functional.cross_entropy(
        out.pivot[..., :2].reshape(-1, 2), kind.clamp_min(0).reshape(-1), reduction="none"
    ).reshape(kind.shape)
    pivot_type = _masked_mean(type_ce, kind_ok)
    distance = targets["pivot_distance"] * config.pivot_distance_scale
    dist_ok = torch.isfinite(distance)
    pivot_distance = _masked_mean(
        functional.huber_loss(
            out.pivot[..., 2], torch.nan_to_num(distance), reduction="none", delta=config.huber_delta
        ),
        dist_ok,
    )
    total = direction_loss + config.move_weight * move_loss + config.pivot_weight * (pivot_type + pivot_distance)
    parts = {
        "direction": float(direction_loss.detach()),
        "move": float(move_loss.detach()),
        "pivot_type": float(pivot_type.detach()),
        "pivot_distance": float(pivot_distance.detach()),
    }
    return total, parts


# --------------------------------------------------------------------------------------------------
# evaluation


def _batches(steps: np.ndarray, size: int) -> list[np.ndarray]:
    return [steps[i : i + size] for i in range(0, steps.shape[0], size)]


def validate(
    model: MultiTimeframeCNN,
    timeline: MarketTimeline,
    data: LabelledSteps,
    weights: torch.Tensor,
    config: CnnTrainingConfig,
    device: torch.device,
) -> dict[str, float]:
    """Over every step of ``data`` (eval mode): the training loss and its terms, and the direction balanced
    accuracy per horizon (``balanced_accuracy_h<h>``) and its mean over horizons (``balanced_accuracy``)."""
    model.eval()
    total, count = 0.0, 0
    terms: dict[str, float] = {}
    preds = []
    with torch.no_grad():
        for chunk in _batches(data.steps, config.eval_batch_size):
            out = model(cnn_states(timeline, chunk, device))
            loss, parts = cnn_loss(out, _targets(data.labels, chunk, device), weights, config)
            total += float(loss) * chunk.shape[0]
            for key, value in parts.items():
                terms[key] = terms.get(key, 0.0) + value * chunk.shape[0]
            count += chunk.shape[0]
            preds.append(out.direction_logits.argmax(dim=-1).cpu().numpy())
    count = max(count, 1)
    result = {"loss": total / count, **{key: value / count for key, value in terms.items()}}
    pred = np.concatenate(preds)
    balanced = []
    for j, h in enumerate(data.labels.horizons):
        true = data.labels.direction[data.steps, j]
        ok = true != MASKED
        result[f"balanced_accuracy_h{h}"] = direction_scores(true[ok], pred[ok, j])[1]
        balanced.append(result[f"balanced_accuracy_h{h}"])
    result["balanced_accuracy"] = float(np.nanmean(balanced))
    return result


def predict_directions(
    model: MultiTimeframeCNN, timeline: MarketTimeline, steps: np.ndarray, *, batch_size: int = 1024
) -> np.ndarray:
    """The most likely direction class per horizon at ``steps``: int64 [N, H]."""
    device = next(model.parameters()).device
    model.eval()
    parts = []
    with torch.no_grad():
        for chunk in _batches(np.asarray(steps, dtype=np.int64), batch_size):
            parts.append(model(cnn_states(timeline, chunk, device)).direction_logits.argmax(dim=-1).cpu().numpy())
    if not parts:
        return np.zeros((0, len(model.config.horizons)), dtype=np.int64)
    return np.concatenate(parts).astype(np.int64)


def score_directions(
    model: MultiTimeframeCNN,
    timeline: MarketTimeline,
    data: LabelledSteps,
    majority: np.ndarray,
    *,
    batch_size: int = 1024,
) -> list[DirectionScore]:
    """Per horizon: the model's accuracy and balanced accuracy on the labelled steps of ``data``, beside the
    majority class (``majority[j]``, from the training part) and persistence (the last realised h-move's class).
    """
    steps = data.steps
    pred = predict_directions(model, timeline, steps, batch_size=batch_size)
    scores = []
    for j, h in enumerate(data.labels.horizons):
        true = data.labels.direction[steps, j]
        ok = true != MASKED
        y = true[ok]
        past = data.labels.past_direction[steps, j][ok]
        acc, bal = direction_scores(y, pred[ok, j])
        maj_acc, maj_bal = direction_scores(y, np.full_like(y, majority[j]))
        known = past != MASKED
        pers_acc, pers_bal = direction_scores(y[known], past[known])
        freq = np.bincount(y, minlength=N_CLASSES) / max(y.size, 1)
        scores.append(
            DirectionScore(
                horizon=int(h),
                n=int(y.size),
                accuracy=acc,
                balanced_accuracy=bal,
                majority_accuracy=maj_acc,
                majority_balanced_accuracy=maj_bal,
                persistence_accuracy=pers_acc,
                persistence_balanced_accuracy=pers_bal,
                class_frequencies=(float(freq[0]), float(freq[1]), float(freq[2])),
            )
        )
    return scores


def majority_classes(data: LabelledSteps) -> np.ndarray:
    """The most frequent direction class per horizon over the labelled steps of ``data`` (ties: lowest class)."""
    out = np.zeros(len(data.labels.horizons), dtype=np.int64)
    for j in range(out.size):
        col = data.labels.direction[data.steps, j]
        out[j] = int(np.argmax(np.bincount(col[col != MASKED], minlength=N_CLASSES)))
    return out


# --------------------------------------------------------------------------------------------------
# the loop


def fit(
    model: MultiTimeframeCNN,
    timeline: MarketTimeline,
    train: LabelledSteps,
    validation: LabelledSteps,
    config: CnnTrainingConfig,
    *,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train ``model`` in place on ``train``, keep the weights of the best validation score, and return how it went.

    Batches are drawn without replacement from a seeded permutation of ``train.steps`` per epoch, so a run
    on the CPU is a function of ``seed`` and the inputs. The returned model is a plain ``MultiTimeframeCNN``
    (input standardisation folded in), in eval mode, on the config's device.

    Raises
    ------
    ValueError
        When ``train`` or ``validation`` has no step.
    ConfigError
        When ``ignore_components`` names a component the CNN does not read.
    """
    if train.steps.size == 0 or validation.steps.size == 0:
        raise ValueError(f"fit needs training and validation steps (got {train.steps.size}, {validation.steps.size})")
    unknown = sorted(set(config.ignore_components) - {c.name for c in model.windows + model.vectors})
    if unknown:
        raise ConfigError(f"cnn_training.ignore_components: {unknown} are not inputs of this CNN")
    started = time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    if config.standardise_inputs:
        pick = np.sort(rng.choice(train.steps, size=min(config.stats_samples, train.steps.size), replace=False))
        standardise_inputs(
            model,
            input_statistics(timeline, model.layout, pick),
            min_std=config.min_input_std,
            ignore=config.ignore_components,
        )
    weights_np = class_weights(train.labels.direction[train.steps])
    weights = torch.as_tensor(weights_np, dtype=torch.float32, device=device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = int(np.ceil(train.steps.size / config.batch_size))
    budget = config.max_epochs * per_epoch
    if config.max_steps is not None:
        budget = min(budget, config.max_steps)
    sign = 1.0 if config.select_on == "loss" else -1.0  # the selection metric, as a quantity to minimise
    best, best_step, best_state, best_val = float("inf"), 0, copy.deepcopy(model.state_dict()), {}
    history: list[dict[str, float]] = []
    since_best = 0
    stop_reason = "budget"
    step = 0
    running: list[dict[str, float]] = []
    while step < budget:
        order = rng.permutation(train.steps)
        for batch in _batches(order, config.batch_size):
            if step >= budget:
                break
            model.train()
            out = model(cnn_states(timeline, batch, device))
            loss, parts = cnn_loss(out, _targets(train.labels, batch, device), weights, config)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            running.append({"loss": float(loss.detach()), **parts})
            step += 1
            if step % config.eval_every == 0 or step == budget:
                val = validate(model, timeline, validation, weights, config, device)
                record = {"step": step, "epoch": step / per_epoch, "seconds": time.perf_counter() - started}
                record.update({f"train_{k}": float(np.mean([r[k] for r in running])) for k in running[0]})
                record.update({f"val_{k}": v for k, v in val.items()})
                history.append(record)
                running = []
                if log is not None:
                    log(
                        f"step {step}/{budget} (epoch {step / per_epoch:.2f}): loss train/validation "
                        + ", ".join(f"{k} {record['train_' + k]:.3f}/{record['val_' + k]:.3f}" for k in parts)
                        + f", total {record['train_loss']:.3f}/{val['loss']:.3f}; validation balanced accuracy "
                        + " ".join(f"{val[f'balanced_accuracy_h{h}']:.3f}" for h in validation.labels.horizons)
                    )
                metric = sign * val[config.select_on]
                if metric < best:
                    best, best_step, best_val, since_best = metric, step, val, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += 1
                    if since_best >= config.patience:
                        stop_reason = (
                            f"early stop: no better validation {config.select_on} in {config.patience} evaluations"
                        )
                        budget = step
                        break
    model.load_state_dict(best_state)
    fold_inputs(model)
    model.eval()
    return FitResult(
        steps=step,
        epochs=step / per_epoch,
        best_step=best_step,
        selected_on=config.select_on,
        best_validation=best_val,
        stop_reason=stop_reason,
        seconds=time.perf_counter() - started,
        device=str(device),
        class_weights=weights_np.tolist(),
        history=history,
    )
