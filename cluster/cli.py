"""The ``rayscalp`` command line: one click group whose commands call into the packages.

Commands parse options and print; the work lives in the modules they import (lazily, so
``rayscalp --help`` stays fast and a command never pays for another's imports).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from market.errors import RayscalpError

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Experiment config (YAML). Default: configs/default.yaml.",
)
SET_OPTION = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override one config key, e.g. --set training.lr=3e-4 (repeatable).",
)


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--config`` and ``--set``: the experiment config a command loads with ``_load(config_path, overrides)``."""
    return CONFIG_OPTION(SET_OPTION(command))


#: A file that must exist (a checkpoint, a model); the value is a ``Path``.
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _load(config_path: Path | None, overrides: tuple[str, ...]):
    from cluster.config import load_config

    return load_config(config_path, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rayscalp")
def main() -> None:
    """rayscalp: distributed RL that scalps ETH/USDT on Binance data, on Ray."""


@main.group()
def config() -> None:
    """Inspect experiment configs."""


@config.command("show")
@config_options
def config_show(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Validate a config and print it resolved, defaults included."""
    import yaml

    from cluster.config import resolved_dict

    click.echo(yaml.safe_dump(resolved_dict(_load(config_path, overrides)), sort_keys=False))


@main.group()
def data() -> None:
    """Get, inspect and snapshot market data."""


@data.command("fetch")
@click.option("--symbols", default="ETHUSDT,BTCUSDT", show_default=True, help="Comma-separated symbols.")
@click.option("--kind", type=click.Choice(["klines", "trades", "aggTrades"]), default="klines", show_default=True)
@click.option("--interval", default="1m", show_default=True, help="Kline interval (klines only).")
@click.option("--start", required=True, help="First day, YYYY-MM-DD (or month YYYY-MM with --period monthly).")
@click.option("--end", required=True, help="Last day (inclusive).")
@click.option("--market", type=click.Choice(["spot", "um"]), default="spot", show_default=True)
@click.option("--period", type=click.Choice(["daily", "monthly"]), default="daily", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Default: the config's data.data_dir.")
@click.option("--base-url", default=None, help="Default: the config's endpoints.public_data_url.")
@config_options
def data_fetch(
    symbols: str,
    kind: str,
    interval: str,
    start: str,
    end: str,
    market: str,
    period: str,
    data_dir: Path | None,
    base_url: str | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Download Binance public-data zips, verify their checksums and store them as Parquet."""
    from cluster.data.fetch import fetch_public_data

    cfg = _load(config_path, overrides)
    report = fetch_public_data(
        [s.strip().upper() for s in symbols.split(",") if s.strip()],
        kind,
        start,
        end,
        interval=interval if kind == "klines" else None,
        market=market,
        period=period,
        data_dir=data_dir or cfg.data.data_dir,
        base_url=base_url or cfg.endpoints.public_data_url,
        progress=lambda msg: click.echo(msg, err=True),
    )
    click.echo(report.summary() if hasattr(report, "summary") else str(report))
    if getattr(report, "failed", None):
        sys.exit(1)


@data.command("inspect")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def data_inspect(paths: tuple[Path, ...]) -> None:
    """Load kline files and report span, rows, gaps and duplicates; then, as `evaluate --data` reads them, every
    series merged across its files (overlaps, gaps, partial last bars dropped) or why they do not make one."""
    from cluster.data.history import load_paths
    from market.config import SymbolsConfig
    from market.datasets import inspect_klines
    from market.errors import DataError

    for path in paths:
        if path.is_file():
            click.echo(f"{path}: {inspect_klines(path)}")
    try:
        history = load_paths(list(paths), SymbolsConfig())
    except DataError as exc:
        click.echo(f"as one history: not usable: {exc}")
        return
    click.echo(f"as one history ({history.fingerprint[:12]}):")
    for line in history.notes:
        click.echo(f"  {line}")


@data.command("snapshot")
@click.option("--name", required=True, help="Snapshot name (letters, digits, '_', '.', '-').")
@click.option(
    "--klines",
    "kline_files",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Kline files named SYMBOL-INTERVAL-... (repeatable).",
)
@click.option(
    "--stream-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The unified stream's storage directory (its persisted ticks and bars).",
)
@click.option("--symbols", default="ETHUSDT,BTCUSDT", show_default=True, help="Symbols read from --stream-dir.")
@click.option("--start", default=None, help="First instant kept, YYYY-MM-DD[THH:MM] UTC (default: all).")
@click.option("--end", default=None, help="First instant not kept (exclusive).")
@click.option("--out", "out_root", type=click.Path(path_type=Path), default=Path("data/snapshots"), show_default=True)
def data_snapshot(
    name: str,
    kline_files: tuple[Path, ...],
    stream_dir: Path | None,
    symbols: str,
    start: str | None,
    end: str | None,
    out_root: Path,
) -> None:
    """Freeze a span of history (kline files and/or the stream's persisted data) into an immutable,
    fingerprinted snapshot that runs can name."""
    from cluster.data.snapshot import arrays_from_kline_files, arrays_from_stream_store, clip_span, write_snapshot

    if not kline_files and stream_dir is None:
        raise click.UsageError("give --klines files and/or --stream-dir")
    arrays = arrays_from_kline_files(list(kline_files)) if kline_files else {}
    sources = [str(p) for p in kline_files]
    if stream_dir is not None:
        arrays.update(arrays_from_stream_store(stream_dir, tuple(s.strip().upper() for s in symbols.split(","))))
        sources.append(str(stream_dir))
    arrays = clip_span(arrays, _utc_ms(start), _utc_ms(end))
    snap = write_snapshot({k: v for k, v in arrays.items() if v.size}, out_root, name, sources=sources)
    click.echo(f"snapshot {snap.path} fingerprint {snap.fingerprint}")
    for key, entry in snap.manifest["arrays"].items():
        click.echo(f"  {key}: {entry['rows']:,} rows")


def _utc_ms(text: str | None) -> int | None:
    if text is None:
        return None
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not YYYY-MM-DD[THH:MM[:SS]]") from None
    return int(when.replace(tzinfo=dt.UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class DataSpan:
    """The data a scoring command reads: named files (else the configured history) and a UTC span of it.

    The fields are keyword arguments of ``cluster.evaluate.evaluate`` and ``cluster.train_cnn.evaluate_cnn``.
    """

    data_paths: list[Path] | None
    start_ms: int | None
    end_ms: int | None
    allow_short_warmup: bool


def span_options(verb: str, data_help: str, warmup_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--data``, ``--start``, ``--end`` and ``--allow-short-warmup``, handed to the command as ``span: DataSpan``.

    ``verb`` says what happens to the steps in the span ("evaluated", "scored") in the options' help.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def with_span(
            *args: Any,
            data_paths: tuple[Path, ...],
            start: str | None,
            end: str | None,
            allow_short_warmup: bool,
            **kwargs: Any,
        ) -> Any:
            span = DataSpan(list(data_paths) or None, _utc_ms(start), _utc_ms(end), allow_short_warmup)
            return command(*args, span=span, **kwargs)

        options = (
            click.option(
                "--data",
                "data_paths",
                multiple=True,
                type=click.Path(exists=True, path_type=Path),
                help=data_help,
            ),
            click.option("--start", "start", default=None, help=f"First {verb} instant, YYYY-MM-DD[THH:MM] UTC."),
            click.option("--end", "end", default=None, help=f"First instant not {verb} (exclusive)."),
            click.option("--allow-short-warmup", is_flag=True, help=warmup_help),
        )
        for option in reversed(options):
            with_span = option(with_span)
        return with_span

    return decorate


@main.command()
@config_options
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of the random baseline.")
@click.option("--max-steps", type=int, default=None, help="Only the first N base steps (default: all).")
def baselines(config_path: Path | None, overrides: tuple[str, ...], seeds: str, max_steps: int | None) -> None:
    """Flat, buy-and-hold, random and momentum through the env over the whole history span."""
    from cluster.data.history import load_history
    from market.baselines import format_table, run_baselines
    from market.timeline_builder import build_timeline

    cfg = _load(config_path, overrides)
    history = load_history(cfg.data, cfg.symbols)
    data = history.market_data(cfg.symbols, ticks=cfg.state.tick_window > 0)
    if max_steps:
        data = type(data)(
            traded_bars={**data.traded_bars, "1m": data.traded_bars["1m"][:max_steps]},
            reference_bars={**data.reference_bars, "1m": data.reference_bars["1m"][:max_steps]},
            synthetic=data.synthetic,
            source=data.source,
        )
    timeline = build_timeline(data, cfg.state, cfg.indicators)
    # Closed out at the end like `rayscalp evaluate`: every figure pays its exit fee too.
    env_config = cfg.env.model_copy(
        update={"random_start": False, "start_step": 0, "episode_steps": timeline.n_steps, "close_at_end": True}
    )
    results = run_baselines(timeline, env_config, [int(s) for s in seeds.split(",")])
    click.echo(
        f"data: {history.description} ({history.label()}), {timeline.n_steps:,} steps of {cfg.state.base_timeframe}"
    )
    from market.env import VectorTradingEnv

    click.echo(VectorTradingEnv(timeline, 1, env_config, observe=False).fill_model)  # the venue the env ran
    click.echo(format_table(results))
    click.echo("open positions are closed at market at the end (the exit fee paid)")


@main.command("evaluate")
@click.option(
    "--checkpoint",
    required=True,
    type=EXISTING_FILE,
    help="Policy checkpoint written by policies.checkpoint.save_policy.",
)
@config_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Default: <output_dir>/eval/<checkpoint name>-<UTC time>.",
)
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated evaluation seeds (at least 3).")
@click.option(
    "--folds",
    type=int,
    default=4,
    show_default=True,
    help="Sub-windows of the evaluation span (no refit; fewer where it is short).",
)
@click.option("--resamples", type=int, default=1000, show_default=True, help="Block-bootstrap resamples.")
@click.option(
    "--cnn-checkpoint",
    type=EXISTING_FILE,
    default=None,
    help="The CNN the policy was trained with, when its checkpoint does not name one.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda[:N] or auto.")
@span_options(
    "evaluated",
    data_help="Kline files or folders (CSV, Parquet, public-data zips) to evaluate on, all of it after the warm-up "
    "(repeatable). Default: the recorded evaluation span of the configured data.",
    warmup_help="Evaluate steps whose state windows are not yet full (counted and printed) instead of refusing.",
)
def evaluate_command(
    checkpoint: Path,
    config_path: Path | None,
    overrides: tuple[str, ...],
    out_dir: Path | None,
    seeds: str,
    folds: int,
    resamples: int,
    cnn_checkpoint: Path | None,
    device: str,
    span: DataSpan,
) -> None:
    """Evaluate a policy greedily on the evaluation span beside the baselines, with bootstrap intervals."""
    import datetime as dt

    from cluster.evaluate import evaluate, format_report

    cfg = _load(config_path, overrides)
    out = out_dir or cfg.output_dir / "eval" / f"{checkpoint.stem}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    report = evaluate(
        checkpoint,
        cfg,
        out_dir=out,
        seeds=tuple(int(s) for s in seeds.split(",") if s.strip()),
        folds=folds,
        n_resamples=resamples,
        cnn_checkpoint=cnn_checkpoint,
        device=device,
        log=lambda line: click.echo(line, err=True),
        **asdict(span),
    )
    click.echo(format_report(report))


@main.command("evaluate-cnn")
@click.option("--checkpoint", required=True, type=EXISTING_FILE, help="CNN checkpoint written by rayscalp train-cnn.")
@config_options
@span_options(
    "scored",
    data_help="Kline files or folders to score on (repeatable). Default: the configured history.",
    warmup_help="Score steps whose windows are not yet full.",
)
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None, help="Write the scores as JSON.")
def evaluate_cnn_command(
    checkpoint: Path,
    config_path: Path | None,
    overrides: tuple[str, ...],
    span: DataSpan,
    out_path: Path | None,
) -> None:
    """Score a CNN's direction predictions on new data beside its training span's majority class and persistence."""
    import orjson

    from cluster.train_cnn import evaluate_cnn

    cfg = _load(config_path, overrides)
    result = evaluate_cnn(
        checkpoint,
        cfg,
        **asdict(span),
        log=click.echo,
    )
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


@main.command("walkforward")
@config_options
@click.option("--folds", type=int, default=4, show_default=True, help="K folds: train on k, test on k + 1.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Evaluation seeds (at least 3).")
@click.option("--resamples", type=int, default=1000, show_default=True, help="Block-bootstrap resamples.")
@click.option("--data", "data_paths", multiple=True, type=click.Path(exists=True, path_type=Path), help="Kline files.")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Default: <output_dir>/walkforward."
)
def walkforward_command(
    config_path: Path | None,
    overrides: tuple[str, ...],
    folds: int,
    seeds: str,
    resamples: int,
    data_paths: tuple[Path, ...],
    out_dir: Path | None,
) -> None:
    """True walk-forward: a single-process policy trained on each fold, evaluated on the next, one OOS curve."""
    from cluster.data.history import load_history
    from cluster.walkforward import walkforward

    cfg = _load(config_path, overrides)
    walkforward(
        cfg,
        folds,
        out_dir=out_dir or cfg.output_dir / "walkforward",
        history=load_history(cfg.data, cfg.symbols, paths=list(data_paths) or None),
        seeds=tuple(int(s) for s in seeds.split(",") if s.strip()),
        n_resamples=resamples,
        log=click.echo,
    )


