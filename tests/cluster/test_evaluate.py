"""Tests of cluster/evaluate.py: an untrained policy on the real 1m klines (tiny profile) is evaluated beside the
baselines with intervals, and results.json, the PNG and the run record are written; the policy's runs replay
step by step, the baselines equal ``run_baselines``; synthetic history says SYNTHETIC; recorded spans and the
policy's CNN are used as training used them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from cluster.config import ExperimentConfig
from cluster.data.history import load_history
from cluster.evaluate import (
    GATED,
    STRATEGIES,
    EvaluationReport,
    evaluate,
    evaluation_span,
    format_report,
    sensitivity_gate,
    span_sub_windows,
)
from cluster.runinfo import read_run_record
from cluster.trials import read_trials
from market.baselines import BASELINES, RuleSpec, real_kline_timeline, rule_targets, run_baselines, target_actions
from market.config import DataConfig
from market.env import HOLD, EnvConfig, TradingEnv
from market.errors import ConfigError, DataError
from market.layout import StateConfig, build_layout
from market.metrics import log_returns, total_return
from market.spans import SpansConfig, make_span, split_spans
from market.timeline_builder import build_timeline
from policies.acting import greedy_log_return
from policies.checkpoint import load_policy, save_policy
from policies.cnn import CnnConfig, save_checkpoint
from policies.cnn_inference import CnnPredictor
from policies.cnn_training import build_model
from policies.dqn import QNetwork, QNetworkConfig
from policies.sensitivity import SensitivityConfig

SMALL_NET = QNetworkConfig(trunk=32, window_channels=4, vector_width=8)
SEEDS = (0, 1, 2)


def untrained_policy(path: Path, *, seed: int = 0, state: StateConfig | None = None, **kwargs) -> Path:
    torch.manual_seed(seed)
    net = QNetwork(build_layout(state or StateConfig(profile="tiny")), SMALL_NET).eval()
    return save_policy(path, net, version=f"untrained-{seed}", updates=0, **kwargs)


@pytest.fixture(scope="module")
def real_timeline(shared_data: Path):
    return real_kline_timeline(shared_data, profile="tiny", max_steps=4_000)


@pytest.fixture(scope="module")
def real_run(real_timeline, tmp_path_factory) -> tuple[EvaluationReport, str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    checkpoint = untrained_policy(root / "policy.pt")
    lines: list[str] = []
    report = evaluate(
        checkpoint,
        ExperimentConfig(name="eval-test", seed=5, output_dir=root / "runs"),
        out_dir=root / "out",
        seeds=SEEDS,
        folds=4,
        timeline=real_timeline,
        log=lines.append,
    )
    return report, format_report(report), checkpoint


def test_evaluate_on_the_real_klines_prints_intervals_and_writes_results_plot_and_run_record(real_run) -> None:
    report, table, _ = real_run
    out = report.out_dir
    assert report.results_path == out / "results.json" and report.plot_path == out / "equity.png"
    for path in (report.results_path, report.plot_path, report.run_record):
        assert path.is_file() and path.stat().st_size > 0
    assert report.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report.plot_path.stat().st_size > 20_000

    # The table: every strategy with its interval, the folds and the seeded starts, no SYNTHETIC label.
    assert "SYNTHETIC" not in table and "real Binance data" in table
    assert "return [95% CI]" in table and "Sub-windows of the evaluation span" in table and "Seeded starts" in table
    span_rows = [line for line in table.splitlines() if line.startswith(("policy ", "buy_and_hold ", "random s"))]
    assert len(span_rows) >= 2 + len(SEEDS) and all(line.count("[") >= 3 for line in span_rows[:5])
    assert "deterministic from a fixed start" in table

    results = orjson.loads(report.results_path.read_bytes())
    assert results["synthetic"] is False and results["policy_version"] == "untrained-0"
    assert results["cnn_version"] is None and "zeros" in results["cnn_source"]
    assert results["seeds"] == list(SEEDS) and results["strategies"] == list(STRATEGIES)
    assert results["bootstrap"]["n_resamples"] >= 1000 and results["bootstrap"]["method"] == "stationary"
    assert results["data_fingerprint"] == report.data_fingerprint and len(results["data_fingerprint"]) == 64
    ev = results["spans"]["eval"]
    assert ev["end"] == 4_000 and ev["n_steps"] == ev["end"] - ev["start"] > 500
    assert len(results["spans"]["folds"]) == 4 and len(results["spans"]["starts"]) == 4 * len(SEEDS)
    # 1 span + 4 folds, each: policy, 3 deterministic baselines, random per seed, the tuned rule; the span also
    # the policy delayed 1 and 2 steps (the lag test); 12 starts: 6 strategies each
    assert len(results["runs"]) == 5 * (5 + len(SEEDS)) + 2 + 12 * 6
    for run in results["runs"]:
        for key in ("total_return", "sharpe", "sortino", "max_drawdown", "trades", "fees", "win_rate", "exposure"):
            assert key in run
        if run["scope"] in ("span", "fold"):
            assert set(run["intervals"]) == {"total_return", "sharpe", "sortino"}
    policy = next(r for r in results["runs"] if r["strategy"] == "policy" and r["scope"] == "span")
    ci = policy["intervals"]["total_return"]
    assert ci["low"] <= policy["total_return"] <= ci["high"] and ci["block"] == int(np.ceil(700 ** (1 / 3)))
    assert len(results["curves"]["policy"]) == len(results["curves"]["buy_and_hold"]) == ev["n_steps"]

    record = read_run_record(report.run_record)
    assert record["extra"]["kind"] == "evaluation" and record["extra"]["policy_version"] == "untrained-0"
    assert record["extra"]["synthetic"] is False and record["extra"]["evaluation_seeds"] == list(SEEDS)
    assert record["data_fingerprint"] == report.data_fingerprint and "bootstrap" in record["seeds"]


def test_evaluation_span_lies_after_the_training_span_and_its_gap_and_folds_tile_it(real_run) -> None:
    report, _, _ = real_run
    sp = report.spans
    split = sp["split"]
    assert sp["eval"]["start"] - split["dqn"]["end"] == sp["gap_steps"] >= 240
    folds = sp["folds"]
    assert folds[0]["start"] == sp["eval"]["start"] and folds[-1]["end"] == sp["eval"]["end"]
    assert all(a["end"] == b["start"] for a, b in zip(folds, folds[1:], strict=False))
    for start in sp["starts"]:
        fold = folds[start["fold"]]
        assert fold["start"] <= start["start"] and start["start"] + start["steps"] <= fold["end_mark"]
    # seeds move the starts (three seeds, four folds: not all the same offset)
    assert len({s["start"] for s in sp["starts"]}) > 4


def test_the_greedy_policy_replays_step_by_step_from_every_window_start(real_run, real_timeline) -> None:
    report, _, checkpoint = real_run
    qnet, _ = load_policy(checkpoint)
    env = ExperimentConfig().env.model_copy(update={"close_at_end": True})
    picked = [
        report.select("policy", "span")[0],
        report.select("policy", "fold", fold=2)[0],
        report.select("policy", "start", fold=1)[1],
    ]
    for run in picked:
        replay = greedy_log_return(qnet, real_timeline, env, run.start_step, run.end_step - run.start_step)
        assert np.log1p(run.total_return) == pytest.approx(replay, abs=1e-12)


def test_baselines_in_the_evaluation_equal_run_baselines_over_the_same_span(real_run, real_timeline) -> None:
    report, _, _ = real_run
    span_runs = report.select(scope="span")
    start, end = span_runs[0].start_step, span_runs[0].end_step
    config = EnvConfig(random_start=False, start_step=start, episode_steps=end - start, close_at_end=True)
    for theirs in run_baselines(real_timeline, config, SEEDS):
        ours = [
            r for r in span_runs if r.strategy == theirs.name and (theirs.name != "random" or r.seed == theirs.seed)
        ]
        assert len(ours) == 1
        r = ours[0]
        assert r.total_return == pytest.approx(theirs.total_return, abs=1e-12)
        assert (r.trades, r.steps) == (theirs.trades, theirs.steps)
        assert r.fees == pytest.approx(theirs.fees, abs=1e-9)
        assert r.max_drawdown == pytest.approx(theirs.max_drawdown, abs=1e-12)
    by_name = {r.strategy: r for r in span_runs if r.strategy != "random"}
    assert by_name["flat"].total_return == 0.0 and by_name["flat"].exposure == 0.0
    assert by_name["buy_and_hold"].exposure == 1.0 and by_name["buy_and_hold"].round_trips == 1
    assert {r.strategy for r in span_runs} == {*STRATEGIES, "policy_lag1", "policy_lag2"}
    assert set(BASELINES) < set(STRATEGIES)


def test_reported_figures_are_the_metrics_of_the_recorded_curve(real_run) -> None:
    report, _, _ = real_run
    run = report.select("policy", "span")[0]
    curve = np.array(report.curves["policy"])
    assert run.total_return == pytest.approx(total_return(curve), abs=1e-15)
    assert run.steps == log_returns(curve).size == len(report.curves["policy_position"])
    assert run.exposure == pytest.approx(np.mean(np.array(report.curves["policy_position"]) != 0))


def test_synthetic_history_with_recorded_spans_and_the_policys_cnn_is_said_synthetic(tmp_path: Path) -> None:
    config = ExperimentConfig(name="eval-synth", data=DataConfig(source="synthetic"), output_dir=tmp_path / "runs")
    history = load_history(config.data, config.symbols, synthetic_days=3, synthetic_tick_minutes=1)
    state = StateConfig(profile="tiny")
    timeline = build_timeline(history.market_data(config.symbols, ticks=False), state, config.indicators)
    split = split_spans(
        timeline.step_time_ms, SpansConfig(cnn_fraction=0.4, dqn_fraction=0.3, eval_fraction=0.3), horizon=240
    )
    torch.manual_seed(1)
    cnn = build_model(build_layout(state), CnnConfig(hidden=state.cnn_hidden), seed=1)
    cnn_path = save_checkpoint(tmp_path / "cnn.pt", cnn, version="cnn-test-1", meta={})
    checkpoint = untrained_policy(
        tmp_path / "policy.pt",
        seed=2,
        cnn_version="cnn-test-1",
        meta={"spans": split.as_dict(), "cnn_checkpoint": str(cnn_path), "synthetic": True},
    )
    report = evaluate(checkpoint, config, out_dir=tmp_path / "out", seeds=(3, 4, 5), folds=3, history=history)
    table = format_report(report)
    assert table.splitlines()[0].startswith("EVALUATION -- SYNTHETIC DATA")
    assert "Whole evaluation span -- SYNTHETIC DATA" in table and "SYNTHETIC DATA: these figures" in table
    results = orjson.loads(report.results_path.read_bytes())
    assert results["synthetic"] is True and results["data_label"] == "SYNTHETIC data"
    assert results["cnn_version"] == "cnn-test-1" and "cnn-test-1" in results["cnn_source"]
    # the recorded evaluation span, located by time, not this config's default shares
    assert (results["spans"]["eval"]["start"], results["spans"]["eval"]["end"]) == (split.eval.start, split.eval.end)
    assert results["spans"]["source"].startswith("recorded with the policy checkpoint")
    assert report.plot_path.is_file() and read_run_record(report.run_record)["extra"]["synthetic"] is True

    # The policy saw the CNN's outputs in its CNN slots: a replay with the bulk-filled CNN gives the same run.
    answer = CnnPredictor.from_checkpoint(cnn_path, "cpu").bulk_fill(timeline)
    qnet, _ = load_policy(checkpoint)
    run = report.select("policy", "fold", fold=1)[0]
    env = TradingEnv(
        timeline,
        config.env.model_copy(
            update={
                "close_at_end": True,
                "random_start": False,
                "start_step": run.start_step,
                "episode_steps": run.end_step - run.start_step,
            }
        ),
        cnn_hidden=answer.hidden,
        cnn_pred=answer.predictions,
    )
    obs, info = env.reset(seed=0)
    done = False
    with torch.no_grad():
        while not done:
            action = int(qnet(torch.as_tensor(obs[None])).argmax(dim=1)[0])
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    assert info["equity"] / config.env.initial_equity - 1.0 == pytest.approx(run.total_return, abs=1e-12)


def test_too_few_seeds_a_foreign_layout_and_a_cnn_without_checkpoint_are_refused(real_timeline, tmp_path: Path) -> None:
    config = ExperimentConfig()
    checkpoint = untrained_policy(tmp_path / "p.pt")
    with pytest.raises(ConfigError, match="at least 3 distinct seeds"):
        evaluate(checkpoint, config, out_dir=tmp_path / "a", seeds=(0, 1), timeline=real_timeline)
    other = untrained_policy(tmp_path / "q.pt", state=StateConfig(profile="tiny", bar_window=8))
    with pytest.raises(ConfigError, match="is not the policy's"):
        evaluate(other, config, out_dir=tmp_path / "b", timeline=real_timeline)
    named = untrained_policy(tmp_path / "r.pt", cnn_version="cnn-x")
    with pytest.raises(ConfigError, match="names no CNN checkpoint"):
        evaluate(named, config, out_dir=tmp_path / "c", timeline=real_timeline)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_folds_shrink_to_what_the_span_allows() -> None:
    times = np.arange(1_000, dtype=np.int64) * 60_000
    span = make_span("eval", times, 500, 1_000)
    assert [(f.start, f.end) for f in span_sub_windows(span, times, 4, 120)] == [
        (500, 625),
        (625, 750),
        (750, 875),
        (875, 1_000),
    ]
    assert len(span_sub_windows(span, times, 4, 200)) == 2
    assert [(f.start, f.end) for f in span_sub_windows(span, times, 4, 300)] == [(500, 1_000)]


def test_a_recorded_evaluation_span_overlapping_training_is_refused(real_timeline) -> None:
    times = np.asarray(real_timeline.step_time_ms)
    recorded = {
        "gap_steps": 0,
        "dqn": make_span("dqn", times, 100, 3_000).as_dict(),
        "eval": make_span("eval", times, 2_900, 4_000).as_dict(),
    }
    with pytest.raises(DataError, match="not after the DQN span"):
        evaluation_span(real_timeline, recorded=recorded, spans_config=SpansConfig(), horizon=240)


def test_the_lag_rows_replay_the_policy_with_its_actions_sent_late(real_run, real_timeline) -> None:
    report, table, checkpoint = real_run
    qnet, _ = load_policy(checkpoint)
    base = ExperimentConfig().env.model_copy(update={"close_at_end": True})
    assert "Lag test" in table and "lag 1:" in table and "lag 2:" in table
    for lag in (1, 2):
        run = report.select(f"policy_lag{lag}", "span")[0]
        env = TradingEnv(
            real_timeline,
            base.model_copy(
                update={
                    "random_start": False,
                    "start_step": run.start_step,
                    "episode_steps": run.end_step - run.start_step,
                }
            ),
        )
        obs, info = env.reset(seed=0)
        chosen: list[int] = []
        done = False
        with torch.no_grad():
            while not done:
                chosen.append(int(qnet(torch.as_tensor(obs[None])).argmax(dim=1)[0]))
                action = chosen[-1 - lag] if len(chosen) > lag else HOLD
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
        assert info["equity"] / base.initial_equity - 1.0 == pytest.approx(run.total_return, abs=1e-12)
    lag0 = report.select("policy", "span")[0]
    assert report.select("policy_lag1", "span")[0].steps == lag0.steps


def test_every_evaluation_appends_a_trial_row_and_the_dsr_counts_the_trials(real_timeline, tmp_path: Path) -> None:
    config = ExperimentConfig(name="trials-test", seed=1, output_dir=tmp_path / "runs")
    kw = {"seeds": SEEDS, "folds": 1, "timeline": real_timeline, "n_resamples": 100}
    first = untrained_policy(tmp_path / "a.pt", seed=0)
    r1 = evaluate(first, config, out_dir=tmp_path / "e1", **kw)
    assert r1.stats["dsr"]["n_trials"] == 1 and r1.stats["dsr"]["benchmark"] == 0.0
    assert "fewer than 2 trials with a Sharpe" in r1.stats["dsr"]["variance_from"]
    assert "fewer than 2 registry trials" in r1.stats["pbo"]["candidates"] and r1.stats["pbo"]["pbo"] is not None
    # the same policy again: the same trial; another policy: two trials, the variance from the registry
    r2 = evaluate(first, config, out_dir=tmp_path / "e2", **kw)
    assert r2.stats["dsr"]["n_trials"] == 1
    other = untrained_policy(tmp_path / "b.pt", seed=7)
    r3 = evaluate(other, config, out_dir=tmp_path / "e3", **kw)
    d = r3.stats["dsr"]
    assert d["n_trials"] == 2 and "registry's 2 trial Sharpe" in d["variance_from"]
    s1, s3 = r1.stats["dsr"]["sharpe"], d["sharpe"]
    assert d["sr_variance"] == pytest.approx(np.var([s1, s3], ddof=1))
    assert r3.stats["pbo"]["candidates"].startswith("2 registry trial(s) on this span")
    rows = read_trials(tmp_path / "runs")
    assert [r.kind for r in rows] == ["evaluate"] * 3 and rows[0].trial == rows[1].trial != rows[2].trial
    assert rows[0].data_fingerprint == r1.data_fingerprint and Path(rows[2].returns_file).is_file()
    assert np.load(rows[2].returns_file).size == rows[2].metrics["n"] == r3.select("policy", "span")[0].steps
    table = format_report(r3)
    assert "deflated Sharpe ratio" in table and "minimum track record" in table and "PBO (CSCV)" in table
    assert "assumes" in table and "i.i.d." in table


def test_the_baseline_to_beat_is_tuned_before_the_span_and_replays(real_run, real_timeline) -> None:
    report, table, _ = real_run
    rules = report.stats["rules"]
    assert rules["grid"] == 54 and rules["tuned_on"]["end"] <= report.spans["eval"]["start"]
    assert f"baseline to beat: best_rule = {rules['label']}" in table
    spec = RuleSpec(**rules["spec"])
    run = report.select("best_rule", "span")[0]
    env_config = ExperimentConfig().env.model_copy(
        update={
            "close_at_end": True,
            "random_start": False,
            "start_step": run.start_step,
            "episode_steps": run.end_step - run.start_step,
        }
    )
    targets = rule_targets(np.asarray(real_timeline.base_close), spec)
    env = TradingEnv(real_timeline, env_config)
    _, info = env.reset(seed=0)
    done = False
    while not done:
        action = int(target_actions(targets[[info["step"]]], env_config.venue.kind)[0])
        _, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert info["equity"] / env_config.initial_equity - 1.0 == pytest.approx(run.total_return, abs=1e-12)


def test_every_evaluation_step_has_a_regime_and_the_verdict_line_is_printed(real_run) -> None:
    report, table, _ = real_run
    reg = report.stats["regimes"]
    assert reg["available"] and len(reg["labels"]) == report.select("policy", "span")[0].steps
    assert sum(e["steps"] for e in reg["regimes"].values()) == len(reg["labels"])
    assert reg["thresholds"]["fitted_on"][1] <= report.spans["eval"]["start"]
    assert "Regimes (causal rule" in table and "at least 3 regimes ->" in table
    for name in ("trend_up", "trend_down", "range", "high_vol"):
        assert f"  {name}" in table


def test_the_report_has_the_curves_regimes_lag_test_statistics_data_and_costs(real_run) -> None:
    report, _, _ = real_run
    md = (report.out_dir / "report.md").read_text()
    for png in ("report_equity.png", "report_regimes.png", "report_lags.png"):
        path = report.out_dir / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in md
    for text in (
        "## Lag test",
        "## Regimes",
        "deflated Sharpe ratio",
        "PBO (CSCV)",
        "Baseline to beat",
        report.data_fingerprint[:16],
        "Venue and costs",
        "fills:",
        "| best_rule |",
    ):
        assert text in md, text
    assert report.curves["best_rule"][0] == report.curves["policy"][0] and len(report.curves["policy_lag1"]) > 1


def test_with_the_sensitivity_learner_on_both_rows_are_reported_and_its_rewards_are_the_gated_net_pnl(
    real_run, real_timeline, tmp_path: Path
) -> None:
    plain, _, checkpoint = real_run
    levels = ((0.0, 0.0), (0.02, 0.01), (0.05, 0.025), (0.1, 0.05), (0.2, 0.1))
    sensitivity = SensitivityConfig(enabled=True, levels=levels, learn_starts=2, batch_size=4, device="cpu")
    config = ExperimentConfig(name="eval-test", seed=5, output_dir=tmp_path / "runs", sensitivity=sensitivity)
    report = evaluate(checkpoint, config, out_dir=tmp_path / "out", folds=1, timeline=real_timeline, n_resamples=100)
    table = format_report(report)
    sens = report.stats["sensitivity"]

    # Both rows over the same span; the row without the gate is the same run as with the learner off.
    without, gated = report.select("policy", "span")[0], report.select(GATED, "span")[0]
    assert (gated.start_step, gated.end_step) == (without.start_step, without.end_step)
    assert without.total_return == plain.select("policy", "span")[0].total_return
    whole_span = table.split("Whole evaluation span")[1].split("Sensitivity learner")[0]
    rows = [line.split()[0] for line in whole_span.splitlines() if line.startswith(("policy ", f"{GATED} "))]
    assert rows == ["policy", GATED]
    assert "Sensitivity learner: on" in table and "L4 open 0.2 / close 0.1" in table
    assert "  without  return " in table and "  with     return " in table and "[n/a]" not in whole_span

    # Its weights were learned before the evaluation span, and it acted frozen on it.
    trained = sens["trained"]
    assert trained["span"]["end"] <= report.spans["eval"]["start"] and trained["decisions"] >= 1
    assert sens["learning_on_eval"] is False and sens["training"] is False
    assert sum(sens["level_counts"]) == sens["decisions"] >= 1 and sens["levels"] == [list(lv) for lv in levels]

    # The gate's rewards telescope to the net PnL of the trades it let through: the gated account's change.
    gated_curve = report.curves[GATED]
    assert len(gated_curve) == len(report.curves["policy"])
    assert sens["reward_sum"] == pytest.approx(gated_curve[-1] - gated_curve[0], abs=1e-9 * gated_curve[0])
    assert sens["reward_sum"] == pytest.approx(config.env.initial_equity * gated.total_return, rel=1e-9, abs=1e-9)
    assert sens["trades_closed"] >= 1 and gated.trades >= 1
    assert Path(sens["saved"]).is_file()

    results = orjson.loads(report.results_path.read_bytes())
    assert results["stats"]["sensitivity"]["reward_sum"] == pytest.approx(sens["reward_sum"])
    assert any(r["strategy"] == GATED for r in results["runs"])
    assert any("sensitivity learner on" in n for n in results["notes"])


def test_the_sensitivity_learner_needs_the_market_action_set(real_timeline) -> None:
    config = ExperimentConfig(sensitivity=SensitivityConfig(enabled=True, device="cpu"))
    env = config.env.model_copy(update={"actions": "scalper"})
    with pytest.raises(ConfigError, match="sensitivity.enabled needs env.actions 'market'"):
        sensitivity_gate(config, env, real_timeline, None, torch.device("cpu"), None, "", (None, None))
