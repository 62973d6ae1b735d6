"""Tests of actors/paper.py on the real ETH/BTC capture replayed through the stream and the one live state: the env's
books for the same actions (with and without the bookTicker spread and the decision latency), every fill within
each risk limit, the kill switch flattening at once, restarts that restore the account exactly (plain and under a
real Ray ``ray.kill(..., no_restart=False)``), refusals of a foreign account file, and the policy service's key."""

from __future__ import annotations

import asyncio
import http.server
import io
import threading
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from actors.live_state import LiveStateBuilder, LiveStateConfig
from actors.messages import TickBatch
from actors.paper import (
    API_KEY_ENV,
    API_KEY_HEADER,
    FILL_DTYPE,
    REASONS,
    CheckpointPolicy,
    HttpPolicy,
    PaperConfig,
    PaperTrader,
    PaperTradingActor,
    ScriptedPolicy,
)
from actors.risk import RiskConfig
from actors.stream import StreamConfig, UnifiedStream, UnifiedStreamActor
from actors.stream_consumer import StreamConsumer
from market.bars import ticks_to_bars
from market.env import EnvConfig, TradingEnv
from market.errors import ConfigError, DataError
from market.live_timeline import LiveTimeline
from market.timeline_builder import MarketData, build_timeline
from market.venue import BUY, CANCEL, HOLD, LEGS, POST_ASK, POST_BID, SELL, VenueConfig, half_spread_at
from policies.sensitivity import SensitivityConfig
from tests.captures import BTC, ETH, SMALL_STATE, load_captures, merged, sorted_books, trades_of
from tests.waiting import wait_until

MIDNIGHT_MS = 1_723_161_600_000  # 2024-08-09 00:00 UTC, inside the captures (a funding time)
#: A state the tests can afford (the scripted policy reads none, so its size only sets the timeline's work).
SMALL = SMALL_STATE
#: The venues of these tests fill at close[t] (latency 0) unless a test says otherwise.
PERP = VenueConfig(kind="perp", leverage=3.0, latency_ms=0)
SPOT = VenueConfig(latency_ms=0)
OPEN_LEG, CLOSE_LEG = LEGS.index("open"), LEGS.index("close")


@pytest.fixture(scope="module")
def recorded(shared_data: Path) -> dict[str, object]:
    """Real ETHUSDT and BTCUSDT captures of the recorded websocket streams (same 11 minutes)."""
    return load_captures(shared_data)


@pytest.fixture(scope="module")
def capture(recorded) -> dict[str, np.ndarray]:
    """Their trades."""
    return trades_of(recorded)


@pytest.fixture(scope="module")
def books(recorded) -> np.ndarray:
    """ETHUSDT's book tickers, in time order."""
    return sorted_books(recorded[ETH])


@pytest.fixture(scope="module")
def step_times(capture) -> np.ndarray:
    """Step times of the batch timeline of the capture."""
    return build_timeline(MarketData(traded_trades=capture[ETH], reference_trades=capture[BTC]), SMALL).step_time_ms


def paper_config(root: Path, venue: VenueConfig = PERP, risk: RiskConfig | None = None, **kw) -> PaperConfig:
    return PaperConfig(
        state=SMALL,
        venue=venue,
        risk=risk or RiskConfig(),
        storage_dir=root,
        max_step_lag_ms=None,
        recent_fills=5,
        **kw,
    )


