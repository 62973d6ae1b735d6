"""The trading env: accounting identities over random actions, closed forms, liquidation on a wick,
causality of what step() returns, check_env, and the vectorised env equal to K single envs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.env import BUY, HOLD, SELL, EnvConfig, TradingEnv, VectorTradingEnv
from market.errors import ConfigError, DataError
from market.layout import AGENT_FEATURES, StateConfig
from market.records import BAR_DTYPE
from market.reward import log_equity_change
from market.timeline import MarketTimeline
from market.timeline_builder import MarketData, build_timeline
from market.venue import LEGS

#: 2025-01-01 00:00 UTC, a funding time (every 480 one-minute steps from here is another).
START_MS = 1_735_689_600_000
MINUTE = 60_000
TINY = StateConfig(profile="tiny")


def bars_from(close: np.ndarray, high: np.ndarray, low: np.ndarray, start_ms: int = START_MS) -> np.ndarray:
    """1m ``BAR_DTYPE`` bars whose closes are ``close`` and whose extremes include ``high``/``low``."""
    n = close.shape[0]
    out = np.zeros(n, dtype=BAR_DTYPE)
    out["open_time_ms"] = start_ms + np.arange(n, dtype=np.int64) * MINUTE
    out["close_time_ms"] = out["open_time_ms"] + MINUTE - 1
    out["open"] = np.r_[close[0], close[:-1]]
    out["close"] = close
    out["high"] = np.maximum(high, np.maximum(out["open"], close))
    out["low"] = np.minimum(low, np.minimum(out["open"], close))
    out["volume"] = 10.0  # constant: the env's tests change prices only
    out["tick_count"] = 10
    out["buy_volume"] = out["sell_volume"] = out["volume"] / 2
    out["vwap"] = (out["high"] + out["low"] + close) / 3
    return out


def random_walk(n: int, seed: int, vol: float = 0.002, price: float = 3000.0) -> tuple[np.ndarray, ...]:
    """Close, high, low of a seeded log random walk (synthetic)."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    high = close * np.exp(np.abs(rng.normal(0.0, vol, n)))
    low = close * np.exp(-np.abs(rng.normal(0.0, vol, n)))
    return close, high, low


def price_timeline(
    close: np.ndarray, high: np.ndarray | None = None, low: np.ndarray | None = None, meta: dict | None = None
) -> MarketTimeline:
    """A ``tiny``-profile timeline (the real builder) whose traded market closes at ``close``. Synthetic."""
    close = np.asarray(close, dtype=np.float64)
    high = close if high is None else np.asarray(high, dtype=np.float64)
    low = close if low is None else np.asarray(low, dtype=np.float64)
    eth = bars_from(close, high, low)
    btc_close = 20.0 * close**0.9
    btc = bars_from(btc_close, btc_close * 1.0005, btc_close * 0.9995)
    timeline = build_timeline(MarketData(traded_bars={"1m": eth}, reference_bars={"1m": btc}, synthetic=True), TINY)
    timeline.meta.update(meta or {})
    return timeline


def walk_timeline(n: int, seed: int, vol: float = 0.002) -> MarketTimeline:
    return price_timeline(*random_walk(n, seed, vol))


