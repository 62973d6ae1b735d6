"""The learning step: double DQN with n-step returns over prioritized replay, states gathered on-device.

Samples ``Transitions``, rebuilds s and s' with the one ``gather`` on the learner's device, takes one
importance-weighted Huber step, and returns new priorities to the replay. :func:`double_dqn_target` is the one
definition of the target (rollout workers use it for initial priorities). Never imports Ray.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from market.features import gather
from market.layout import StateLayout
from market.timeline import MarketTimeline

from .config import TrainingConfig
from .dqn import QNetwork, QNetworkConfig
from .replay import PrioritizedReplay, ReplayBatch
from .transitions import Transitions


def double_dqn_target(tr: Transitions, next_q_online: torch.Tensor, next_q_target: torch.Tensor) -> torch.Tensor:
    """``R + discount * Q_target(s', argmax_a Q_online(s', a))`` for ``[B]`` transitions and ``[B, actions]`` Qs.

    With one network in both roles (a rollout worker's local copy) this is ``R + discount * max_a Q(s', a)``.
    """
    best = next_q_online.argmax(dim=1, keepdim=True)
    return tr.n_return + tr.discount * next_q_target.gather(1, best).squeeze(1)


@dataclass(frozen=True, slots=True)
class LearnStats:
    """Figures of one learning step (plain floats, for logs and metrics)."""

    loss: float
    mean_q: float
    mean_abs_td: float
    beta: float
    updates: int


class DQNLearner:
    """Owns the online and target networks and the optimiser; learns from a :class:`PrioritizedReplay`.

    Parameters
    ----------
    layout : StateLayout
    timeline : MarketTimeline
        The run's timeline with its arrays already on ``device`` (``policies.device.timeline_to_device``).
    replay : PrioritizedReplay
        On the same device.
    training : TrainingConfig
    network : QNetworkConfig, optional
    cnn_hidden, cnn_pred : tensors [T, H] / [T, P] on ``device``, optional
        The run's CNN component (fixed for the run: stored transitions are only meaningful under it).
    seed : int
        Seeds the network initialisation; with the replay's seed the run is deterministic on CPU.
    """

    def __init__(
        self,
        layout: StateLayout,
        timeline: MarketTimeline,
        replay: PrioritizedReplay,
        training: TrainingConfig,
        network: QNetworkConfig | None = None,
        *,
        device: torch.device,
        cnn_hidden: torch.Tensor | None = None,
        cnn_pred: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        self.layout = layout
        self.timeline = timeline
        self.replay = replay
        self.training = training
        self.device = device
        self.cnn_hidden = cnn_hidden
        self.cnn_pred = cnn_pred
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.online = QNetwork(layout, network).to(device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=training.lr)
        self.loss_fn = nn.SmoothL1Loss(reduction="none")
        self.updates = 0

    def states(self, steps: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        """States at ``steps`` with ``agent`` features, gathered on the learner's device."""
        return gather(self.timeline, steps, agent, cnn_hidden=self.cnn_hidden, cnn_pred=self.cnn_pred)

    def td_errors(self, tr: Transitions) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q(s, a), double-DQN target) for transitions given as tensors on the learner's device."""
        s = self.states(tr.step, tr.agent)
        s_next = self.states(tr.next_step, tr.next_agent)
        q = self.online(s).gather(1, tr.action.long().unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            target = double_dqn_target(tr, self.online(s_next), self.target(s_next))
        return q, target

    def learn_step(self, batch_size: int | None = None) -> LearnStats:
        """Sample, take one gradient step, update priorities, sync the target when due."""
        return self.learn_batch(self.replay.sample(batch_size or self.training.batch_size))

    def learn_batch(self, batch: ReplayBatch) -> LearnStats:
        """One gradient step on a given replay batch (priorities of its slots updated)."""
        q, target = self.td_errors(batch.transitions)
        td = target - q
        loss = (batch.weights * self.loss_fn(q, target)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.training.grad_clip)
        self.optimizer.step()
        self.replay.update_priorities(batch.indices, batch.generations, td.detach().abs() + self.replay.priority_eps)
        self.replay.anneal_beta()
        self.updates += 1
        self._sync_target()
        return LearnStats(
            loss=float(loss.detach()),
            mean_q=float(q.detach().mean()),
            mean_abs_td=float(td.detach().abs().mean()),
            beta=float(batch.beta),
            updates=self.updates,
        )

    def _sync_target(self) -> None:
        tau = self.training.target_tau
        if tau is not None:
            with torch.no_grad():
                for t, o in zip(self.target.parameters(), self.online.parameters(), strict=True):
                    t.lerp_(o, tau)
        elif self.updates % self.training.target_sync_every == 0:
            self.target.load_state_dict(self.online.state_dict())

    @torch.no_grad()
    def initial_priorities(self, tr: Transitions) -> torch.Tensor:
        """``|TD| + priority_eps`` of new transitions under the current networks (what a worker computes locally)."""
        q, target = self.td_errors(tr.to_torch(self.device))
        return (target - q).abs() + self.replay.priority_eps

    def weights(self) -> dict[str, torch.Tensor]:
        """The online network's weights on the CPU (what workers and the policy server load)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.online.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimiser and counters, for checkpoints."""
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