@main.command("trials")
@click.option(
    "--runs-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of trials.jsonl. Default: the config's output_dir.",
)
@config_options
@click.option("--kind", type=click.Choice(["train", "tune", "evaluate"]), default=None, help="Only this kind.")
@click.option("--data", "fingerprint", default=None, help="Only rows on this data fingerprint (a prefix will do).")
@click.option("--name", default=None, help="Only this experiment name.")
def trials_command(
    runs_dir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
    kind: str | None,
    fingerprint: str | None,
    name: str | None,
) -> None:
    """List the trial registry: every train, tune and evaluate run, filtered."""
    from cluster.trials import count_bad_lines, format_trials, read_trials, registry_path

    root = runs_dir if runs_dir is not None else _load(config_path, overrides).output_dir
    rows = read_trials(root, kind=kind, data_fingerprint=fingerprint, name=name)
    click.echo(f"registry {registry_path(root)}")
    click.echo(format_trials(rows))
    bad = count_bad_lines(root)
    if bad:
        click.echo(f"{bad} line(s) of the registry are not rows (skipped)")


@main.command()
@config_options
@click.option(
    "--policy",
    "policy_path",
    type=EXISTING_FILE,
    default=None,
    help="A policy checkpoint (policies.checkpoint) to act with.",
)
@click.option("--policy-url", default=None, help="The policy service's /v1/act URL instead of a checkpoint.")
@click.option(
    "--storage", type=click.Path(file_okay=False, path_type=Path), default=Path("data/paper"), show_default=True
)
@click.option("--max-position", type=float, default=None, help="Largest position, in base units.")
@click.option("--max-leverage", type=float, default=None, help="Largest notional / equity.")
@click.option("--max-daily-loss", type=float, default=None, help="Loss in quote that flattens for the UTC day.")
@click.option("--max-orders-per-minute", type=int, default=None)
@click.option("--cnn-app", default=None, help="The CNN Serve app that fills the state's CNN part.")
def paper(
    config_path: Path | None,
    overrides: tuple[str, ...],
    policy_path: Path | None,
    policy_url: str | None,
    storage: Path,
    max_position: float | None,
    max_leverage: float | None,
    max_daily_loss: float | None,
    max_orders_per_minute: int | None,
    cnn_app: str | None,
) -> None:
    """Paper-trade the policy on the live stream (start it with `rayscalp stream`), with risk limits."""
    import time

    import ray

    from actors.live_state import LIVE_STATE_ACTOR
    from actors.paper import CheckpointPolicy, HttpPolicy, PaperConfig, start_paper
    from actors.risk import RiskConfig
    from cluster.live_state_runner import start_live_state

    if (policy_path is None) == (policy_url is None):
        raise click.UsageError("give exactly one of --policy or --policy-url")
    cfg = _load(config_path, overrides)
    risk = RiskConfig(
        max_position=max_position,
        max_leverage=max_leverage,
        max_daily_loss=max_daily_loss,
        max_orders_per_minute=max_orders_per_minute,
    )
    paper_cfg = PaperConfig(
        symbols=cfg.symbols,
        state=cfg.state,
        venue=cfg.env.venue,
        initial_equity=cfg.env.initial_equity,
        risk=risk,
        storage_dir=storage,
        live_state_actor=LIVE_STATE_ACTOR,
        actions=cfg.env.actions,
        sensitivity=cfg.sensitivity,
    )
    click.echo(cfg.env.venue.describe(), err=True)
    _init_ray("auto")
    # the one live state first: paper trading, the policy's latest form and the dashboard all read its records
    live = start_live_state(cfg, detached=True, cnn_app=cnn_app)
    ray.get(live.ready.remote(), timeout=60)
    actor = start_paper(paper_cfg, CheckpointPolicy(policy_path) if policy_path else HttpPolicy(policy_url))
    try:
        while True:
            s = ray.get(actor.status.remote())
            click.echo(
                f"equity {s['equity']:.2f} pnl {s['pnl']['total']:+.2f} position {s['position']:.6f} "
                f"fills {s['fills']} kill {s['kill_switch']['engaged']}",
                err=True,
            )
            time.sleep(2)
    except KeyboardInterrupt:
        click.echo("paper trading goes on (detached); stop it with `rayscalp paper-kill`", err=True)


