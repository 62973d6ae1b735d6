"""Turns vectorised env steps into n-step compact transitions, per env, as episodes unfold.

Holds each env's last n (step, agent, action, reward) until its n-step return is known, then emits it;
an ended episode flushes everything (termination zeroes the bootstrap, truncation keeps it).
Vectorised over envs: one window of n entries per env, no Python loop per env except at episode ends.
"""

from __future__ import annotations

import numpy as np

from .nstep import nstep_transitions
from .transitions import Transitions


def next_states(info: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(timeline step, agent features) of s' for every env after a ``VectorTradingEnv`` step: for an env whose
    episode just ended, its final state (same-step autoreset puts the next episode's first state in ``step``)."""
    done = info["done"]
    steps = np.where(done, info.get("final_step", info["step"]), info["step"])
    agents = np.where(done[:, None], info.get("final_agent", info["agent"]), info["agent"])
    return steps, agents


class TransitionCollector:
    """Per-env n-step windows for ``num_envs`` envs stepped together.

    Parameters
    ----------
    num_envs : int
    agent_dim : int
    n : int
        n-step horizon.
    gamma : float
    """

    def __init__(self, num_envs: int, agent_dim: int, n: int, gamma: float) -> None:
        self.num_envs, self.agent_dim, self.n, self.gamma = num_envs, agent_dim, n, gamma
        self._steps = np.zeros((num_envs, n), np.int64)
        self._agents = np.zeros((num_envs, n, agent_dim), np.float32)
        self._actions = np.zeros((num_envs, n), np.int64)
        self._rewards = np.zeros((num_envs, n), np.float64)
        self._count = np.zeros(num_envs, np.int64)
        self._powers = gamma ** np.arange(n, dtype=np.float64)

    def record(
        self,
        steps: np.ndarray,
        agents: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_steps: np.ndarray,
        next_agents: np.ndarray,
    ) -> Transitions | None:
        """Record one vectorised step (s, a, r, s') of every env; return the transitions now complete.

        ``next_steps`` / ``next_agents`` describe s' of the step just taken: for an env whose episode
        ended, its final state (``final_step`` / ``final_agent`` of same-step autoreset), not the reset.
        """
        envs = np.arange(self.num_envs)
        slot = self._count
        self._steps[envs, slot] = steps
        self._agents[envs, slot] = agents
        self._actions[envs, slot] = actions
        self._rewards[envs, slot] = rewards
        self._count = slot + 1
        ended = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        out: list[Transitions] = []
        full = (self._count == self.n) & ~ended
        if full.any():
            out.append(
                Transitions(
                    step=self._steps[full, 0].copy(),
                    next_step=np.asarray(next_steps, np.int64)[full],
                    agent=self._agents[full, 0].copy(),
                    next_agent=np.asarray(next_agents, np.float32)[full],
                    action=self._actions[full, 0].copy(),
                    n_return=(self._rewards[full] @ self._powers).astype(np.float32),
                    discount=np.full(int(full.sum()), self.gamma**self.n, np.float32),
                )
            )
            for buf in (self._steps, self._agents, self._actions, self._rewards):
                buf[full] = np.roll(buf[full], -1, axis=1)
            self._count[full] -= 1
        for i in np.flatnonzero(ended):
            length = int(self._count[i])
            out.append(
                nstep_transitions(
                    self._steps[i, :length],
                    self._agents[i, :length],
                    self._actions[i, :length],
                    self._rewards[i, :length],
                    int(next_steps[i]),
                    np.asarray(next_agents[i], np.float32),
                    terminated=bool(terminated[i]),
                    gamma=self.gamma,
                    n=self.n,
                )
            )
            self._count[i] = 0
        return Transitions.concat(out) if out else None