class Replay:
    """The capture cut into random batches (1 to 600 trades of both markets in time order), ingested by a real
    stream, consumed by the one live state (``actors.stream_consumer``), whose records paper trading reads the way
    the paper actor does. ``books`` (the bookTicker stream) go to the live state with each batch."""

    def __init__(self, capture: dict[str, np.ndarray], root: Path, seed: int, books: np.ndarray | None = None) -> None:
        self.stream = UnifiedStream(StreamConfig(storage_dir=root, flush_interval_ms=10**12, tick_cache_s=60))
        self.consumer = StreamConsumer("live-state-test", ["ticks"])
        self.live = LiveStateBuilder(LiveStateConfig(state=SMALL))
        self.trades, self.is_btc = merged(capture[ETH], capture[BTC])
        self.books = books
        self.book_at = 0
        self.rng = np.random.default_rng(seed)
        self.at = 0
        self.live_seq = 0
        asyncio.run(self._poll())  # registers: the stream is empty yet

    async def _poll(self):
        return await self.consumer.poll(self.stream)

    def run(self, trader: PaperTrader, until_ms: int | None = None) -> None:
        """Feed batches to ``trader`` until the next trade is after ``until_ms`` (or the end)."""
        times = self.trades["time_ms"]
        while self.at < self.trades.size and (until_ms is None or times[self.at] <= until_ms):
            n = int(self.rng.integers(1, 600))
            part, b = self.trades[self.at : self.at + n], self.is_btc[self.at : self.at + n]
            self.at += n
            self.stream.ingest(TickBatch("replay", self.at, {ETH: part[~b], BTC: part[b]}))
            batch = asyncio.run(self._poll())
            quotes = {}
            if self.books is not None:
                end = int(np.searchsorted(self.books["time_ms"], int(part["time_ms"][-1]), side="right"))
                quotes = {ETH: self.books[self.book_at : end]}
                self.book_at = end
            self.live.on_trades(batch.trades, books=quotes, complete=batch.complete)
            reply = self.live.states_since(self.live_seq)
            self.live_seq = reply.seq
            cursor = {"since_seq": reply.seq, "live_epoch_ms": reply.epoch_ms}
            trader.on_states(reply.states, complete=reply.complete, cursor=cursor)


def script(step_times: np.ndarray, seed: int, p_trade: float = 0.08, scalper: bool = False) -> dict[int, int]:
    """Random actions per step (mostly HOLD), with a long held across midnight (a funding time); with ``scalper``,
    posts at the bid and ask and cancels too."""
    rng = np.random.default_rng(seed)
    n = step_times.size - 2  # the last closed step holds, so the env's last step is the paper's last act
    if scalper:
        p = [p_trade / 4, p_trade / 4, 1 - 2 * p_trade, p_trade / 2, p_trade / 2, p_trade / 2]
        actions = rng.choice([BUY, SELL, HOLD, POST_BID, POST_ASK, CANCEL], p=p, size=n)
    else:
        actions = rng.choice([BUY, SELL, HOLD], p=[p_trade / 2, p_trade / 2, 1 - p_trade], size=n)
    mid = int(np.searchsorted(step_times, MIDNIGHT_MS))
    actions[mid - 4] = BUY
    actions[mid - 3 : mid + 4] = HOLD
    return {int(step_times[k]): int(a) for k, a in enumerate(actions)}


def env_fills(info: dict) -> list[tuple]:
    return [(f["leg"], f["side"], f["price"], f["qty"], f["fee"]) for f in info["fills"]]


def paper_fills(rows: np.ndarray) -> list[tuple]:
    return [
        (LEGS[int(r["leg"])], "buy" if r["side"] > 0 else "sell", float(r["price"]), float(r["qty"]), float(r["fee"]))
        for r in rows
    ]


