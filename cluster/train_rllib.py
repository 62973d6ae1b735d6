"""RLlib's own algorithms on the project's state: ``rayscalp train --engine rllib --algo DQN|PPO|APPO``.

The env is ``market.env.TradingEnv`` (the state layout's ``gather`` and the one venue step,
``market.venue.step``) on the DQN span of the configured timeline, short of its validation tail, registered
with ``ray.tune.register_env`` as :data:`ENV_NAME`; each env runner process builds the timeline from the
experiment config in its ``env_config`` (the driver's own runner reuses the driver's). The network is the
project's ``QNetwork`` inside an RLModule (``cluster.rllib_modules``), trained by RLlib's ``DQN``, ``PPO`` or
``APPO`` on the new API stack for the same budget in env steps as ``train --local`` (``apex.budget.env_steps``,
else ``apex.learning_starts + apex.budget.updates / apex.replay_ratio``), ``apex.envs_per_worker`` envs per
runner. The end is the project's: one greedy evaluation on the held-out span beside flat and buy-and-hold, and
the network exported as a policy checkpoint (``policies.rllib_export``; its meta says ``engine: rllib``, the
algorithm, and whether the scores are Q-values or policy logits) that ``rayscalp evaluate``, the policy service
and paper trading read as any other. Training never sees the evaluation span.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import ray
from ray import tune
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from rich.console import Console

from market.env import EnvConfig, TradingEnv
from market.errors import ConfigError
from policies.rllib_export import export_rllib_policy, qnet_weights

from .config import ExperimentConfig
from .rllib_modules import QNET_KEY, STATE_PROFILE_KEY, QNetworkAPPOModule, QNetworkDQNModule, QNetworkPolicyModule
from .runinfo import make_run_record, new_run_id, policy_meta, write_run_record
from .train import Evaluation, TrainingMarket, evaluate_greedy, head_timeline, prepare_market
from .train_local import LocalSettings

Algo = Literal["DQN", "PPO", "APPO"]
ALGOS: tuple[Algo, ...] = ("DQN", "PPO", "APPO")
#: The name the trading env is registered under.
ENV_NAME = "rayscalp-trading"
#: Env steps per PPO / APPO training batch, in learner batches (``training.batch_size``).
POLICY_BATCHES = 4


@dataclass(frozen=True, slots=True)
class RllibSettings:
    """The run's shape, read from the experiment config (the same keys ``train --local`` reads)."""

    algo: Algo
    num_envs: int  # apex.envs_per_worker
    env_steps: int  # the budget in env steps
    learning_starts: int  # apex.learning_starts (DQN)
    replay_ratio: float  # apex.replay_ratio: updates per env step (DQN)
    eps_start: float
    eps_end: float
    eps_decay_fraction: float
    validation_steps: int  # apex.curves.validation_steps: the DQN span's tail kept out of training

    @staticmethod
    def from_config(config: ExperimentConfig, algo: str) -> RllibSettings:
        if algo not in ALGOS:
            raise ConfigError(f"train --engine rllib: --algo {algo!r} is not one of {list(ALGOS)}")
        apex = config.apex
        budget = apex.budget.env_steps
        if budget is None:
            if apex.budget.updates is None:
                raise ConfigError("train --engine rllib: apex.budget needs env_steps or updates (wall_seconds alone)")
            budget = apex.learning_starts + int(apex.budget.updates / apex.replay_ratio)
        local = dataclasses.asdict(LocalSettings.from_config(config))  # envs, learning starts, epsilons, tail
        shared = {f.name: local[f.name] for f in dataclasses.fields(RllibSettings) if f.name in local}
        return RllibSettings(**{**shared, "algo": algo, "env_steps": int(budget)})


@dataclass(frozen=True, slots=True)
class RllibResult:
    """What a finished RLlib run did and where its outputs are."""

    run_id: str
    run_dir: Path
    policy_path: Path
    algo: Algo
    env_steps: int
    updates: int
    iterations: int
    wall_seconds: float
    evaluation: Evaluation


# --------------------------------------------------------------------------------------------- the env


def portable_config(config: ExperimentConfig) -> dict[str, Any]:
    """``config`` as JSON with its data folders absolute, so that an env runner anywhere reads the same files."""
    data = config.data.model_copy(
        update={"shared_dir": config.data.shared_dir.resolve(), "data_dir": config.data.data_dir.resolve()}
    )
    return config.model_copy(update={"data": data}).model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class TrainingEnvParts:
    """What every env of a run is built from: the training head of the timeline and the env config."""

    market: TrainingMarket
    train_end: int
    env_config: EnvConfig

    def make_env(self) -> TradingEnv:
        cnn = (self.market.cnn_hidden, self.market.cnn_pred)
        hidden, pred = (None if a is None else a[: self.train_end] for a in cnn)
        return TradingEnv(
            head_timeline(self.market.timeline, self.train_end), self.env_config, cnn_hidden=hidden, cnn_pred=pred
        )


