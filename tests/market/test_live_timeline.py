"""Tests of market/live_timeline.py: the live state of every step equals ``gather`` on the batch timeline of the
same trades (the real ETH/BTC captures through the real stream, and random markets cut at random), bounded
memory, late and out-of-order trades."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.errors import DataError
from market.features import gather
from market.layout import AGENT_FEATURES, StateConfig
from market.live_timeline import LiveTimeline, LiveTimelineConfig
from market.records import TRADE_DTYPE
from market.timeline_builder import MarketData, build_timeline
from tests.captures import BTC, ETH, SMALL_STATE, merged, replay_into_live, replay_stream

#: The parity profile: the default one's components and timeframes with windows the test can afford.
PARITY_STATE = StateConfig(
    tick_window=50, bar_window=30, reference_window=30, traded_timeframes=("1s", "1m", "1h", "1d"), cnn_hidden=8
)
TOLERANCE = 1e-6


def component_of(layout, column: int) -> str:
    return next(c.name for c in layout.components if c.offset <= column < c.offset + c.size)


# ------------------------------------------------------------------------------------- the parity gate


@pytest.mark.timeout(180)
def test_live_state_equals_batch_gather_on_every_step_of_the_real_capture_replayed_through_the_stream(
    capture, warm_bars, tmp_path
) -> None:
    eth, btc = capture[ETH], capture[BTC]
    batch = build_timeline(MarketData(traded_trades=eth, reference_trades=btc, traded_bars=warm_bars), PARITY_STATE)
    stream = replay_stream(tmp_path / "stream", packet_ticks=50)
    live = LiveTimeline(PARITY_STATE, warm_bars=warm_bars)
    rng = np.random.default_rng(20240809)
    hidden_size = PARITY_STATE.cnn_hidden
    pred_size = PARITY_STATE.cnn_predictions
    checked, worst, where = 0, 0.0, ""
    for k in replay_into_live(stream, live, eth, btc, rng):
        assert live.step_time_ms == int(batch.step_time_ms[k])
        agent = rng.normal(size=len(AGENT_FEATURES)).astype(np.float32)
        hidden = rng.normal(size=hidden_size).astype(np.float32)
        pred = rng.normal(size=pred_size).astype(np.float32)
        ours = live.state(agent, hidden, pred)
        theirs = gather(
            batch,
            np.array([k]),
            agent[None],
            hidden[None].repeat(batch.n_steps, 0),
            pred[None].repeat(batch.n_steps, 0),
        )[0]
        diff = np.abs(ours.astype(np.float64) - theirs)
        if diff.max() > worst:
            worst = float(diff.max())
            where = f"step {k}, {component_of(batch.layout, int(diff.argmax()))}"
        checked += 1
    assert worst <= TOLERANCE, f"live state differs from the batch gather by {worst} at {where}"
    # every step but the last closes live (the last waits for a trade after it, which never comes)
    assert checked == batch.n_steps - 1 == 650
    stats = live.stats()
    assert stats.trades.taken == {"traded": eth.size, "reference": btc.size}
    assert stats.trades.late == {"traded": 0, "reference": 0}
    # the windows were really filled: every slot of the hourly and daily windows (real klines before the
    # capture), the ticks and the seconds; the minutes hold the capture's 10 closed ones and the forming one
    last = gather(batch, np.array([batch.n_steps - 2]), np.zeros((1, 6), np.float32))[0]
    for name, filled in (
        ("traded_1h", 30),
        ("traded_1d", 30),
        ("traded_ticks", 50),
        ("traded_1s", 30),
        ("reference_1s", 30),
        ("traded_1m", 11),
    ):
        comp = batch.layout[name]
        slots = last[comp.slice].reshape(comp.features, comp.rows)
        assert np.count_nonzero(np.abs(slots).sum(axis=0)) == filled, name


@pytest.mark.timeout(120)
def test_bounded_history_keeps_memory_flat_and_every_part_but_regime_equal_to_batch(capture) -> None:
    state = StateConfig(
        tick_window=40, bar_window=20, reference_window=20, traded_timeframes=("1s", "1m"), cnn_hidden=0
    )
    eth = capture[ETH][capture[ETH]["time_ms"] < capture[ETH]["time_ms"][0] + 240_000]
    btc = capture[BTC][capture[BTC]["time_ms"] <= eth["time_ms"][-1]]
    batch = build_timeline(MarketData(traded_trades=eth, reference_trades=btc), state)
    live = LiveTimeline(state, config=LiveTimelineConfig(regime_history_steps=90))
    trades, is_btc = merged(eth, btc)
    regime = batch.layout["regime"].slice
    kept_trades = []
    for chunk in np.array_split(np.arange(trades.size), 400):
        live.feed(traded=trades[chunk][~is_btc[chunk]], reference=trades[chunk][is_btc[chunk]])
        while live.next_step():
            k = live.steps - 1
            ours = live.state()
            theirs = gather(batch, np.array([k]), np.zeros((1, 6), np.float32))[0]
            rest = np.ones(ours.size, bool)
            rest[regime] = False
            np.testing.assert_allclose(ours[rest], theirs[rest], rtol=0, atol=TOLERANCE, err_msg=f"step {k}")
            if k < 90:  # while the history fits, the regime row is the batch row too
                np.testing.assert_allclose(ours[regime], theirs[regime], rtol=0, atol=TOLERANCE)
            stats = live.stats()
            assert stats.kept_base_bars <= 90
            kept_trades.append(stats.kept_trades)
    assert live.steps > 200
    # the tick buffer holds the window, its context and the current step's trades, not the session
    assert max(kept_trades) < 600 < eth.size


# ------------------------------------------------------------------------------- random markets, any cut


@st.composite
def two_markets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """ETH and BTC trades over ~20-100 s (quiet seconds, bursts, either market first) and batch cut sizes."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    t0 = 1_723_161_600_000 + draw(st.integers(-90_000, 90_000))
    span = draw(st.integers(20_000, 100_000))
    out = []
    for price0, offset in ((2_700.0, draw(st.integers(0, 4_000))), (61_000.0, draw(st.integers(0, 4_000)))):
        n = draw(st.integers(3, 250))
        times = np.sort(rng.integers(t0 + offset, t0 + span, size=n))
        if draw(st.booleans()):  # a burst: many trades in the same millisecond
            times[n // 2 : n // 2 + 5] = times[n // 2]
            times = np.sort(times)
        trades = np.zeros(n, dtype=TRADE_DTYPE)
        trades["time_ms"] = times
        trades["trade_id"] = np.arange(n) + 1_000
        trades["price"] = price0 * np.exp(np.cumsum(rng.normal(0, 3e-4, n)))
        trades["qty"] = rng.exponential(0.5, n)
        trades["is_buyer_maker"] = rng.random(n) < 0.5
        out.append(trades)
    eth, btc = out
    cuts = draw(st.lists(st.integers(1, 60), min_size=1, max_size=40))
    return eth, btc, cuts


#: The replay tests' small state with windows that random markets of a few minutes fill, and a Williams part.
SMALL = SMALL_STATE.model_copy(update={"tick_window": 6, "bar_window": 5, "reference_window": 4, "williams": 250})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=two_markets(), wait=st.sampled_from([0, 1_500, 60_000]))
@pytest.mark.timeout(120)
def test_any_batching_of_any_two_markets_gives_the_batch_state_at_every_closed_step(data, wait) -> None:
    eth, btc, cuts = data
    try:
        batch = build_timeline(MarketData(traded_trades=eth, reference_trades=btc), SMALL)
    except DataError:
        return  # one market ends before the other starts: no common span, nothing to compare
    live = LiveTimeline(SMALL, config=LiveTimelineConfig(close_wait_ms=wait))
    trades, is_btc = merged(eth, btc)
    at, i = 0, 0
    while at < trades.size:
        n = cuts[i % len(cuts)]
        i += 1
        part, b = trades[at : at + n], is_btc[at : at + n]
        at += n
        live.feed(traded=part[~b], reference=part[b])
        while live.next_step():
            k = live.steps - 1
            if k >= batch.n_steps:
                # ETH went quiet and BTC ran on past the wait: live steps go on by the empty-interval rule,
                # the batch of these trades ends at ETH's last trade
                assert live.step_time_ms > eth["time_ms"][-1]
                continue
            assert live.step_time_ms == int(batch.step_time_ms[k])
            agent = np.full(len(AGENT_FEATURES), 0.25, np.float32)
            np.testing.assert_allclose(
                live.state(agent), gather(batch, np.array([k]), agent[None])[0], rtol=0, atol=TOLERANCE
            )
    # every step before both markets' last trades has closed (and none after the data)
    closable = int(np.count_nonzero(batch.step_time_ms < min(eth["time_ms"][-1], btc["time_ms"][-1])))
    assert closable <= live.steps
    assert live.stats().trades.late == {"traded": 0, "reference": 0}


