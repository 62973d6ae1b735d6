"""The sensitivity learner: it finds the confidence above which the main policy's signal pays, its rewards add up
to the net PnL of the trades it let through, and it decides on nothing after the step it decides at.

The markets here are synthetic test fixtures (seeded numpy), traded through the real env and venue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from market.env import EnvConfig, VectorTradingEnv
from market.errors import ConfigError, DataError
from market.layout import StateConfig
from market.timeline import MarketTimeline
from market.timeline_builder import MarketData, build_timeline
from market.trade_outcomes import OUTCOME_FEATURES, TradeLedger
from market.venue import BUY, HOLD, SELL, VenueConfig
from policies.sensitivity import (
    STATE_FEATURES,
    SensitivityConfig,
    SensitivityGate,
    change_confidence,
    load_gate,
    save_gate,
)
from tests.market.test_env import bars_from

#: The learner's batches are tiny: on a shared CPU, more intra-op threads only wait on each other.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

MINUTE = 60_000
#: 2025-01-01 08:00 UTC is a funding time; paths start an hour before it so perp episodes cross one.
START_MS = 1_735_718_400_000 - 60 * MINUTE
EQUITY = 10_000.0

QFn = Callable[[int, float], np.ndarray]


def closes_timeline(close: np.ndarray, spread: float = 0.002) -> MarketTimeline:
    """A ``tiny``-profile timeline (the real builder) of 1m bars closing at ``close`` (synthetic), each bar's
    extremes ``spread`` beyond its open and close."""
    opens = np.r_[close[0], close[:-1]]
    high = np.maximum(opens, close) * (1 + spread)
    low = np.minimum(opens, close) * (1 - spread)
    bars = bars_from(close, high, low, start_ms=START_MS)
    ref = bars.copy()
    for key in ("open", "high", "low", "close", "vwap"):
        ref[key] = 20.0 * bars[key]
    data = MarketData(traded_bars={"1m": bars}, reference_bars={"1m": ref}, synthetic=True, source="test fixture")
    return build_timeline(data, StateConfig(profile="tiny"))


def run_episode(
    timeline: MarketTimeline,
    venue: VenueConfig,
    gate: SensitivityGate,
    q_fn: QFn,
    *,
    on_step: Callable[[int], None] | None = None,
) -> tuple[list[tuple[int, int, int]], dict]:
    """Trade one episode over the whole timeline with every main-policy action passed through ``gate``.

    Returns the (step, level in force, action sent) of every step and the last step's infos.
    """
    close = np.asarray(timeline.base_close)
    config = EnvConfig(
        venue=venue,
        episode_steps=timeline.n_steps - 1,
        random_start=False,
        initial_equity=EQUITY,
        ruin_fraction=0.0,
        close_at_end=True,
    )
    env = VectorTradingEnv(timeline, 1, config, observe=False)
    _, info = env.reset(seed=0)
    log: list[tuple[int, int, int]] = []
    margin_lost = 0.0
    while True:
        t = int(info["step"][0])
        if on_step is not None:
            on_step(t)
        gate.observe_step(float(close[t]))
        position = float(info["position"][0])
        action = gate.filter(q_fn(t, position), position)
        log.append((t, gate.level, action))
        _, _, terminated, truncated, info = env.step(np.array([action]))
        lost = float(info["margin_lost"][0]) - margin_lost
        margin_lost += lost
        gate.observe_fill(
            info["fill_qty"][0], info["fill_price"][0], info["fill_fee"][0], info["step_funding"][0], lost
        )
        if terminated[0] or truncated[0]:
            gate.end_episode()
            return log, info


# ----- the confidence rule and the filter -----


def test_confidence_is_the_gap_between_the_best_change_and_the_best_way_to_keep_the_position() -> None:
    q = np.array([0.3, 0.5, 0.1])
    assert change_confidence(q, 0, "perp") == (SELL, pytest.approx(0.4))  # best side over HOLD
    assert change_confidence(q, 0, "spot") == (BUY, pytest.approx(0.3 - 0.5))  # SELL keeps a spot account flat
    assert change_confidence(q, 1, "spot") == (SELL, pytest.approx(0.5 - 0.3))  # exit over max(BUY, HOLD)
    assert change_confidence(q, -1, "perp") == (BUY, pytest.approx(0.3 - 0.5))


def test_filter_opens_at_the_open_threshold_and_closes_at_the_close_threshold() -> None:
    config = SensitivityConfig(levels=((0.2, 0.1), (0.6, 0.3)), initial_level=1, epsilon_start=0.0, epsilon_end=0.0)
    gate = SensitivityGate(config, kind="perp", initial_equity=EQUITY, device="cpu")
    gate.observe_step(100.0)
    gate.filter(np.zeros(3), 0.0)  # the first flat step chooses a level (greedy here)
    open_, close = gate.thresholds
    assert gate.filter(np.array([open_, -1.0, 0.0]), 0.0) == BUY
    assert gate.filter(np.array([open_ - 1e-6, -1.0, 0.0]), 0.0) == HOLD
    assert gate.filter(np.array([-1.0, open_ + 0.5, 0.0]), 0.0) == SELL
    assert gate.filter(np.array([0.0, close, 0.0]), 1.0) == SELL
    assert gate.filter(np.array([0.0, close - 1e-6, 0.0]), 1.0) == HOLD
    assert gate.filter(np.array([close, 0.0, 0.0]), -1.0) == BUY
    # The main policy preferring to keep its position is never overridden into a trade.
    assert gate.filter(np.array([1.0, 0.0, 0.5]), 1.0) == HOLD
    assert gate.confidence == pytest.approx(-1.0)  # SELL's gap below BUY: the confidence it read
    # Held back: the first step (a tie, BUY first) and the two just under a threshold, where the greedy action
    # was the change refused; not the last, where the greedy action kept the position.
    assert gate.held_back == 3


def test_bad_inputs_are_refused_with_the_value() -> None:
    gate = SensitivityGate(SensitivityConfig(), kind="spot", device="cpu")
    with pytest.raises(DataError, match="3 finite numbers"):
        gate.filter(np.array([0.0, np.nan, 0.0]), 0.0)
    with pytest.raises(DataError, match="3 finite numbers"):
        gate.filter(np.zeros(4), 0.0)
    with pytest.raises(DataError, match="cannot be short"):
        gate.filter(np.zeros(3), -1.0)
    with pytest.raises(DataError, match="price"):
        gate.observe_step(float("inf"))
    with pytest.raises(ConfigError, match="kind"):
        SensitivityGate(SensitivityConfig(), kind="margin", device="cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"levels": ((0.1, 0.0), (0.1, 0.0))}, r"levels\[1\] open threshold 0.1 must exceed"),
        ({"levels": ((0.0, 0.0), (0.1, -1.0))}, r"levels\[1\] close threshold must be finite and >= 0"),
        ({"levels": ((0.0, 0.0),)}, "needs 2 to 16 levels"),
        ({"initial_level": 5}, "initial_level 5"),
        ({"epsilon_start": 0.1, "epsilon_end": 0.5}, "epsilon_end 0.5 exceeds"),
        ({"device": "tpu"}, "device must be auto, cpu or cuda"),
        ({"volatility_halflives": (50.0, 10.0)}, "volatility_halflives"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_config_errors_name_the_key_and_the_value(update: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        SensitivityConfig(**update)


def test_config_is_off_by_default_with_five_levels() -> None:
    config = SensitivityConfig()
    assert config.enabled is False
    assert len(config.levels) == 5
    assert len(STATE_FEATURES) == 16


# ----- the trade ledger -----


def test_ledger_splits_a_fill_that_crosses_zero_and_carries_funding_on_the_open_trade() -> None:
    ledger = TradeLedger(1_000.0)
    assert ledger.fill(0, 1.0, 100.0, 0.1) == []
    ledger.charge_funding(0.05)
    closed = ledger.fill(3, -3.0, 110.0, 0.3)  # closes 1 and opens a 2 short with the rest
    assert len(closed) == 1
    trade = closed[0]
    assert trade.direction == 1 and trade.holding_steps == 3
    assert trade.net_pnl == pytest.approx(10.0 - 0.1 - 0.1 - 0.05)
    assert ledger.qty == pytest.approx(-2.0)
    (short,) = ledger.fill(5, 2.0, 105.0, 0.2)
    assert short.direction == -1 and short.net_pnl == pytest.approx(2 * 5.0 - 0.2 - 0.2)
    assert ledger.realised_equity == pytest.approx(1_000.0 + trade.net_pnl + short.net_pnl)
    ledger.charge_funding(1.0)
    assert ledger.unattributed_funding == 1.0
    features = ledger.outcome_features(window=20, return_unit=0.01, holding_unit=10)
    assert features.shape == (len(OUTCOME_FEATURES),)
    assert features[0] == pytest.approx(short.net_return / 0.01, rel=1e-5)  # the latest trade first
    twin = TradeLedger(1.0)
    twin.load_state_dict(ledger.state_dict())
    assert np.array_equal(twin.outcome_features(20, 0.01, 10), features)
    with pytest.raises(DataError, match="not a valid fill"):
        ledger.fill(6, 1.0, -5.0, 0.0)


# ----- gate 1: it settles on the level whose open threshold is the confidence where the signal starts to pay -----

C_STAR = 0.5
LEVELS = ((0.1, 0.05), (0.3, 0.15), (0.5, 0.25), (0.7, 0.35), (0.9, 0.45))
C_STAR_LEVEL = int(np.argmin([abs(o - C_STAR) for o, _ in LEVELS]))


def threshold_market(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic test fixture: closes and the main policy's BUY confidence per step (NaN where it has no signal).

    Half the steps carry a signal whose confidence is uniform in [0, 1]. At or above ``C_STAR`` the next bar
    rises 1% (the signal is right); below it the next bar moves 0.3% up or down by a coin flip, which a round
    trip's 0.2% of fees turns into a loss. Other steps drift by noise.
    """
    rng = np.random.default_rng(seed)
    signal = np.where(rng.random(n) < 0.5, rng.random(n), np.nan)
    coin = np.where(rng.random(n) < 0.5, 0.003, -0.003)
    noise = rng.normal(0.0, 0.0005, n)
    move = np.where(np.isnan(signal), noise, np.where(signal >= C_STAR, 0.01, coin))
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(np.log1p(move[:-1]))]))
    return close, signal