def run(env: TradingEnv, actions, seed: int = 0, start: int | None = None) -> list[tuple]:
    """Reset and step ``actions`` until the episode ends; return (obs, reward, terminated, truncated, info)."""
    options = None if start is None else {"start_step": start}
    obs, info = env.reset(seed=seed, options=options)
    out = [(obs, 0.0, False, False, info)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(int(a))
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


def assert_same_returns(a: list[tuple], b: list[tuple]) -> None:
    """Two runs (of ``run``) returned the same observations, rewards, ends, equity and reward terms step for step."""
    assert len(a) == len(b)
    for (obs_a, r_a, te_a, tr_a, info_a), (obs_b, r_b, te_b, tr_b, info_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert (r_a, te_a, tr_a, info_a["equity"]) == (r_b, te_b, tr_b, info_b["equity"])
        assert info_a["reward_terms"] == info_b["reward_terms"]


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
VENUES = st.one_of(
    st.just({"kind": "spot"}),
    st.builds(
        lambda lev, frac: {"kind": "perp", "leverage": lev, "position_fraction": frac},
        st.sampled_from([1.0, 3.0, 20.0, 125.0]),
        st.sampled_from([1.0, 0.5]),
    ),
)


@pytest.fixture(scope="module")
def walk() -> MarketTimeline:
    return walk_timeline(1200, 11)


# ----------------------------------------------------------------------------------------------- API


def test_check_env_passes_for_spot_and_perp(walk: MarketTimeline) -> None:
    for venue in ({"kind": "spot"}, {"kind": "perp", "leverage": 10}):
        env = TradingEnv(walk, EnvConfig(episode_steps=50, venue=venue))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unbounded Box is deliberate: the state has no fixed range
            check_env(env, skip_render_check=True)
        assert env.observation_space.shape == (walk.layout.size,)
        assert env.action_space.n == 3


def test_observation_is_the_gather_at_the_current_step_with_the_agent_features(walk: MarketTimeline) -> None:
    from market.features import gather

    env = TradingEnv(walk, EnvConfig(episode_steps=20, random_start=False, start_step=100))
    obs, info = env.reset(seed=0)
    env.step(BUY)
    obs, _, _, _, info = env.step(HOLD)
    assert info["step"] == 102
    expected = gather(walk, np.array([102]), info["agent"][None, :])[0]
    np.testing.assert_array_equal(obs, expected)
    agent = dict(zip(AGENT_FEATURES, info["agent"], strict=True))
    assert agent["position"] == 1.0
    assert agent["entry_rel"] == pytest.approx(np.log(walk.base_close[102] / info["entry_price"]), rel=1e-5)
    assert agent["log_time_in_trade"] == pytest.approx(np.log1p(2), rel=1e-6)
    assert agent["episode_log_return"] == pytest.approx(np.log(info["equity"] / 10_000.0), rel=1e-5, abs=1e-7)
    assert agent["fees_paid_frac"] == pytest.approx(info["fees"] / 10_000.0, rel=1e-6)


def test_stepping_a_finished_episode_or_a_bad_action_raises(walk: MarketTimeline) -> None:
    env = TradingEnv(walk, EnvConfig(episode_steps=2))
    env.reset(seed=1)
    with pytest.raises(ValueError, match="action must be"):
        env.step(3)
    env.step(HOLD)
    _, _, _, truncated, _ = env.step(HOLD)
    assert truncated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(HOLD)


def test_bad_timelines_and_configs_are_named_errors() -> None:
    close, high, low = random_walk(300, 2)
    timeline = price_timeline(close, high, low)
    with pytest.raises(ConfigError, match="start_step"):
        TradingEnv(timeline, EnvConfig(start_step=299))
    bad = np.array(close)
    bad[7] = np.nan
    from dataclasses import replace

    with pytest.raises(DataError, match=r"base_close\[7\]"):
        TradingEnv(replace(timeline, base_close=bad))
    with pytest.raises(DataError, match="spread"):
        TradingEnv(timeline, spread=np.ones(5))
    for make in (lambda **kw: TradingEnv(timeline, **kw), lambda **kw: VectorTradingEnv(timeline, 2, **kw)):
        with pytest.raises(TypeError, match="spred"):  # a misspelt input is refused, never silently ignored
            make(spred=np.ones(300))
    with pytest.raises(ValueError, match="leverage"):
        EnvConfig(venue={"kind": "perp", "leverage": 126})
    with pytest.raises(ValueError, match="spot"):
        EnvConfig(venue={"kind": "spot", "leverage": 2})


def test_seeded_random_starts_repeat_and_fixed_starts_are_fixed(walk: MarketTimeline) -> None:
    env = TradingEnv(walk, EnvConfig(episode_steps=100))
    starts = [env.reset(seed=s)[1]["step"] for s in range(8)]
    assert starts == [env.reset(seed=s)[1]["step"] for s in range(8)]
    assert len(set(starts)) > 1
    assert all(0 <= s <= walk.n_steps - 1 - 100 for s in starts)
    fixed = TradingEnv(walk, EnvConfig(random_start=False, start_step=40))
    assert {fixed.reset(seed=s)[1]["step"] for s in range(4)} == {40}


def test_truncates_after_episode_steps_and_at_the_end_of_data(walk: MarketTimeline) -> None:
    env = TradingEnv(walk, EnvConfig(episode_steps=7, random_start=False, start_step=10))
    out = run(env, [HOLD] * 20)
    assert len(out) == 8 and out[-1][3] and not out[-1][2]
    assert out[-1][4]["step"] == 17
    env = TradingEnv(walk, EnvConfig(episode_steps=500, random_start=False, start_step=walk.n_steps - 5))
    out = run(env, [HOLD] * 20)
    assert len(out) == 5 and out[-1][3] and out[-1][4]["step"] == walk.n_steps - 1


# ---------------------------------------------------------------------------------------- accounting


def _check_accounting(out: list[tuple], venue: dict, fee: float, initial: float = 10_000.0) -> None:
    fills_fees = 0.0
    log_sum = 0.0
    max_leverage = venue.get("leverage", 1.0) * venue.get("position_fraction", 1.0)
    mm = 0.005
    for _, reward, _, _, info in out:
        price = info["price"]
        assert info["equity"] == pytest.approx(info["cash"] + info["position"] * price, rel=1e-12, abs=1e-9)
        for fill in info["fills"]:
            assert fill["fee"] == pytest.approx(fill["qty"] * fill["price"] * fee, rel=1e-12)
            fills_fees += fill["notional"] * fee
            if fill["leg"] == "open" and info["position"] != 0:
                # Right after an opening fill the position is fraction x leverage of equity, never more.
                equity_at_fill = info["cash"] + info["step_funding"] + info["position"] * fill["price"]
                leverage = abs(info["position"]) * fill["price"] / equity_at_fill
                assert leverage <= max_leverage * (1 + 1e-12) <= 125.0 * (1 + 1e-12)
                if venue.get("position_fraction", 1.0) == 1.0:
                    assert leverage == pytest.approx(max_leverage, rel=1e-9)
        assert info["fees"] == pytest.approx(fills_fees, rel=1e-12, abs=1e-12)
        if venue["kind"] == "spot":
            assert info["position"] >= 0.0
            assert info["cash"] >= -1e-9 * initial
            assert info["leverage"] <= 1.0 + 1e-9
        elif not info["liquidated"] and info["position"] != 0:
            # Between fills leverage may drift up with losses, never past the maintenance margin's limit.
            assert info["leverage"] < 1.0 / mm
        # The base term is the step's log equity change; the reward is it clipped to the configured bound
        # (1.0), which a 125x wick can exceed: the sum of the base terms is what telescopes.
        base = info["reward_terms"]["base"]
        assert reward == pytest.approx(float(np.clip(base, -1.0, 1.0)), abs=1e-12)
        log_sum += base
    last = out[-1][4]
    # a liquidation leaves nothing (the margin goes to the exchange): the log change is floored like the reward's
    expected = log_equity_change(np.array([initial]), np.array([last["equity"]]))[0]
    assert log_sum == pytest.approx(expected, abs=1e-9)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(venue=VENUES, seed=st.integers(0, 10_000), hold_bias=st.floats(0.0, 0.9))
def test_equity_is_cash_plus_position_and_fees_are_fill_notional_times_rate(
    walk: MarketTimeline, venue: dict, seed: int, hold_bias: float
) -> None:
    config = EnvConfig(episode_steps=150, venue=venue, ruin_fraction=0.0)
    rng = np.random.default_rng(seed)
    actions = np.where(rng.random(150) < hold_bias, HOLD, rng.integers(0, 3, 150))
    out = run(TradingEnv(walk, config), actions, seed=seed)
    _check_accounting(out, venue, config.venue.fee)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(venue=VENUES, seed=st.integers(0, 10_000))
def test_an_all_hold_episode_ends_with_the_starting_equity(walk: MarketTimeline, venue: dict, seed: int) -> None:
    out = run(TradingEnv(walk, EnvConfig(episode_steps=600, venue=venue)), [HOLD] * 600, seed=seed)
    assert out[-1][3]
    assert all(step[4]["equity"] == 10_000.0 for step in out)
    assert sum(step[1] for step in out) == 0.0
    assert out[-1][4]["fees"] == 0.0 and out[-1][4]["funding"] == 0.0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), slip=st.sampled_from([0.0, 1.0, 5.0]), close_at_end=st.booleans())
