"""Benchmark (learning target): the same training budget with ``market`` vs ``scalper`` actions on ``binance-usdm``.

Both policies train with ``cluster.train_local.train_local`` (``rayscalp train --local``) from the same seed, on the
same tiny-profile timeline of the real ETH/BTC 1m klines, with the same update budget, replay ratio and epsilon
schedule; only ``env.actions`` differs (``market``: BUY / SELL / HOLD at market, taker 0.05%; ``scalper``: those plus
post-only BID / ASK at the best price, maker 0.02%, and CANCEL). The venue is the ``perp`` one (Binance USD-M fees,
long or short, 1x), with the default decision latency and the kline fill rule for resting orders. Each policy is
then evaluated by ``cluster.evaluate.evaluate`` on the same held-out evaluation span (located by time from the spans
the runs record), net of fees, slippage and funding, beside the baselines, with block-bootstrap intervals, and each
evaluation is a trial in one registry of this run (so the deflated Sharpe ratio counts both).

Figure of the last line: the out-of-sample equity multiple over the whole evaluation span (final / initial equity,
net of every cost) of the scalper policy (ours) and of the market policy (peer); ratio = ours / peer.
Several training seeds (``--seeds``) give the spread between runs of the same budget.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import SHARED_DATA
from market.venue import ACTION_SETS

UPDATES = 400  # learner updates per run (the budget both action sets get)
HISTORY_STEPS = 6_000  # minutes of the real 1m klines (the tiny profile's spans split them)
SEEDS = (0, 1)
RESAMPLES = 300
FOLDS = 2


def base_config(out_dir: str, actions: str, seed: int, updates: int, history_steps: int) -> Any:
    """The tiny config on the perp venue with ``actions``, ``seed`` and the update budget."""
    from cluster.config import load_config

    sets = [
        f"output_dir={out_dir}",
        f"name=bench-actions-{actions}",
        f"seed={seed}",
        f"data.shared_dir={SHARED_DATA}",
        f"env.actions={actions}",
        "env.venue.kind=perp",
        f"apex.history_steps={history_steps}",
        f"apex.budget.updates={updates}",
        "apex.curves.every_updates=1000000",
        "apex.curves.validation_steps=0",
        "apex.progress_every_s=1000000",
    ]
    return load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", sets)


def ci(run: Any, stat: str) -> str:
    """``value [low, high]`` of a run's statistic (total return in %, Sharpe as is)."""
    scale, fmt = (100.0, "+.3f") if stat == "total_return" else (1.0, "+.1f")
    value = getattr(run, stat) * scale
    interval = run.intervals.get(stat)
    if interval is None:
        return f"{value:{fmt}} [n/a]"
    return f"{value:{fmt}} [{interval.low * scale:{fmt}}, {interval.high * scale:{fmt}}]"


def row(label: str, run: Any, dsr: str = "") -> str:
    return (
        f"{label:<22}{ci(run, 'total_return'):<30}{ci(run, 'sharpe'):<24}{run.trades:>7}{run.exposure:>7.0%}"
        f"{run.fees:>9.2f}{dsr:>7}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=UPDATES, help="learner updates per run (both action sets)")
    parser.add_argument("--history-steps", type=int, default=HISTORY_STEPS, help="minutes of the real 1m klines")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="training seeds")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    if not (SHARED_DATA / "binance" / "klines").is_dir():
        print(f"actions: real 1m klines not found under {SHARED_DATA}; this benchmark runs on real data only")
        return 2

    from rich.console import Console

    from cluster.evaluate import evaluate
    from cluster.train import prepare_market
    from cluster.train_local import train_local

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-actions-") as out_dir:
        first = base_config(out_dir, "market", args.seeds[0], args.updates, args.history_steps)
        market = prepare_market(first, first.apex, log=lambda _line: None)  # one timeline for every run
        print(
            f"data: {market.description}; {market.timeline.n_steps:,} steps of 1m, tiny profile; train steps "
            f"[{market.train_start}, {market.train_end}), evaluation span from step {market.eval_start}"
        )
        print(first.env.venue.describe())
        print(
            f"budget per run: {args.updates} updates, replay ratio {first.apex.replay_ratio:g}, batch "
            f"{first.training.batch_size}, {first.apex.envs_per_worker} envs; training seeds {args.seeds}; "
            f"evaluation: {args.resamples} stationary block-bootstrap resamples, {FOLDS} folds, 95% intervals"
        )
        reports: dict[tuple[str, int], Any] = {}
        for seed in args.seeds:
            for actions in ACTION_SETS:
                config = base_config(out_dir, actions, seed, args.updates, args.history_steps)
                t0 = time.perf_counter()
                result = train_local(config, market=market, console=Console(file=io.StringIO()))
                t1 = time.perf_counter()
                reports[actions, seed] = evaluate(
                    result.policy_path,
                    config,
                    out_dir=Path(out_dir) / f"eval-{actions}-{seed}",
                    timeline=market.timeline,
                    n_resamples=args.resamples,
                    folds=FOLDS,
                    trials_dir=Path(out_dir) / "trials",
                )
                print(
                    f"trained {actions} seed {seed}: {result.updates} updates, {result.env_steps:,} env steps in "
                    f"{t1 - t0:.0f} s; evaluated in {time.perf_counter() - t1:.0f} s",
                    flush=True,
                )
        print_table(reports, args.seeds)
    print(f"wall {time.perf_counter() - started:.0f} s")
    multiple = {a: [1.0 + policy_run(reports[a, s]).total_return for s in args.seeds] for a in ACTION_SETS}
    ours, peer = statistics.median(multiple["scalper"]), statistics.median(multiple["market"])
    print(
        f"actions: ours {ours:.5f}x out-of-sample equity (scalper actions, median of {len(args.seeds)} seeds), "
        f"peer[market actions] {peer:.5f}x, ratio {ours / peer:.4f}"
    )
    return 0


def policy_run(report: Any) -> Any:
    """The policy's run over the whole evaluation span."""
    (run,) = report.select(strategy="policy", scope="span")
    return run


def print_table(reports: dict[tuple[str, int], Any], seeds: list[int]) -> None:
    """The policies of both action sets per seed, then the baselines (same span, same venue), one row each."""
    any_report = reports["market", seeds[0]]
    span = any_report.spans["eval"]
    print(
        f"\nevaluation span: steps [{span['start']}, {span['end']}) ({span['n_steps']} minutes), the same for every "
        f"run; {any_report.venue.get('describe', '')}"
    )
    header = (
        f"{'strategy':<22}{'net return % [95% CI]':<30}{'Sharpe [95% CI]':<24}{'trades':>7}{'expo':>7}"
        f"{'fees':>9}{'DSR':>7}"
    )
    print(header)
    print("-" * len(header))
    for seed in seeds:
        for actions in ACTION_SETS:
            report = reports[actions, seed]
            dsr = report.stats.get("dsr", {}).get("dsr")
            label = f"policy {actions} s{seed}"
            print(row(label, policy_run(report), "n/a" if dsr is None else f"{dsr:.3f}"))
    for run in any_report.select(scope="span"):
        if run.strategy == "policy" or run.strategy.startswith("policy_"):
            continue
        print(row(run.strategy if run.strategy != "random" else f"random s{run.seed}", run))
    means = {
        a: float(np.mean([policy_run(reports[a, s]).total_return for s in seeds])) * 100 for a in ACTION_SETS
    }
    print(f"mean net return over seeds: market {means['market']:+.3f}%, scalper {means['scalper']:+.3f}%")


if __name__ == "__main__":
    raise SystemExit(main())