# ------------------------------------------------------------------------------------------- env parity


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("venue", "with_spread", "action_set"),
    [
        (SPOT, False, "market"),
        (PERP, False, "market"),
        (SPOT, True, "market"),
        (PERP, True, "market"),
        (VenueConfig(), True, "market"),  # the default decision latency: fills at the next bar's open
        (VenueConfig(kind="perp", leverage=3.0, filters="ETHUSDT"), True, "market"),  # with the exchange filters
        (VenueConfig(kind="perp", leverage=3.0, position_fraction=0.05), True, "scalper"),  # limit orders
    ],
    ids=[
        "spot",
        "perp",
        "spot-spread",
        "perp-spread",
        "spot-latency-spread",
        "perp-latency-spread-filters",
        "perp-latency-spread-scalper",
    ],
)
def test_paper_books_and_pnl_equal_the_envs_for_the_same_actions_on_the_same_trades(
    capture, books, step_times, tmp_path, venue, with_spread, action_set
) -> None:
    scalper = action_set == "scalper"
    actions = script(step_times, seed=7, p_trade=0.2 if scalper else 0.08, scalper=scalper)
    trader = PaperTrader(paper_config(tmp_path / "paper", venue, actions=action_set), ScriptedPolicy(actions))
    Replay(capture, tmp_path / "stream", seed=1, books=books if with_spread else None).run(trader)
    assert trader.steps == step_times.size - 1  # every step but the last one closed

    batch = build_timeline(MarketData(traded_trades=capture[ETH], reference_trades=capture[BTC]), SMALL)
    spread = 2.0 * half_spread_at(books, batch.step_time_ms) if with_spread else None
    base = ticks_to_bars(capture[ETH], "1s")
    at = np.searchsorted(base["close_time_ms"], batch.step_time_ms)
    env_cfg = EnvConfig(
        venue=venue,
        random_start=False,
        start_step=0,
        episode_steps=batch.n_steps - 1,
        ruin_fraction=0.0,
        actions=action_set,
    )
    env = TradingEnv(batch, env_cfg, spread=spread, base_open=base["open"][at], base_volume=base["volume"][at])
    _, info = env.reset(options={"start_step": 0})
    expected, infos = [], []
    for k in range(trader.steps - 1):
        _, _, terminated, truncated, info = env.step(actions.get(int(step_times[k]), HOLD))
        assert not (terminated or truncated)
        expected += env_fills(info)
        infos.append(info)

    got = trader.fills()
    assert len(expected) > 10
    assert paper_fills(got[got["reason"] != REASONS.index("kill_switch")]) == expected
    acc = trader.acc
    assert float(acc.cash[0]) == info["cash"]
    assert float(acc.qty[0]) == info["position"]
    assert float(acc.fees[0]) == info["fees"]
    assert float(acc.funding[0]) == info["funding"]
    assert int(acc.trades[0]) == info["trades"]
    assert trader.pnl()["total"] == info["equity"] - trader.equity0
    np.testing.assert_array_equal(trader.agent_features()["features"], info["agent"])
    assert trader.status()["fill_model"] == info["fill_model"] == venue.describe()
    if venue.kind == "perp":
        assert info["funding"] != 0.0  # the long held across 00:00 UTC paid funding, in both
    closes = batch.base_close[: trader.steps]
    buys = np.array([p for leg, side, p, *_ in expected if side == "buy"])
    if with_spread and venue.filters is None:  # the quoted spread is in the fills: no buy at a close, not all at 1 bp
        assert not np.isin(buys, closes).any()
        slip = venue.slippage_bps * 1e-4
        assert not np.isin(buys, closes * (1 + slip)).all()
    if venue.latency:  # after the latency, the fills come from the next bars' opens, not the closes
        assert not np.isin(buys, closes + 0.5 * np.nan_to_num(spread[: trader.steps])).all()
    if scalper:  # resting orders filled, passively, at the maker fee, and only where the next bar traded through
        maker = [(f, i["step"]) for i in infos for f in i["fills"] if f["maker"]]
        assert len(maker) >= 3
        for f, t in maker:
            assert f["fee"] == pytest.approx(f["qty"] * f["price"] * venue.maker_fee, rel=1e-12)
            assert batch.base_low[t] < f["price"] if f["side"] == "buy" else batch.base_high[t] > f["price"]
    if venue.filters is not None:  # quantities on the lot step, prices on the tick
        assert np.allclose(np.round(got["qty"] / 0.001), got["qty"] / 0.001, rtol=0, atol=1e-6)
        assert np.allclose(np.round(got["price"] / 0.01), got["price"] / 0.01, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ risk limits


def flips(step_times: np.ndarray, every: int = 3) -> dict[int, int]:
    """BUY and SELL in turn every ``every`` steps: an order each time."""
    return {int(t): (BUY if (k // every) % 2 == 0 else SELL) for k, t in enumerate(step_times) if k % every == 0}


def flipped_through_the_replay(capture, step_times: np.ndarray, root: Path, risk: RiskConfig, seed: int) -> PaperTrader:
    """A paper trader under ``risk`` whose policy flips every 3 steps, run over the whole replay (seeded batches)."""
    trader = PaperTrader(paper_config(root / "paper", risk=risk), ScriptedPolicy(flips(step_times)))
    Replay(capture, root / "stream", seed=seed).run(trader)
    return trader


@pytest.mark.timeout(120)
@pytest.mark.parametrize("limit", ["max_position", "max_leverage"])
def test_size_limits_refuse_every_open_beyond_them_and_cut_a_reversal_to_its_close(
    capture, step_times, tmp_path, limit
) -> None:
    root = tmp_path / "paper"
    replay = Replay(capture, tmp_path / "stream", seed=2)
    policy = ScriptedPolicy(flips(step_times, every=60))
    free = PaperTrader(paper_config(root), policy)
    replay.run(free, until_ms=int(step_times[15]))  # opened a long at step 0, no limit yet
    assert free.acc.qty[0] > 0
    size, before = float(free.acc.qty[0]), free.fills().size
    risk = RiskConfig(max_position=size / 2) if limit == "max_position" else RiskConfig(max_leverage=1.5)
    limited = PaperTrader(paper_config(root, risk=risk), policy)  # the same account, now with the limit
    replay.run(limited)
    new = limited.fills()[before:]
    # a reversal is cut to its close; a held position already past max_leverage is closed by a de-risking order
    closing = [CLOSE_LEG] if limit == "max_position" else [CLOSE_LEG, LEGS.index("forced")]
    assert new.size >= 1 and np.isin(new["leg"], closing).all() and (new["position_after"] == 0).all()
    assert limited.acc.qty[0] == 0 and limited.status()["risk"]["trips"][limit] > 5
    assert limited.policy_calls > 20


@pytest.mark.timeout(120)
def test_a_held_position_whose_leverage_drifts_past_the_limit_is_closed_by_a_de_risking_order(
    capture, step_times, tmp_path
) -> None:
    root = tmp_path / "paper"
    replay = Replay(capture, tmp_path / "stream", seed=2)
    free = PaperTrader(paper_config(root), ScriptedPolicy(flips(step_times, every=600)))
    replay.run(free, until_ms=int(step_times[15]))  # a long opened at step 0 and held, no limit yet
    assert free.acc.qty[0] > 0
    before = free.fills().size
    held = float(free.acc.leverage(free.last_close)[0])
    # the same account under a limit its held position already exceeds: no order of the policy's broke it
    limited = PaperTrader(paper_config(root, risk=RiskConfig(max_leverage=held * 0.9)), ScriptedPolicy({}))
    replay.run(limited, until_ms=int(step_times[60]))
    assert limited.steps > free.steps
    new = limited.fills()[before:]
    assert new.size >= 1 and (new["reason"] == REASONS.index("max_leverage")).all()
    assert (new["position_after"] == 0).all() and limited.acc.qty[0] == 0
    assert limited.status()["risk"]["trips"]["max_leverage"] == 1


@pytest.mark.timeout(120)
def test_the_daily_loss_closes_at_once_and_nothing_opens_again_that_utc_day(capture, step_times, tmp_path) -> None:
    trader = flipped_through_the_replay(capture, step_times, tmp_path, RiskConfig(max_daily_loss=5.0), seed=3)
    fills = trader.fills()
    day = fills["time_ms"] // 86_400_000
    forced = fills["reason"] == REASONS.index("max_daily_loss")
    assert set(day[forced].tolist()) == {MIDNIGHT_MS // 86_400_000 - 1, MIDNIGHT_MS // 86_400_000}  # both days
    for d in np.unique(day):
        tripped_at = fills["time_ms"][forced & (day == d)].min()
        opened = fills["time_ms"][(day == d) & (fills["leg"] == OPEN_LEG)]
        assert (opened < tripped_at).all() and opened.size == 1  # one open, then the lock
        # the forced close came at the first step where the loss passed the limit: fees of one open at 3x
        assert (fills["position_after"][forced & (day == d)] == 0).all()
    assert trader.status()["risk"]["trips"]["max_daily_loss"] >= 2


@pytest.mark.timeout(120)
def test_policy_orders_in_any_minute_stay_within_the_rate_limit(capture, step_times, tmp_path) -> None:
    trader = flipped_through_the_replay(capture, step_times, tmp_path, RiskConfig(max_orders_per_minute=3), seed=4)
    fills = trader.fills()
    orders = np.unique(fills["time_ms"][fills["reason"] == REASONS.index("policy")])
    assert orders.size >= 20
    for end in orders:
        assert np.count_nonzero((orders > end - 60_000) & (orders <= end)) <= 3
    assert trader.status()["risk"]["trips"]["max_orders_per_minute"] > 50


# -------------------------------------------------------------------------------- kill switch, restarts


@pytest.mark.timeout(120)
def test_the_kill_switch_flattens_at_the_last_step_and_nothing_trades_until_released(
    capture, step_times, tmp_path
) -> None:
    trader = PaperTrader(paper_config(tmp_path / "paper"), ScriptedPolicy(flips(step_times, every=7)))
    replay = Replay(capture, tmp_path / "stream", seed=5)
    replay.run(trader, until_ms=int(step_times[200]))
    assert trader.acc.qty[0] != 0
    last = trader.last_step_ms
    status = trader.kill("operator: test")
    assert status["position"] == 0.0 and status["kill_switch"]["engaged"] and not status["running"]
    killed = trader.fills()[-1]
    assert REASONS[int(killed["reason"])] == "kill_switch" and int(killed["time_ms"]) == last
    assert killed["position_after"] == 0
    assert status["kill_switch"]["at_ms"] == last and status["risk"]["trips"]["kill_switch"] == 1
    n = trader.fills().size
    replay.run(trader, until_ms=int(step_times[400]))
    assert trader.fills().size == n and trader.steps > 390  # steps go on, orders do not
    trader.release()
    replay.run(trader)
    assert trader.fills().size > n


@pytest.mark.timeout(120)
def test_a_restart_restores_the_account_exactly_and_loses_no_step(capture, step_times, tmp_path) -> None:
    actions = script(step_times, seed=11, p_trade=0.1)
    whole = PaperTrader(paper_config(tmp_path / "whole"), ScriptedPolicy(actions))
    Replay(capture, tmp_path / "stream-whole", seed=6).run(whole)

    root = tmp_path / "paper"
    replay = Replay(capture, tmp_path / "stream", seed=6)
    first = PaperTrader(paper_config(root), ScriptedPolicy(actions))
    replay.run(first, until_ms=int(step_times[330]))
    assert first.acc.qty[0] != 0
    before = first.status()
    restored = PaperTrader(paper_config(root), ScriptedPolicy(actions))  # the old one is gone: nothing in memory
    after = restored.status()
    for key in ("position", "entry_price", "cash", "equity", "pnl", "fees", "funding", "orders", "fills", "risk"):
        assert after[key] == before[key], key
    assert after["last_step_ms"] == before["last_step_ms"] and after["cursor"] == before["cursor"]
    np.testing.assert_array_equal(restored.fills(), first.fills())
    replay.run(restored)
    np.testing.assert_array_equal(restored.fills(), whole.fills())
    assert restored.pnl() == whole.pnl()


@pytest.mark.timeout(60)
def test_an_account_of_another_symbol_venue_or_a_corrupt_file_is_refused_by_name(tmp_path) -> None:
    root = tmp_path / "paper"
    trader = PaperTrader(paper_config(root), ScriptedPolicy({}))
    trader.save()
    with pytest.raises(ConfigError, match="account.json: venue is 'perp'"):
        PaperTrader(paper_config(root, VenueConfig()), ScriptedPolicy({}))
    (root / "account.json").write_bytes(b"{not json")
    with pytest.raises(DataError, match="account.json: unreadable paper account"):
        PaperTrader(paper_config(root), ScriptedPolicy({}))
    with pytest.raises(ConfigError, match="scripted action at 5 is 7"):
        ScriptedPolicy({5: 7})
    assert FILL_DTYPE.names[:3] == ("time_ms", "step", "leg")


@pytest.mark.timeout(120)
def test_every_paper_metric_is_recorded_with_the_catalogs_tags_and_the_status_values(
    ray_session, capture, step_times, tmp_path
) -> None:
    from actors.metrics import kept_gauges
    from actors.paper import _record_metrics

    risk = RiskConfig(max_orders_per_minute=2)
    trader = PaperTrader(paper_config(tmp_path / "paper", risk=risk), ScriptedPolicy(flips(step_times, every=4)))
    Replay(capture, tmp_path / "stream", seed=8).run(trader, until_ms=int(step_times[120]))
    trader.kill("metrics test")
    events = trader.drain_events()
    names = {name for name, _, _ in events}
    assert {"rayscalp_paper_fills", "rayscalp_paper_fees", "rayscalp_paper_risk_limit_trips"} <= names
    limits = {tags["limit"] for name, tags, _ in events if name == "rayscalp_paper_risk_limit_trips"}
    assert limits == {"max_orders_per_minute", "kill_switch"}
    _record_metrics(trader, events)  # raises on a name or tag set the catalog does not have
    status = trader.status()
    gauges = kept_gauges()
    assert gauges[("rayscalp_paper_equity", ())] == status["equity"]
    assert gauges[("rayscalp_paper_kill_switch", ())] == 1.0
    assert gauges[("rayscalp_paper_position", (("symbol", ETH),))] == 0.0
    assert gauges[("rayscalp_paper_pnl", (("kind", "realized"),))] == status["pnl"]["realized"]
    assert trader.drain_events() == []


# --------------------------------------------------------------------------------------- the Ray actor


@pytest.mark.timeout(180)
def test_the_actor_restarted_by_ray_kill_restores_positions_and_pnl_and_its_kill_switch_flattens(
    ray_session, capture, step_times, tmp_path
) -> None:
    from actors.live_state import LiveStateActor

    ray = ray_session
    tag = uuid.uuid4().hex[:8]
    stream_name, live_name, paper_name = f"test-stream-{tag}", f"test-live-{tag}", f"test-paper-{tag}"
    stream = UnifiedStreamActor.options(name=stream_name).remote(
        StreamConfig(storage_dir=tmp_path / "stream", tick_cache_s=60)
    )
    ray.get(stream.ready.remote(), timeout=60)
    live = LiveStateActor.options(name=live_name).remote(
        LiveStateConfig(state=SMALL, stream_actor=stream_name, poll_interval_ms=50, paper_actor=paper_name)
    )
    ray.get(live.ready.remote(), timeout=60)
    cfg = paper_config(tmp_path / "paper", live_state_actor=live_name, poll_interval_ms=50)
    actions = {int(t): BUY for t in step_times[:3]}  # a long from the first steps, held
    paper = PaperTradingActor.options(name=paper_name).remote(cfg, ScriptedPolicy(actions))
    ray.get(paper.ready.remote(), timeout=60)

    trades, is_btc = merged(capture[ETH], capture[BTC])
    half = trades.size // 2
    for seq, chunk in enumerate(np.array_split(np.arange(half), 30)):
        part, b = trades[chunk], is_btc[chunk]
        ray.get(stream.ingest.remote(TickBatch("replay", seq, {ETH: part[~b], BTC: part[b]})))
    reference = LiveTimeline(SMALL)
    reference.feed(traded=trades[:half][~is_btc[:half]], reference=trades[:half][is_btc[:half]])
    reference.catch_up()
    expected_last = reference.step_time_ms

    def caught_up() -> dict | None:
        status = ray.get(paper.status.remote(), timeout=10)
        return status if status["last_step_ms"] == expected_last else None

    before = wait_until(caught_up, what=f"paper to reach step {expected_last}")
    assert before["position"] > 0 and before["fills"] >= 1 and before["polls"] > 0

    ray.kill(paper, no_restart=False)

    def restarted() -> dict | None:
        status = caught_up()
        return status if status and status["pid"] != before["pid"] else None

    after = wait_until(restarted, what="the restarted paper actor")
    for key in ("position", "entry_price", "cash", "equity", "pnl", "fees", "orders", "fills", "risk", "cursor"):
        assert after[key] == before[key], key

    status = ray.get(paper.kill.remote("operator: test"), timeout=30)
    assert status["position"] == 0.0 and status["kill_switch"]["engaged"]
    assert status["recent_fills"][-1]["reason"] == "kill_switch"
    assert status["recent_fills"][-1]["time_ms"] == expected_last  # flat at the step it was at
    assert status["pnl"]["unrealized"] == 0.0 and status["pnl"]["total"] == status["equity"] - status["initial_equity"]
    ray.kill(paper)
    ray.kill(live)
    ray.kill(stream)


# ------------------------------------------------------------------------------ configs and the policy key


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 0.0])
def test_non_finite_or_non_positive_money_is_refused_by_key(tmp_path, value) -> None:
    with pytest.raises(ValidationError, match="initial_equity"):
        PaperConfig(initial_equity=value, storage_dir=tmp_path)
    with pytest.raises(ValidationError, match="initial_equity"):
        EnvConfig(initial_equity=value)
    with pytest.raises(ValidationError, match="slippage_bps"):
        VenueConfig(slippage_bps=float("nan"))


class _ActHandler(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        state = np.load(io.BytesIO(body), allow_pickle=False)
        type(self).seen.append({"key": self.headers.get(API_KEY_HEADER, ""), "n": str(state.size)})
        answer = orjson.dumps({"action_index": SELL, "model_version": "v-test"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.timeout(30)
def test_http_policy_sends_the_policy_services_key_from_its_environment_variable(monkeypatch) -> None:
    from serve.auth import API_KEY_HEADER as SERVED_HEADER
    from serve.auth import DEFAULT_API_KEY_ENV

    assert (API_KEY_ENV, API_KEY_HEADER) == (DEFAULT_API_KEY_ENV, SERVED_HEADER)  # the names the service reads
    server = http.server.HTTPServer(("127.0.0.1", 0), _ActHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        policy = HttpPolicy(f"http://127.0.0.1:{server.server_port}/v1/act")
        monkeypatch.delenv(API_KEY_ENV, raising=False)
        assert policy.act(np.zeros(7, np.float32), 0) == SELL
        monkeypatch.setenv(API_KEY_ENV, "s3cret-key")
        assert policy.act(np.zeros(7, np.float32), 0) == SELL
        assert _ActHandler.seen[-2:] == [{"key": "", "n": "7"}, {"key": "s3cret-key", "n": "7"}]
        assert policy.version == "v-test"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(120)
def test_the_kill_switch_cancels_a_resting_limit_order_and_nothing_fills_after_it(
    capture, books, step_times, tmp_path
) -> None:
    # bids that rest (a volume cap no 1s bar meets), posted every 10 steps
    venue = VenueConfig(position_fraction=0.01, resting_volume_fraction=1e-9)
    posts = {int(t): POST_BID for t in step_times[::10]}
    trader = PaperTrader(paper_config(tmp_path / "paper", venue, actions="scalper"), ScriptedPolicy(posts))
    replay = Replay(capture, tmp_path / "stream", seed=9, books=books)
    k = 0
    while trader.status()["resting_order"] is None:
        k += 5
        replay.run(trader, until_ms=int(step_times[k]))
    resting = trader.status()["resting_order"]
    assert resting["side"] == 1 and resting["price"] < trader.last_close and trader.acc.qty[0] == 0
    status = trader.kill("operator: test")
    assert status["resting_order"] is None and status["pending_order"] is None and status["position"] == 0.0
    restored = PaperTrader(paper_config(tmp_path / "paper", venue, actions="scalper"), ScriptedPolicy(posts))
    assert restored.acc.order_side[0] == 0  # persisted as cancelled
    replay.run(restored, until_ms=int(step_times[k + 300]))
    assert restored.fills().size == 0 and restored.acc.order_side[0] == 0 and restored.steps > k + 250


@pytest.mark.timeout(120)
def test_records_read_late_are_stale_and_not_acted_on_however_fresh_they_were_when_built(capture, tmp_path) -> None:
    live = LiveStateBuilder(LiveStateConfig(state=SMALL))
    start = int(capture[ETH]["time_ms"][0])
    for t in range(start, start + 120_000, 1_000):  # built as the trades came, one second at a time
        live.on_trades({s: a[(a["time_ms"] >= t) & (a["time_ms"] < t + 1_000)] for s, a in capture.items()})
    records = live.states_since(0).states
    assert len(records) > 100 and records[0].data_time_ms - records[0].step_time_ms < 5_000  # fresh when built
    cfg = paper_config(tmp_path / "paper").model_copy(update={"max_step_lag_ms": 5_000})
    trader = PaperTrader(cfg, ScriptedPolicy({}))
    trader.on_states(records)
    newest = max(r.data_time_ms for r in records)
    fresh = sum(newest - r.step_time_ms <= 5_000 for r in records)
    assert trader.steps == len(records) and trader.policy_calls == fresh
    assert trader.skipped_stale == len(records) - fresh
    assert 0 < fresh < 10


# ------------------------------------------------------------------------------- the sensitivity learner

GATE_LEVELS = ((0.0, 0.0), (0.3, 0.15), (0.6, 0.3), (1.0, 0.5), (1.5, 0.75))


def gate_config(root: Path, **kw) -> PaperConfig:
    sens = SensitivityConfig(
        enabled=True, levels=GATE_LEVELS, max_wait_steps=5, learn_starts=4, batch_size=8, device="cpu"
    )
    kw.setdefault("venue", SPOT)  # long or flat: every SELL from long is a way back to flat (a perp reverses)
    return paper_config(root, sensitivity=sens, recent_decisions=10_000, **kw)


@pytest.mark.timeout(240)
def test_with_the_sensitivity_learner_every_decision_has_its_level_and_no_open_is_sent_below_its_threshold(
    capture, step_times, tmp_path
) -> None:
    rng = np.random.default_rng(3)
    q = {int(t): rng.normal(0.0, 1.0, 3).tolist() for t in step_times}  # a recorded policy's answers
    actions = {t: int(np.argmax(v)) for t, v in q.items()}
    root = tmp_path / "paper"
    trader = PaperTrader(gate_config(root), ScriptedPolicy(actions, q_values=q))
    Replay(capture, tmp_path / "stream", seed=2).run(trader)
    decisions = list(trader.decisions)
    assert trader.policy_errors == 0 and len(decisions) == trader.policy_calls == trader.steps

    for d in decisions:
        assert d["thresholds"] == list(GATE_LEVELS[d["level"]]) and d["q_values"] == q[d["step_time_ms"]]
        assert d["policy_action"] == ("BUY", "SELL", "HOLD")[actions[d["step_time_ms"]]]
        threshold = d["thresholds"][0 if d["position"] == 0 else 1]
        # sent: the main policy's best position change when its confidence reaches the level's threshold, else HOLD
        assert (d["action"] != "HOLD") == (d["change_confidence"] >= threshold), d
    flat = [d for d in decisions if d["position"] == 0]
    opens = {d["step_time_ms"] for d in flat if d["action"] != "HOLD"}
    held = [d for d in flat if d["action"] == "HOLD" and d["policy_action"] != "HOLD"]
    assert opens and held and len({d["level"] for d in decisions}) >= 2

    # At the venue: every position the policy opened from flat was an order the gate let through.
    fills = trader.fills()
    policy = fills[fills["reason"] == REASONS.index("policy")]
    closing = set(policy["time_ms"][policy["leg"] == CLOSE_LEG].tolist())
    from_flat = {int(t) for t in policy["time_ms"][policy["leg"] == OPEN_LEG] if int(t) not in closing}
    assert from_flat and from_flat <= opens

    # The gate saw every fill and the funding: flattened, its realised equity is the account's.
    status = trader.kill("sensitivity test")
    gate = trader.gate
    assert gate is not None and status["position"] == 0.0
    assert gate.ledger.realised_equity == pytest.approx(status["equity"], abs=1e-9 * status["equity"])
    sens = status["sensitivity"]
    assert sens["enabled"] and sens["levels"] == [list(level) for level in GATE_LEVELS]
    assert sens["last_decision"] == decisions[-1] and sum(sens["level_counts"]) == sens["decisions"] >= 2
    assert sens["reward_sum"] == pytest.approx(sum(d.reward for d in gate.decisions))

    # A restart carries on with the same gate (saved beside the account).
    again = PaperTrader(gate_config(root), ScriptedPolicy(actions, q_values=q))
    assert again.gate is not None and again.gate.summary() == gate.summary()
    np.testing.assert_allclose(again.gate.level_values(), gate.level_values())


@pytest.mark.timeout(120)
def test_the_sensitivity_learner_refuses_a_policy_without_q_values_and_is_off_by_default(
    capture, step_times, tmp_path
) -> None:
    actions = script(step_times, seed=3, p_trade=0.3)
    trader = PaperTrader(gate_config(tmp_path / "paper"), ScriptedPolicy(actions))
    Replay(capture, tmp_path / "stream", seed=4).run(trader, until_ms=int(step_times[40]))
    assert trader.policy_calls > 30 and trader.policy_errors == trader.policy_calls and trader.fills().size == 0
    assert "answers no Q-values" in trader.status()["policy"]["last_error"]
    assert PaperTrader(paper_config(tmp_path / "off"), ScriptedPolicy({})).status()["sensitivity"] == {"enabled": False}
    with pytest.raises(ConfigError, match="sensitivity.enabled needs actions 'market'"):
        PaperTrader(gate_config(tmp_path / "scalper", actions="scalper"), ScriptedPolicy({}))


@pytest.mark.timeout(180)
def test_a_policy_checkpoints_q_values_go_through_the_gate_on_the_live_states(capture, step_times, tmp_path) -> None:
    import torch

    from market.layout import build_layout
    from policies.checkpoint import save_policy
    from policies.dqn import QNetwork, QNetworkConfig

    torch.manual_seed(0)
    net = QNetwork(build_layout(SMALL), QNetworkConfig(trunk=32, window_channels=4, vector_width=8)).eval()
    path = save_policy(tmp_path / "policy.pt", net, version="v-gate", updates=0, cnn_version=None)
    trader = PaperTrader(gate_config(tmp_path / "paper"), CheckpointPolicy(path))
    Replay(capture, tmp_path / "stream", seed=9).run(trader, until_ms=int(step_times[60]))
    decisions = list(trader.decisions)
    assert trader.policy_errors == 0 and len(decisions) == trader.steps > 50
    for d in decisions:
        assert len(d["q_values"]) == 3 and len(d["actions"]) == 3 and 0 <= d["level"] < len(GATE_LEVELS)
        assert d["policy_action"] == d["actions"][int(np.argmax(d["q_values"]))]
        threshold = d["thresholds"][0 if d["position"] == 0 else 1]
        assert (d["action"] != "HOLD") == (d["change_confidence"] >= threshold), d
    assert trader.status()["policy"]["last_action"] == decisions[-1]["action"].lower()