def test_spot_buy_and_hold_return_is_its_closed_form(
    walk: MarketTimeline, seed: int, slip: float, close_at_end: bool
) -> None:
    config = EnvConfig(episode_steps=300, venue={"slippage_bps": slip}, close_at_end=close_at_end)
    out = run(TradingEnv(walk, config), [BUY] * 300, seed=seed)
    start, end = out[0][4]["step"], out[-1][4]["step"]
    p0, p1, f, s = walk.base_close[start], walk.base_close[end], 0.001, slip * 1e-4
    # Buy N = E / (1 + f) of notional at p0 (1 + s): equity_end = E p1 / (p0 (1 + s) (1 + f)); closing at
    # the end sells at p1 (1 - s) and pays f again.
    expected = p1 / (p0 * (1 + s) * (1 + f)) - 1
    if close_at_end:
        expected = (1 - s) * (1 - f) * p1 / (p0 * (1 + s) * (1 + f)) - 1
    assert out[-1][4]["equity"] / 10_000.0 - 1 == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert out[-1][4]["trades"] == 1
    assert (out[-1][4]["position"] == 0.0) == close_at_end


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), leverage=st.sampled_from([1.0, 2.0, 5.0]), short=st.booleans())
def test_perp_hold_return_is_its_closed_form_with_funding(
    walk: MarketTimeline, seed: int, leverage: float, short: bool
) -> None:
    config = EnvConfig(episode_steps=1000, venue={"kind": "perp", "leverage": leverage, "slippage_bps": 2.0})
    out = run(TradingEnv(walk, config), [SELL if short else BUY] * 1000, seed=seed)
    if out[-1][2]:
        return  # liquidated or ruined: covered by the liquidation tests
    start = out[0][4]["step"]
    d = -1.0 if short else 1.0
    f, s, rate = 0.0005, 2e-4, 0.0001
    p0 = walk.base_close[start] * (1 + d * s)
    notional = 10_000.0 / (1 / leverage + f)
    qty = d * notional / p0
    cash = 10_000.0 - qty * p0 - notional * f
    times = walk.step_time_ms
    funding_steps = 0
    for _, _, _, _, info in out[1:]:
        t = info["step"]
        if times[t] // (8 * 3_600_000) > times[t - 1] // (8 * 3_600_000):
            cash -= qty * walk.base_close[t] * rate
            funding_steps += 1
        assert info["equity"] == pytest.approx(cash + qty * walk.base_close[t], rel=1e-10)
    assert (out[-1][4]["funding"] != 0.0) == (funding_steps > 0)
    assert "configured 0.0100% per 8h" in out[-1][4]["funding_source"]