@main.command("paper-kill")
@click.option("--reason", default="operator", show_default=True)
def paper_kill(reason: str) -> None:
    """Engage the paper trading kill switch: close the position now and take no more orders."""
    from actors.paper import kill_paper

    _init_ray("auto")
    s = kill_paper(reason)
    click.echo(
        f"kill switch engaged ({s['kill_switch']['reason']}): position {s['position']}, equity {s['equity']:.2f}"
    )


@main.command()
@config_options
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in apex.checkpoint.storage.")
@click.option("--local", is_flag=True, help="Single-process double DQN (cluster/train_local.py), no Ray.")
@click.option(
    "--engine",
    type=click.Choice(["ours", "rllib"]),
    default="ours",
    show_default=True,
    help="rllib: RLlib's own --algo on the same env and network (cluster/train_rllib.py).",
)
@click.option("--algo", type=click.Choice(["DQN", "PPO", "APPO"]), default="DQN", show_default=True)
def train(
    config_path: Path | None, overrides: tuple[str, ...], resume: bool, local: bool, engine: str, algo: str
) -> None:
    """Ape-X training on Ray (or, with --local, in one process) to the configured budget, then a greedy evaluation."""
    cfg = _load(config_path, overrides)
    if engine == "rllib":
        if resume or local:
            raise click.UsageError("--engine rllib starts afresh on a local Ray: no --resume, no --local")
        from cluster.train_rllib import train_rllib

        train_rllib(cfg, algo)
        return
    if local:
        if resume:
            raise click.UsageError("--resume is for Ape-X runs; a --local run starts afresh")
        from cluster.train_local import train_local

        train_local(cfg)
        return
    from cluster.train import train as run_training

    run_training(cfg, resume=resume)


