"""RLlib's DQN (new API stack) set up as the peer of our trainer: the same env, network, runners and replay ratio.

Every setting is derived from our own configs (``EnvConfig``, ``TrainingConfig``, ``ReplayConfig``,
``QNetworkConfig``, ``RunShape``) so the two sides cannot drift apart. Benchmarks only: product code
never imports it.

What is the same: the env (``market.env.TradingEnv`` on the tiny-profile timeline of the real 1m klines, built
inside each env runner, K envs per runner in gymnasium's sync vector env), the network
(``cluster.rllib_modules.QNetworkDQNModule`` around ``policies.dqn.QNetwork``, the module ``train --engine rllib``
trains), batch, lr, gamma, n-step 3, double DQN, Huber loss, global-norm gradient clip, hard target sync at the same
update count, learning starts, prioritized replay (RLlib's ``PrioritizedEpisodeReplayBuffer``) with the same alpha,
capacity and beta at its start, the linear epsilon decay, and the replay ratio (learner updates per env step). What
differs: RLlib keeps beta fixed (ours anneals it to 1 over the run) and RLlib stores whole episodes where ours
stores compact transitions; that is part of what is measured.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from ray.rllib.algorithms.dqn import DQNConfig
from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from actors.apex_config import ExplorationConfig
from cluster.rllib_modules import QNET_KEY, STATE_PROFILE_KEY, QNetworkDQNModule
from market.baselines import real_kline_timeline
from market.env import EnvConfig, TradingEnv
from market.errors import ConfigError
from market.timeline import MarketTimeline
from policies.config import ReplayConfig, TrainingConfig
from policies.dqn import QNetworkConfig


@dataclass(frozen=True, slots=True)
class RunShape:
    """Budget and exploration of one side's run, each one of ours (``cluster.train_local``'s ``apex`` settings).

    Attributes
    ----------
    env_steps : int
        ``apex.budget.env_steps``.
    num_envs : int
        ``apex.envs_per_worker``; RLlib: envs per env runner.
    learning_starts : int
        ``apex.learning_starts``.
    updates_per_env_step : float
        ``apex.replay_ratio``.
    exploration : ExplorationConfig
        ``apex.exploration``: epsilon decays linearly from ``decay_start`` to ``decay_end`` over the first
        ``decay_fraction`` of ``env_steps``.
    """

    env_steps: int = 20_000
    num_envs: int = 8
    learning_starts: int = 1_000
    updates_per_env_step: float = 0.25
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)


#: The name the trading env is registered under with ``ray.tune.register_env``.
ENV_NAME = "rayscalp-trading-v0"


@dataclass(frozen=True, slots=True)
class PeerSetup:
    """One comparison: our configs plus the data and the RLlib-only knobs.

    Attributes
    ----------
    shared_dir : str
        The recorded data folder (``../shared/data``); each env runner builds the timeline from it.
    max_steps : int
        Minutes of the real 1m klines kept (the first ``max_steps``).
    profile : str
        The state profile of the timeline and the network.
    num_env_runners : int
        RLlib env runner actors; each steps ``run.num_envs`` envs (ours: one process stepping ``run.num_envs``).
    rollout_fragment_length : int or "auto"
        Steps per env per sample call ("auto" is RLlib's DQN default: ``n_step``).
    iteration_env_steps : int
        ``min_sample_timesteps_per_iteration``: env steps per ``Algorithm.train()`` call.
    seed : int
    """

    shared_dir: str
    max_steps: int = 20_000
    profile: str = "tiny"
    env: EnvConfig = field(default_factory=EnvConfig)
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(device="cpu"))
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    network: QNetworkConfig = field(default_factory=QNetworkConfig)
    run: RunShape = field(default_factory=RunShape)
    num_env_runners: int = 1
    rollout_fragment_length: int | str = "auto"
    iteration_env_steps: int = 1_000
    seed: int = 0


@functools.lru_cache(maxsize=2)
def _timeline(shared_dir: str, profile: str, max_steps: int) -> MarketTimeline:
    """One timeline per env-runner process, shared by its K envs."""
    return real_kline_timeline(shared_dir, profile=profile, max_steps=max_steps)


def trading_env_creator(env_config: dict[str, Any]) -> TradingEnv:
    """The env creator registered with ``tune.register_env``: a ``TradingEnv`` on the (cached) timeline.

    ``env_config`` keys: ``shared_dir``, ``profile``, ``max_steps`` and ``env`` (an ``EnvConfig`` as a dict).
    """
    missing = [k for k in ("shared_dir", "profile", "max_steps", "env") if k not in env_config]
    if missing:
        raise ConfigError(f"trading env creator: env_config lacks {missing} (has {sorted(env_config)})")
    timeline = _timeline(str(env_config["shared_dir"]), str(env_config["profile"]), int(env_config["max_steps"]))
    return TradingEnv(timeline, EnvConfig.model_validate(env_config["env"]))


def fragment_length(setup: PeerSetup) -> int:
    """Steps per env per sample call, with RLlib's "auto" resolved (DQN: ``n_step``)."""
    if setup.rollout_fragment_length == "auto":
        return setup.training.n_step
    return int(setup.rollout_fragment_length)


def training_intensity(setup: PeerSetup) -> float:
    """RLlib's ``training_intensity`` that gives our replay ratio (``run.updates_per_env_step`` updates per step).

    RLlib reads the intensity as replayed samples per env step and turns it into round-robin weights
    (``ray.rllib.algorithms.dqn.dqn.calculate_rr_weights``) by dividing through
    ``fragment * envs * (num_env_runners + 1)``, counting a local runner that does not sample when remote
    runners exist. A round really samples ``fragment * envs * max(num_env_runners, 1)`` steps, so the nominal
    intensity ``updates_per_env_step * batch`` is scaled by ``max(R, 1) / (R + 1)``.
    """
    nominal = setup.run.updates_per_env_step * setup.training.batch_size
    r = setup.num_env_runners
    return nominal * max(r, 1) / (r + 1)


def steps_per_round(setup: PeerSetup) -> int:
    """Env steps one synchronous sample round collects over all runners."""
    return fragment_length(setup) * setup.run.num_envs * max(setup.num_env_runners, 1)


def peer_config(setup: PeerSetup) -> DQNConfig:
    """RLlib's ``DQNConfig`` for ``setup`` (register :func:`trading_env_creator` as :data:`ENV_NAME` first).

    Raises
    ------
    ConfigError
        When RLlib's round-robin weights cannot give our replay ratio exactly (the fragment, envs and runners
        must make ``updates_per_env_step * steps_per_round`` a whole number of updates).
    """
    training, run = setup.training, setup.run
    if training.target_tau is not None:
        tau, sync_every_updates = training.target_tau, 1
    else:
        tau, sync_every_updates = 1.0, training.target_sync_every
    decay_steps = max(1, int(run.exploration.decay_fraction * run.env_steps))
    env_config = {
        "shared_dir": setup.shared_dir,
        "profile": setup.profile,
        "max_steps": setup.max_steps,
        "env": setup.env.model_dump(mode="json", exclude_unset=True),  # only what was set: defaults stay defaults
    }
    config = (
        DQNConfig()
        .framework("torch")
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(
            num_env_runners=setup.num_env_runners,
            num_envs_per_env_runner=run.num_envs,
            rollout_fragment_length=setup.rollout_fragment_length,
            gym_env_vectorize_mode="sync",
            num_cpus_per_env_runner=1,
        )
        .learners(num_learners=0, num_gpus_per_learner=0)
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=QNetworkDQNModule,
                model_config={STATE_PROFILE_KEY: setup.profile, QNET_KEY: setup.network.model_dump(mode="json")},
            )
        )
        .training(
            lr=training.lr,
            gamma=training.gamma,
            train_batch_size_per_learner=training.batch_size,
            n_step=training.n_step,
            double_q=True,
            dueling=True,  # the dueling head lives inside QNetwork
            num_atoms=1,
            td_error_loss_fn="huber",
            grad_clip=training.grad_clip,
            grad_clip_by="global_norm",
            tau=tau,
            target_network_update_freq=max(1, round(sync_every_updates / run.updates_per_env_step)),
            num_steps_sampled_before_learning_starts=run.learning_starts,
            training_intensity=training_intensity(setup),
            epsilon=[[0, run.exploration.decay_start], [decay_steps, run.exploration.decay_end]],
            replay_buffer_config={
                "type": "PrioritizedEpisodeReplayBuffer",
                "capacity": min(setup.replay.capacity, run.env_steps + run.num_envs),
                "alpha": setup.replay.alpha,
                "beta": setup.replay.beta_start,
            },
        )
        .reporting(min_sample_timesteps_per_iteration=setup.iteration_env_steps)
        .debugging(seed=setup.seed)
    )
    store, train = calculate_rr_weights(config)
    wanted = run.updates_per_env_step * steps_per_round(setup)
    if store != 1 or train != wanted:
        raise ConfigError(
            f"RLlib's round-robin weights {store}:{train} (sample rounds : updates) do not give "
            f"updates_per_env_step={run.updates_per_env_step} at {steps_per_round(setup)} env steps per round "
            f"(wanted 1:{wanted:g}); change rollout_fragment_length={setup.rollout_fragment_length!r} or num_envs"
        )
    return config
