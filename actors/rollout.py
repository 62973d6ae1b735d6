"""Ape-X rollout workers: a vector of envs acting epsilon-greedily with a local copy of the Q-network, sending
compact n-step transitions with locally computed initial priorities to the learner.

``RolloutWorkerCore`` is the plain class doing all of it (tested without Ray); ``RolloutWorker`` is its Ray
shell, which either runs its own loop (asynchronous Ape-X) or collects when the driver asks (lockstep).
A worker never trains and never writes to the timeline: it reads it, zero-copy, from the object store.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from market.env import EnvConfig, VectorTradingEnv
from market.features import gather
from market.layout import AGENT_FEATURES
from market.seeding import derive_rng, derive_seed
from market.timeline import MarketTimeline
from policies.acting import act
from policies.collector import TransitionCollector, next_states
from policies.config import ReplayConfig, TrainingConfig
from policies.dqn import QNetwork, QNetworkConfig, check_action_set
from policies.learning import double_dqn_target
from policies.transitions import Transitions

from .apex_config import ApexConfig, apex_epsilon
from .metrics import record

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class RolloutBatch:
    """What one worker sends the learner at a time.

    Attributes
    ----------
    worker, incarnation : int
        Which worker, and which start of it (a restart after a kill is a new incarnation).
    transitions : Transitions
        ``M`` n-step transitions (numpy), what ``PrioritizedReplay.add`` takes.
    priorities : array [M] float64
        Initial priorities ``|TD| + priority_eps`` under the worker's local network (online and target alike).
    env_steps : int
        Env steps (over all of its envs) taken to produce them.
    episode_returns : array [E] float64
        Log returns of the episodes that ended meanwhile.
    epsilon : float
    weights_version : int
        Learner updates of the weights that acted (-1: the worker's own initial weights).
    """

    worker: int
    incarnation: int
    transitions: Transitions
    priorities: np.ndarray
    env_steps: int
    episode_returns: np.ndarray
    epsilon: float
    weights_version: int


def worker_seed(run_seed: int, index: int, session: int = 0, incarnation: int = 0) -> int:
    """Seed of worker ``index``: ``derive_seed(run_seed, "rollout", index)`` for its first start in the first
    session; each restart (``incarnation``) and each resumed session gets a seed of its own, so a restarted
    worker does not replay the episodes it already sent."""
    if session == 0 and incarnation == 0:
        return derive_seed(run_seed, "rollout", index)
    return derive_seed(run_seed, "rollout", index, "session", session, "incarnation", incarnation)


class RolloutWorkerCore:
    """One Ape-X actor: ``envs_per_worker`` envs, epsilon ``eps_i``, a local Q-network, an n-step collector.

    Parameters
    ----------
    index, num_workers : int
        This worker's place among the workers (it sets the epsilon).
    timeline : MarketTimeline
        numpy arrays (read only; in a Ray worker they are views into the object store).
    env_config : EnvConfig
    network : QNetworkConfig
    training : TrainingConfig
        Its ``n_step`` and ``gamma`` shape the transitions.
    apex : ApexConfig
    seed : int
        The run seed (the worker's own seeds derive from it, see :func:`worker_seed`).
    cnn_hidden, cnn_pred : array [T, H] / [T, P], optional
        The run's CNN component (``None``: the slots are zero).
    session, incarnation : int
        How many driver sessions and restarts of this worker came before (they pick fresh seeds).
    priority_eps : float
        Added to ``|TD|`` in the initial priorities (``replay.priority_eps``, as the learner adds it).
    """

    def __init__(
        self,
        index: int,
        num_workers: int,
        timeline: MarketTimeline,
        env_config: EnvConfig,
        network: QNetworkConfig,
        training: TrainingConfig,
        apex: ApexConfig,
        *,
        seed: int,
        cnn_hidden: np.ndarray | None = None,
        cnn_pred: np.ndarray | None = None,
        session: int = 0,
        incarnation: int = 0,
        priority_eps: float = ReplayConfig().priority_eps,
    ) -> None:
        check_action_set(network.actions, env_config.actions, f"rollout worker {index}: env.actions")
        self.index = index
        self.priority_eps = float(priority_eps)
        self.incarnation = incarnation
        self.timeline = timeline
        self.cnn_hidden, self.cnn_pred = cnn_hidden, cnn_pred
        self.apex = apex
        self.epsilon = apex_epsilon(index, num_workers, apex.exploration.base, apex.exploration.alpha)
        self.seed = worker_seed(seed, index, session, incarnation)
        k = apex.envs_per_worker
        self.env = VectorTradingEnv(timeline, k, env_config, cnn_hidden=cnn_hidden, cnn_pred=cnn_pred)
        self.obs, self.info = self.env.reset(seed=derive_seed(self.seed, "env") % 2**31)
        self.rng = derive_rng(self.seed, "explore")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "network") % 2**62)
            self.net = QNetwork(timeline.layout, network).eval()
        self.net.requires_grad_(False)
        self.collector = TransitionCollector(k, len(AGENT_FEATURES), training.n_step, training.gamma)
        self.weights_version = -1
        self.env_steps = 0
        self.steps_since_sync = 0
        self._device = torch.device("cpu")

    # ------------------------------------------------------------------------------------------ weights
    @property
    def sync_due(self) -> bool:
        """Whether ``weight_sync_every`` env steps have passed since the last pull (or none was made yet)."""
        return self.weights_version < 0 or self.steps_since_sync >= self.apex.weight_sync_every

    def load_weights(self, weights: dict[str, torch.Tensor], version: int) -> None:
        """Take the learner's weights (of ``version`` updates) for acting and for initial priorities."""
        self.net.load_state_dict(weights)
        self.weights_version = int(version)
        self.steps_since_sync = 0

    def mark_synced(self) -> None:
        """A pull found no newer weights: count the next ``weight_sync_every`` steps from now."""
        self.steps_since_sync = 0

    # ------------------------------------------------------------------------------------------ acting
    def step(self) -> tuple[Transitions | None, np.ndarray]:
        """One step of every env; returns the transitions completed and the returns of episodes that ended."""
        actions, _ = act(self.net, self.obs, self.epsilon, self.rng, self._device)
        info = self.info
        steps, agents = info["step"].copy(), info["agent"].copy()
        self.obs, rewards, terminated, truncated, info = self.env.step(actions)
        self.info = info
        done = info["done"]
        made = self.collector.record(steps, agents, actions, rewards, terminated, truncated, *next_states(info))
        k = self.env.num_envs
        self.env_steps += k
        self.steps_since_sync += k
        return made, np.asarray(info["episode_return"][done], np.float64)

    def collect(self) -> RolloutBatch:
        """Step until at least ``send_every`` transitions are complete; return them with their priorities."""
        parts: list[Transitions] = []
        returns: list[np.ndarray] = []
        count, start = 0, self.env_steps
        version = self.weights_version
        while count < self.apex.send_every:
            made, ended = self.step()
            if made is not None and len(made):
                parts.append(made)
                count += len(made)
            if ended.size:
                returns.append(ended)
        transitions = Transitions.concat(parts)
        return RolloutBatch(
            worker=self.index,
            incarnation=self.incarnation,
            transitions=transitions,
            priorities=self.priorities(transitions),
            env_steps=self.env_steps - start,
            episode_returns=np.concatenate(returns) if returns else np.zeros(0),
            epsilon=self.epsilon,
            weights_version=version,
        )

    @torch.no_grad()
    def priorities(self, tr: Transitions) -> np.ndarray:
        """``|TD| + priority_eps`` of transitions under the local network in both roles (Ape-X's initial
        priorities): the learner's double-DQN target with online = target, ``R + discount * max_a Q(s', a)``."""
        m = len(tr)
        states = gather(
            self.timeline,
            np.concatenate([tr.step, tr.next_step]),
            np.concatenate([tr.agent, tr.next_agent]),
            self.cnn_hidden,
            self.cnn_pred,
        )
        q = self.net(torch.from_numpy(states))
        t = tr.to_torch()
        q_sa = q[:m].gather(1, t.action.unsqueeze(1)).squeeze(1)
        target = double_dqn_target(t, q[m:], q[m:])
        return ((target - q_sa).abs() + self.priority_eps).double().numpy()


# --------------------------------------------------------------------------------------------- Ray shell


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """Everything a worker is built from, besides the arrays (which travel as object refs)."""

    index: int
    num_workers: int
    env_config: EnvConfig
    network: QNetworkConfig
    training: TrainingConfig
    apex: ApexConfig
    seed: int
    priority_eps: float = ReplayConfig().priority_eps


@ray.remote(num_cpus=1, max_restarts=-1)
class RolloutWorker:
    """Ray shell around :class:`RolloutWorkerCore`.

    Built with ``autostart=True`` it runs its own loop in a thread (asynchronous Ape-X): collect a batch, send
    it to ``learner.add`` (at most one in flight, so a learner that falls behind the replay ratio holds the
    worker back), pull the latest weights every ``weight_sync_every`` env steps, until the learner says stop.
    A worker killed and restarted by Ray (``max_restarts``) runs ``__init__`` again: it registers as a new
    incarnation, pulls the latest weights and goes on; the batch it had in flight is lost.

    Parameters
    ----------
    setup : WorkerSetup
    learner_name : str
        The name of the :class:`actors.learner.LearnerActor` in the job's namespace. The worker looks it up and
        asks it for the ``ray.put`` refs of the timeline and of the CNN arrays
        (:meth:`~actors.learner.LearnerActor.worker_arrays`), which it reads as zero-copy views of the object
        store. Neither a handle nor a ref is a constructor argument (Ray cannot pin those for a restart,
        ray-project/ray#53727): a restarted worker finds the learner and the refs again (the driver holds the
        refs for the whole run).
    autostart : bool
    """

    def __init__(self, setup: WorkerSetup, learner_name: str, autostart: bool = True) -> None:
        torch.set_num_threads(max(1, int(setup.apex.worker_num_cpus)))
        self.setup = setup
        learner = ray.get_actor(learner_name)
        self.learner = learner
        explore = setup.apex.exploration
        epsilon = apex_epsilon(setup.index, setup.num_workers, explore.base, explore.alpha)
        session, incarnation = ray.get(learner.register_worker.remote(setup.index, os.getpid(), epsilon))
        timeline_ref, cnn_ref = ray.get(learner.worker_arrays.remote())
        timeline: MarketTimeline = ray.get(timeline_ref)
        hidden, pred = ray.get(cnn_ref) if cnn_ref is not None else (None, None)
        self.core = RolloutWorkerCore(
            setup.index,
            setup.num_workers,
            timeline,
            setup.env_config,
            setup.network,
            setup.training,
            setup.apex,
            seed=setup.seed,
            cnn_hidden=hidden,
            cnn_pred=pred,
            session=session,
            incarnation=incarnation,
            priority_eps=setup.priority_eps,
        )
        self._readonly = not np.asarray(timeline.base_close).flags.writeable
        self._latest: tuple[int, Any] | None = None
        self._pull(ray.get(learner.latest_weights.remote()))
        self._stop = threading.Event()
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        if autostart:
            self._thread = threading.Thread(target=self._loop, name=f"rollout-{setup.index}", daemon=True)
            self._thread.start()

    def _pull(self, latest: Any) -> None:
        """Load the weights of a learner reply (``version``, ``weights`` [ref]) when a sync is due."""
        version, refs = latest.version, latest.weights
        if not self.core.sync_due:
            return
        if version != self.core.weights_version:
            self.core.load_weights(ray.get(refs[0]), version)
        else:
            self.core.mark_synced()

    def _loop(self) -> None:
        pending = None
        try:
            while not self._stop.is_set():
                batch = self.core.collect()
                record("rayscalp_train_env_steps", batch.env_steps, {"worker": self.setup.index})
                if pending is not None:
                    reply = ray.get(pending)
                    self._pull(reply)
                    if reply.stop:
                        pending = None
                        break
                pending = self.learner.add.remote(batch)
            if pending is not None:
                ray.get(pending)
        except (ray.exceptions.RayActorError, ray.exceptions.OwnerDiedError):
            # OwnerDiedError: the weights' owner, the learner, died with its node before the worker read them.
            logger.warning("rollout worker %d: the learner is gone; stopping", self.setup.index)
        except Exception:
            self._error = traceback.format_exc()
            logger.error("rollout worker %d failed:\n%s", self.setup.index, self._error)

    # ---------------------------------------------------------------------------- lockstep (deterministic)
    def collect(self) -> RolloutBatch:
        """One batch, collected when the driver asks (lockstep rounds)."""
        batch = self.core.collect()
        record("rayscalp_train_env_steps", batch.env_steps, {"worker": self.setup.index})
        return batch

    def sync(self, latest: Any) -> int:
        """Apply the learner's latest weights if a pull is due; return the version acting now."""
        self._pull(latest)
        return self.core.weights_version

    # ------------------------------------------------------------------------------------------ control
    def stop(self) -> None:
        """End the loop after the batch being collected (it is not sent)."""
        self._stop.set()

    def info(self) -> dict[str, Any]:
        """Who this is and what it has done: index, pid, incarnation, epsilon, env steps, weights version,
        whether its timeline is a read-only object-store view, and the loop's error if it failed."""
        return {
            "index": self.setup.index,
            "pid": os.getpid(),
            "incarnation": self.core.incarnation,
            "epsilon": self.core.epsilon,
            "env_steps": self.core.env_steps,
            "weights_version": self.core.weights_version,
            "timeline_read_only": self._readonly,
            "running": self._thread is not None and self._thread.is_alive(),
            "error": self._error,
        }
