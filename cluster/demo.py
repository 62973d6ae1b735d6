"""``rayscalp demo`` (what ``make run`` runs): the embedded default, stage by stage, with a printed summary.

Runs every stage this build has on local data (recorded, fetched, or the labelled synthetic market) and
says plainly which stages are not built yet. Never needs the network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

from market.bars import aggregate_bars, build_timeframes
from market.features import gather
from market.indicators import FEATURE_INDEX, close_features
from market.layout import AGENT_FEATURES, StateConfig

from .config import ExperimentConfig
from .data.history import History, load_history
from .demo_live import (
    DEMO_NAMESPACE,
    DemoSizes,
    LiveDemo,
    ask_policy,
    demo_config,
    evaluate_policy,
    http_port,
    paper_line,
    start_live,
    train_cnn_for_demo,
    train_policy,
)
from .demo_progress import stage_bar
from .runinfo import make_run_record, new_run_id, write_run_record

if TYPE_CHECKING:
    from .evaluate import RunResult


def _fmt_time(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


#: The columns the demo's output is laid out for, in a terminal or a log.
COLUMNS = 100


def bars_table(title: str, bars: np.ndarray, indicators: np.ndarray, rows: int) -> Table:
    """The last ``rows`` bars with their RSI, MACD histogram and Bollinger %b (fits :data:`COLUMNS`)."""
    table = Table(title=title, title_justify="left", min_width=len(title))
    for col in ("open (UTC)", "open", "high", "low", "close", "volume", "RSI", "MACD hist", "BB %b"):
        table.add_column(col, justify="right")
    for bar, ind in zip(bars[-rows:], indicators[-rows:], strict=True):
        table.add_row(
            _fmt_time(int(bar["open_time_ms"])),
            f"{bar['open']:.2f}",
            f"{bar['high']:.2f}",
            f"{bar['low']:.2f}",
            f"{bar['close']:.2f}",
            f"{bar['volume']:.3f}",
            f"{ind[FEATURE_INDEX['rsi']]:.1f}",
            f"{ind[FEATURE_INDEX['macd_hist']]:.3f}",
            f"{ind[FEATURE_INDEX['bb_pct_b']]:.2f}",
        )
    return table


def print_bars(console: Console, history: History, config: ExperimentConfig, rows: int) -> dict[str, object]:
    """The ticks and klines stage: what was loaded, the bars built from it and the 1h check; return its summary."""
    traded = config.symbols.traded
    summary: dict[str, object] = {}
    label = history.label()
    if traded in history.trades:
        ticks = history.trades[traded]
        bars = build_timeframes(ticks, ("1s", "1m"))
        summary["ticks"] = int(ticks.size)
        console.print(
            f"[bold]ticks[/] {traded}: {ticks.size:,} trades {_fmt_time(int(ticks['time_ms'][0]))} -> "
            f"{_fmt_time(int(ticks['time_ms'][-1]))} UTC ({label}) -> {bars['1s'].size:,} 1s bars, "
            f"{bars['1m'].size:,} 1m bars"
        )
        one_minute = bars["1m"]
        console.print(
            bars_table(
                f"{traded} 1m bars from ticks ({label})",
                one_minute,
                close_features(one_minute["close"], config.indicators),
                rows,
            )
        )
    minute = history.bars[traded]["1m"]
    hours = aggregate_bars(minute, "1h")
    complete = hours[
        (hours["open_time_ms"] >= minute["open_time_ms"][0]) & (hours["close_time_ms"] <= minute["close_time_ms"][-1])
    ]
    summary["klines_1m"] = int(minute.size)
    console.print(
        f"[bold]klines[/] {traded}: {minute.size:,} 1m bars {_fmt_time(int(minute['open_time_ms'][0]))} -> "
        f"{_fmt_time(int(minute['open_time_ms'][-1]))} UTC ({label}) -> {complete.size:,} complete 1h bars"
    )
    file_hours = history.bars[traded].get("1h")
    if file_hours is not None:
        common, ours_i, file_i = np.intersect1d(
            complete["open_time_ms"], file_hours["open_time_ms"], return_indices=True
        )
        same = sum(
            all(complete[c][ours_i] == file_hours[c][file_i]) for c in ("open", "high", "low", "close")
        ) == 4 and np.allclose(complete["volume"][ours_i], file_hours["volume"][file_i], rtol=1e-9)
        summary["hours_checked"] = int(common.size)
        console.print(
            f"  1h bars built from 1m vs the {label} 1h file: {common.size:,} common hours, "
            f"{'OHLC identical, volume to 1e-9' if same else '[red]MISMATCH[/]'}"
        )
    console.print(
        bars_table(
            f"{traded} 1h bars built from 1m ({label})",
            complete,
            close_features(complete["close"], config.indicators),
            rows,
        )
    )
    return summary


def evaluation_table(runs: Sequence[RunResult], level: float, data_label: str) -> Table:
    """The whole-span ``runs`` of an evaluation: each strategy's return and Sharpe with their ``level`` bootstrap
    intervals, max drawdown and trades, in :data:`COLUMNS` (the rest of the evaluation is in its ``report.md``)."""
    title = f"evaluation on the latest span ({data_label}), {level:.0%} block-bootstrap intervals"
    table = Table(title=title, title_justify="left", min_width=len(title))
    for col in ("strategy", f"return [{level:.0%} CI]", f"Sharpe [{level:.0%} CI]", "max dd", "trades"):
        table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)

    def with_ci(run: RunResult, stat: str, fmt: str) -> str:
        ci = run.intervals.get(stat)
        value = format(getattr(run, stat), fmt)
        return f"{value} [{ci.low:{fmt}}, {ci.high:{fmt}}]" if ci is not None else f"{value} [n/a]"

    for run in runs:
        name = run.strategy if run.strategy != "random" else f"random s{run.seed}"
        table.add_row(
            name,
            with_ci(run, "total_return", "+.2%"),
            with_ci(run, "sharpe", "+.1f"),
            f"{run.max_drawdown:.2%}",
            f"{run.trades:,}",
        )
    return table


def _stage_state(console: Console, history: History, config: ExperimentConfig, smoke: bool) -> dict[str, object]:
    from market.timeline_builder import build_timeline

    state = StateConfig(profile="kline-1m")
    data = history.market_data(config.symbols, ticks=False)
    if smoke:
        data = type(data)(
            traded_bars={**data.traded_bars, "1m": data.traded_bars["1m"][:2000]},
            reference_bars={**data.reference_bars, "1m": data.reference_bars["1m"][:2000]},
            synthetic=data.synthetic,
            source=data.source,
        )
    started = time.perf_counter()
    with stage_bar(console, "building the market timeline"):
        timeline = build_timeline(data, state, config.indicators)
    built_s = time.perf_counter() - started
    console.print(timeline.layout.describe())
    steps = np.linspace(0, timeline.n_steps - 1, 512).astype(np.int64)
    agent = np.zeros((steps.size, len(AGENT_FEATURES)), dtype=np.float32)
    started = time.perf_counter()
    states = gather(timeline, steps, agent)
    gather_s = time.perf_counter() - started
    console.print(
        f"[bold]timeline[/] {timeline.n_steps:,} base steps built in {built_s:.1f} s "
        f"({timeline.nbytes() / 2**20:.0f} MiB, {history.label()}); 512 states of {timeline.layout.size:,} floats "
        f"gathered in {gather_s * 1000:.1f} ms, all finite: {bool(np.isfinite(states).all())}"
    )
    return {"timeline_steps": timeline.n_steps, "state_size": timeline.layout.size}


def run_demo(
    config: ExperimentConfig,
    *,
    once: bool = False,
    smoke: bool = False,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> Path:
    """Run the whole loop on the embedded default and print a summary; return the run directory.

    Stages: history -> bars, indicators, state (offline); then on a local Ray: a short CNN training (not in
    smoke mode), Ape-X training on history, evaluation beside the baselines, the live replay stream, live
    state and paper trading, the policy service and the dashboard, and a few ``POST /v1/act`` answers.

    Parameters
    ----------
    config : ExperimentConfig
    once : bool
        Exit after the stages instead of serving until Ctrl-C.
    smoke : bool
        Smallest sizes everywhere (CI: well under 3 minutes).
    host : str
        Serve's HTTP host (a non-loopback one needs ``$RAYSCALP_API_KEY``).
    port : int, optional
        Serve's HTTP port: 8000 by default (a free one with ``once`` or ``smoke``); ``0`` picks a free one.

    Raises
    ------
    ConfigError
        Before any stage runs, when the host needs a key it does not have or the port cannot be bound.
    """
    from serve.auth import DEFAULT_API_KEY_ENV, ApiKeyAuth, check_bind

    # refused now, not after minutes of training
    check_bind(host, ApiKeyAuth.from_env(DEFAULT_API_KEY_ENV))
    port = http_port(host, port, pick_free=smoke or once)
    # COLUMNS at most: the tables and lines are laid out for it, in a terminal or a log
    probe = Console()
    console = Console(width=min(probe.width, COLUMNS) if probe.is_terminal else COLUMNS)
    run_id = new_run_id(config.name)
    out_dir = config.output_dir / run_id
    console.rule(f"rayscalp demo: {run_id}")
    started = time.perf_counter()
    with stage_bar(console, "loading history"):
        history = load_history(config.data, config.symbols, synthetic_days=3 if smoke else 14)
    console.print(f"[bold]data[/]: {history.description} ({history.label()})")
    if history.synthetic:
        console.print("[yellow]No recorded or fetched data found: every figure below is from SYNTHETIC data.[/]")
    summary: dict[str, object] = {"data": history.kind}
    summary.update(print_bars(console, history, config, rows=3 if smoke else 6))
    summary.update(_stage_state(console, history, config, smoke))
    live, evaluation, trained = _stage_live(console, config, out_dir, smoke, history, (host, port))
    summary.update(trained)
    record = make_run_record(
        config,
        run_id=run_id,
        components=("demo",),
        data_fingerprint=history.fingerprint,
        data_sources=[str(p) for p in history.files] or [history.description],
        extra={"summary": summary},
    )
    path = write_run_record(record, out_dir)
    console.rule("summary")
    console.print(f"data: {history.label()}")
    level = 1.0 - float(evaluation.bootstrap["alpha"])
    console.print(evaluation_table(evaluation.select(scope="span"), level, evaluation.data_label))
    console.print(f"full evaluation report: {evaluation.out_dir / 'report.md'}")
    for name, url in live.urls.items():
        console.print(f"{name:>10}: {url}")
    for answer in live.answers:
        console.print(f"  POST /v1/act {answer}")
    for note in live.notes:
        console.print(f"  {note}")
    console.print(f"run record: {path}  ({time.perf_counter() - started:.0f} s)")
    if not once:
        _serve_until_interrupted(console, live)
    _shutdown(live)
    return out_dir


def _stage_live(
    console: Console,
    config: ExperimentConfig,
    out_dir: Path,
    smoke: bool,
    history: History,
    http: tuple[str, int],
) -> tuple[LiveDemo, Any, dict[str, object]]:
    import ray
    import torch
    from ray import serve

    # The demo shares the machine with Ray's workers and Serve's replicas: one torch thread here, or torch's
    # OpenMP threads spin-wait against them (measured many times slower on two cores).
    torch.set_num_threads(1)
    sizes = DemoSizes.of(smoke)
    # address="local": the demo's own Ray, even where another one was started with `ray start` on this machine
    context = ray.init(
        address="local",
        namespace=DEMO_NAMESPACE,
        include_dashboard=not smoke,
        configure_logging=False,
        log_to_driver=False,
        num_cpus=4,
    )
    host, port = http
    serve.start(http_options={"host": host, "port": port})
    cnn = train_cnn_for_demo(config, sizes, out_dir, console, history)
    demo_cfg = demo_config(config, sizes, out_dir, cnn)
    result = train_policy(demo_cfg, console)
    policy = Path(result.last_checkpoint.file_uri("policy.pt"))
    console.print(f"[bold]policy[/]: {policy} ({result.updates} updates, {result.env_steps} env steps)")
    from concurrent.futures import ThreadPoolExecutor

    # The evaluation (the driver's CPU) runs while the live path starts (mostly waiting on new actors and
    # replicas), so serving starts sooner; neither reads the other's output.
    with (
        stage_bar(console, "evaluating beside the baselines; starting the live path and serving") as bar,
        ThreadPoolExecutor(1, thread_name_prefix="demo-evaluation") as pool,
    ):
        evaluating = pool.submit(evaluate_policy, policy, demo_cfg, out_dir, sizes, cnn, bar.line)
        live = start_live(demo_cfg, policy, out_dir, sizes, history, host=host, port=port)
        evaluation = evaluating.result()
    from .run_summary import run_summary

    # the training panel: this run's curves and evaluation (the learner has finished, so it is not running)
    summary = run_summary(result.run_dir / "curves.json", out_dir / "evaluation" / "results.json")
    summary["run_id"] = result.run_id
    ray.get(live.board.set_run.remote(summary), timeout=30)
    if getattr(context, "dashboard_url", None):
        live.urls["ray dashboard"] = f"http://{context.dashboard_url}"
    from market.features import gather
    from market.layout import AGENT_FEATURES
    from market.timeline_builder import build_timeline

    data = history.market_data(config.symbols, ticks=False)
    short = type(data)(
        traded_bars={**data.traded_bars, "1m": data.traded_bars["1m"][:600]},
        reference_bars={**data.reference_bars, "1m": data.reference_bars["1m"][:600]},
        synthetic=data.synthetic,
        source=data.source,
    )
    timeline = build_timeline(short, demo_cfg.state, demo_cfg.indicators)
    steps = np.array([timeline.n_steps - 2, timeline.n_steps - 1], dtype=np.int64)
    states = gather(timeline, steps, np.zeros((2, len(AGENT_FEATURES)), np.float32))
    ask_policy(live, states, config.symbols.traded, sizes.live_wait_s)
    live.notes.append(paper_line(live))
    trained = {
        "updates": result.updates,
        "env_steps": result.env_steps,
        "policy": str(policy),
        "cnn": str(cnn) if cnn else "none",
    }
    return live, evaluation, trained


def _serve_until_interrupted(console: Console, live: LiveDemo) -> None:
    console.print("serving; Ctrl-C to stop")
    try:
        while True:
            time.sleep(5)
            console.print(paper_line(live))
    except KeyboardInterrupt:
        console.print("stopping")


def _shutdown(live: LiveDemo) -> None:
    import ray
    from ray import serve

    if live.pusher is not None:
        live.pusher.stop()
    if live.stream is not None:
        live.stream.stop()
    serve.shutdown()
    ray.shutdown()