@main.command("tune")
@config_options
@click.option(
    "--search", "search_path", type=click.Path(path_type=Path), required=True, help="Search file (configs/search.yaml)."
)
@click.option("--samples", type=int, default=4, show_default=True, help="Trials to draw.")
@click.option("--local", is_flag=True, help="Trials of the single-process trainer instead of Ape-X.")
def tune_command(
    config_path: Path | None, overrides: tuple[str, ...], search_path: Path, samples: int, local: bool
) -> None:
    """Ray Tune sweep with ASHA on the validation tail; every trial registered, the best evaluated once."""
    from cluster.tune import load_search, tune_search

    cfg = _load(config_path, overrides)
    tune_search(cfg, load_search(search_path, cfg), samples, local=local)


@main.command("train-cnn")
@config_options
@click.option("--max-epochs", type=int, default=None, help="Override cnn_training's epoch budget.")
@click.option("--max-steps", type=int, default=None, help="Override cnn_training's step budget.")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Default: artifacts/cnn/<version>."
)
def train_cnn_command(
    config_path: Path | None,
    overrides: tuple[str, ...],
    max_epochs: int | None,
    max_steps: int | None,
    out_dir: Path | None,
) -> None:
    """Train the multi-timeframe CNN on the earliest span; report accuracy beside the baselines."""
    from cluster.train_cnn import train_cnn

    cfg = _load(config_path, overrides)
    train_cnn(
        cfg,
        state=cfg.state,
        cnn=cfg.cnn,
        training=cfg.cnn_training,
        spans=cfg.spans,
        max_epochs=max_epochs,
        max_steps=max_steps,
        out_dir=out_dir,
        log=click.echo,
    )


