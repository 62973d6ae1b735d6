"""Single-process DQN training and greedy evaluation: the learner, replay and vector env in one loop.

The reference the distributed (Ape-X) run is held against, and the learning gate's trainer. Uses the same
env, collector, replay and learning step as the actors do; never imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from market.env import EnvConfig, TradingEnv, VectorTradingEnv
from market.layout import AGENT_FEATURES
from market.seeding import derive_seed
from market.timeline import MarketTimeline

from .collector import TransitionCollector
from .config import ReplayConfig, TrainingConfig
from .device import resolve_device, timeline_to_device
from .dqn import QNetwork, QNetworkConfig
from .learning import DQNLearner
from .replay import BetaSchedule, PrioritizedReplay


@dataclass(frozen=True, slots=True)
class SingleRunConfig:
    """Budget and exploration of a single-process run."""

    env_steps: int = 20_000
    num_envs: int = 8
    learning_starts: int = 1_000
    updates_per_env_step: float = 0.25
    eps_start: float = 1.0
    eps_end: float = 0.02
    eps_decay_frac: float = 0.5


def epsilon_at(progress: float, run: SingleRunConfig) -> float:
    """Linear decay from ``eps_start`` to ``eps_end`` over the first ``eps_decay_frac`` of the run."""
    frac = min(1.0, progress / max(run.eps_decay_frac, 1e-9))
    return run.eps_start + (run.eps_end - run.eps_start) * frac


@torch.no_grad()
def act(
    qnet: QNetwork, obs: np.ndarray, epsilon: float | np.ndarray, rng: np.random.Generator, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy actions and the Q-values, for a batch of observations."""
    q = qnet(torch.as_tensor(obs, device=device)).cpu().numpy()
    greedy = q.argmax(axis=1)
    explore = rng.random(obs.shape[0]) < epsilon
    return np.where(explore, rng.integers(0, q.shape[1], obs.shape[0]), greedy), q


def train_single_process(
    timeline: MarketTimeline,
    env_config: EnvConfig,
    training: TrainingConfig,
    replay_config: ReplayConfig,
    network: QNetworkConfig,
    run: SingleRunConfig,
    *,
    seed: int = 0,
) -> DQNLearner:
    """Collect with epsilon-greedy vector envs and learn at a fixed replay ratio; return the learner."""
    device = resolve_device(training.device)
    rng = np.random.default_rng(derive_seed(seed, "explore"))
    env = VectorTradingEnv(timeline, run.num_envs, env_config)
    obs, info = env.reset(seed=derive_seed(seed, "env") % 2**31)
    total_updates = max(1, int((run.env_steps - run.learning_starts) * run.updates_per_env_step))
    replay = PrioritizedReplay(
        min(replay_config.capacity, run.env_steps + run.num_envs),
        len(AGENT_FEATURES),
        device=device,
        alpha=replay_config.alpha,
        beta=BetaSchedule(replay_config.beta_start, replay_config.beta_end, total_updates),
        seed=derive_seed(seed, "replay") % 2**62,
    )
    learner = DQNLearner(
        timeline.layout,
        timeline_to_device(timeline, device),
        replay,
        training,
        network,
        device=device,
        seed=derive_seed(seed, "network") % 2**62,
    )
    collector = TransitionCollector(run.num_envs, len(AGENT_FEATURES), training.n_step, training.gamma)
    env_steps, owed = 0, 0.0
    while env_steps < run.env_steps:
        eps = epsilon_at(env_steps / run.env_steps, run)
        actions, _ = act(learner.online, obs, eps, rng, device)
        steps, agents = info["step"].copy(), info["agent"].copy()
        obs, rewards, terminated, truncated, info = env.step(actions)
        done = info["done"]
        next_steps = np.where(done, info.get("final_step", info["step"]), info["step"])
        next_agents = np.where(done[:, None], info.get("final_agent", info["agent"]), info["agent"])
        made = collector.record(steps, agents, actions, rewards, terminated, truncated, next_steps, next_agents)
        if made is not None and len(made):
            replay.add(
                made.step, made.next_step, made.agent, made.next_agent, made.action, made.n_return, made.discount
            )
        env_steps += run.num_envs
        if env_steps >= run.learning_starts:
            owed += run.num_envs * run.updates_per_env_step
            while owed >= 1.0:
                learner.learn_step()
                owed -= 1.0
    return learner


@torch.no_grad()
def greedy_log_return(
    qnet: QNetwork,
    timeline: MarketTimeline,
    env_config: EnvConfig,
    start_step: int,
    steps: int,
    device: torch.device | None = None,
) -> float:
    """Log return of the greedy policy over ``steps`` base steps from ``start_step`` (one env, fixed start)."""
    device = device or next(qnet.parameters()).device
    config = env_config.model_copy(update={"random_start": False, "start_step": start_step, "episode_steps": steps})
    env = TradingEnv(timeline, config)
    obs, _ = env.reset(seed=0)
    equity0 = config.initial_equity
    equity = equity0
    for _ in range(steps):
        action = int(qnet(torch.as_tensor(obs[None], device=device)).argmax(dim=1)[0])
        obs, _, terminated, truncated, info = env.step(action)
        equity = float(info["equity"])
        if terminated or truncated:
            break
    return float(np.log(equity / equity0))
