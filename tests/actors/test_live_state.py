"""Tests of actors/live_state.py: the served live state is the batch gather of the same trades with its CNN part
from a real (untrained) CNN and its agent part from the paper account, failures say so, and the real Ray actor
serves it from the stream actor with a paper actor attached."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from actors.live_state import (
    LiveStateActor,
    LiveStateBuilder,
    LiveStateConfig,
    LiveStateUnavailableError,
    PredictorCnn,
)
from actors.messages import TickBatch
from actors.paper import PaperConfig, PaperTradingActor, ScriptedPolicy
from actors.stream import StreamConfig, UnifiedStreamActor
from market.features import gather
from market.layout import AGENT_FEATURES, StateConfig, build_layout
from market.live_timeline import LiveTimeline
from market.timeline_builder import MarketData, build_timeline
from market.venue import BUY
from tests.captures import BTC, ETH, load_captures, merged, trades_of
from tests.waiting import wait_until

STATE = StateConfig(tick_window=20, bar_window=12, reference_window=12, traded_timeframes=("1s", "1m"), cnn_hidden=16)


@pytest.fixture(scope="module")
def capture(shared_data: Path) -> dict[str, np.ndarray]:
    """The first four minutes of the real ETHUSDT and BTCUSDT captures."""
    return trades_of(load_captures(shared_data), 240_000)


def untrained_cnn():
    """A real CNN of the layout with untrained weights (seeded): what the CNN part is made of, not a trained one."""
    import torch

    from policies.cnn import CnnConfig, MultiTimeframeCNN
    from policies.cnn_inference import CnnPredictor

    torch.manual_seed(0)
    model = MultiTimeframeCNN(build_layout(STATE), CnnConfig(hidden=16, channels=4))
    return CnnPredictor(model, "untrained-test", torch.device("cpu"))


def chunks(capture: dict[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    trades, is_btc = merged(capture[ETH], capture[BTC])
    return [{ETH: trades[c][~is_btc[c]], BTC: trades[c][is_btc[c]]} for c in np.array_split(np.arange(trades.size), n)]


@pytest.mark.timeout(120)
def test_the_built_state_is_the_batch_gather_with_the_cnn_part_of_a_real_cnn_and_the_given_agent(capture) -> None:
    predictor = untrained_cnn()
    builder = LiveStateBuilder(LiveStateConfig(state=STATE), PredictorCnn(predictor), clock=lambda: 42)
    batch = build_timeline(MarketData(traded_trades=capture[ETH], reference_trades=capture[BTC]), STATE)
    agent = np.array([1.0, 0.001, 0.01, 2.0, -0.002, 0.001], np.float32)
    checked = 0
    since = 0
    for part in chunks(capture, 60):
        closed = builder.on_trades(part)
        records = builder.states_since(since)
        assert len(records.states) == closed and records.complete  # one record per step closed, each once
        assert [r.seq for r in records.states] == list(range(since + 1, since + closed + 1))
        since = records.seq
        for r in records.states:  # every step's record: the batch bar of the step, the market part of the state
            k = r.step
            assert (r.close, r.step_time_ms) == (float(batch.base_close[k]), int(batch.step_time_ms[k]))
            assert r.agent_source == "flat" and np.isnan(r.half_spread)  # no book tickers fed
        if closed:
            builds = builder.builds
            live = builder.build(agent, agent_step_time_ms=7)
            assert builder.builds == builds  # the agent part goes into the built state: nothing is rebuilt
            k = live.step
            market = gather(batch, np.array([k]), np.zeros((1, len(AGENT_FEATURES)), np.float32))
            answer = predictor.predict(market)
            hidden = np.repeat(answer.hidden, batch.n_steps, 0)
            pred = np.repeat(answer.predictions, batch.n_steps, 0)
            expected = gather(batch, np.array([k]), agent[None], hidden, pred)[0]
            np.testing.assert_allclose(live.state, expected, rtol=0, atol=1e-6)
            assert live.step_time_ms == int(batch.step_time_ms[k])
            checked += 1
    assert checked > 30
    assert builder.builds == builder.timeline.steps == batch.n_steps - 1  # one build per step (the last is open)
    assert (live.cnn_source, live.cnn_version, live.agent_source, live.agent_step_time_ms) == (
        "local",
        "untrained-test",
        "paper",
        7,
    )
    assert np.count_nonzero(live.state[batch.layout["cnn_hidden"].slice]) > 0
    assert live.built_ms == 42 and not live.synthetic and live.symbol == ETH
    assert builder.latest_state(ETH) is live


class _DownCnn:
    """A CNN source whose service is down."""

    name = "deployment"

    def infer(self, states: np.ndarray):
        raise ConnectionError("cnn app is not running")


@pytest.mark.timeout(60)
def test_a_failing_cnn_leaves_zeros_and_says_why_and_unknown_symbols_or_no_step_are_refused(capture) -> None:
    builder = LiveStateBuilder(LiveStateConfig(state=STATE), _DownCnn())
    with pytest.raises(LiveStateUnavailableError, match="no live state yet"):
        builder.latest_state(ETH)
    with pytest.raises(LiveStateUnavailableError, match="no step has closed yet"):
        builder.build()
    for part in chunks(capture, 20)[:5]:
        builder.on_trades(part)
    live = builder.build()
    assert live.cnn_source == "zeros" and live.cnn_version is None and "cnn app is not running" in live.cnn_error
    assert not live.state[build_layout(STATE)["cnn_hidden"].slice].any()
    assert live.agent_source == "flat" and not live.agent.any()
    with pytest.raises(LiveStateUnavailableError, match="serves the traded symbol 'ETHUSDT'"):
        builder.latest_state(BTC)
    steps = builder.timeline.steps
    builder.on_trades(chunks(capture, 20)[5], complete=False)  # trades were missing: a new live session
    assert builder.timeline.resets == 1 and builder.timeline.steps < steps
    assert builder.status()["cnn_errors"] == builder.builds > 1  # each step's CNN call failed, each counted


@pytest.mark.timeout(180)
def test_the_actor_serves_the_batch_state_of_the_stream_with_the_paper_accounts_agent_features(
    ray_session, capture, tmp_path
) -> None:
    ray = ray_session
    tag = uuid.uuid4().hex[:8]
    names = {k: f"test-{k}-{tag}" for k in ("stream", "paper", "live")}
    state = STATE.model_copy(update={"cnn_hidden": 0, "cnn_predictions": 0})
    stream = UnifiedStreamActor.options(name=names["stream"]).remote(
        StreamConfig(storage_dir=tmp_path / "stream", tick_cache_s=60)
    )
    ray.get(stream.ready.remote(), timeout=60)
    first_step = int(capture[ETH]["time_ms"][0]) // 1000 * 1000 + 999
    paper_cfg = PaperConfig(
        state=state, storage_dir=tmp_path / "paper", live_state_actor=names["live"], poll_interval_ms=50
    )
    paper_cfg = paper_cfg.model_copy(update={"max_step_lag_ms": None})
    paper = PaperTradingActor.options(name=names["paper"]).remote(paper_cfg, ScriptedPolicy({first_step: BUY}))
    live_cfg = LiveStateConfig(
        state=state, stream_actor=names["stream"], paper_actor=names["paper"], poll_interval_ms=50
    )
    live = LiveStateActor.options(name=names["live"]).remote(live_cfg)
    ray.get([paper.ready.remote(), live.ready.remote()], timeout=60)
    for seq, part in enumerate(chunks(capture, 25)):
        ray.get(stream.ingest.remote(TickBatch("replay", seq, part)))
    reference = LiveTimeline(state)
    reference.feed(traded=capture[ETH], reference=capture[BTC])
    reference.catch_up()

    def served():
        got = ray.get(live.latest_state.remote(ETH), timeout=10)
        done = got.step_time_ms == reference.step_time_ms and got.agent_source == "paper"
        return got if done else None

    got = wait_until(served, what="the live state of the last step with the paper account's features")
    batch = build_timeline(MarketData(traded_trades=capture[ETH], reference_trades=capture[BTC]), state)
    expected = gather(batch, np.array([got.step]), got.agent[None])[0]
    np.testing.assert_allclose(got.state, expected, rtol=0, atol=1e-6)
    assert got.agent[0] == 1.0  # the paper account is long
    assert got.cnn_source == "zeros" and got.cnn_version is None
    assert got.agent_step_time_ms > first_step
    with pytest.raises(LiveStateUnavailableError):
        ray.get(live.latest_state.remote(BTC), timeout=10)
    status = ray.get(live.status.remote(), timeout=10)
    assert status["steps"] == got.step + 1 and status["last_error"] == ""
    for actor in (live, paper, stream):
        ray.kill(actor)
