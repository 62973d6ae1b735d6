"""The demo's warm start keeps live == batch: the recorded 1h klines ``cluster.demo_live`` picks for the real
captures, given to the live state builder the demo's live state actor runs, give on every step of the captures the
state ``gather`` reads from the batch timeline built over the same trades and the same warm bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.live_state import LiveStateBuilder, LiveStateConfig
from cluster.config import ExperimentConfig
from cluster.data.history import load_history
from cluster.demo_live import DemoSizes, demo_config, replay_start_ms, warm_bars_before
from cluster.exchange.capture import load_capture
from market.features import gather
from market.layout import AGENT_FEATURES
from market.timeline_builder import MarketData, build_timeline
from tests.captures import BTC, ETH, all_capture_paths, load_captures, merged, trades_of

TOLERANCE = 1e-6


@pytest.mark.timeout(300)
def test_the_demos_warm_start_on_the_real_capture_gives_the_batch_gather_on_every_step(
    shared_data: Path, tmp_path: Path
) -> None:
    config = ExperimentConfig.model_validate({"data": {"shared_dir": str(shared_data)}})
    demo = demo_config(config, DemoSizes.of(smoke=True), tmp_path, None)
    history = load_history(demo.data, demo.symbols)
    # where the demo's replay of the captures starts, read from the replay source the exchange would serve
    start_ms = replay_start_ms(load_capture(all_capture_paths(shared_data)))
    warm, source = warm_bars_before(history, demo, start_ms)
    assert set(warm) == {"1h"} and source.startswith("recorded klines ETHUSDT-1h"), source
    assert warm["1h"].size >= demo.state.bar_window and int(warm["1h"]["close_time_ms"][-1]) < start_ms

    eth, btc = (trades_of(load_captures(shared_data))[s] for s in (ETH, BTC))
    batch = build_timeline(
        MarketData(traded_trades=eth, reference_trades=btc, traded_bars=warm), demo.state, demo.indicators
    )
    builder = LiveStateBuilder(
        LiveStateConfig(
            symbols=demo.symbols, state=demo.state, indicators=demo.indicators, warm_start_from_stream=False
        )
    )
    assert builder.set_warm_bars(warm)
    trades, is_btc = merged(eth, btc)
    rng = np.random.default_rng(20240809)
    at, checked, worst = 0, 0, 0.0
    zeros = np.zeros((1, len(AGENT_FEATURES)), np.float32)
    while at < trades.size:
        n = int(rng.integers(1, 2_000))
        part, btc_part = trades[at : at + n], is_btc[at : at + n]
        at += n
        closed = builder.on_trades({ETH: part[~btc_part], BTC: part[btc_part]})
        for live in list(builder.history)[len(builder.history) - closed :] if closed else ():
            assert live.step_time_ms == int(batch.step_time_ms[live.step])
            theirs = gather(batch, np.array([live.step]), zeros)[0]
            worst = max(worst, float(np.abs(live.state.astype(np.float64) - theirs).max()))
            checked += 1
    # every step but the last closes live (the last waits for a trade after it, which never comes)
    assert checked == batch.n_steps - 1 and worst <= TOLERANCE, (checked, batch.n_steps, worst)
    # the hourly window is really warm: every slot holds a recorded bar, none is padding
    comp = batch.layout["traded_1h"]
    slots = builder.latest.state[comp.slice].reshape(comp.features, comp.rows)
    assert np.count_nonzero(np.abs(slots).sum(axis=0)) == comp.rows