def test_perp_liquidation_triggers_on_a_wick_that_closes_back_inside() -> None:
    close = np.full(40, 3000.0)
    low = close.copy()
    low[21] = 3000.0 * (1 - 0.0495)  # a wick of -4.95% in the bar ending at step 21, closing at 3000
    timeline = price_timeline(close, close, low)
    config = EnvConfig(
        episode_steps=30, random_start=False, start_step=5, venue={"kind": "perp", "leverage": 20, "slippage_bps": 0}
    )
    env = TradingEnv(timeline, config)
    out = run(env, [BUY] + [HOLD] * 30)
    # 20x long from 3000: notional N = E / (1/20 + f); equity at p is E - N f + N (p / 3000 - 1), equal to the
    # maintenance margin 0.005 N p / 3000 at p = 3000 (1 - (1/20 - ... )): about -4.5%, inside the wick.
    e, f, mm = 10_000.0, 0.0005, 0.005
    n = e / (1 / 20 + f)
    qty = n / 3000.0
    cash = e - n - n * f
    p_liq = -cash / (qty * (1 - mm))
    assert timeline.base_low[21] < p_liq < timeline.base_close[21]
    last = out[-1]
    assert last[2] and last[4]["liquidated"] and last[4]["step"] == 21
    assert len(out) == 1 + 21 - 5
    (fill,) = last[4]["fills"]
    assert fill["leg"] == "forced" and fill["side"] == "sell"
    assert fill["price"] == pytest.approx(p_liq, rel=1e-12)
    assert last[4]["equity"] == 0.0  # the margin left goes to the exchange's insurance fund
    assert last[4]["margin_lost"] == pytest.approx(mm * qty * p_liq - f * qty * p_liq, rel=1e-9)
    assert last[4]["position"] == 0.0
    # The same wick at 5x does not reach the liquidation price.
    safe = TradingEnv(timeline, config.model_copy(update={"venue": config.venue.model_copy(update={"leverage": 5.0})}))
    out = run(safe, [BUY] + [HOLD] * 30)
    assert not any(step[4]["liquidated"] for step in out) and out[-1][3]