@main.command()
@config_options
@click.option("--source", type=click.Choice(["replay", "binance"]), default="replay", show_default=True)
@click.option("--speed", default="1x", show_default=True, help="Replay speed: 1x, Nx or max.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: Ctrl-C).")
def stream(
    config_path: Path | None, overrides: tuple[str, ...], source: str, speed: str, duration: float | None
) -> None:
    """Run the live data path (replay exchange or Binance -> ingestion -> unified stream) with a status line."""
    from cluster.stream_runner import start_live_stream, watch

    cfg = _load(config_path, overrides)
    _init_ray("auto" if _ray_running() else None)
    live = start_live_stream(cfg, source=source, speed=speed)  # type: ignore[arg-type]
    click.echo(f"stream from {live.ws_url} ({source}); Ctrl-C to stop", err=True)
    try:
        watch(live, duration_s=duration, echo=click.echo)
    except KeyboardInterrupt:
        pass
    finally:
        live.stop()


def _init_ray(address: str | None) -> None:
    """Join the Ray at ``address`` (``None``: start one here) in the project's namespace, without its dashboard."""
    import ray

    ray.init(
        address=address, namespace="rayscalp", include_dashboard=False, configure_logging=False, log_to_driver=False
    )


def _ray_running() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS")) or Path("/tmp/ray/ray_current_cluster").exists()