def signal_policy(signal: np.ndarray) -> QFn:
    """The main policy of the fixture: BUY at the signal's confidence when flat, exit one bar later."""

    def q(t: int, position: float) -> np.ndarray:
        if position > 0:
            return np.array([0.0, 1.0, 0.0])
        c = signal[t]
        return np.array([-0.5, -1.0, 0.0]) if np.isnan(c) else np.array([c, -1.0, 0.0])

    return q


LEARN_CONFIG = SensitivityConfig(
    enabled=True,
    levels=LEVELS,
    max_wait_steps=5,
    epsilon_decisions=500,
    learn_starts=64,
    target_sync_every=50,
    lr=3e-3,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learner_settles_on_the_level_whose_open_threshold_matches_the_informative_confidence(seed: int) -> None:
    train_steps, eval_steps = 4_000, 1_500
    close, signal = threshold_market(train_steps + eval_steps, seed)
    timeline = closes_timeline(close)
    venue = VenueConfig(kind="spot", taker_fee=0.001, maker_fee=0.001, slippage_bps=1.0)
    gate = SensitivityGate(LEARN_CONFIG, kind="spot", initial_equity=EQUITY, seed=seed, device="cpu")

    def freeze(t: int) -> None:
        if t == train_steps:
            gate.training = False

    run_episode(timeline, venue, gate, signal_policy(signal), on_step=freeze)
    settled = [d.level for d in gate.decisions if d.step > train_steps]
    counts = Counter(settled)
    level, share = counts.most_common(1)[0][0], counts.most_common(1)[0][1] / len(settled)
    print(f"seed {seed}: settled on level {level} ({share:.0%} of {len(settled)} greedy decisions), counts {counts}")
    assert len(settled) > 100
    assert level == C_STAR_LEVEL
    assert share >= 0.6  # a clear majority of the greedy choices (one level in five at random)


# ----- gate 2: the rewards add up to the net PnL of the trades it let through -----


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["spot", "perp"]),
    leverage=st.sampled_from([1.0, 5.0, 40.0]),
    vol=st.sampled_from([0.001, 0.01]),
)
def test_rewards_telescope_to_the_net_pnl_of_the_trades_it_let_through(
    seed: int, kind: str, leverage: float, vol: float
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(80, 200))
    close = 3000.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    q_path = rng.normal(0.0, 1.0, (n, 3))
    venue = VenueConfig(kind=kind, leverage=1.0 if kind == "spot" else leverage, funding_rate_8h=0.001)
    config = SensitivityConfig(
        levels=((0.0, 0.0), (0.25, 0.1), (0.5, 0.25), (1.0, 0.5), (2.0, 1.0)),
        max_wait_steps=4,
        learn_starts=4,
        batch_size=8,
    )
    gate = SensitivityGate(config, kind=kind, initial_equity=EQUITY, seed=seed, device="cpu")
    _, info = run_episode(closes_timeline(close), venue, gate, lambda t, _: q_path[t])
    cash_change = float(info["cash"][0]) - EQUITY  # flat at the end: equity is cash
    assert float(info["position"][0]) == 0.0
    assert sum(d.reward for d in gate.decisions) == pytest.approx(cash_change, abs=1e-9 * EQUITY)
    assert gate.total_reward == pytest.approx(cash_change, abs=1e-9 * EQUITY)
    assert gate.ledger.unattributed_funding == 0.0