# ---------------------------------------------------------------------------------- edges and refusals


def _trades(times: list[int], price: float, first_id: int = 1) -> np.ndarray:
    out = np.zeros(len(times), dtype=TRADE_DTYPE)
    out["time_ms"] = times
    out["trade_id"] = np.arange(len(times)) + first_id
    out["price"] = price
    out["qty"] = 1.0
    return out


@pytest.mark.timeout(30)
def test_a_quiet_market_lets_steps_close_after_the_wait_and_its_late_trade_is_dropped_and_counted() -> None:
    live = LiveTimeline(SMALL, config=LiveTimelineConfig(close_wait_ms=2_000))
    t0 = 1_723_161_600_000
    live.feed(traded=_trades([t0 + 10], 2_700.0), reference=_trades([t0 + 20], 61_000.0))
    assert live.ready_steps() == 0  # nothing after the first second yet
    live.feed(traded=_trades([t0 + 1_100, t0 + 2_500], 2_701.0, first_id=2))
    assert live.ready_steps() == 0  # BTC has no trade after 999 ms and ETH is not 2 s past it
    live.feed(traded=_trades([t0 + 3_200], 2_702.0, first_id=4))
    assert live.ready_steps() == 1 and live.next_step() and not live.next_step()
    assert live.step_time_ms == t0 + 999
    live.feed(reference=_trades([t0 + 900, t0 + 1_500], 61_010.0, first_id=2))  # 900 ms: a step already closed
    stats = live.stats()
    assert stats.trades.late["reference"] == 1 and stats.trades.taken["reference"] == 2


@pytest.mark.timeout(30)
def test_trades_out_of_time_order_duplicates_and_wrong_records_are_handled_as_said() -> None:
    live = LiveTimeline(SMALL)
    t0 = 1_723_161_600_000
    with pytest.raises(DataError, match="traded trades out of time order at row 1"):
        live.feed(traded=_trades([t0 + 5, t0 + 1], 2_700.0))
    with pytest.raises(DataError, match="TRADE_DTYPE"):
        live.feed(reference=np.zeros(3))
    live.feed(traded=_trades([t0 + 5], 2_700.0), reference=_trades([t0 + 6], 61_000.0))
    live.feed(traded=_trades([t0 + 5, t0 + 7], 2_700.0))  # id 1 again, then id 2
    assert live.stats().trades.duplicates["traded"] == 1
    with pytest.raises(DataError, match="before the last one taken"):
        live.feed(traded=_trades([t0 + 1], 2_700.0, first_id=10))
    with pytest.raises(DataError, match="no step has closed yet"):
        live.state()
    live.reset()
    assert live.stats().trades.taken == {"traded": 0, "reference": 0} and live.resets == 1