def test_short_is_liquidated_on_a_high_wick_and_spot_never_shorts() -> None:
    close = np.full(40, 3000.0)
    high = close.copy()
    high[15] = 3000.0 * 1.2
    timeline = price_timeline(close, high, close)
    config = EnvConfig(episode_steps=30, random_start=False, start_step=5, venue={"kind": "perp", "leverage": 10})
    out = run(TradingEnv(timeline, config), [SELL] * 30)
    assert out[-1][4]["liquidated"] and out[-1][4]["step"] == 15 and out[-1][4]["fills"][0]["side"] == "buy"
    spot = run(TradingEnv(timeline, EnvConfig(episode_steps=30, random_start=False, start_step=5)), [SELL] * 30)
    assert all(step[4]["position"] == 0.0 and not step[4]["fills"] for step in spot)


def test_ruin_terminates_when_equity_falls_below_its_fraction() -> None:
    close = 3000.0 * np.exp(-0.01 * np.arange(100))
    timeline = price_timeline(close)
    env = TradingEnv(timeline, EnvConfig(episode_steps=90, random_start=False, ruin_fraction=0.8))
    out = run(env, [BUY] * 90)
    assert out[-1][2] and not out[-1][4]["liquidated"]
    assert out[-1][4]["equity"] < 8000.0 <= out[-2][4]["equity"]


def test_fills_use_half_the_spread_when_a_spread_series_is_given(walk: MarketTimeline) -> None:
    spread = np.full(walk.n_steps, 0.5)
    env = TradingEnv(walk, EnvConfig(episode_steps=5, random_start=False, start_step=50), spread=spread)
    out = run(env, [BUY, SELL])
    assert out[1][4]["fills"][0]["price"] == walk.base_close[50] + 0.25
    assert out[2][4]["fills"][0]["price"] == walk.base_close[51] - 0.25


def test_funding_follows_a_timeline_funding_series() -> None:
    close, high, low = random_walk(1000, 3)
    rates = np.zeros(1000)
    rates[480] = 0.001  # 08:00 UTC falls in the bar ending at step 480
    timeline = price_timeline(close, high, low, meta={"funding_rate": rates})
    config = EnvConfig(episode_steps=900, random_start=False, venue={"kind": "perp", "leverage": 2})
    out = run(TradingEnv(timeline, config), [BUY] * 900)
    charged = [(s[4]["step"], s[4]["step_funding"]) for s in out if s[4]["step_funding"] != 0.0]
    assert [t for t, _ in charged] == [480]
    assert charged[0][1] == pytest.approx(out[480][4]["position"] * close[480] * 0.001, rel=1e-12)
    assert out[-1][4]["funding_source"] == "funding series from the timeline"


# ------------------------------------------------------------------------------------------ causality


