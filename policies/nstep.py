"""n-step transitions from trajectories: returns, bootstrap steps and discounts, as ``Transitions``.

Termination zeroes the bootstrap discount; truncation keeps it (the episode was cut, the market goes on).
Pure numpy, used by rollout workers and the single-process trainer alike; never imports Ray.
"""

from __future__ import annotations

import numpy as np

from .transitions import Transitions


def nstep_transitions(
    steps: np.ndarray,
    agents: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_step_last: int,
    next_agent_last: np.ndarray,
    *,
    terminated: bool,
    gamma: float,
    n: int,
) -> Transitions:
    """n-step transitions of one trajectory segment, whose episode may end after its last step.

    Parameters
    ----------
    steps, agents : [L], [L, A]
        Timeline step and agent features of each state s_0 .. s_{L-1} where an action was taken.
    actions, rewards : [L]
        The action at s_i and the reward r_i received after it.
    next_step_last, next_agent_last : int, [A]
        The state s_L reached after the last action (the bootstrap state of the tail).
    terminated : bool
        Whether the episode terminated after the last step: then no return bootstraps from s_L. A truncated
        episode, or one still running, keeps the bootstrap (the market goes on).
    gamma : float
    n : int

    Returns
    -------
    Transitions
        One per i: return ``sum_{k<m} gamma^k r_{i+k}`` with ``m = min(n, L - i)``, bootstrap state
        ``s_{i+m}``, discount ``gamma^m`` (0 when the episode terminated within those m steps).
    """
    length = steps.size
    if length == 0:
        return Transitions.empty(agents.shape[1] if agents.ndim == 2 else 0)
    all_steps = np.append(steps, next_step_last)
    all_agents = np.vstack([agents, next_agent_last[None, :]])
    idx = np.arange(length)
    horizon = np.minimum(n, length - idx)  # m_i
    # returns by a short loop over k < n (n is small), vectorised over i
    ret = np.zeros(length, dtype=np.float64)
    for k in range(n):
        valid = k < horizon
        ret[valid] += gamma**k * rewards[idx[valid] + k]
    discount = gamma ** horizon.astype(np.float64)
    if terminated:
        discount[idx + horizon == length] = 0.0
    boot = idx + horizon
    return Transitions(
        step=steps.astype(np.int64),
        next_step=all_steps[boot].astype(np.int64),
        agent=agents.astype(np.float32),
        next_agent=all_agents[boot].astype(np.float32),
        action=actions.astype(np.int64),
        n_return=ret.astype(np.float32),
        discount=discount.astype(np.float32),
    )
