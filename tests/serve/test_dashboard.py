"""The dashboard: its state built from a real stream fed real trades, and the page in headless Chromium.

The browser tests run the real live path (replay exchange over the recorded captures -> IngestionActor ->
UnifiedStreamActor, on a real local Ray), the Serve app on 127.0.0.1, and Debian's ``chromium`` driven over
the DevTools protocol; they skip with scripts/install_chromium.sh's reason when chromium is absent.
Screenshots are left in artifacts/test/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from actors.messages import TickBatch
from actors.stream import StreamConfig, UnifiedStream
from market.errors import ConfigError
from market.pivots import WilliamsConfig, swing_points
from serve.dashboard import DashboardConfig, DashboardState, chart, flatten, jsonable, pick_fields
from tests.captures import BTC, ETH, all_capture_paths, load_captures, trades_of
from tests.wire import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "test"
CHROMIUM_NOTE = Path(
    os.environ.get("RAYSCALP_CHROMIUM_NOTE", f"{os.environ.get('TMPDIR', '/tmp')}/rayscalp-chromium.txt")
)
# Quick retries on loopback; the REST limit is Binance's concern, not the local exchange's.
FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5, "rest_requests_per_min": 600_000, "rest_burst": 10_000}


@pytest.fixture(scope="module")
def recorded(shared_data: Path) -> dict[str, np.ndarray]:
    """Every recorded trade per symbol (market.datasets), in id order."""
    return trades_of(load_captures(shared_data))


# ------------------------------------------------------------------------------------------ no Ray, no browser


def _fed_stream(tmp: Path, recorded: dict[str, np.ndarray], seconds: int) -> UnifiedStream:
    """A plain UnifiedStream fed the first ``seconds`` of both captures in 100 ms batches."""
    clock = {"now": 1_800_000_000_000}
    stream = UnifiedStream(StreamConfig(storage_dir=tmp), clock=lambda: clock["now"])
    t0 = max(int(a["time_ms"][0]) for a in recorded.values())
    for seq, t in enumerate(range(t0, t0 + seconds * 1_000, 100), start=1):
        part = {s: a[(a["time_ms"] >= t) & (a["time_ms"] < t + 100)] for s, a in recorded.items()}
        clock["now"] += 100
        stream.ingest(TickBatch(source="capture", seq=seq, trades=part))
    return stream


def test_state_from_a_real_stream_shows_its_counts_and_candles_and_says_which_sources_are_absent(
    tmp_path: Path, recorded: dict[str, np.ndarray]
) -> None:
    stream = _fed_stream(tmp_path, recorded, 180)
    ui, stats = stream.ui_packet(), stream.stats()
    builder = DashboardState(DashboardConfig(chart_bars=120, pivot_strength=2))
    answer = {"ui": ui, "stats": stats, "bars": {s: stream.bars(s) for s in (ETH, BTC)}}
    doc = builder.build(1_800_000_000_000, answer, "not running (no actor named 'p')", "not running (no actor 'l')")
    doc = orjson.loads(orjson.dumps(doc))  # what the page receives

    st = doc["stream"]
    assert st["available"] and st["status"] == ui.status and (st["traded"], st["reference"]) == (ETH, BTC)
    for sym in (ETH, BTC):
        got = st["symbols"][sym]
        assert got["tick_cache_count"] == stats.symbols[sym].tick_cache_count > 0
        assert got["ticks_received"] == stats.symbols[sym].ticks_received > 0
        assert got["bars_closed"]["1s"] == stats.symbols[sym].bars_closed["1s"] > 100
        assert got["last_price"] == stream.ticks(sym)["price"][-1]
        bars_1s = stream.bars(sym)["1s"]
        ch = st["charts"][sym]
        assert ch["t"] == bars_1s["open_time_ms"][-120:].tolist() and ch["c"] == bars_1s["close"][-120:].tolist()
        assert ch["forming"]  # the last 1s bar holds the last trade
    assert doc["paper"] == {"available": False, "actor": "rayscalp-paper", "reason": "not running (no actor named 'p')"}
    assert doc["learner"]["available"] is False and "not running" in doc["learner"]["reason"]


def test_chart_marks_every_confirmed_swing_of_the_closed_bars_in_view_and_none_from_the_forming_bar(
    recorded: dict[str, np.ndarray],
) -> None:
    from market.bars import build_timeframes

    bars = build_timeframes(recorded[ETH][:6_000], ("1s",))["1s"]
    last_trade = int(recorded[ETH]["time_ms"][5_999])
    assert bars["open_time_ms"][-1] <= last_trade <= bars["close_time_ms"][-1]
    got = chart(bars, last_trade, 100, 2)
    closed = bars[:-1]
    want = swing_points(closed["high"], closed["low"], WilliamsConfig(strengths=(2,)))
    first = bars.size - 100
    want = want[want["bar_index"] >= first]
    assert len(got["pivots"]) == want.size > 0
    assert {p["level"] for p in got["pivots"]} >= {1, 2}
    assert sorted((p["i"] + first, p["kind"], p["level"], p["price"]) for p in got["pivots"]) == sorted(
        (int(s["bar_index"]), int(s["kind"]), int(s["level"]), float(s["price"])) for s in want
    )
    for p in got["pivots"]:  # a pivot sits on its candle's extreme, and was confirmed by a later closed bar
        assert p["price"] == (got["h"] if p["kind"] > 0 else got["l"])[p["i"]]
        assert p["t"] < p["confirm_t"] <= int(closed["open_time_ms"][-1])
    # once the last trade has left the bar, that bar is closed and may confirm swings
    assert chart(bars, int(bars["close_time_ms"][-1]) + 1, 100, 2)["forming"] is False


def test_source_answers_become_json_and_headline_values_name_their_key() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Stats:
        loss: float
        mean_return: float
        replay: dict[str, Any]
        env_steps: int

    raw = jsonable(Stats(0.25, float("nan"), {"replay_fill": np.float32(0.5), "size": np.int64(7)}, 10))
    assert raw == {"loss": 0.25, "mean_return": None, "replay": {"replay_fill": 0.5, "size": 7}, "env_steps": 10}
    picked = pick_fields(flatten(raw), {"loss": ("loss",), "ret": ("mean_return",), "fill": ("replay_fill",)})
    assert picked == {"loss": {"key": "loss", "value": 0.25}, "fill": {"key": "replay.replay_fill", "value": 0.5}}
    assert jsonable(list(range(100)), max_items=3) == [97, 98, 99]

    builder = DashboardState(DashboardConfig())
    first = builder.build(1_000, "absent", "absent", {"env_steps": 100, "updates": 5})
    second = builder.build(3_000, "absent", "absent", {"env_steps": 700, "updates": 9})
    assert "env_steps_per_s" not in first["learner"]["headline"]  # one sample: no rate yet
    assert second["learner"]["headline"]["env_steps_per_s"] == {"key": "d(env_steps)/dt", "value": 300.0}
    assert second["learner"]["headline"]["updates_per_s"]["value"] == 2.0


def test_config_refuses_unknown_keys_and_a_refresh_outside_one_to_five_seconds() -> None:
    from serve.dashboard import build_app

    with pytest.raises(ConfigError, match="refresh_ms"):
        build_app({"refresh_ms": 500})
    with pytest.raises(ConfigError, match="colour"):
        build_app({"colour": "red"})
    with pytest.raises(ConfigError, match="chart_timeframe"):
        build_app({"chart_timeframe": "7s"})
    assert DashboardConfig().refresh_ms == 1_000 and DashboardConfig().stream_actor == "rayscalp-stream"


# ------------------------------------------------------------------------------------------ headless Chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of Debian's ``chromium``; skips with scripts/install_chromium.sh's reason when it is missing."""
    path = shutil.which("chromium")
    if path is None:
        reason = CHROMIUM_NOTE.read_text().strip() if CHROMIUM_NOTE.is_file() else ""
        pytest.skip(f"chromium is not installed: {reason or 'run scripts/install_chromium.sh'}")
    return path


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, one websocket)."""

    def __init__(self, binary: str, profile: Path, width: int = 1600, height: int = 1000) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"chromium did not open its DevTools port (exit code {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        import requests

        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self._id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error in {expression[:80]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({expression})")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            with contextlib.suppress(Exception):  # already gone: terminated below
                self.call("Browser.close")
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class ExchangeThread:
    """The replay exchange on its own event loop in a daemon thread (the test's thread stays free)."""

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="replay-exchange", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout_s: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.run(self.exchange.stop(), 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclasses.dataclass
class Live:
    url: str
    namespace: str
    config: DashboardConfig
    stream: Any


@pytest.fixture(scope="module")
def live(ray_session, chromium: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The real live path at 10x over 10 minutes of the captures, and the dashboard app on a free port."""
    ray = ray_session
    from ray import serve

    from actors.ingestion import IngestionActor
    from actors.ingestion_config import IngestionConfig
    from actors.stream import UnifiedStreamActor
    from cluster.exchange.capture import load_capture
    from cluster.exchange.server import ExchangeConfig, ReplayExchange
    from serve.dashboard import deploy

    files = all_capture_paths(shared_data)
    full = load_capture(files)
    t0 = int(full.schedule_ns[0]) // 1_000_000
    source = load_capture(files, start_ms=t0 + 30_000, end_ms=t0 + 630_000)
    exchange = ExchangeThread(ReplayExchange(ExchangeConfig(capture_files=files, speed="10x"), source=source))
    host, port = exchange.run(exchange.exchange.start())
    tag = uuid.uuid4().hex[:8]
    namespace = ray.get_runtime_context().namespace
    cfg = DashboardConfig(
        namespace=namespace,
        stream_actor=f"test-stream-{tag}",
        paper_actor=f"test-paper-{tag}",
        learner_actor=f"test-learner-{tag}",
        num_cpus=0,
    )
    stream = UnifiedStreamActor.options(name=cfg.stream_actor).remote(
        StreamConfig(storage_dir=tmp_path_factory.mktemp("stream"))
    )
    ingestion = IngestionActor.remote(
        IngestionConfig(ws_url=f"ws://{host}:{port}", rest_url=exchange.exchange.rest_url, seed=3, **FAST)
    )
    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    try:
        ray.get(stream.ready.remote(), timeout=120)
        ray.get(ingestion.start.remote(stream), timeout=60)
        deploy(cfg)
        yield Live(f"http://127.0.0.1:{http_port}{cfg.route_prefix}", namespace, cfg, stream)
    finally:
        serve.shutdown()
        try:
            ray.get(ingestion.stop.remote(), timeout=30)
        finally:
            ray.kill(ingestion)
            ray.kill(stream)
            exchange.stop()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium, tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


def _number(text: str) -> float:
    return float(text.replace(",", ""))


READ_PAGE = """(() => {
  const cell = (sym, f) => document.querySelector(`td[data-sym="${sym}"][data-f="${f}"]`)?.textContent ?? null;
  const st = window.__dashboard.state;
  return {
    renders: window.__dashboard.renders,
    state: st,
    status: document.getElementById("status").textContent,
    eth_cache: cell("ETHUSDT", "tick_cache_count"),
    eth_ticks: cell("ETHUSDT", "ticks_received"),
    eth_bars: cell("ETHUSDT", "bars_1s_closed"),
    eth_price: cell("ETHUSDT", "last_price"),
    btc_ticks: cell("BTCUSDT", "ticks_received"),
    btc_price: cell("BTCUSDT", "last_price"),
    header_price: document.getElementById("h-traded-price").textContent,
    reconnects: document.querySelector('#stream-body [data-f="reconnects"]')?.textContent ?? null,
    gaps: document.querySelector('#stream-body [data-f="gaps"]')?.textContent ?? null,
    c0_bars: Number(document.getElementById("c0").dataset.bars),
    c0_pivots: Number(document.getElementById("c0").dataset.pivots),
    c1_bars: Number(document.getElementById("c1").dataset.bars),
    paper: document.getElementById("paper-body").innerText,
    learner: document.getElementById("learner-body").innerText,
    kill_disabled: document.getElementById("kill").disabled,
  };
})()"""


@pytest.mark.ray
@pytest.mark.timeout(150)
def test_page_in_headless_chromium_shows_live_replay_numbers_that_change(
    live: Live, browser: Browser, recorded: dict[str, np.ndarray]
) -> None:
    browser.call("Page.navigate", url=live.url + "/")
    browser.wait_for(
        "(() => { const s = window.__dashboard && window.__dashboard.state;"
        " return !!(s && s.stream.available && s.stream.symbols.ETHUSDT.ticks_received > 0"
        " && s.stream.charts.ETHUSDT.pivots.length > 0 && s.stream.symbols.BTCUSDT.ticks_received > 0); })()",
        60,
        "live numbers and a confirmed pivot on the page",
    )
    first = browser.eval(READ_PAGE)
    started = time.monotonic()
    # some seconds and several refreshes later (a deadline, not a speed requirement)
    browser.wait_for(f"window.__dashboard.renders >= {first['renders'] + 3}", 60, "three more refreshes")
    time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    second = browser.eval(READ_PAGE)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = browser.screenshot(ARTIFACTS / "dashboard.png")
    stream_stats = ray_get(live.stream.stats.remote())

    # it refreshes on its own (1 s) and the counts move with the replay
    for key in ("eth_ticks", "eth_bars", "btc_ticks"):
        assert 0 < _number(first[key]) < _number(second[key]), (key, first[key], second[key])
    assert _number(second["eth_cache"]) > 0
    # what the page shows is the JSON it fetched, and the JSON is the stream's own counts
    for page in (first, second):
        eth = page["state"]["stream"]["symbols"][ETH]
        assert _number(page["eth_ticks"]) == eth["ticks_received"] <= stream_stats.symbols[ETH].ticks_received
        assert _number(page["eth_bars"]) == eth["bars_closed"]["1s"]
        assert _number(page["eth_cache"]) == eth["tick_cache_count"]
        assert page["eth_price"] == page["header_price"] == f"{eth['last_price']:,.2f}"
        assert _number(page["reconnects"]) == page["state"]["stream"]["reconnects"]
        assert _number(page["gaps"]) == page["state"]["stream"]["gaps"]
    # real prices of the captures, candles on both charts, pivots marked
    for sym, key in ((ETH, "eth_price"), (BTC, "btc_price")):
        prices = recorded[sym]["price"]
        assert prices.min() <= _number(second[key]) <= prices.max()
    assert second["c0_bars"] > 10 and second["c1_bars"] > 10
    assert second["c0_pivots"] == len(second["state"]["stream"]["charts"][ETH]["pivots"]) > 0
    assert second["status"] == "LIVE"
    # absent sources say so, and the kill switch is off
    assert "NOT RUNNING" in second["paper"] and live.config.paper_actor in second["paper"]
    assert "NOT RUNNING" in second["learner"] and live.config.learner_actor in second["learner"]
    assert second["kill_disabled"] is True
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def ray_get(ref: Any) -> Any:
    import ray

    return ray.get(ref, timeout=60)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_paper_and_learner_panels_show_their_actors_and_the_kill_switch_reaches_the_paper_trader(
    live: Live, browser: Browser, ray_session
) -> None:
    import requests

    ray = ray_session
    r = requests.post(f"{live.url}/api/paper/kill", timeout=30)
    assert r.status_code == 503 and live.config.paper_actor in r.json()["detail"]
    r = requests.get(f"{live.url}/?refresh_ms=100", timeout=30)
    assert r.status_code == 422 and "refresh_ms" in r.json()["detail"]

    @ray.remote(num_cpus=0)
    class PaperStandIn:
        """A test stand-in for the paper trader: fixed values, a kill switch that only records the call."""

        def __init__(self) -> None:
            self.killed = False

        def status(self) -> dict[str, Any]:
            return {
                "source": "test stand-in",
                "symbol": ETH,
                "position": 0.0 if self.killed else 1.25,
                "entry_price": 2_601.5,
                "equity": 10_012.75,
                "pnl": {"realized": 14.5, "unrealized": -1.75},
                "fills": [{"time_ms": 1_723_161_600_000, "side": "BUY", "price": 2_601.5, "qty": 1.25, "fee": 3.25}],
                "fees": 3.25,
                "risk": {"max_position": 2.0, "daily_loss_limit": 250.0, "breached": False},
                "kill_switch": self.killed,
            }

        def kill(self) -> dict[str, Any]:
            self.killed = True
            return self.status()

    @dataclasses.dataclass(frozen=True, slots=True)
    class LearnerStats:
        loss: float
        mean_return: float
        epsilon: float
        replay_fill: float
        env_steps: int
        updates: int

    @ray.remote(num_cpus=0)
    class LearnerStandIn:
        """A test stand-in for the learner: counters that move by fixed amounts per call."""

        def __init__(self) -> None:
            self.calls = 0

        def status(self) -> LearnerStats:
            self.calls += 1
            return LearnerStats(0.5 / self.calls, 0.01 * self.calls, 0.4, 0.125, 1_000 * self.calls, 10 * self.calls)

    paper = PaperStandIn.options(name=live.config.paper_actor).remote()
    learner = LearnerStandIn.options(name=live.config.learner_actor).remote()
    try:
        browser.call("Page.navigate", url=live.url + "/")
        browser.wait_for(
            "(() => { const s = window.__dashboard && window.__dashboard.state; return !!(s && s.paper.available"
            " && s.learner.available && s.learner.headline.env_steps_per_s); })()",
            60,
            "the stand-ins on the page",
        )
        page = browser.eval(READ_PAGE)
        paper_text, learner_text = page["paper"].lower(), page["learner"].lower()  # innerText follows CSS case
        for shown in ("1.25", "2,601.5", "10,012.75", "+14.50", "-1.75", "3.2500", "armed", "test stand-in"):
            assert shown in paper_text, (shown, paper_text)
        assert "max position" in paper_text and "daily loss limit" in paper_text  # risk-limit state
        assert "12.5 %" in learner_text and "0.4" in learner_text
        assert page["kill_disabled"] is False
        headline = page["state"]["learner"]["headline"]
        assert headline["env_steps_per_s"]["key"] == "d(env_steps)/dt" and headline["env_steps_per_s"]["value"] > 0

        browser.eval("window.confirm = () => true; document.getElementById('kill').click(); true")
        browser.wait_for(
            "document.getElementById('paper-body').innerText.includes('ENGAGED')"
            " && document.getElementById('kill').disabled",
            30,
            "the kill switch engaged on the page",
        )
        assert ray.get(paper.status.remote(), timeout=30)["kill_switch"] is True
        assert "kill switch engaged" in browser.eval("document.getElementById('kill-msg').textContent")
        browser.screenshot(ARTIFACTS / "dashboard_paper_learner.png")
    finally:
        ray.kill(paper)
        ray.kill(learner)
    # gone again: the panels say so on the next refreshes, and the kill switch answers 503
    browser.wait_for(
        "(() => { const s = window.__dashboard.state; return !s.paper.available && !s.learner.available; })()",
        30,
        "the panels to notice the actors are gone",
    )
    assert requests.post(f"{live.url}/api/paper/kill", timeout=30).status_code == 503


def test_the_live_state_panel_shows_the_one_live_states_latest_record_without_its_vector(
    recorded: dict[str, np.ndarray],
) -> None:
    from actors.live_state import LiveStateBuilder, LiveStateConfig
    from market.layout import StateConfig

    state = StateConfig(tick_window=20, bar_window=10, reference_window=10, traded_timeframes=("1s",), cnn_hidden=0)
    builder = LiveStateBuilder(LiveStateConfig(state=state))
    end = int(recorded[ETH]["time_ms"][0]) + 60_000
    builder.on_trades({s: a[a["time_ms"] < end] for s, a in recorded.items()})
    latest = builder.latest_state(ETH)
    doc = DashboardState(DashboardConfig()).build(1_000, "absent", "absent", "absent", latest)
    panel = orjson.loads(orjson.dumps(doc))["live_state"]
    assert panel["available"] and panel["actor"] == "rayscalp-live-state"
    assert panel["raw"]["seq"] == builder.builds > 50 and panel["raw"]["step_time_ms"] == latest.step_time_ms
    assert panel["headline"]["close"]["value"] == latest.close and "state" not in panel["raw"]
    missing = DashboardState(DashboardConfig()).build(1_000, "absent", "absent", "absent")["live_state"]
    assert missing == {"available": False, "actor": "rayscalp-live-state", "reason": "not read"}