# ----- gate 3: no look-ahead -----


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["spot", "perp"]), cut_frac=st.floats(0.2, 0.8))
def test_decisions_up_to_a_step_ignore_every_price_and_q_value_after_it(seed: int, kind: str, cut_frac: float) -> None:
    rng = np.random.default_rng(seed)
    n = 160
    cut = int(cut_frac * n)
    close = 3000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    q_path = rng.normal(0.0, 1.0, (n, 3))
    future = close.copy()
    future[cut + 1 :] *= np.exp(np.cumsum(rng.normal(0.0, 0.02, n - cut - 1)))
    q_future = q_path.copy()
    q_future[cut + 1 :] = rng.normal(0.0, 3.0, (n - cut - 1, 3))
    venue = VenueConfig(kind=kind, leverage=1.0 if kind == "spot" else 3.0)
    config = SensitivityConfig(
        levels=((0.0, 0.0), (0.25, 0.1), (0.5, 0.25), (1.0, 0.5), (2.0, 1.0)),
        max_wait_steps=3,
        learn_starts=2,
        batch_size=4,
        epsilon_decisions=20,
    )

    def decisions(path: np.ndarray, qs: np.ndarray) -> tuple[list, list]:
        gate = SensitivityGate(config, kind=kind, initial_equity=EQUITY, seed=seed, device="cpu")
        log, _ = run_episode(closes_timeline(path), venue, gate, lambda t, _: qs[t])
        chosen = [(d.step, d.level) for d in gate.decisions if d.step <= cut]
        return [row for row in log if row[0] <= cut], chosen

    base_log, base_chosen = decisions(close, q_path)
    moved_log, moved_chosen = decisions(future, q_future)
    assert moved_log == base_log
    assert moved_chosen == base_chosen
    assert len(base_log) == cut + 1


