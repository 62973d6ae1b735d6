"""The report of one evaluation: ``report.md`` beside PNGs of equity and drawdown against the baselines, the
per-regime returns and the lag test, with the trial-aware statistics, the data, spans, venue and costs.

Reads an ``EvaluationReport`` only (what ``cluster.evaluate`` computed and wrote); computes no figure itself
beyond the drawdown curve of an equity curve it is given.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import (
    BEST_RULE,
    LAGS,
    EvaluationReport,
    format_lag_test,
    format_regimes,
    format_trial_stats,
    lag_name,
)
from .plots import figure, save

#: The curves drawn, in order, with their labels.
CURVES: tuple[tuple[str, str], ...] = (
    ("policy", "greedy policy"),
    (BEST_RULE, "baseline to beat (tuned rule)"),
    ("buy_and_hold", "buy and hold"),
)


def _utc(ms: Any) -> str:
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def drawdown(equity: np.ndarray) -> np.ndarray:
    """``1 - e / running peak`` at every mark."""
    e = np.maximum(np.asarray(equity, dtype=np.float64), 1e-12)
    return 1.0 - e / np.maximum.accumulate(e)


def plot_equity_drawdown(report: EvaluationReport, path: Path) -> Path:
    """Equity (relative to its start) and drawdown of the policy, the baseline to beat and buy-and-hold."""
    c = report.curves
    when = np.array(c["time_ms"], dtype="datetime64[ms]")
    fig = figure(11, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for key, label in CURVES:
        if key not in c:
            continue
        e = np.asarray(c[key], dtype=np.float64)
        top.plot(when[: e.size], e / e[0], label=label, lw=1.0)
        bottom.plot(when[: e.size], -drawdown(e), label=label, lw=0.9)
    top.axhline(1.0, color="grey", lw=0.8, ls=":", label="flat")
    top.set_ylabel("equity / initial (net of costs)")
    tag = "SYNTHETIC DATA -- " if report.synthetic else ""
    top.set_title(f"{tag}evaluation span, {report.data_label}", fontsize=10)
    top.legend(loc="best", fontsize=8)
    bottom.set_ylabel("drawdown")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return save(fig, path, dates=True)


def plot_regimes(report: EvaluationReport, path: Path) -> Path | None:
    """Mean per-step return per regime (basis points) with intervals: policy, baseline to beat, buy-and-hold."""
    reg = report.stats.get("regimes", {})
    if not reg.get("available"):
        return None
    names = list(reg["regimes"])
    fig = figure(9, 4.5)
    ax = fig.subplots()
    width = 0.27
    for k, (key, label) in enumerate(CURVES):
        means, lows, highs = [], [], []
        for name in names:
            m = reg["regimes"][name]["strategies"][key]
            mean = m["mean"] if np.isfinite(m["mean"]) else 0.0
            means.append(mean * 1e4)
            lows.append((mean - (m["low"] if m["low"] is not None else mean)) * 1e4)
            highs.append(((m["high"] if m["high"] is not None else mean) - mean) * 1e4)
        x = np.arange(len(names)) + (k - 1) * width
        ax.bar(x, means, width, label=label, yerr=[lows, highs], capsize=3)
    ax.set_xticks(np.arange(len(names)), [f"{n}\n({reg['regimes'][n]['steps']} steps)" for n in names])
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_ylabel("mean log return per step (bp)")
    ax.set_title(reg["line"], fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def plot_lags(report: EvaluationReport, path: Path) -> Path:
    """Equity of the policy with its actions sent 0, 1 and 2 steps late."""
    c = report.curves
    when = np.array(c["time_ms"], dtype="datetime64[ms]")
    fig = figure(9, 4)
    ax = fig.subplots()
    for lag in LAGS:
        key = lag_name(lag)
        if key in c:
            e = np.asarray(c[key], dtype=np.float64)
            ax.plot(when[: e.size], e / e[0], label=f"lag {lag}", lw=0.9)
    ax.set_ylabel("equity / initial")
    ax.set_title("lag test: a real edge shrinks when acted on late", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path, dates=True)


def write_report(report: EvaluationReport) -> Path:
    """Write ``report.md`` and its PNGs into the evaluation's folder; return the Markdown's path."""
    out = report.out_dir
    equity_png = plot_equity_drawdown(report, out / "report_equity.png")
    regimes_png = plot_regimes(report, out / "report_regimes.png")
    lags_png = plot_lags(report, out / "report_lags.png")
    ev = report.spans["eval"]
    rules = report.stats.get("rules", {})
    synthetic = "**SYNTHETIC DATA: these figures say nothing about the real market.**\n\n" if report.synthetic else ""
    lines = [
        f"# Evaluation of policy {report.policy_version}",
        "",
        synthetic
        + f"Data: {report.data_label} ({report.data_description}), fingerprint `{report.data_fingerprint[:16]}`.",
        "",
        f"Evaluation span: steps [{ev['start']}, {ev['end']}), {_utc(ev['start_ms'])} -> {_utc(ev['end_ms'])} UTC, "
        f"{ev['n_steps']} steps of {report.step_ms / 60_000:g} min; {report.spans.get('source', '')}.",
        "",
        f"Warm-up: {report.spans.get('warmup', {}).get('rule', 'n/a')}; "
        f"{report.spans.get('warmup', {}).get('padded_steps', 0)} evaluation step(s) with padded windows.",
        "",
        f"Venue and costs: {report.venue.get('describe', report.venue.get('kind'))}; positions closed at market at "
        "the end of every window.",
        "",
        f"CNN: {report.cnn_version or 'none'} ({report.cnn_source}).",
        "",
        f"Baseline to beat: `{rules.get('label', 'n/a')}` ({rules.get('source', 'n/a')}).",
        "",
        "## Whole span",
        "",
        "| strategy | return | Sharpe (annualised) | max drawdown | trades |",
        "|---|---|---|---|---|",
    ]
    for run in report.select(scope="span"):
        name = run.strategy if run.strategy != "random" else f"random s{run.seed}"
        lines.append(
            f"| {name} | {run.total_return:+.2%} | {run.sharpe:+.2f} | {run.max_drawdown:.2%} | {run.trades} |"
        )
    lines += ["", f"![equity and drawdown]({equity_png.name})", "", "## Lag test", "", "```"]
    lines += [*format_lag_test(report), "```", "", f"![lag test]({lags_png.name})", "", "## Regimes", "", "```"]
    lines += [*format_regimes(report), "```", ""]
    if regimes_png is not None:
        lines += [f"![per-regime returns]({regimes_png.name})", ""]
    lines += ["## Trial-aware statistics", "", "```", *format_trial_stats(report), "```", "", "## Notes", ""]
    lines += [f"- {n}" for n in report.notes]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
