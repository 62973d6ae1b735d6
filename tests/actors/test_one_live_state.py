"""The gate of the one live state, on a real local Ray and Serve: paper trading, the policy service's ``latest`` form
and the dashboard run together over a replay of the real ETH/BTC capture, and the live state is built exactly once
per base step (the live-state actor's builds equal the steps of one live timeline of the same trades, and every
consumer reads those records); no module of ``actors/`` or ``serve/`` but the live-state actor's builds a live
timeline, and ``actors/`` imports no private name of ``market/``."""

from __future__ import annotations

import ast
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from actors.live_state import LiveStateActor, LiveStateConfig
from actors.messages import TickBatch
from actors.paper import CheckpointPolicy, PaperConfig, PaperTradingActor
from actors.stream import StreamConfig, UnifiedStreamActor
from market.layout import build_layout
from market.live_timeline import LiveTimeline
from market.venue import VenueConfig, half_spread_at
from tests.captures import BTC, ETH, SMALL_STATE, load_captures, merged, sorted_books, trades_of
from tests.wire import free_port

pytestmark = pytest.mark.ray

requests = pytest.importorskip("requests")

REPO = Path(__file__).resolve().parents[2]
STATE = SMALL_STATE


@pytest.fixture(scope="module")
def recorded(shared_data: Path) -> dict[str, object]:
    """The real ETHUSDT and BTCUSDT captures."""
    return load_captures(shared_data)


@pytest.fixture(scope="module")
def capture(recorded) -> dict[str, np.ndarray]:
    """The first three minutes of their trades."""
    return trades_of(recorded, 180_000)


@pytest.fixture(scope="module")
def books(recorded) -> np.ndarray:
    """ETHUSDT's book tickers, in time order."""
    return sorted_books(recorded[ETH])


def policy_checkpoint(path: Path) -> Path:
    """An untrained (seeded) Q-network of the test's layout: what the policy service and paper trading load."""
    import torch

    from policies.checkpoint import save_policy
    from policies.dqn import QNetwork, QNetworkConfig

    torch.manual_seed(3)
    net = QNetwork(build_layout(STATE), QNetworkConfig(trunk=32, window_channels=4, vector_width=8)).eval()
    return save_policy(path, net, version="v-live", updates=1, cnn_version=None, meta={"note": "untrained, for tests"})


