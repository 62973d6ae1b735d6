"""Acting with a Q-network: epsilon-greedy actions for collection, and the one greedy evaluation of a policy.

``greedy_actions`` is the one greedy choice (every evaluation loop calls it); ``greedy_run`` trades one window
of a timeline greedily with the env and reports its log return. Never trains and never imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from market.env import EnvConfig, TradingEnv
from market.timeline import MarketTimeline

from .dqn import QNetwork


@torch.inference_mode()
def greedy_actions(qnet: QNetwork, obs: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    """``argmax_a Q(s, a)`` for a batch of observations ``[B, S]`` (int64 ``[B]``)."""
    device = device or next(qnet.parameters()).device
    return qnet(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()


@torch.no_grad()
def act(
    qnet: QNetwork, obs: np.ndarray, epsilon: float | np.ndarray, rng: np.random.Generator, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy actions and the Q-values, for a batch of observations."""
    q = qnet(torch.as_tensor(obs, device=device)).cpu().numpy()
    greedy = q.argmax(axis=1)
    explore = rng.random(obs.shape[0]) < epsilon
    return np.where(explore, rng.integers(0, q.shape[1], obs.shape[0]), greedy), q


@dataclass(frozen=True, slots=True)
class GreedyRun:
    """One window traded by the greedy policy (net of costs, the position closed out at the end)."""

    start_step: int
    steps: int
    log_return: float
    trades: int
    equity: np.ndarray  # float64 marks, ``steps + 1`` of them


def greedy_run(
    qnet: QNetwork,
    timeline: MarketTimeline,
    env_config: EnvConfig,
    start_step: int,
    steps: int,
    *,
    cnn_hidden: np.ndarray | None = None,
    cnn_pred: np.ndarray | None = None,
    device: torch.device | None = None,
) -> GreedyRun:
    """Trade ``steps`` base steps from ``start_step`` greedily (one env, fixed start, ``env_config``'s venue).

    The window ends early only when the env terminates it (liquidation or ruin).
    """
    config = env_config.model_copy(update={"random_start": False, "start_step": start_step, "episode_steps": steps})
    env = TradingEnv(timeline, config, cnn_hidden=cnn_hidden, cnn_pred=cnn_pred)
    obs, _ = env.reset(seed=0)
    marks, trades = [float(config.initial_equity)], 0
    for _ in range(steps):
        action = int(greedy_actions(qnet, obs[None], device)[0])
        obs, _, terminated, truncated, info = env.step(action)
        marks.append(float(info["equity"]))
        trades = int(info["trades"])
        if terminated or truncated:
            break
    equity = np.asarray(marks, dtype=np.float64)
    return GreedyRun(
        start_step=start_step,
        steps=equity.size - 1,
        log_return=float(np.log(equity[-1] / equity[0])),
        trades=trades,
        equity=equity,
    )


def greedy_log_return(
    qnet: QNetwork,
    timeline: MarketTimeline,
    env_config: EnvConfig,
    start_step: int,
    steps: int,
    device: torch.device | None = None,
) -> float:
    """Log return of :func:`greedy_run` (no CNN component)."""
    return greedy_run(qnet, timeline, env_config, start_step, steps, device=device).log_return
