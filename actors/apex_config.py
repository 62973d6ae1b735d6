"""Configuration of distributed (Ape-X) training: workers, the learner's resources, the replay ratio, budget,
checkpoints and exploration. Pydantic models only, validated on construction.

Imports neither Ray nor torch, so an experiment config validates anywhere; never starts anything itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from market.config import StrictModel


class BudgetConfig(StrictModel):
    """When a run ends: the first of these limits to be reached (at least one must be given).

    ``env_steps`` and ``updates`` are totals of the experiment, so a resumed run does what is left of them;
    ``wall_seconds`` counts the current driver's training only (not the time its learner takes to be placed and
    built, or restored after a lost node).
    """

    env_steps: int | None = Field(1_000_000, gt=0)
    updates: int | None = Field(None, gt=0)
    wall_seconds: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetConfig:
        if self.env_steps is None and self.updates is None and self.wall_seconds is None:
            raise ValueError("budget: give at least one of env_steps, updates, wall_seconds")
        return self


class CheckpointConfig(StrictModel):
    """Checkpoints every ``every_updates`` learner updates, keeping the newest ``keep_last``.

    ``storage`` is a local directory or any ``pyarrow.fs`` URI (``s3://bucket/prefix``, ``gs://...``,
    ``file:///abs/dir``); empty means ``<output_dir>/<name>/checkpoints``. On a cluster of several nodes use
    a URI every node reaches: a local directory is the learner node's own disk.
    """

    every_updates: int = Field(5_000, gt=0)
    keep_last: int = Field(3, ge=1, le=1000)
    storage: str = ""


class ExplorationConfig(StrictModel):
    """Exploration. Ape-X: worker ``i`` of ``N`` acts with ``eps_i = base^(1 + alpha i / (N - 1))``.

    A single-process run (``rayscalp train --local``) has one epsilon instead, decayed linearly from
    ``decay_start`` to ``decay_end`` over the first ``decay_fraction`` of its budget.
    """

    base: float = Field(0.4, gt=0.0, lt=1.0)
    alpha: float = Field(7.0, ge=0.0)
    decay_start: float = Field(1.0, ge=0.0, le=1.0)
    decay_end: float = Field(0.02, ge=0.0, le=1.0)
    decay_fraction: float = Field(0.5, gt=0.0, le=1.0)


class CurvesConfig(StrictModel):
    """Learning curves (``curves.json`` and ``curves.png`` in the run folder): a point every ``every_updates``.

    ``validation_steps`` > 0 carves a greedy validation window of that many steps from the tail of the DQN span
    (training then stops short of it; the evaluation span is never touched); 0 records no validation return.
    """

    every_updates: int = Field(100, gt=0)
    validation_steps: int = Field(0, ge=0)


class LearnerResources(StrictModel):
    """What the learner actor asks of the cluster.

    ``num_gpus`` ``None`` asks for one GPU when the cluster has one and none otherwise. ``resource`` names a
    custom resource asked for one unit of (the ``ray_cluster.yaml`` GPU node offers ``{"learner": 1}``).
    ``torch_threads`` ``None`` is the CPU allotment rounded down (at least 1): more intra-op threads than
    cores makes torch's OpenMP workers spin against each other (small steps measured 17x slower).
    When the learner's node is lost, the driver waits up to ``recover_wait_s`` for a node offering what the
    learner asks for and restores it there from the last checkpoint, at most ``max_recoveries`` times a run
    (0: the run stops and asks for ``--resume``, as it does when the learner dies on a node that lives on).
    """

    num_cpus: float = Field(1.0, gt=0.0, le=256.0)
    num_gpus: float | None = Field(None, ge=0.0, le=8.0)
    resource: str | None = Field(None, min_length=1, max_length=64)
    torch_threads: int | None = Field(None, ge=1, le=256)
    recover_wait_s: float = Field(900.0, gt=0.0, le=86_400.0)
    max_recoveries: int = Field(3, ge=0, le=100)

    @property
    def threads(self) -> int:
        """Intra-op threads torch gets in the learner."""
        return self.torch_threads or max(1, int(self.num_cpus))


class CnnSourceConfig(StrictModel):
    """Where the CNN component of the states comes from.

    ``checkpoint`` ``None``: no CNN, its slots stay zero (and the run record says ``cnn_version: none``).
    Otherwise the whole timeline is filled once before training: through the Serve deployment
    (``serve.cnn``, on the cluster's GPU when it has one) when ``serve`` is true, else in the driver.
    """

    checkpoint: Path | None = None
    serve: bool = False


class ApexConfig(StrictModel):
    """Distributed training: N rollout workers feeding one learner at a fixed replay ratio.

    Attributes
    ----------
    num_workers, envs_per_worker : int
        Rollout actors, and the vector envs each steps.
    worker_num_cpus : float
        CPUs a worker asks for (fractions let several share a core in small setups).
    worker_resource : str, optional
        A custom resource a worker asks one unit of (the ``ray_cluster.yaml`` rollout nodes offer ``rollout``),
        so that workers never take the learner node's CPUs.
    max_worker_restarts : int
        Ray restarts of a killed worker (-1: forever); a restarted worker continues with fresh envs.
    weight_sync_every : int
        Env steps (summed over its envs) a worker takes between pulls of the learner's latest weights.
    send_every : int
        Transitions per batch a worker sends to the learner.
    replay_ratio : float
        Learner updates per env step after ``learning_starts``, held fixed: a learner ahead waits for data,
        workers ahead of it by more than ``lead_env_steps`` wait for the learner.
    learning_starts : int
        Env steps (all workers) before the first update.
    lead_env_steps : int
        How many env steps the workers may run ahead of what the updates done so far account for.
    publish_every : int
        Updates between weight broadcasts (``ray.put``) from the learner.
    deterministic : bool
        Lockstep rounds driven by the driver (workers collect, their batches are added in worker order, the
        learner does the updates owed, weights are handed out): on the CPU, the same seed and config give
        the same numbers. The default asynchronous mode is Ape-X proper and is not bit-reproducible (batches
        arrive in whatever order the workers finish them).
    history_steps : int, optional
        Use only the first N base steps of the history (smoke runs and tests).
    progress_every_s : float
        Seconds between progress lines and driver metrics.
    """

    num_workers: int = Field(2, ge=1, le=1024)
    envs_per_worker: int = Field(8, ge=1, le=4096)
    worker_num_cpus: float = Field(1.0, ge=0.0, le=64.0)
    worker_resource: str | None = Field(None, min_length=1, max_length=64)
    max_worker_restarts: int = Field(-1, ge=-1)
    weight_sync_every: int = Field(400, gt=0)
    send_every: int = Field(256, gt=0)
    replay_ratio: float = Field(0.25, gt=0.0, le=64.0)
    learning_starts: int = Field(5_000, ge=0)
    lead_env_steps: int = Field(2_048, ge=0)
    publish_every: int = Field(25, gt=0)
    deterministic: bool = False
    history_steps: int | None = Field(None, ge=100)
    progress_every_s: float = Field(2.0, gt=0.0)
    budget: BudgetConfig = BudgetConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    exploration: ExplorationConfig = ExplorationConfig()
    learner: LearnerResources = LearnerResources()
    cnn: CnnSourceConfig = CnnSourceConfig()
    curves: CurvesConfig = CurvesConfig()


def apex_epsilon(index: int, num_workers: int, base: float = 0.4, alpha: float = 7.0) -> float:
    """Exploration of worker ``index`` of ``num_workers``: ``base^(1 + alpha i / (N - 1))``, ``base`` when N = 1.

    Raises
    ------
    ValueError
        When ``index`` is outside ``[0, num_workers)``.
    """
    if not 0 <= index < num_workers:
        raise ValueError(f"worker index {index} is outside [0, {num_workers})")
    if num_workers == 1:
        return float(base)
    return float(base ** (1.0 + alpha * index / (num_workers - 1)))