def test_no_module_but_the_live_state_actor_builds_a_live_timeline_and_actors_import_no_private_market_name() -> None:
    builders, private = [], []
    for path in sorted([*REPO.glob("actors/*.py"), *REPO.glob("serve/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == "LiveTimeline"
            ):
                builders.append(path.name)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("market"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert builders == ["live_state.py"]
    assert private == []


@pytest.mark.timeout(420)
def test_paper_the_policys_latest_form_and_the_dashboard_read_one_state_built_once_per_base_step(
    ray_session, capture, books, tmp_path
) -> None:
    from ray import serve

    from serve.dashboard import DashboardConfig
    from serve.dashboard import deploy as deploy_dashboard
    from serve.policy import PolicyServeConfig
    from serve.policy import deploy as deploy_policy

    ray = ray_session
    namespace = ray.get_runtime_context().namespace
    tag = uuid.uuid4().hex[:8]
    names = {k: f"test-{k}-{tag}" for k in ("stream", "live", "paper")}
    checkpoint = policy_checkpoint(tmp_path / "policy-v-live.pt")
    stream = UnifiedStreamActor.options(name=names["stream"]).remote(
        StreamConfig(storage_dir=tmp_path / "stream", tick_cache_s=60)
    )
    ray.get(stream.ready.remote(), timeout=60)
    live = LiveStateActor.options(name=names["live"]).remote(
        LiveStateConfig(state=STATE, stream_actor=names["stream"], paper_actor=names["paper"], poll_interval_ms=50)
    )
    paper_cfg = PaperConfig(
        state=STATE,
        venue=VenueConfig(kind="perp", leverage=3.0),
        storage_dir=tmp_path / "paper",
        live_state_actor=names["live"],
        poll_interval_ms=50,
        max_step_lag_ms=None,
    )
    paper = PaperTradingActor.options(name=names["paper"]).remote(paper_cfg, CheckpointPolicy(checkpoint))
    ray.get([live.ready.remote(), paper.ready.remote()], timeout=120)

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        deploy_policy(
            PolicyServeConfig(
                checkpoint=checkpoint,
                port=port,
                device="cpu",
                ray_actor_options={"num_cpus": 0.1},
                require_cnn_match=False,
                live_state_actor=names["live"],
                live_state_namespace=namespace,
                live_timeout_s=10.0,
                app_name=f"policy-{tag}",
                route_prefix="/policy",
            )
        )
        dash = DashboardConfig(
            namespace=namespace,
            stream_actor=names["stream"],
            paper_actor=names["paper"],
            live_state_actor=names["live"],
            app_name=f"dashboard-{tag}",
            route_prefix="/dashboard",
            num_cpus=0,
            min_interval_ms=0,
        )
        deploy_dashboard(dash)
        base = f"http://127.0.0.1:{port}"

        trades, is_btc = merged(capture[ETH], capture[BTC])
        answers, pages = [], []
        sent = 0
        for seq, chunk in enumerate(np.array_split(np.arange(trades.size), 36)):
            part, b = trades[chunk], is_btc[chunk]
            upto = int(np.searchsorted(books["time_ms"], int(part["time_ms"][-1]), side="right"))
            batch = TickBatch("replay", seq, {ETH: part[~b], BTC: part[b]}, book_tickers={ETH: books[sent:upto]})
            sent = upto
            ray.get(stream.ingest.remote(batch), timeout=60)
            # the consumers run while the replay goes on
            r = requests.post(f"{base}/policy/v1/act", json={"symbol": ETH, "latest": True}, timeout=30)
            answers.append((r.status_code, r.json()))
            pages.append(requests.get(f"{base}/dashboard/api/state", timeout=30).json())
            time.sleep(0.1)

        reference = LiveTimeline(STATE)  # one live timeline of the same trades: the steps there are
        reference.feed(traded=capture[ETH], reference=capture[BTC])
        steps = reference.catch_up()
        deadline = time.monotonic() + 120
        while True:
            status = ray.get(live.status.remote(), timeout=30)
            account = ray.get(paper.status.remote(), timeout=30)
            if status["last_step_ms"] == reference.step_time_ms and account["last_step_ms"] == reference.step_time_ms:
                break
            assert time.monotonic() < deadline, (status, account["last_step_ms"], reference.step_time_ms)
            time.sleep(0.3)
        final = requests.post(f"{base}/policy/v1/act", json={"symbol": ETH, "latest": True}, timeout=30).json()
        page = requests.get(f"{base}/dashboard/api/state", timeout=30).json()
        status = ray.get(live.status.remote(), timeout=30)
        account = ray.get(paper.status.remote(), timeout=30)
    finally:
        serve.shutdown()
        for actor in (paper, live, stream):
            ray.kill(actor)

    # exactly one build per base step, however many consumers read it
    assert steps > 150
    assert status["builds"] == status["steps"] == status["seq"] == steps
    assert status["resets"] == 0
    # paper trading traded every one of those records once, and built none of its own
    assert account["steps"] == steps and account["live_state"]["seq"] == steps and account["live_state"]["missed"] == 0
    assert account["policy"]["calls"] == steps and account["policy"]["errors"] == 0
    assert "fill_model" in account and "latency 100 ms" in account["fill_model"]
    # the policy's latest form answered from those records
    ok = [doc for code, doc in answers if code == 200]
    assert len(ok) > 10 and final["step_time_ms"] == reference.step_time_ms
    step_times = set(range(reference.step_time_ms - (steps - 1) * 1000, reference.step_time_ms + 1, 1000))
    assert all(doc["step_time_ms"] in step_times for doc in ok)
    # the dashboard shows the same record
    panel = page["live_state"]
    assert (
        panel["available"] and panel["raw"]["seq"] == steps and panel["raw"]["step_time_ms"] == reference.step_time_ms
    )
    assert "state" not in panel["raw"]
    # the spread came with the stream's book tickers: the one reading of them, at the step's time
    half = float(half_spread_at(books, np.array([reference.step_time_ms]))[0])
    assert half > 0 and status["half_spread"] == half == panel["raw"]["half_spread"]
    assert account["live_state"]["half_spread"] == half
    assert sum(p["live_state"].get("available", False) for p in pages) > 10
