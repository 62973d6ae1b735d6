"""The Ape-X learner: owns the prioritized replay and the DQN learning step on its device, keeps the replay
ratio, publishes weights, checkpoints and restores the whole training state.

``LearnerCore`` is the plain class doing all of it (tested without Ray); ``LearnerActor`` is its Ray shell,
which runs the learning loop in a thread while workers add batches. Never steps an env.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import hashlib
import io
import logging
import math
import shutil
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from market.env import EnvConfig
from market.errors import DataError
from market.layout import AGENT_FEATURES
from market.seeding import derive_seed
from market.timeline import MarketTimeline
from policies.acting import greedy_run
from policies.checkpoint import save_policy
from policies.config import ReplayConfig, TrainingConfig
from policies.curves import LearningCurves
from policies.device import resolve_device, timeline_to_device
from policies.dqn import QNetworkConfig
from policies.learning import DQNLearner, LearnStats
from policies.replay import PrioritizedReplay

from .apex_config import ApexConfig
from .checkpoints import CheckpointInfo, CheckpointStore
from .metrics import LEARNING_METRICS, record
from .rollout import RolloutBatch

logger = logging.getLogger(__name__)

_FORMAT = 1
LEARNER_FILE, REPLAY_FILE, POLICY_FILE = "learner.pt", "replay.pt", "policy.pt"
RETURN_WINDOW = 100
"""Episodes in the mean return the learner reports."""


@dataclass
class Counters:
    """What the learner has received and done; saved with every checkpoint and restored exactly."""

    env_steps: int = 0
    transitions: int = 0
    episodes: int = 0
    batches: int = 0
    dropped_batches: int = 0
    sessions: int = 0
    checkpoints: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain ints, JSON-ready."""
        return {name: int(getattr(self, name)) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class LearnerReply:
    """The learner's answer to an add: the latest weights (a ``ray.put`` ref in a list, so Ray does not
    resolve it on the way) of ``version`` updates, and whether the worker should stop."""

    version: int
    weights: list[Any]
    stop: bool
    status: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ValidationWindow:
    """Where the learner takes its greedy validation return: ``steps`` steps from ``start`` of its timeline, a
    tail of the DQN span the workers never see (the evaluation span is not in the learner's timeline at all)."""

    env_config: EnvConfig
    start: int
    steps: int


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (in key order): equal iff bit-identical."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_learner_state(store: CheckpointStore, info: CheckpointInfo) -> dict[str, Any]:
    """The learner's saved state in checkpoint ``info``: tensors only, never code, its format checked.

    Raises
    ------
    DataError
        The file is corrupt, foreign, or of another format.
    """
    raw = store.read_bytes(info, LEARNER_FILE)
    try:
        saved = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on a corrupt or foreign file
        raise DataError(f"checkpoint file {info.file_uri(LEARNER_FILE)} is not readable: {exc}") from exc
    if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
        raise DataError(f"checkpoint file {info.file_uri(LEARNER_FILE)}: unknown format (expected {_FORMAT})")
    return saved


def planned_updates(apex: ApexConfig) -> int:
    """Updates the budget allows (the beta anneal's length): ``budget.updates``, else what ``env_steps`` at the
    replay ratio gives, else a million."""
    if apex.budget.updates is not None:
        return apex.budget.updates
    if apex.budget.env_steps is not None:
        return max(1, int((apex.budget.env_steps - apex.learning_starts) * apex.replay_ratio))
    return 1_000_000


@dataclass(frozen=True, slots=True)
class LearnerSetup:
    """Everything the learner is built from, besides the arrays (which travel as object refs).

    Attributes
    ----------
    training, replay, network, apex : configs
    seed : int
        The run seed (the network and the replay's draws derive from it as in the single-process trainer).
    storage : str, optional
        The checkpoint store's location (the actor opens it; none: no checkpoint is written).
    resume_from : CheckpointInfo, optional
        A checkpoint of the store to restore: networks, optimiser, replay with priorities, counters and RNGs.
    run_meta : dict
        JSON-ready facts saved in each checkpoint's ``meta.json`` (config, run record, CNN version, spans).
    cnn_version : str, optional
        Recorded in the policy exports (``None``: no CNN).
    policy_meta : dict
        The ``meta`` of each policy export (spans, CNN checkpoint, data fingerprint: what evaluation reads).
    validation : ValidationWindow, optional
        The greedy validation window of the learning curves (none: the curves have no validation return).
    """

    training: TrainingConfig
    replay: ReplayConfig
    network: QNetworkConfig
    apex: ApexConfig
    seed: int
    storage: str | None
    resume_from: CheckpointInfo | None
    run_meta: dict[str, Any]
    cnn_version: str | None
    policy_meta: dict[str, Any] = field(default_factory=dict)
    validation: ValidationWindow | None = None


class LearnerCore:
    """Replay + learning step + counters + checkpoints, all on one device, single-threaded.

    Parameters
    ----------
    timeline : MarketTimeline
        numpy arrays; moved to the learner's device once.
    setup : LearnerSetup
        The configs, the seed, what to resume from, the run's facts and the validation window.
    cnn_hidden, cnn_pred : array [T, H] / [T, P], optional
        The run's CNN component.
    store : CheckpointStore, optional
        Where checkpoints go (none written without it); ``setup.resume_from`` must be one of its checkpoints.
    """

    def __init__(
        self,
        timeline: MarketTimeline,
        setup: LearnerSetup,
        *,
        cnn_hidden: np.ndarray | None = None,
        cnn_pred: np.ndarray | None = None,
        store: CheckpointStore | None = None,
    ) -> None:
        apex, training, resume_from, seed = setup.apex, setup.training, setup.resume_from, setup.seed
        self.apex = apex
        self.timeline = timeline
        self.validation = setup.validation
        self.training = training
        self.layout = timeline.layout
        self.device = resolve_device(training.device)
        self.store = store
        self.run_meta = dict(setup.run_meta)
        self.cnn_version = setup.cnn_version
        self.policy_meta = dict(setup.policy_meta)
        self.scratch = Path(tempfile.mkdtemp(prefix="rayscalp-learner-"))
        with warnings.catch_warnings():  # object-store arrays are read-only; the learner never writes them
            warnings.simplefilter("ignore", UserWarning)
            on_device = timeline_to_device(timeline, self.device)
            hidden = None if cnn_hidden is None else torch.as_tensor(cnn_hidden, device=self.device)
            pred = None if cnn_pred is None else torch.as_tensor(cnn_pred, device=self.device)
        saved: dict[str, Any] | None = None
        if resume_from is not None:
            if store is None:
                raise DataError("learner: resume_from needs a checkpoint store")
            saved = read_learner_state(store, resume_from)
            replay = PrioritizedReplay.load(store.local_path(resume_from, REPLAY_FILE, self.scratch), self.device)
        else:
            replay = PrioritizedReplay.from_config(
                setup.replay,
                len(AGENT_FEATURES),
                beta_steps=planned_updates(apex),
                device=self.device,
                num_actions=setup.network.n_actions,
                seed=derive_seed(seed, "replay") % 2**62,
            )
        self.replay = replay
        self.learner = DQNLearner(
            self.layout,
            on_device,
            replay,
            training,
            setup.network,
            device=self.device,
            cnn_hidden=hidden,
            cnn_pred=pred,
            seed=derive_seed(seed, "network") % 2**62,
        )
        self.counters = Counters()
        self.returns: collections.deque[float] = collections.deque(maxlen=RETURN_WINDOW)
        self.curves = LearningCurves(apex.curves.every_updates)
        self.cnn_hidden, self.cnn_pred = cnn_hidden, cnn_pred
        self.last_stats: LearnStats | None = None
        self.last_checkpoint: CheckpointInfo | None = resume_from
        self.resumed_from: CheckpointInfo | None = resume_from
        if saved is not None:
            self.learner.load_state_dict(saved["learner"])
            for name, value in saved["counters"].items():
                setattr(self.counters, name, int(value))
            self.returns.extend(float(r) for r in saved["returns"])
            if "curves" in saved:  # checkpoints written before the curves have none
                self.curves = LearningCurves.from_dict(saved["curves"])
            torch.set_rng_state(saved["torch_rng"].cpu())
        self.restored: dict[str, Any] | None = None
        if saved is not None:
            self.restored = {
                "checkpoint": resume_from.uri if resume_from is not None else None,
                "updates": self.updates,
                "counters": self.counters.as_dict(),
                "weights_digest": weights_digest(self.learner.online.state_dict()),
                "replay_size": self.replay.size,
                "replay_added": self.replay.added,
            }
        self.counters.sessions += 1
        self._checkpointed_at = self.updates
        # where this session started: the ETA is paced by what this session did, not by a previous one's
        self._session_start = (time.monotonic(), self.updates, self.counters.env_steps)

    # ------------------------------------------------------------------------------------------ counters
    @property
    def updates(self) -> int:
        """Gradient updates done (over every session)."""
        return self.learner.updates

    def target_updates(self, env_steps: int) -> int:
        """Updates the replay ratio asks for after ``env_steps`` env steps (capped by the update budget)."""
        target = math.floor(max(0, env_steps - self.apex.learning_starts) * self.apex.replay_ratio)
        if self.apex.budget.updates is not None:
            target = min(target, self.apex.budget.updates)
        return target

    def updates_owed(self) -> int:
        """Updates to do now to keep the ratio (0 while the replay holds less than one batch)."""
        if self.replay.size < self.training.batch_size:
            return 0
        return max(0, self.target_updates(self.counters.env_steps) - self.updates)

    def env_budget_reached(self) -> bool:
        """Whether the env-step budget is used up (no batch is accepted after that)."""
        budget = self.apex.budget.env_steps
        return budget is not None and self.counters.env_steps >= budget

    def update_budget_reached(self) -> bool:
        """Whether the update budget is used up."""
        budget = self.apex.budget.updates
        return budget is not None and self.updates >= budget

    def finished(self) -> bool:
        """The update budget is spent, or the env budget is and every update it pays for is done."""
        return self.update_budget_reached() or (self.env_budget_reached() and self.updates_owed() == 0)

    # ------------------------------------------------------------------------------------------ learning
    def add(self, batch: RolloutBatch) -> bool:
        """Put a worker's batch into the replay with its priorities; ``False`` (dropped) once the env budget
        is spent."""
        if self.env_budget_reached():
            self.counters.dropped_batches += 1
            return False
        tr = batch.transitions
        self.replay.add(tr, batch.priorities)
        c = self.counters
        c.env_steps += int(batch.env_steps)
        c.transitions += len(tr)
        c.batches += 1
        c.episodes += int(batch.episode_returns.size)
        self.returns.extend(float(r) for r in batch.episode_returns)
        return True

    def learn(self, n: int = 1) -> LearnStats | None:
        """Take ``n`` gradient steps; return the last one's figures."""
        for _ in range(n):
            self.last_stats = self.learner.learn_step()
            self.curves.observe(self.last_stats)
            if self.curves.due(self.updates):
                self.curves.point(self.updates, self.counters.env_steps, self.mean_return(), self.validate())
        return self.last_stats

    def mean_return(self) -> float | None:
        """Mean log return of the last ``RETURN_WINDOW`` episodes the workers reported (``None``: none yet)."""
        return float(np.mean(self.returns)) if self.returns else None

    def validate(self) -> float | None:
        """Greedy log return of the online network over the validation window (``None`` without one)."""
        v = self.validation
        if v is None or v.steps < 1:
            return None
        net = self.learner.online
        if self.device.type != "cpu":  # the env steps on the CPU: act with a CPU copy
            net = copy.deepcopy(net).to("cpu")
        run = greedy_run(
            net, self.timeline, v.env_config, v.start, v.steps, cnn_hidden=self.cnn_hidden, cnn_pred=self.cnn_pred
        )
        return run.log_return

    def learn_owed(self) -> int:
        """Take every update the ratio owes now; return how many."""
        owed = self.updates_owed()
        self.learn(owed)
        return owed

    def weights(self) -> dict[str, torch.Tensor]:
        """The online network's weights on the CPU."""
        return self.learner.weights()

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoint_due(self) -> bool:
        """``every_updates`` updates since the last checkpoint."""
        return self.updates - self._checkpointed_at >= self.apex.checkpoint.every_updates

    def checkpoint(self) -> CheckpointInfo | None:
        """Write the whole state to the store (``None`` without one, or when nothing changed since the last).

        Files: ``learner.pt`` (networks, optimiser, counters, recent returns, torch RNG), ``replay.pt``
        (transitions, priorities, generations, sampler RNG), ``policy.pt`` (the serving export of
        ``policies.checkpoint``) and ``meta.json`` (counters, configs, run record), written last.
        """
        if self.store is None:
            return None
        if self.last_checkpoint is not None and self.last_checkpoint.updates == self.updates:
            return self.last_checkpoint
        self.counters.checkpoints += 1
        learner_state = {
            "format": _FORMAT,
            "learner": self.learner.state_dict(),
            "counters": self.counters.as_dict(),
            "returns": list(self.returns),
            "curves": self.curves.as_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        buffer = io.BytesIO()
        torch.save(learner_state, buffer)
        replay_path = self.scratch / REPLAY_FILE
        self.replay.save(replay_path)
        version = f"{self.run_meta.get('name', 'run')}-u{self.updates}"
        policy_path = save_policy(
            self.scratch / POLICY_FILE,
            self.learner.online,
            version=version,
            updates=self.updates,
            cnn_version=self.cnn_version,
            meta={**self.policy_meta, "env_steps": self.counters.env_steps},
        )
        meta = {
            "format": _FORMAT,
            "updates": self.updates,
            "counters": self.counters.as_dict(),
            "replay": {"size": self.replay.size, "capacity": self.replay.capacity, "added": self.replay.added},
            "policy_version": version,
            "cnn_version": self.cnn_version or "none",
            "device": str(self.device),
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **self.run_meta,
        }
        try:
            info = self.store.write(
                self.updates,
                {LEARNER_FILE: buffer.getvalue(), REPLAY_FILE: replay_path, POLICY_FILE: policy_path},
                meta,
            )
        finally:
            replay_path.unlink(missing_ok=True)
            policy_path.unlink(missing_ok=True)
        self.last_checkpoint = info
        self._checkpointed_at = self.updates
        return info

    def latest_policy(self) -> str | None:
        """Location of the policy export of the last checkpoint (a path, or a URI for remote storage)."""
        return None if self.last_checkpoint is None else self.last_checkpoint.file_uri(POLICY_FILE)

    def close(self) -> None:
        """Remove the scratch folder."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ status
    def progress(self, now: float | None = None) -> dict[str, Any]:
        """How far the run is through its budget, and when it should end at this session's pace.

        Parameters
        ----------
        now : float, optional
            ``time.monotonic()`` of the reading (now by default).

        Returns
        -------
        dict
            ``updates``, ``env_steps``, ``budget`` (the limits, ``None`` where not set), ``fraction`` (of the
            limit nearest its end, 0 to 1), ``elapsed_s`` (this session), ``updates_per_s`` and ``env_steps_per_s``
            (this session's mean), ``eta_s`` (seconds until the first limit is reached; ``None`` before this
            session has made progress towards any).
        """
        started, updates0, env_steps0 = self._session_start
        elapsed = max(0.0, (time.monotonic() if now is None else now) - started)
        budget = self.apex.budget
        rates = {
            "updates": (self.updates - updates0) / elapsed if elapsed > 0 else None,
            "env_steps": (self.counters.env_steps - env_steps0) / elapsed if elapsed > 0 else None,
            "wall_seconds": 1.0,
        }
        done = {"updates": self.updates, "env_steps": self.counters.env_steps, "wall_seconds": elapsed}
        limits = {"updates": budget.updates, "env_steps": budget.env_steps, "wall_seconds": budget.wall_seconds}
        fractions, etas = [], []
        for key, limit in limits.items():
            if limit is None:
                continue
            left = max(0.0, limit - done[key])
            fractions.append(min(1.0, done[key] / limit))
            rate = rates[key]
            if rate:
                etas.append(left / rate)
        return {
            "updates": self.updates,
            "env_steps": self.counters.env_steps,
            "budget": limits,
            "fraction": max(fractions) if fractions else None,
            "elapsed_s": elapsed,
            "updates_per_s": rates["updates"],
            "env_steps_per_s": rates["env_steps"],
            "eta_s": (0.0 if self.finished() else min(etas)) if etas else None,
        }

    def status(self) -> dict[str, Any]:
        """Counters and figures for progress lines and metrics (plain JSON-ready values), with :meth:`progress`."""
        stats = self.last_stats
        return {
            **self.counters.as_dict(),
            "updates": self.updates,
            "replay_size": self.replay.size,
            "replay_capacity": self.replay.capacity,
            "replay_fill": self.replay.size / self.replay.capacity,
            "loss": None if stats is None else stats.loss,
            "mean_q": None if stats is None else stats.mean_q,
            "mean_return": self.mean_return(),
            "last_checkpoint": None if self.last_checkpoint is None else self.last_checkpoint.uri,
            "last_checkpoint_updates": None if self.last_checkpoint is None else self.last_checkpoint.updates,
            "resumed_from": None if self.resumed_from is None else self.resumed_from.uri,
            "restored": self.restored,
            "device": str(self.device),
            "run_id": self.run_meta.get("run_id"),
            "progress": self.progress(),
        }


# --------------------------------------------------------------------------------------------- Ray shell


@ray.remote(num_cpus=1, max_restarts=0)
class LearnerActor:
    """Ray shell around :class:`LearnerCore` (a threaded actor: give it ``max_concurrency`` >= workers + 4).

    Asynchronous mode (:meth:`start`): a thread adds queued batches, takes the updates the replay ratio owes,
    publishes weights every ``publish_every`` updates (``ray.put``; workers get the ref with each reply) and
    checkpoints every ``checkpoint.every_updates``. :meth:`add` holds a worker back while the updates lag the
    ratio by more than ``lead_env_steps`` worth; a learner ahead of the data simply waits for it.
    Lockstep mode: the driver calls :meth:`step_round` with every worker's batch, in worker order.

    Never restarted by Ray (``max_restarts=0``): a restart would rebuild it from its constructor arguments, not from
    the latest checkpoint. Its driver restores a lost learner from the checkpoint store instead.

    ``timeline`` and ``cnn`` arrive resolved (pass their ``ray.put`` refs); ``worker_arrays`` is the list of
    those same refs, ``[timeline_ref, cnn_ref or None]``, nested so that Ray keeps them refs: the learner hands
    them to workers (:meth:`worker_arrays`), so that no worker has an object-store constructor argument.
    """

    def __init__(
        self,
        setup: LearnerSetup,
        timeline: MarketTimeline,
        cnn: tuple[np.ndarray, np.ndarray] | None,
        worker_arrays: list[Any] | None = None,
    ) -> None:
        self.threads = setup.apex.learner.threads
        self._worker_arrays = list(worker_arrays) if worker_arrays is not None else [None, None]
        torch.set_num_threads(self.threads)
        hidden, pred = cnn if cnn is not None else (None, None)
        store = None
        if setup.storage:
            store = CheckpointStore(setup.storage, setup.apex.checkpoint.keep_last)
        self.core = LearnerCore(timeline, setup, cnn_hidden=hidden, cnn_pred=pred, store=store)
        self.apex = setup.apex
        self._run = str(setup.run_meta.get("run_id") or setup.run_meta.get("name") or "run")
        self._exported_points = 0
        # _cond guards the queue, the worker registry and the waits of add(); _state is held by whoever
        # touches the core (the learning thread, or a status/weights call from another thread).
        self._cond = threading.Condition()
        self._state = threading.RLock()
        self._queue: collections.deque[RolloutBatch] = collections.deque()
        self._queued_env_steps = self.core.counters.env_steps
        self._workers: dict[int, dict[str, Any]] = {}
        self._pending_metrics = {"updates": 0, "transitions": 0, "syncs": 0, "checkpoints": 0}
        self._metrics_at = time.monotonic()
        self._weights: tuple[int, list[Any]] = (-1, [None])
        self._publish()
        self._export_curves()  # a resumed run's curves are seen at once
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None

    # ------------------------------------------------------------------------------------------ workers
    def register_worker(self, index: int, pid: int, epsilon: float) -> tuple[int, int]:
        """A worker (re)started: return (session, incarnation) for its seeds."""
        with self._cond:
            entry = self._workers.setdefault(index, {"pids": [], "epsilon": epsilon, "env_steps": 0})
            entry["pids"].append(int(pid))
            entry["epsilon"] = float(epsilon)
            return self.core.counters.sessions - 1, len(entry["pids"]) - 1

    def worker_arrays(self) -> list[Any]:
        """``[timeline_ref, cnn_ref or None]``: the object refs workers read their arrays from."""
        return self._worker_arrays

    def latest_weights(self) -> LearnerReply:
        """The latest published weights (version and ``[ref]``)."""
        version, refs = self._weights
        return LearnerReply(version, refs, self._done.is_set())

    def weights(self) -> dict[str, torch.Tensor]:
        """The online network's weights now, on the CPU (for evaluation and export)."""
        with self._state:
            return self.core.weights()

    def curves(self) -> dict[str, Any]:
        """The learning curves so far (``LearningCurves.as_dict``)."""
        with self._state:
            return self.core.curves.as_dict()

    def latest_policy(self) -> str | None:
        """Where the newest policy export is (beside the newest checkpoint), for the policy deployment."""
        return self.core.latest_policy()

    def _publish(self) -> None:
        self._weights = (self.core.updates, [ray.put(self.core.weights())])
        self._pending_metrics["syncs"] += 1

    # ------------------------------------------------------------------------------------------ async mode
    def start(self) -> None:
        """Start the learning thread (asynchronous Ape-X)."""
        if self._thread is not None:
            raise RuntimeError("the learner is already running")
        self._thread = threading.Thread(target=self._loop, name="learner", daemon=True)
        self._thread.start()

    def add(self, batch: RolloutBatch) -> LearnerReply:
        """Queue a worker's batch; return once the updates keep up with the ratio (or the run is ending)."""
        with self._cond:
            stopping = self._done.is_set() or self._stop.is_set()
            if not stopping:
                self._queue.append(batch)
                self._queued_env_steps += int(batch.env_steps)
                entry = self._workers.get(batch.worker)
                if entry is not None:
                    entry["env_steps"] += int(batch.env_steps)
                self._cond.notify_all()
                self._cond.wait_for(self._may_go_on, timeout=None)
            version, refs = self._weights
            budget = self.apex.budget.env_steps
            spent = budget is not None and self._queued_env_steps >= budget
            return LearnerReply(version, refs, stop=self._done.is_set() or self._stop.is_set() or spent)

    def _may_go_on(self) -> bool:
        if self._done.is_set() or self._stop.is_set():
            return True
        core = self.core
        if core.replay.size < core.training.batch_size or core.update_budget_reached():
            return True
        return core.updates >= core.target_updates(self._queued_env_steps - self.apex.lead_env_steps)

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)  # intra-op threads are per thread under OpenMP: set them here too
        core = self.core
        try:
            while not self._stop.is_set():
                with self._cond:
                    batches = list(self._queue)
                    self._queue.clear()
                with self._state:
                    for batch in batches:
                        if core.add(batch):
                            self._pending_metrics["transitions"] += len(batch.transitions)
                    learned = core.updates_owed() > 0
                    if learned:
                        self._learn_one()
                    finished = core.finished()
                if learned:
                    with self._cond:
                        self._cond.notify_all()
                elif finished:
                    break
                else:
                    with self._cond:
                        if not self._queue:
                            self._cond.wait(timeout=0.05)
                self._flush_metrics()
            with self._state:
                self._finish()
        except Exception:
            self._error = traceback.format_exc()
            logger.error("learner failed:\n%s", self._error)
        finally:
            with self._cond:
                self._done.set()
                self._cond.notify_all()
            self._flush_metrics(force=True)

    def _learn_one(self) -> None:
        """One update, then the weight broadcast and the checkpoint when due."""
        core = self.core
        started = time.perf_counter()
        core.learn(1)
        record("rayscalp_train_update_seconds", time.perf_counter() - started)
        self._export_curves()
        self._pending_metrics["updates"] += 1
        if core.updates % self.apex.publish_every == 0:
            self._publish()
        if core.checkpoint_due():
            core.checkpoint()
            self._pending_metrics["checkpoints"] += 1

    def _export_curves(self) -> None:
        """A new curve point goes to the ``rayscalp_learning_*`` gauges (tag ``run``); a series without a value at
        that point (no episode ended yet, no validation window) keeps its previous one."""
        curves = self.core.curves
        if len(curves) == self._exported_points:
            return
        tags = {"run": self._run}
        for series, value in curves.last_values().items():
            if value is not None:
                record(LEARNING_METRICS[series], value, tags)
        record("rayscalp_learning_points", len(curves), tags)
        record("rayscalp_learning_updates", curves.updates[-1], tags)
        self._exported_points = len(curves)

    def _finish(self) -> None:
        """Last weights and a last checkpoint when anything changed since the previous one."""
        before = self.core.last_checkpoint
        if self.core.checkpoint() is not before:
            self._pending_metrics["checkpoints"] += 1
        self._publish()

    def _flush_metrics(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._metrics_at < 1.0:
            return
        self._metrics_at = now
        pending = self._pending_metrics
        record("rayscalp_train_updates", pending["updates"])
        record("rayscalp_train_transitions_added", pending["transitions"])
        record("rayscalp_train_weight_syncs", pending["syncs"])
        record("rayscalp_train_checkpoints", pending["checkpoints"])
        for key in pending:
            pending[key] = 0
        core = self.core
        if core.last_stats is not None:
            record("rayscalp_train_loss", core.last_stats.loss)
        record("rayscalp_train_replay_size", core.replay.size)
        record("rayscalp_train_replay_fill", core.replay.size / core.replay.capacity)

    def stop(self) -> None:
        """Ask the learning thread to end (a last checkpoint is written); see :meth:`wait`."""
        with self._cond:
            self._stop.set()
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the learning thread has ended; return whether it has."""
        return self._done.wait(timeout)

    # ------------------------------------------------------------------------------------------ lockstep
    def step_round(self, *batches: RolloutBatch) -> LearnerReply:
        """Lockstep: add ``batches`` in the order given, take every update owed, publish, checkpoint when due."""
        with self._state:
            return self._step_round(batches)

    def finish(self) -> LearnerReply:
        """Lockstep: end the run now with a last checkpoint (the wall-clock budget is spent)."""
        with self._state:
            self._finish()
            self._done.set()
            version, refs = self._weights
            return LearnerReply(version, refs, stop=True, status=self.status())

    def _step_round(self, batches: tuple[RolloutBatch, ...]) -> LearnerReply:
        core = self.core
        for batch in batches:
            if core.add(batch):
                self._pending_metrics["transitions"] += len(batch.transitions)
                entry = self._workers.get(batch.worker)
                if entry is not None:
                    entry["env_steps"] += int(batch.env_steps)
        for _ in range(core.updates_owed()):
            self._learn_one()
        self._flush_metrics()
        finished = core.finished()
        if finished:
            self._finish()
            self._done.set()
        version, refs = self._weights
        return LearnerReply(version, refs, stop=finished, status=self.status())

    # ------------------------------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Counters, the latest figures, the workers seen (pids per start, epsilon, env steps), whether the
        learning thread is done or failed, and the Ray node it runs on."""
        with self._state:
            status = self.core.status()
        with self._cond:
            workers = {i: {**w, "pids": list(w["pids"])} for i, w in self._workers.items()}
        status.update(
            workers=workers,
            weights_version=self._weights[0],
            done=self._done.is_set(),
            error=self._error,
            latest_policy=self.core.latest_policy(),
            node_id=ray.get_runtime_context().get_node_id(),
        )
        return status

    def close(self) -> None:
        """Remove scratch files (call before killing the actor)."""
        self.core.close()
