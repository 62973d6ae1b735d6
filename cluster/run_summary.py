"""The summary of a finished training run that the dashboard's training panel draws: curves, evaluation, equity.

Reads what training and evaluation wrote (``curves.json``, ``results.json``); never recomputes a figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Out-of-sample equity series shown beside the policy's (when the evaluation wrote them).
EQUITY_SERIES = ("policy", "buy_and_hold", "best_rule")
#: Points kept per series (the page draws a line, not every step).
MAX_POINTS = 400


def thin(values: list[Any], n: int = MAX_POINTS) -> list[Any]:
    """At most ``n`` evenly spaced items of ``values``, the last one always kept."""
    if len(values) <= n:
        return list(values)
    step = (len(values) - 1) / (n - 1)
    return [values[round(i * step)] for i in range(n)]


def evaluation_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per strategy on the whole evaluation span: return, Sharpe, drawdown, trades, fees."""
    rows = []
    for run in results.get("runs", []):
        if run.get("scope") != "span" or run.get("seed") not in (None, results.get("seeds", [0])[0]):
            continue
        rows.append(
            {k: run.get(k) for k in ("strategy", "total_return", "sharpe", "max_drawdown", "trades", "fees")}
        )
    return rows


def run_summary(curves_path: Path | None, results_path: Path | None, *, state: str = "finished") -> dict[str, Any]:
    """What the training panel shows of one run.

    Parameters
    ----------
    curves_path : Path, optional
        The run's ``curves.json``.
    results_path : Path, optional
        Its evaluation's ``results.json``.
    state : str
        ``finished`` or ``training``.
    """
    out: dict[str, Any] = {"state": state, "curves_file": str(curves_path), "results_file": str(results_path)}
    if curves_path is not None and curves_path.is_file():
        curves = json.loads(curves_path.read_text())
        out["curves"] = {"updates": curves.get("updates", []), "series": curves.get("series", {})}
    if results_path is not None and results_path.is_file():
        results = json.loads(results_path.read_text())
        series = results.get("curves", {})
        spans = results.get("spans", {})
        out["evaluation"] = {
            "table": evaluation_table(results),
            "data": results.get("data_label"),
            "span": {k: spans.get(k) for k in ("start_ms", "end_ms") if k in spans},
            "policy_version": results.get("policy_version"),
            "equity": {
                "time_ms": thin(series.get("time_ms", [])),
                **{name: thin(series[name]) for name in series if name in EQUITY_SERIES or name.startswith("best")},
            },
        }
    return out


def latest_run(root: Path) -> dict[str, Any] | None:
    """The summary of the newest evaluated run under ``root`` (its ``results.json`` and the nearest ``curves.json``)."""
    results = sorted(Path(root).rglob("results.json"), key=lambda p: p.stat().st_mtime)
    if not results:
        return None
    newest = results[-1]
    curves = None
    for folder in newest.parents:
        found = sorted(folder.rglob("curves.json"), key=lambda p: p.stat().st_mtime)
        if found:
            curves = found[-1]
            break
        if folder == Path(root):
            break
    return run_summary(curves, newest)
