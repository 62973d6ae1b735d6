"""Benchmark: env steps/s and learner updates/s of our DQN trainer against RLlib's DQN, same env, net and ratio.

Ours: ``policies.trainer.train_single_process`` (one process stepping K vector envs, prioritized replay and the
learning step, 0.25 updates per env step at batch 512). Peer, same run: RLlib's DQN on the new API stack
(``bench.rllib_peer_config``), the same ``TradingEnv`` on the same data, the same ``QNetwork`` as an RLModule
(``bench.rllib_module``), K envs per env runner, one env runner, ``PrioritizedEpisodeReplayBuffer``, n-step 3,
double + dueling, the same batch, lr and replay ratio. Data: the tiny-profile timeline of the real ETH/BTC 1m
klines (first 20k minutes). Torch runs on one thread on the CPU in both.

Only the steady state is timed, where both collect and learn: each side first takes ``LEARNING_STARTS`` env
steps (no updates yet; for RLlib also its startup), untimed. Ours: the time of a run of ``ENV_STEPS`` steps
minus that of a run of ``LEARNING_STARTS`` steps (same seed, so the same prefix). RLlib: the training
iterations after the first. CPU seconds are also printed (ours: the process; RLlib: the driver, which hosts
its learner, plus the env runner processes), steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench._common import SHARED_DATA, rate_line
from market.baselines import real_kline_timeline
from policies.trainer import SingleRunConfig, train_single_process

NUM_ENVS = 8  # envs per runner, both sides
RUNNERS = 1  # RLlib env runners (ours: one process)
LEARNING_STARTS = 1_000
ENV_STEPS = 4_000  # per side: LEARNING_STARTS untimed + the timed window
UPDATES_PER_ENV_STEP = 0.25  # ours' default: 128 replayed samples per env step at batch 512
MAX_STEPS = 20_000  # minutes of the real 1m klines
RAY_CPUS = 2
#: RLlib's timers worth printing (EMA means per call): one sample round, then per update.
TIMERS = (
    "env_runner_sampling_timer",
    "replay_buffer_add_data_timer",
    "synch_weights",
    "replay_buffer_sampling_timer",
    "learner_update_timer",
    "replay_buffer_update_prios_timer",
)


@dataclass(frozen=True, slots=True)
class Window:
    """What one side did in its timed window."""

    env_steps: int
    updates: int
    wall_s: float
    cpu_s: float

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / self.wall_s

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.wall_s


def build_setup(env_steps: int, runners: int):  # -> PeerSetup (imported lazily: it imports ray)
    from bench.rllib_peer_config import PeerSetup

    run = SingleRunConfig(
        env_steps=env_steps,
        num_envs=NUM_ENVS,
        learning_starts=LEARNING_STARTS,
        updates_per_env_step=UPDATES_PER_ENV_STEP,
    )
    return PeerSetup(
        shared_dir=str(SHARED_DATA), max_steps=MAX_STEPS, run=run, num_env_runners=runners, iteration_env_steps=1_000
    )


def measure_ours(setup: Any) -> Window:
    """Steady-state window of ``train_single_process``: a full run minus its learning-starts prefix."""
    timeline = real_kline_timeline(setup.shared_dir, profile=setup.profile, max_steps=setup.max_steps)
    prefix = dataclasses.replace(setup.run, env_steps=setup.run.learning_starts)

    def run(cfg: SingleRunConfig) -> tuple[float, float, int]:
        wall, cpu = time.perf_counter(), time.process_time()
        learner = train_single_process(
            timeline, setup.env, setup.training, setup.replay, setup.network, cfg, seed=setup.seed
        )
        return time.perf_counter() - wall, time.process_time() - cpu, learner.updates

    run(prefix)  # warm-up
    p_wall, p_cpu, p_updates = run(prefix)
    f_wall, f_cpu, f_updates = run(setup.run)
    return Window(setup.run.env_steps - prefix.env_steps, f_updates - p_updates, f_wall - p_wall, f_cpu - p_cpu)


def _runner_cpu_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def measure_rllib(setup: Any) -> tuple[Window, list[float], dict[str, float]]:
    """RLlib's DQN: the iterations after the first; also per-iteration env steps/s and mean timers (ms)."""
    import ray
    from ray import tune

    from bench.rllib_peer_config import ENV_NAME, peer_config, trading_env_creator

    config = peer_config(setup)
    ray.init(num_cpus=max(RAY_CPUS, setup.num_env_runners + 1), include_dashboard=False, log_to_driver=False)
    algo = None
    try:
        tune.register_env(ENV_NAME, trading_env_creator)
        algo = config.build_algo()
        result = algo.train()  # startup and learning starts: untimed
        pids = algo.env_runner_group.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False)
        batch = setup.training.batch_size
        steps0 = result["env_runners"]["num_env_steps_sampled_lifetime"]
        trained0 = result["learners"]["default_policy"]["num_module_steps_trained_lifetime"]
        wall = cpu = 0.0
        rates: list[float] = []
        timers: dict[str, list[float]] = {}
        steps = steps0
        while steps - steps0 < setup.run.env_steps - setup.run.learning_starts:
            w, c, rc = time.perf_counter(), time.process_time(), _runner_cpu_s(pids)
            result = algo.train()
            dw = time.perf_counter() - w
            wall += dw
            cpu += time.process_time() - c + _runner_cpu_s(pids) - rc
            new_steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
            rates.append((new_steps - steps) / dw)
            steps = new_steps
            for key in TIMERS:
                value = result.get("timers", {}).get(key)
                if isinstance(value, int | float):
                    timers.setdefault(key, []).append(float(value) * 1e3)
        trained = result["learners"]["default_policy"]["num_module_steps_trained_lifetime"]
        window = Window(int(steps - steps0), int(round((trained - trained0) / batch)), wall, cpu)
        return window, rates, {k: sum(v) / len(v) for k, v in timers.items()}
    finally:
        if algo is not None:
            algo.stop()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-steps", type=int, default=ENV_STEPS, help="env steps per side (incl. learning starts)")
    parser.add_argument("--runners", type=int, default=RUNNERS, help="RLlib env runners")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by Ray's worker processes
    root = str(Path(__file__).resolve().parents[1])  # Ray's workers import bench/ and market/ from here
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    torch.set_num_threads(1)
    if not (SHARED_DATA / "binance" / "klines").is_dir():
        print(f"rllib: real 1m klines not found under {SHARED_DATA}; this benchmark runs on real data only")
        return 2
    try:
        setup = build_setup(args.env_steps, args.runners)
    except Exception as exc:  # noqa: BLE001 - RLlib must fail loudly with its exact error
        print(f"RLlib config failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    from bench.rllib_peer_config import fragment_length, steps_per_round, training_intensity

    print(
        f"data: real Binance 1m klines, first {setup.max_steps:,} minutes, tiny profile; {NUM_ENVS} envs per runner, "
        f"batch {setup.training.batch_size}, lr {setup.training.lr:g}, n-step {setup.training.n_step}, "
        f"{UPDATES_PER_ENV_STEP} updates per env step; device cpu, torch threads {torch.get_num_threads()}"
    )
    print(
        f"RLlib: {setup.num_env_runners} env runner(s), rollout fragment {fragment_length(setup)} "
        f"({steps_per_round(setup)} env steps per sample round), training_intensity {training_intensity(setup):g}"
    )
    ours = measure_ours(setup)
    print(
        f"ours (train_single_process): {ours.env_steps:,} env steps, {ours.updates:,} updates in {ours.wall_s:.1f} s "
        f"wall, {ours.cpu_s:.1f} s CPU"
    )
    try:
        peer, rates, timers = measure_rllib(setup)
    except Exception as exc:  # noqa: BLE001 - RLlib must fail loudly with its exact error
        print(f"RLlib failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    print(
        f"RLlib DQN: {peer.env_steps:,} env steps, {peer.updates:,} updates in {peer.wall_s:.1f} s wall, "
        f"{peer.cpu_s:.1f} s CPU (driver + runners); per iteration {', '.join(f'{r:.0f}' for r in rates)} steps/s"
    )
    if timers:
        print("RLlib timers (ms per call): " + ", ".join(f"{k} {v:.1f}" for k, v in timers.items()))
    print(
        f"replay ratio (updates per env step): ours {ours.updates / ours.env_steps:.3f}, "
        f"RLlib {peer.updates / peer.env_steps:.3f}"
    )
    ours_cpu, peer_cpu = ours.env_steps / ours.cpu_s, peer.env_steps / peer.cpu_s
    print(rate_line("rllib (CPU time)", ours_cpu, peer_cpu, "RLlib DQN", unit=" env steps/CPU-s"))
    print(rate_line("rllib updates", ours.updates_per_s, peer.updates_per_s, "RLlib DQN", unit=" updates/s"))
    print(rate_line("rllib", ours.steps_per_s, peer.steps_per_s, "RLlib DQN", unit=" env steps/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