@main.command()
@click.option("--source", type=click.Choice(["capture", "klines"]), default="capture", show_default=True)
@click.option("--speed", default="1x", show_default=True, help="1x, Nx (e.g. 10x) or max.")
@click.option("--port", type=int, default=9443, show_default=True, help="0 picks a free port.")
@click.option("--disconnect-every", type=int, default=None, help="Fault: close each connection every K frames.")
@click.option("--malformed-rate", type=float, default=0.0, show_default=True, help="Fault: rate of garbage frames.")
@click.option("--loop", is_flag=True, help="Replay the data again and again, each loop later and with higher ids.")
def exchange(
    source: str, speed: str, port: int, disconnect_every: int | None, malformed_rate: float, loop: bool
) -> None:
    """Run the local replay exchange (Binance's websocket and REST protocol on 127.0.0.1)."""
    from cluster.exchange.server import ExchangeConfig, ExchangeFaults, serve_exchange

    faults = ExchangeFaults(disconnect_every=disconnect_every, malformed_rate=malformed_rate)
    serve_exchange(ExchangeConfig(source=source, speed=speed, port=port, faults=faults, loop=loop))


@main.command()
@config_options
@click.option("--once", is_flag=True, help="Run each stage once and exit instead of serving until Ctrl-C.")
@click.option("--smoke", is_flag=True, help="Smallest sizes everywhere (CI).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Serve's HTTP host; others need $RAYSCALP_API_KEY")
@click.option(
    "--port",
    type=click.IntRange(0, 65_535),
    default=None,
    help="Serve's HTTP port. Default: 8000 (a free one with --once or --smoke); 0 picks a free one.",
)
def demo(
    config_path: Path | None, overrides: tuple[str, ...], once: bool, smoke: bool, host: str, port: int | None
) -> None:
    """The embedded default run (what `make run` calls)."""
    from cluster.demo import run_demo

    run_demo(_load(config_path, overrides), once=once, smoke=smoke, host=host, port=port)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--address",
    default=None,
    help="Job server. Default: $RAY_API_SERVER_ADDRESS, else http://127.0.0.1:8265 (the `ray dashboard` tunnel).",
)
@click.option(
    "--working-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Uploaded as the job's current directory (without .venv, runs/, data/, artifacts/).",
)
@click.option("--env", "env_vars", multiple=True, metavar="KEY=VALUE", help="Environment of the job (repeatable).")
@click.option("--submission-id", default=None, help="A chosen id (must be new on the cluster).")
@click.option("--no-wait", is_flag=True, help="Print the submission id and return instead of following the logs.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Stop following after this many seconds.")
@click.argument("entrypoint", nargs=-1, required=True, type=click.UNPROCESSED)
def submit(
    address: str | None,
    working_dir: Path,
    env_vars: tuple[str, ...],
    submission_id: str | None,
    no_wait: bool,
    timeout_s: float | None,
    entrypoint: tuple[str, ...],
) -> None:
    """Submit ENTRYPOINT as a Ray job with the working dir, then follow its logs to the end.

    Example: rayscalp submit -- python -m cluster.train --config configs/cluster.yaml
    """
    from cluster.ops import submit as jobs_api

    env = {}
    for item in env_vars:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE (got {item!r})", param_hint="--env")
        env[key] = value
    job_id = jobs_api.submit(
        list(entrypoint), address=address, working_dir=working_dir, env_vars=env, submission_id=submission_id
    )
    click.echo(f"submitted {job_id} to {jobs_api.resolve_address(address)}", err=True)
    if no_wait:
        click.echo(job_id)
        return
    final = jobs_api.follow(job_id, address=address, timeout_s=timeout_s)
    click.echo(f"{job_id}: {final.status} {final.message}".rstrip(), err=True)
    if final.status != "SUCCEEDED":
        sys.exit(1)


