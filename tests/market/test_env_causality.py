"""Causality of the env on a market where it can show: longer than the longest warm-up, with the 1d timeframe
present and every state column moving (tests/market/test_timeline_builder.py checks that of this market).
What ``step()`` returns after acting at t reads nothing after t + 1."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.env import EnvConfig, TradingEnv
from market.timeline import MarketTimeline
from market.timeline_builder import build_timeline
from tests.market.test_env import SHAPING, assert_same_returns, run
from tests.market.test_timeline_builder import (
    LONG_STATE,
    LONG_STEPS,
    LONG_WARM,
    LONG_WILLIAMS,
    long_market,
    perturb_market_after,
)

EPISODE = 60


def _timelines(seed: int, cut: int) -> tuple[MarketTimeline, MarketTimeline]:
    data = long_market(seed)
    before = build_timeline(data, LONG_STATE, williams=LONG_WILLIAMS)
    after = build_timeline(
        perturb_market_after(data, int(before.step_time_ms[cut]), seed), LONG_STATE, williams=LONG_WILLIAMS
    )
    return before, after


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 3),
    cut=st.integers(LONG_WARM + EPISODE, LONG_STEPS - 3),
    venue=st.sampled_from([{"kind": "spot"}, {"kind": "perp", "leverage": 20.0}]),
    shaping=st.booleans(),
)
def test_what_step_returns_after_acting_at_t_ignores_everything_after_t_plus_1_on_a_long_market_with_1d(
    seed: int, cut: int, venue: dict, shaping: bool
) -> None:
    before, after = _timelines(seed, cut)
    t = cut - 1  # the last action is at t; what it returns may read step t + 1 = cut, and nothing after
    start = t - EPISODE + 2
    config = EnvConfig(
        episode_steps=EPISODE,
        random_start=False,
        start_step=start,
        venue=venue,
        reward=SHAPING if shaping else {},
        ruin_fraction=0.0,
    )
    rng = np.random.default_rng(seed + cut)
    actions = rng.integers(0, 3, t - start + 2)
    signal = np.tanh(rng.normal(size=before.n_steps))
    signal2 = signal.copy()
    signal2[cut + 1 :] = -signal2[cut + 1 :]
    a = run(TradingEnv(before, config, cnn_signal=signal), actions[: t - start + 1], start=start)
    b = run(TradingEnv(after, config, cnn_signal=signal2), actions[: t - start + 1], start=start)
    assert_same_returns(a, b)
    if not (a[-1][2] or a[-1][3]):
        assert a[-1][4]["step"] == cut
        # ... and the comparison can fail: one step further, the changed data shows
        more_a = run(TradingEnv(before, config, cnn_signal=signal), actions, start=start)
        more_b = run(TradingEnv(after, config, cnn_signal=signal2), actions, start=start)
        assert not np.array_equal(more_a[-1][0], more_b[-1][0])
