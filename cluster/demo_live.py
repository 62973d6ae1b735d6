"""The live half of ``rayscalp demo``: train briefly on history, then serve and paper-trade the live replay.

Each stage is a function over plain inputs, so the demo reads top to bottom: train (Ape-X on Ray), evaluate
beside the baselines, start the live stream (the real captures looped, each loop later and with higher ids), the
live state (warm-started from the recorded klines of the layout's higher timeframes) and the paper trader (its
decisions and curve on the board, ``actors.board``), deploy the policy service and the dashboard, ask the policy.
Never passes synthetic data off as real: every figure says
which data it came from.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests
from rich.console import Console

from .box import free_port
from .config import ExperimentConfig
from .demo_progress import stage_bar

DEMO_NAMESPACE = "rayscalp"


@dataclass(frozen=True, slots=True)
class DemoSizes:
    """How big each stage runs: ``smoke`` for CI (well under 3 minutes), ``full`` for ``make run``."""

    history_steps: int | None
    updates: int
    workers: int
    learning_starts: int
    cnn_steps: int
    resamples: int
    replay_speed: str
    live_wait_s: float

    @staticmethod
    def of(smoke: bool) -> DemoSizes:
        if smoke:
            # 6,000 minutes: the evaluation span (the latest ~15%) starts after the tiny profile's 1h windows and
            # their indicators are full (about 48 hours of 1m bars), so no evaluation step sees padded windows
            return DemoSizes(6_000, 60, 1, 256, 0, 200, "10x", 20.0)
        # the CNN trains on the earliest span of the same first 20,000 minutes the DQN reads (never overlapping)
        return DemoSizes(20_000, 800, 2, 2_000, 150, 500, "10x", 60.0)


@dataclass(slots=True)
class LiveDemo:
    """What the live stages started, for the summary and for shutting down."""

    urls: dict[str, str] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stream: Any = None
    paper: Any = None
    live_state: Any = None
    board: Any = None
    pusher: Any = None


#: The port Serve's HTTP proxy binds by default (``make run``); ``--port 0`` picks a free one.
DEFAULT_HTTP_PORT = 8000


def http_port(host: str, port: int | None, pick_free: bool) -> int:
    """The port Serve's HTTP proxy will bind on ``host``, checked free before any stage runs.

    Parameters
    ----------
    host : str
        Serve's HTTP host (``127.0.0.1`` by default; another host needs the policy app's API key).
    port : int, optional
        The port asked for; ``0`` picks a free one; ``None``: :data:`DEFAULT_HTTP_PORT`, or a free one when
        ``pick_free`` (``--once``/``--smoke`` runs, which must not collide with a ``make run`` beside them).
    pick_free : bool

    Raises
    ------
    ConfigError
        When the port is out of range, the host cannot be bound, or the port is taken; the message says how
        to pick another.
    """
    from market.errors import ConfigError

    if port is None:
        port = 0 if pick_free else DEFAULT_HTTP_PORT
    if not 0 <= port <= 65_535:
        raise ConfigError(f"demo --port: must be 0 (a free port) to 65535 (got {port})")
    try:
        if port == 0:
            return free_port(host)
        # SO_REUSEADDR as Serve's proxy binds: a port in TIME_WAIT is free for it, one with a listener is not
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(
            f"demo --host {host} --port {port}: cannot bind ({exc.strerror or exc}); "
            "pass --port N for another port, or --port 0 for a free one"
        ) from None
    return port


def base_url(host: str, port: int) -> str:
    """The URL this machine reaches Serve's HTTP proxy at (``127.0.0.1`` for a wildcard host)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def demo_config(
    config: ExperimentConfig, sizes: DemoSizes, run_dir: Path, cnn_checkpoint: Path | None
) -> ExperimentConfig:
    """The demo's experiment: the tiny profile, a small network, a short Ape-X budget, outputs in ``run_dir``."""
    data = config.model_dump(mode="json")
    data.update(
        output_dir=str(run_dir),
        state={"profile": "tiny"},
        env={**data["env"], "episode_steps": 240},
        network={"encoder": "structured", "window_channels": 4, "window_kernel": 3, "vector_width": 16, "trunk": 64},
        training={**data["training"], "batch_size": 64, "lr": 5e-4, "target_sync_every": 200},
        replay={**data["replay"], "capacity": 100_000},
    )
    data["apex"] = {
        **data["apex"],
        "num_workers": sizes.workers,
        "envs_per_worker": 8,
        "worker_num_cpus": 0.25,
        "learning_starts": sizes.learning_starts,
        "history_steps": sizes.history_steps,
        "budget": {**data["apex"]["budget"], "updates": sizes.updates},
        "checkpoint": {
            **data["apex"]["checkpoint"],
            "storage": str(run_dir / "checkpoints"),
            "every_updates": max(sizes.updates // 2, 1),
        },
        "cnn": {"checkpoint": str(cnn_checkpoint) if cnn_checkpoint else None, "serve": False},
        # ten points of the learning curves whatever the budget (the dashboard's training panel draws them)
        "curves": {**data["apex"].get("curves", {}), "every_updates": max(sizes.updates // 10, 1)},
    }
    return type(config).model_validate(data)


def first_minutes(history: Any, steps: int | None) -> Any:
    """``history`` with only its first ``steps`` 1m bars (the longer 1h/1d files stay: they are earlier windows)."""
    import dataclasses

    if steps is None:
        return history
    bars = {sym: {**tfs, "1m": tfs["1m"][:steps]} for sym, tfs in history.bars.items()}
    return dataclasses.replace(history, bars=bars)


def train_cnn_for_demo(
    config: ExperimentConfig, sizes: DemoSizes, run_dir: Path, console: Console, history: Any
) -> Path | None:
    """A short CNN training on the tiny profile (none in smoke mode); return its checkpoint."""
    if not sizes.cnn_steps:
        console.print(
            "[bold]cnn[/]: skipped in smoke mode: the CNN slots of the state stay zero (said in the run record)"
        )
        return None
    from cluster.train_cnn import train_cnn
    from market.layout import StateConfig

    with stage_bar(console, "training the CNN", sizes.cnn_steps) as bar:
        report = train_cnn(
            config,
            state=StateConfig(profile="tiny"),
            max_steps=sizes.cnn_steps,
            out_dir=run_dir / "cnn",
            history=first_minutes(history, sizes.history_steps),
            log=bar.line,
        )
    console.print(f"[bold]cnn[/]: trained {report.version} for {sizes.cnn_steps} steps on the earliest span")
    return run_dir / "cnn" / "cnn.pt"


def train_policy(config: ExperimentConfig, console: Console) -> Any:
    """Ape-X on the running Ray to the demo's budget; return the :class:`cluster.train.TrainResult`."""
    from cluster.train import train

    with stage_bar(console, "training the policy (Ape-X)", config.apex.budget.updates) as bar:
        return train(config, config.apex, console=console, on_progress=lambda p, _: bar.advance_to(p.updates))


def evaluate_policy(
    policy: Path,
    config: ExperimentConfig,
    run_dir: Path,
    sizes: DemoSizes,
    cnn: Path | None,
    log: Callable[[str], None],
) -> Any:
    """The evaluation (greedy policy beside the baselines, with bootstrap intervals): a
    :class:`cluster.evaluate.EvaluationReport`, its files in ``run_dir/evaluation``; ``log`` gets its lines."""
    from cluster.evaluate import evaluate

    return evaluate(
        policy,
        config,
        out_dir=run_dir / "evaluation",
        seeds=(0, 1, 2),
        folds=2,
        n_resamples=sizes.resamples,
        cnn_checkpoint=cnn,
        log=log,
    )


def write_synthetic_klines(history: Any, run_dir: Path) -> tuple[Path, ...]:
    """The synthetic history's 1m bars as kline CSVs (for the replay exchange's kline source), named so."""
    import pandas as pd

    folder = run_dir / "synthetic-klines"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for symbol, bars in history.bars.items():
        path = folder / f"{symbol}-1m-SYNTHETIC.csv"
        frame = pd.DataFrame({k: bars["1m"][k] for k in ("open", "high", "low", "close", "volume")})
        frame.insert(0, "timestamp", bars["1m"]["open_time_ms"])
        frame.to_csv(path, index=False)
        paths.append(path)
    return tuple(paths)


def start_live(
    config: ExperimentConfig,
    policy: Path,
    run_dir: Path,
    sizes: DemoSizes,
    history: Any,
    *,
    host: str,
    port: int,
) -> LiveDemo:
    """Live stream, live state, paper trader, policy service and dashboard, on the running Ray and Serve.

    ``host``/``port`` are those Serve's HTTP proxy was started on (the URLs printed and shown say them).
    """
    from actors.board import BOARD_ACTOR, BoardActor, RecordingPolicy
    from actors.live_state import LIVE_STATE_ACTOR
    from actors.paper import PAPER_ACTOR, PaperConfig, start_paper
    from market.layout import build_layout
    from serve.dashboard import DashboardConfig
    from serve.dashboard import deploy as deploy_dashboard
    from serve.policy import PolicyServeConfig
    from serve.policy import deploy as deploy_policy

    from .live_state_runner import start_live_state
    from .stream_runner import start_live_stream

    live = LiveDemo()
    # the board first: the policy's decisions go to it from the first live step
    live.board = BoardActor.options(name=BOARD_ACTOR, get_if_exists=True).remote(
        PAPER_ACTOR, 1.0, float(config.env.venue.fee)
    )
    synthetic_klines = write_synthetic_klines(history, run_dir) if history.synthetic else None
    stream = start_live_stream(
        config,
        speed=sizes.replay_speed,
        storage_dir=run_dir / "stream",
        kline_files=synthetic_klines,
        exchange_overrides={"loop": True},
    )
    live.stream = stream
    if stream.exchange is not None and stream.exchange.config.source == "capture":
        source = "the real captures of 2024-08-08/09"
    else:
        source = "SYNTHETIC ticks inside " + ("SYNTHETIC" if history.synthetic else "real") + " 1m klines"
    live.notes.append(f"live replay: {source} at {sizes.replay_speed}, looped, from {stream.ws_url}")
    live.pusher = ReplayClockPusher(stream.exchange, live.board, f"{source} at {sizes.replay_speed}")
    live.pusher.start()
    paper_cfg = PaperConfig(
        symbols=config.symbols,
        state=config.state,
        venue=config.env.venue,
        initial_equity=config.env.initial_equity,
        storage_dir=run_dir / "paper",
        live_state_actor=LIVE_STATE_ACTOR,
        max_step_lag_ms=None,
        actions=config.env.actions,
        sensitivity=config.sensitivity,
    )
    # the one live state of the traded symbol: paper trading, the policy's latest form and the dashboard read it
    # (the handle is kept: a named actor whose last handle goes out of scope is stopped)
    live.live_state = start_live_state(config, detached=False, warm_start_from_stream=False)
    import ray

    bars, warm_source = warm_bars_before(history, config, capture_start_ms(stream))
    warm = ray.get(live.live_state.warm_start.remote(bars, warm_source), timeout=60)
    warm_line = (
        "warm windows: " + ", ".join(f"{tf} ({n:,} bars)" for tf, n in warm["windows"].items()) + f" from {warm_source}"
        if warm["windows"]
        else f"warm windows: none ({warm_source})"
    )
    live.notes.append(warm_line)
    ray.get(live.live_state.ready.remote(), timeout=60)
    live.paper = start_paper(paper_cfg, RecordingPolicy(str(policy)))
    layout = build_layout(config.state)
    live_period = "2024-08-09 (the captures, looped)" if "captures" in source else source
    ray.get(
        live.board.set_notes.remote(
            {
                "layout": f"policy trained on the layout the live state serves: {config.state.profile} "
                f"({layout.size:,} floats)",
                "warm": warm_line,
                "training_period": training_period(history),
                "live_period": live_period,
                "period_differs": training_period(history) != live_period,
                "replay": f"{source} at {sizes.replay_speed}, looped",
            }
        ),
        timeout=30,
    )
    live.notes.append(config.env.venue.describe())
    deploy_policy(
        PolicyServeConfig(
            checkpoint=policy, host=host, port=port, symbols=(config.symbols.traded,), require_cnn_match=False
        )
    )
    deploy_dashboard(DashboardConfig(namespace=DEMO_NAMESPACE))
    base = base_url(host, port)
    live.urls.update(policy=f"{base}/v1/act", docs=f"{base}/docs", dashboard=f"{base}/dashboard/")
    return live


class ReplayClockPusher:
    """Tells the board the replay exchange's clock and loop every ``every_s`` (a daemon thread of the driver)."""

    def __init__(self, exchange: Any, board: Any, label: str, every_s: float = 0.5) -> None:
        import threading

        self.exchange = exchange
        self.board = board
        self.label = label
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-clock", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.exchange is None:
                continue
            stats = self.exchange.exchange.stats()
            self.board.set_replay.remote(
                {
                    "clock_ms": stats.clock_ms,
                    "loop": stats.loop,
                    "loops": stats.loops,
                    "source": self.label,
                    "speed": self.exchange.config.speed,
                }
            )


def training_period(history: Any) -> str:
    """The period of the 1m klines the policy was trained on (``YYYY-MM-DD -> YYYY-MM-DD``)."""
    minute = next(iter(history.bars.values()))["1m"]
    first, last = int(minute["open_time_ms"][0]), int(minute["open_time_ms"][-1])
    day = lambda ms: time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))  # noqa: E731
    return f"{day(first)} -> {day(last)} ({'SYNTHETIC' if history.synthetic else 'real'} 1m klines)"


def capture_start_ms(stream: Any) -> int | None:
    """The time of the replay's first trade when it replays the real captures (``None`` for synthetic ticks)."""
    exchange = getattr(stream, "exchange", None)
    if exchange is None or exchange.config.source != "capture":
        return None
    return replay_start_ms(exchange.exchange.source)


def replay_start_ms(source: Any) -> int:
    """The receive time (ms) of the first frame a ``cluster.exchange.capture.ReplaySource`` sends."""
    return int(source.schedule_ns[source.first_index]) // 1_000_000


def warm_bars_before(
    history: Any, config: ExperimentConfig, start_ms: int | None
) -> tuple[dict[str, np.ndarray], str]:
    """The recorded bars of the layout's higher timeframes closed before ``start_ms``, and their source.

    Only a replay of the real captures (``start_ms`` set) gets them: ticks synthesized inside klines start where
    those klines do (no earlier bars).
    """
    if start_ms is None or history.synthetic:
        return {}, "no recorded bars before a synthetic replay"
    traded = history.bars[config.symbols.traded]
    out, names = {}, []
    for tf in config.state.traded_timeframes:
        if tf == config.state.base_timeframe or tf not in traded:
            continue
        bars = traded[tf][traded[tf]["close_time_ms"] < start_ms]
        if bars.size:
            out[tf] = bars
            names.append(f"{tf} {time.strftime('%Y-%m-%d %H:%M', time.gmtime(int(bars['open_time_ms'][0]) / 1000))}")
    files = [
        p.name
        for p in history.files
        if p.name.startswith(config.symbols.traded) and any(f"-{tf}-" in p.name for tf in out)
    ]
    return out, "recorded klines " + (", ".join(files) or ", ".join(names))


def ask_policy(live: LiveDemo, states: np.ndarray, symbol: str, wait_s: float) -> None:
    """A few POST /v1/act answers: states from history, then the live state (once it exists)."""
    url = live.urls["policy"]
    for row in states[:2]:
        reply = requests.post(
            url, data=orjson.dumps({"state": row.tolist()}), headers={"content-type": "application/json"}, timeout=30
        )
        live.answers.append(f"state form   -> {reply.status_code} {_brief(reply)}")
    deadline = time.monotonic() + wait_s
    while True:
        reply = requests.post(
            url,
            data=orjson.dumps({"symbol": symbol, "latest": True}),
            headers={"content-type": "application/json"},
            timeout=30,
        )
        if reply.status_code == 200 or time.monotonic() > deadline:
            live.answers.append(f"latest form  -> {reply.status_code} {_brief(reply)}")
            break
        time.sleep(1.0)


def _brief(reply: requests.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:200]
    if reply.status_code != 200:
        return str(body.get("detail", body))[:200]
    keep = {
        k: body[k]
        for k in ("action", "q_values", "confidence", "model_version", "data_time_ms", "latency_ms")
        if k in body
    }
    return orjson.dumps(keep).decode()[:300]


def paper_line(live: LiveDemo) -> str:
    """The paper account in one line."""
    import ray

    s = ray.get(live.paper.status.remote(), timeout=30)
    pnl = s.get("pnl", {})
    total = pnl.get("total", 0.0) if isinstance(pnl, dict) else pnl
    return (
        f"paper: equity {s.get('equity', float('nan')):.2f}, pnl {total:+.2f}, position {s.get('position', 0)}, "
        f"fills {s.get('fills')}, kill switch {s.get('kill_switch', {}).get('engaged')}"
    )