@main.group()
def jobs() -> None:
    """List, inspect and stop submitted Ray jobs."""


ADDRESS_OPTION = click.option("--address", default=None, help="Job server (see `rayscalp submit --help`).")


@jobs.command("list")
@ADDRESS_OPTION
def jobs_list(address: str | None) -> None:
    """Every submitted job, oldest first."""
    from cluster.ops import submit as jobs_api

    for job in jobs_api.list_jobs(address=address):
        click.echo(f"{job.submission_id}\t{job.status}\t{job.entrypoint}")


@jobs.command("status")
@ADDRESS_OPTION
@click.argument("submission_id")
def jobs_status(address: str | None, submission_id: str) -> None:
    """One job's status and message."""
    from cluster.ops import submit as jobs_api

    job = jobs_api.job_status(submission_id, address=address)
    click.echo(f"{job.submission_id}\t{job.status}\t{job.message}")


@jobs.command("logs")
@ADDRESS_OPTION
@click.option("--follow", "-f", is_flag=True, help="Keep following until the job ends.")
@click.argument("submission_id")
def jobs_logs(address: str | None, follow: bool, submission_id: str) -> None:
    """A job's logs so far (or followed to the end with -f)."""
    from cluster.ops import submit as jobs_api

    if follow:
        jobs_api.follow(submission_id, address=address)
    else:
        click.echo(jobs_api.job_logs(submission_id, address=address), nl=False)


@jobs.command("stop")
@ADDRESS_OPTION
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True, help="Seconds to wait for the end.")
@click.argument("submission_id")
def jobs_stop(address: str | None, wait_s: float, submission_id: str) -> None:
    """Stop a running job and wait for it to end."""
    from cluster.ops import submit as jobs_api

    job = jobs_api.stop(submission_id, address=address, wait_s=wait_s)
    click.echo(f"{job.submission_id}\t{job.status}")


@main.group()
def grafana() -> None:
    """The Grafana dashboard of the project's and Ray's metrics."""


@grafana.command("export")
@click.argument(
    "path", type=click.Path(dir_okay=False, path_type=Path), default=Path("artifacts/grafana/rayscalp.json")
)
def grafana_export(path: Path) -> None:
    """Write the dashboard JSON (for Grafana's file provisioning) to PATH."""
    from cluster.ops.grafana import export

    click.echo(str(export(path)))


@grafana.command("push")
@click.option("--url", required=True, envvar="GRAFANA_URL", help="Grafana's base URL (env GRAFANA_URL).")
@click.option("--api-key", required=True, envvar="GRAFANA_API_KEY", help="Service-account token (env GRAFANA_API_KEY).")
@click.option("--folder-uid", default=None, help="Folder to put the dashboard in.")
def grafana_push(url: str, api_key: str, folder_uid: str | None) -> None:
    """Create or overwrite the dashboard on a Grafana server."""
    from cluster.ops.grafana import push

    result = push(url, api_key, folder_uid=folder_uid)
    click.echo(f"{result.status}: {result.uid} version {result.version} {url.rstrip('/')}{result.url}")


@main.command(
    "box", add_help_option=False, context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.pass_context
def box(ctx: click.Context) -> None:
    """A multi-node Ray on this machine (head, learner node, rollout nodes): up, status, add, remove, down."""
    from cluster.box import box as box_commands

    box_commands.main(args=ctx.args, prog_name="rayscalp box", standalone_mode=False)


def entry() -> None:
    """Console entry point that turns the project's own errors into one clear line and exit code 2."""
    import os

    # A local Ray started from here runs without token auth and without usage reporting; a cluster that
    # sets RAY_AUTH_MODE=token (ray_cluster.yaml) keeps its own setting.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        main(standalone_mode=False)
    except RayscalpError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    entry()
