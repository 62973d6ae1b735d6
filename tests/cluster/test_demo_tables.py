"""``rayscalp demo`` prints tables that fit a 100-column terminal: the bars of the real klines and the evaluation,
each with its title on one line, its header names whole and one line a row."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from rich.console import Console

from cluster.config import ExperimentConfig
from cluster.data.history import load_history
from cluster.demo import COLUMNS, evaluation_table, print_bars
from cluster.evaluate import evaluate
from market.baselines import real_kline_timeline
from market.layout import StateConfig, build_layout
from policies.checkpoint import save_policy
from policies.dqn import QNetwork, QNetworkConfig

#: The box characters a rendered table's lines start with.
TABLE_LINE = tuple("┏┃┡│└━╇┣┗┛")


def rendered(monkeypatch: pytest.MonkeyPatch, draw: Callable[[Console], object]) -> list[str]:
    """What ``draw(console)`` prints in a terminal of ``COLUMNS`` columns, line by line."""
    monkeypatch.setenv("COLUMNS", str(COLUMNS))
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, record=True)
    assert console.width == COLUMNS
    draw(console)
    return console.export_text().splitlines()


def check_table(lines: list[str], title: str, header: tuple[str, ...], rows: int) -> None:
    assert all(len(line) <= COLUMNS for line in lines), max(lines, key=len)
    assert any(line.strip() == title for line in lines), (title, lines[:3])
    at = next(i for i, line in enumerate(lines) if line.strip() == title)
    table = []
    for line in lines[at + 1 :]:
        if not line.lstrip().startswith(TABLE_LINE):
            break
        table.append(line)
    heads = [line for line in table if line.lstrip().startswith("┃")]
    assert len(heads) == 1 and all(name in heads[0] for name in header), heads
    assert len([line for line in table if line.lstrip().startswith("│")]) == rows, table


def test_the_bars_tables_of_the_real_klines_fit_100_columns(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ExperimentConfig.model_validate({"data": {"shared_dir": str(shared_data)}})
    history = load_history(config.data, config.symbols, synthetic_days=3)
    lines = rendered(monkeypatch, lambda console: print_bars(console, history, config, rows=6))
    header = ("open (UTC)", "open", "high", "low", "close", "volume", "RSI", "MACD hist", "BB %b")
    label = history.label()
    check_table(lines, f"ETHUSDT 1m bars from ticks ({label})", header, 6)
    check_table(lines, f"ETHUSDT 1h bars built from 1m ({label})", header, 6)
    # the 1h bars built from the real 1m klines match the real 1h files
    checks = [line for line in lines if "1h bars built from 1m vs the" in line]
    assert len(checks) == 1 and "OHLC identical" in checks[0] and "MISMATCH" not in checks[0], checks


def test_the_evaluation_table_of_a_real_evaluation_fits_100_columns(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an untrained policy on the real klines: its random baselines trade thousands of times, the widest rows
    torch.manual_seed(0)
    layout = build_layout(StateConfig(profile="tiny"))
    net = QNetwork(layout, QNetworkConfig(trunk=32, window_channels=4, vector_width=8)).eval()
    checkpoint = save_policy(tmp_path / "policy.pt", net, version="untrained", updates=0)
    report = evaluate(
        checkpoint,
        ExperimentConfig(name="tables", output_dir=tmp_path / "runs"),
        out_dir=tmp_path / "evaluation",
        folds=2,
        n_resamples=100,
        timeline=real_kline_timeline(shared_data, profile="tiny", max_steps=4_000),
        log=lambda _: None,
    )
    runs = report.select(scope="span")
    level = 1.0 - float(report.bootstrap["alpha"])
    lines = rendered(monkeypatch, lambda console: console.print(evaluation_table(runs, level, report.data_label)))
    title = f"evaluation on the latest span ({report.data_label}), {level:.0%} block-bootstrap intervals"
    check_table(lines, title, ("strategy", "return [95% CI]", "Sharpe [95% CI]", "max dd", "trades"), len(runs))
    for run in runs:
        name = run.strategy if run.strategy != "random" else f"random s{run.seed}"
        row = next(line for line in lines if line.startswith(f"│ {name} "))
        ci = run.intervals["total_return"]
        assert f"{run.total_return:+.2%} [{ci.low:+.2%}, {ci.high:+.2%}]" in row and f"{run.trades:,}" in row
