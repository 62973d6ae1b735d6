"""Benchmark: env steps per second, the vectorised env (K envs a call) against the single gymnasium env.

Both take the same number of env steps with the same pre-drawn random actions on the same timeline (the
``tiny`` profile), each step returning the full observation (one ``gather``) and its info. Data: the real
ETH/BTC 1m klines; without ../shared/data, seeded synthetic bars (labelled so). One process, one core.
"""

from __future__ import annotations

import sys

import numpy as np

from bench._common import alternating_medians, kline_timeline, rate_line, time_and_rate
from market.env import EnvConfig, TradingEnv, VectorTradingEnv

K = 64
CALLS = 300  # vector env calls per timed run: K * CALLS env steps, the same count the single env takes
REPEATS = 5
MAX_STEPS = 20_000


def main() -> int:
    timeline, label = kline_timeline("tiny", MAX_STEPS)
    config = EnvConfig(episode_steps=1440, venue={"kind": "perp", "leverage": 5})
    n_steps = K * CALLS
    actions = np.random.default_rng(0).integers(0, 3, (CALLS, K))
    flat_actions = actions.reshape(-1).tolist()
    vec = VectorTradingEnv(timeline, K, config)
    single = TradingEnv(timeline, config)
    vec.reset(seed=0)
    single.reset(seed=0)

    def run_vec() -> None:
        for a in actions:
            vec.step(a)

    def run_single() -> None:
        for a in flat_actions:
            _, _, terminated, truncated, _ = single.step(a)
            if terminated or truncated:
                single.reset()

    t_vec, t_single = alternating_medians(run_vec, run_single, REPEATS)
    print(f"data: {label}; state {timeline.layout.size} floats (tiny profile); perp 5x, episodes of 1440 steps")
    print(
        f"vectorised env, K={K}: {CALLS} calls = {n_steps:,} env steps in {t_vec * 1e3:.1f} ms "
        f"({n_steps / t_vec:,.0f} env steps/s, {CALLS / t_vec:,.0f} calls/s)"
    )
    single_timing = time_and_rate(t_single, n_steps, "steps")
    print(f"single gymnasium env, full observation and info: {n_steps:,} steps in {single_timing}")
    print(rate_line("env", n_steps / t_vec, n_steps / t_single, "single gymnasium env", unit=" steps/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