def _perturb_after(close: np.ndarray, high: np.ndarray, low: np.ndarray, cut: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    c, h, lo = close.copy(), high.copy(), low.copy()
    k = slice(cut + 1, None)
    factor = np.exp(rng.normal(0, 0.02, c.shape[0] - cut - 1))
    c[k] *= factor
    h[k] = c[k] * 1.01
    lo[k] = c[k] * 0.97
    return c, h, lo


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    t=st.integers(30, 140),
    venue=VENUES,
    shaping=st.booleans(),
)
def test_what_step_returns_after_acting_at_t_ignores_everything_after_t_plus_1(
    seed: int, t: int, venue: dict, shaping: bool
) -> None:
    close, high, low = random_walk(220, seed)
    reward = SHAPING if shaping else {}
    config = EnvConfig(
        episode_steps=200, random_start=False, start_step=10, venue=venue, reward=reward, ruin_fraction=0.0
    )
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, 200)
    signal = np.tanh(rng.normal(size=220))
    cut = t + 1
    c2, h2, l2 = _perturb_after(close, high, low, cut, seed + 1)
    signal2 = signal.copy()
    signal2[cut + 1 :] = -signal2[cut + 1 :]
    a = run(TradingEnv(price_timeline(close, high, low), config, cnn_signal=signal), actions[: t - 10 + 1])
    b = run(TradingEnv(price_timeline(c2, h2, l2), config, cnn_signal=signal2), actions[: t - 10 + 1])
    assert_same_returns(a, b)
    if not (a[-1][2] or a[-1][3]):
        assert a[-1][4]["step"] == cut
        # ... and the comparison can fail: one step further, the perturbed data shows.
        env_a = TradingEnv(price_timeline(close, high, low), config, cnn_signal=signal)
        env_b = TradingEnv(price_timeline(c2, h2, l2), config, cnn_signal=signal2)
        more_a = run(env_a, actions[: t - 10 + 2])
        more_b = run(env_b, actions[: t - 10 + 2])
        assert not np.array_equal(more_a[-1][0], more_b[-1][0])


# -------------------------------------------------------------------------------------- vectorised


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(venue=VENUES, seed=st.integers(0, 10_000), k=st.integers(1, 6), close_at_end=st.booleans())
def test_vector_env_equals_k_single_envs_on_the_same_actions_and_seeds(
    walk: MarketTimeline, venue: dict, seed: int, k: int, close_at_end: bool
) -> None:
    config = EnvConfig(
        episode_steps=40,
        venue=venue,
        close_at_end=close_at_end,
        ruin_fraction=0.5,
        reward={"prediction_weight": 0.01, "pivot_weight": 0.01, "frequency_weight": 0.1, "max_trades_per_min": 0.3},
    )
    n_steps = 130
    actions = np.random.default_rng(seed).integers(0, 3, (n_steps, k))
    vec = VectorTradingEnv(walk, k, config)
    obs_v, info_v = vec.reset(seed=seed)
    singles = [TradingEnv(walk, config) for _ in range(k)]
    first = [env.reset(seed=seed + i) for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs_v, np.stack([o for o, _ in first]))
    finished = 0
    for step in range(n_steps):
        obs_v, r_v, te_v, tr_v, info_v = vec.step(actions[step])
        for i, env in enumerate(singles):
            obs, r, te, tr, info = env.step(int(actions[step, i]))
            assert r_v[i] == r and te_v[i] == te and tr_v[i] == tr
            assert info_v["equity"][i] == info["equity"] and info_v["position"][i] == info["position"]
            assert info_v["fees"][i] == info["fees"] and info_v["funding"][i] == info["funding"]
            legs = [(f["leg"], f["price"], f["qty"], f["fee"]) for f in info["fills"]]
            legs_v = [
                (LEGS[j], info_v["fill_price"][i, j], abs(info_v["fill_qty"][i, j]), info_v["fill_fee"][i, j])
                for j in range(3)
                if info_v["fill_qty"][i, j] != 0
            ]
            assert legs == legs_v
            if te or tr:
                finished += 1
                np.testing.assert_array_equal(info_v["final_obs"][i], obs)
                assert info_v["final_step"][i] == info["step"]
                obs, info = env.reset()
                assert info_v["step"][i] == info["step"]
            np.testing.assert_array_equal(obs_v[i], obs)
    assert finished >= k  # every env went through at least one autoreset


def test_vector_env_observe_false_keeps_the_books_and_skips_observations(walk: MarketTimeline) -> None:
    config = EnvConfig(episode_steps=30)
    a = VectorTradingEnv(walk, 3, config)
    b = VectorTradingEnv(walk, 3, config, observe=False)
    _, ia = a.reset(seed=5)
    obs_b, ib = b.reset(seed=5)
    assert obs_b is None
    for acts in np.random.default_rng(0).integers(0, 3, (50, 3)):
        _, ra, *_, ia = a.step(acts)
        obs_b, rb, *_, ib = b.step(acts)
        assert obs_b is None
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(ia["equity"], ib["equity"])