def env_parts(config: ExperimentConfig, market: TrainingMarket, validation_steps: int) -> TrainingEnvParts:
    """Episodes start and end inside the DQN span, short of its validation tail (as ``train --local``)."""
    train_end = market.train_end - validation_steps
    env_config = config.env.model_copy(update={"start_step": max(config.env.start_step, market.train_start)})
    return TrainingEnvParts(market, train_end, env_config)


#: Parts already built in this process, by run id (the driver's, so its own runner does not rebuild them).
PARTS: dict[str, TrainingEnvParts] = {}


@functools.lru_cache(maxsize=2)
def rebuilt_parts(config_json: bytes, validation_steps: int) -> TrainingEnvParts:
    """The parts rebuilt from the config in an env runner process (one timeline per process)."""
    config = ExperimentConfig.model_validate(orjson.loads(config_json))
    market = prepare_market(config, config.apex, log=lambda _line: None)
    return env_parts(config, market, validation_steps)


def trading_env_creator(env_config: dict[str, Any]) -> TradingEnv:
    """The creator registered as :data:`ENV_NAME`; ``env_config`` keys ``run_id``, ``config`` and
    ``validation_steps``."""
    missing = [k for k in ("run_id", "config", "validation_steps") if k not in env_config]
    if missing:
        raise ConfigError(f"{ENV_NAME} env creator: env_config lacks {missing} (has {sorted(env_config)})")
    parts = PARTS.get(str(env_config["run_id"]))
    if parts is None:
        parts = rebuilt_parts(orjson.dumps(env_config["config"]), int(env_config["validation_steps"]))
    return parts.make_env()


# --------------------------------------------------------------------------------------------- the algorithms


def algorithm_config(config: ExperimentConfig, settings: RllibSettings, env_config: dict[str, Any]) -> AlgorithmConfig:
    """RLlib's config for ``settings.algo`` on the registered env, with the project's network and settings.

    PPO and DQN step their envs in the driver's own env runner (``num_env_runners=0``); APPO, asynchronous by
    design, needs one remote runner (``num_cpus=0``: it shares the driver's cores).
    """
    training = config.training
    model_config: dict[str, Any] = {
        STATE_PROFILE_KEY: config.state.profile,
        QNET_KEY: config.network.model_dump(mode="json"),
    }
    if settings.algo == "DQN":
        from ray.rllib.algorithms.dqn import DQNConfig

        decay = max(1, int(settings.eps_decay_fraction * settings.env_steps))
        epsilon = [[0, settings.eps_start], [decay, settings.eps_end]]
        model_config |= {"double_q": True, "epsilon": epsilon}
        algo: AlgorithmConfig = DQNConfig().training(
            lr=training.lr,
            gamma=training.gamma,
            train_batch_size_per_learner=training.batch_size,
            n_step=training.n_step,
            double_q=True,
            dueling=True,  # inside QNetwork
            num_atoms=1,
            td_error_loss_fn="huber",
            grad_clip=training.grad_clip,
            grad_clip_by="global_norm",
            tau=1.0,
            target_network_update_freq=max(1, round(training.target_sync_every / settings.replay_ratio)),
            num_steps_sampled_before_learning_starts=settings.learning_starts,
            training_intensity=settings.replay_ratio * training.batch_size,
            epsilon=epsilon,
            replay_buffer_config={
                "type": "PrioritizedEpisodeReplayBuffer",
                "capacity": min(config.replay.capacity, settings.env_steps + settings.num_envs),
                "alpha": config.replay.alpha,
                "beta": config.replay.beta_start,
            },
        )
        module, runners = QNetworkDQNModule, 0
    else:
        batch = POLICY_BATCHES * training.batch_size
        common = {"lr": training.lr, "gamma": training.gamma, "train_batch_size_per_learner": batch}
        common |= {"grad_clip": training.grad_clip, "grad_clip_by": "global_norm"}
        if settings.algo == "PPO":
            from ray.rllib.algorithms.ppo import PPOConfig

            algo = PPOConfig().training(**common, minibatch_size=training.batch_size, num_epochs=4)
            module, runners = QNetworkPolicyModule, 0
        else:
            from ray.rllib.algorithms.appo import APPOConfig

            algo = APPOConfig().training(**common)
            module, runners = QNetworkAPPOModule, 1
    return (
        algo.framework("torch")
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=settings.num_envs,
            gym_env_vectorize_mode="sync",
            num_cpus_per_env_runner=0,
        )
        .learners(num_learners=0, num_gpus_per_learner=0)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=module, model_config=model_config))
        # APPO's train() returns at once while its runner samples: one second per iteration, not a busy loop.
        .reporting(min_time_s_per_iteration=1 if settings.algo == "APPO" else 0, min_sample_timesteps_per_iteration=0)
        .debugging(seed=config.seed)
    )