# ----- checkpoints -----


def test_a_restored_gate_decides_exactly_as_the_one_it_was_saved_from() -> None:
    close, signal = threshold_market(1_200, 7)
    timeline = closes_timeline(close)
    venue = VenueConfig(kind="spot")
    config = LEARN_CONFIG.model_copy(update={"learn_starts": 16, "epsilon_decisions": 100})
    gate = SensitivityGate(config, kind="spot", initial_equity=EQUITY, seed=3, device="cpu")
    run_episode(timeline, venue, gate, signal_policy(signal))
    state = gate.state_dict()
    twin = SensitivityGate(config, kind="spot", initial_equity=EQUITY, seed=99, device="cpu")
    twin.load_state_dict(state)
    assert np.array_equal(twin.features(), gate.features())
    assert np.allclose(twin.level_values(), gate.level_values())
    log_a, _ = run_episode(timeline, venue, gate, signal_policy(signal))
    log_b, _ = run_episode(timeline, venue, twin, signal_policy(signal))
    assert log_a == log_b
    assert [d.reward for d in gate.decisions][-20:] == [d.reward for d in twin.decisions][-20:]

    other = SensitivityGate(config.model_copy(update={"levels": LEVELS[:4]}), kind="spot", device="cpu")
    with pytest.raises(ConfigError, match="levels"):
        other.load_state_dict(state)
    with pytest.raises(ConfigError, match="venue kind"):
        SensitivityGate(config, kind="perp", device="cpu").load_state_dict(state)
    with pytest.raises(DataError, match="format"):
        twin.load_state_dict({"format": 0})
    broken = dict(state, online={"net.0.weight": torch.zeros(2, 2)})
    with pytest.raises(DataError, match="sensitivity checkpoint"):
        twin.load_state_dict(broken)


