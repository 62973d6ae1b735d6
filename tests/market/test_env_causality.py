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
from tests.market.test_timeline_builder import (
    LONG_STATE,
    LONG_STEPS,
    LONG_WARM,
    LONG_WILLIAMS,
    long_market,
    perturb_market_after,
)

#: Shaping terms that read ahead only as far as they may (paid when their horizon has passed).
SHAPING = {
    "prediction_weight": 0.01,
    "prediction_horizon": 3,
    "pivot_weight": 0.01,
    "pivot_strength": 2,
    "alignment_weight": 0.01,
    "volatility_weight": 0.5,
    "volatility_short_halflife": 5,
    "volatility_long_halflife": 50,
    "frequency_weight": 0.01,
    "max_trades_per_min": 0.2,
}
EPISODE = 60


def _timelines(seed: int, cut: int) -> tuple[MarketTimeline, MarketTimeline]:
    data = long_market(seed)
    before = build_timeline(data, LONG_STATE, williams=LONG_WILLIAMS)
    after = build_timeline(
        perturb_market_after(data, int(before.step_time_ms[cut]), seed), LONG_STATE, williams=LONG_WILLIAMS
    )
    return before, after


def _run(env: TradingEnv, start: int, actions: np.ndarray) -> list[tuple]:
    obs, info = env.reset(seed=0, options={"start_step": start})
    out = [(obs, 0.0, False, False, info)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(int(a))
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


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
    a = _run(TradingEnv(before, config, cnn_signal=signal), start, actions[: t - start + 1])
    b = _run(TradingEnv(after, config, cnn_signal=signal2), start, actions[: t - start + 1])
    assert len(a) == len(b)
    for (obs_a, r_a, te_a, tr_a, info_a), (obs_b, r_b, te_b, tr_b, info_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert (r_a, te_a, tr_a, info_a["equity"]) == (r_b, te_b, tr_b, info_b["equity"])
        assert info_a["reward_terms"] == info_b["reward_terms"]
    if not (a[-1][2] or a[-1][3]):
        assert a[-1][4]["step"] == cut
        # ... and the comparison can fail: one step further, the changed data shows
        more_a = _run(TradingEnv(before, config, cnn_signal=signal), start, actions)
        more_b = _run(TradingEnv(after, config, cnn_signal=signal2), start, actions)
        assert not np.array_equal(more_a[-1][0], more_b[-1][0])