# --------------------------------------------------------------------------------------------- the run


def train_rllib(
    config: ExperimentConfig,
    algo: str,
    *,
    market: TrainingMarket | None = None,
    console: Console | None = None,
) -> RllibResult:
    """Train ``algo`` with RLlib to the env-step budget, evaluate greedily and export the policy checkpoint.

    Starts a local Ray (2 CPUs, no dashboard) unless one is connected, and shuts down only the one it started.
    """
    console = console or Console(soft_wrap=True)
    settings = RllibSettings.from_config(config, algo)
    market = market or prepare_market(config, config.apex, log=console.print)
    parts = env_parts(config, market, settings.validation_steps)
    run_id = new_run_id(config.name)
    run_dir = config.output_dir / config.name / "runs" / run_id
    record = make_run_record(
        config,
        run_id=run_id,
        data_fingerprint=market.fingerprint,
        data_sources=list(market.sources),
        extra={
            "mode": f"RLlib {settings.algo} (train --engine rllib)",
            "rllib": dataclasses.asdict(settings),
            "spans": market.spans,
            "train_steps": [market.train_start, parts.train_end],
            "validation_steps": [parts.train_end, market.train_end],
            "eval_steps": [market.eval_start, market.eval_start + market.eval_steps],
            "data": market.description,
            "synthetic": market.synthetic,
        },
    )
    console.print(
        f"run {run_id}: RLlib {settings.algo}, {settings.num_envs} envs, budget {settings.env_steps:,} env steps, "
        f"{market.label}; record {write_run_record(record, run_dir)}"
    )
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    PARTS[run_id] = parts
    env_config = {"run_id": run_id, "config": portable_config(config), "validation_steps": settings.validation_steps}
    tune.register_env(ENV_NAME, trading_env_creator)
    built = None
    try:
        built = algorithm_config(config, settings, env_config).build_algo()
        env_steps = trained = iterations = 0
        started = printed = time.monotonic()
        ret = None
        while env_steps < settings.env_steps:
            result = built.train()
            iterations += 1
            runners = result.get("env_runners", {})  # APPO's first iterations may report no samples yet
            env_steps = int(runners.get("num_env_steps_sampled_lifetime", env_steps))
            learner = result.get("learners", {}).get(DEFAULT_MODULE_ID, {})
            trained = int(learner.get("num_module_steps_trained_lifetime", trained))
            ret = runners.get("episode_return_mean", ret)
            now = time.monotonic()
            if now - printed >= config.apex.progress_every_s or env_steps >= settings.env_steps:
                printed = now
                console.print(
                    f"[bold]{now - started:6.0f}s[/] iteration {iterations} | env {env_steps:,} "
                    f"({env_steps / max(now - started, 1e-9):,.0f}/s) | samples trained {trained:,} "
                    f"| mean return {'-' if ret is None else f'{ret:+.4f}'}"
                )
        wall = time.monotonic() - started
        state = built.learner_group.get_weights()[DEFAULT_MODULE_ID]
    finally:
        if built is not None:
            built.stop()
        PARTS.pop(run_id, None)
        if started_ray:
            ray.shutdown()

    # Updates: gradient steps (DQN: samples / batch; PPO, APPO: samples / minibatch, both training.batch_size).
    updates = trained // config.training.batch_size
    weights = qnet_weights(state)
    evaluation = evaluate_greedy(weights, config, market, parts.env_config)
    policy_path = export_rllib_policy(
        run_dir / "policy.pt",
        state,
        market.timeline.layout,
        config.network,
        algo=settings.algo,
        version=f"{config.name}-rllib-{settings.algo.lower()}-s{env_steps}",
        updates=updates,
        cnn_version=market.cnn_version,
        meta=policy_meta(config, market, run_id, env_steps=env_steps),
    )
    out = RllibResult(run_id, run_dir, policy_path, settings.algo, env_steps, updates, iterations, wall, evaluation)
    (run_dir / "result.json").write_bytes(
        orjson.dumps(
            {
                "run_id": run_id,
                "mode": "rllib",
                "algo": settings.algo,
                "counters": {"env_steps": env_steps, "updates": updates, "iterations": iterations},
                "env_steps_per_s": env_steps / max(wall, 1e-9),
                "evaluation": evaluation.as_dict(),
                "latest_policy": str(policy_path),
                "wall_seconds": wall,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    console.print(evaluation.summary(policy_path, market.synthetic))
    return out