def test_a_gate_file_restores_the_gate_and_a_foreign_or_missing_one_is_refused_naming_it(tmp_path) -> None:
    config = SensitivityConfig(levels=((0.2, 0.1), (0.6, 0.3)), device="cpu")
    gate = SensitivityGate(config, kind="spot", initial_equity=EQUITY, seed=3, device="cpu")
    gate.observe_step(100.0)
    gate.filter(np.array([1.0, 0.0, 0.0]), 0.0)
    path = save_gate(gate, tmp_path / "gate" / "sensitivity.pt")
    twin = SensitivityGate(config, kind="spot", initial_equity=EQUITY, seed=99, device="cpu")
    load_gate(twin, path)
    assert twin.summary() == gate.summary() and np.allclose(twin.level_values(), gate.level_values())
    with pytest.raises(ConfigError, match=r"sensitivity\.pt: .*venue kind"):
        load_gate(SensitivityGate(config, kind="perp", device="cpu"), path)
    with pytest.raises(DataError, match=r"missing\.pt: unreadable sensitivity checkpoint"):
        load_gate(twin, tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"junk\.pt: unreadable sensitivity checkpoint"):
        load_gate(twin, tmp_path / "junk.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_a_gate_trained_on_cuda_restores_on_the_cpu_with_the_same_level_values() -> None:
    close, signal = threshold_market(600, 11)
    timeline = closes_timeline(close)
    config = LEARN_CONFIG.model_copy(update={"learn_starts": 16, "device": "cuda"})
    gate = SensitivityGate(config, kind="spot", initial_equity=EQUITY, seed=5)
    assert gate.device.type == "cuda"
    run_episode(timeline, VenueConfig(kind="spot"), gate, signal_policy(signal))
    assert gate.updates > 0
    twin = SensitivityGate(config, kind="spot", initial_equity=EQUITY, seed=5, device="cpu")
    twin.load_state_dict(gate.state_dict())
    assert np.allclose(twin.level_values(), gate.level_values(), atol=1e-5)
