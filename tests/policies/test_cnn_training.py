"""Tests of policies/cnn_training.py: the CNN learns a predictable synthetic series, deterministically for a seed,
the folded standardisation changes no output, and the checkpoint reproduces the trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from market.labels import DOWN, FLAT, MASKED, UP, LabelConfig, compute_labels
from market.layout import StateConfig
from market.records import BAR_DTYPE
from market.timeline import MarketTimeline
from market.timeline_builder import MarketData, build_timeline
from policies.cnn import CnnConfig, load_checkpoint, save_checkpoint
from policies.cnn_training import (
    CnnTrainingConfig,
    LabelledSteps,
    build_model,
    class_weights,
    cnn_loss,
    cnn_states,
    direction_scores,
    fit,
    fold_inputs,
    input_statistics,
    majority_classes,
    score_directions,
    standardise_inputs,
)

START_MS = 1_735_700_400_000
HORIZONS = (2, 4, 8, 16)
CNN = CnnConfig(channels=8, hidden=16, dropout=0.0, horizons=HORIZONS)
LABELS = LabelConfig(scale_window=120, scale_horizons=4)
CPU = torch.device("cpu")


def sine_bars(n: int, period: float, amplitude: float, phase: float = 0.0, price: float = 3000.0) -> np.ndarray:
    """SYNTHETIC 1m bars whose log close is a sine: the future is a function of the recent past."""
    i = np.arange(n)
    close = price * np.exp(amplitude * np.sin(2 * np.pi * i / period + phase))
    open_ = np.r_[close[0], close[:-1]]
    bars = np.zeros(n, dtype=BAR_DTYPE)
    bars["open_time_ms"] = START_MS + 60_000 * i
    bars["close_time_ms"] = bars["open_time_ms"] + 59_999
    bars["open"], bars["close"] = open_, close
    bars["high"] = np.maximum(open_, close) * 1.0002
    bars["low"] = np.minimum(open_, close) * 0.9998
    bars["volume"] = 50.0 + 20.0 * np.cos(2 * np.pi * i / period)
    bars["tick_count"] = 10
    bars["buy_volume"] = bars["volume"] / 2
    bars["sell_volume"] = bars["volume"] / 2
    bars["vwap"] = close
    return bars


def sine_market(n: int = 2_400, period: float = 37.0) -> MarketData:
    return MarketData(
        traded_bars={"1m": sine_bars(n, period, 0.01)},
        reference_bars={"1m": sine_bars(n, period, 0.006, phase=0.7, price=60_000.0)},
        synthetic=True,
        source="SYNTHETIC sine series (test)",
    )


@pytest.fixture(scope="module")
def sine_timeline() -> MarketTimeline:
    return build_timeline(sine_market(), StateConfig(profile="tiny"))


def parts(timeline: MarketTimeline) -> tuple[LabelledSteps, LabelledSteps]:
    """Training steps [16, 1700 - 16) labelled from data before 1700; validation [1716, 2400) after a gap."""
    close, high, low = timeline.base_close, timeline.base_high, timeline.base_low
    train_labels = compute_labels(close, high, low, HORIZONS, LABELS, end=1_700)
    val_labels = compute_labels(close, high, low, HORIZONS, LABELS, end=timeline.n_steps)
    return (
        LabelledSteps(train_labels.labelled(16, 1_700 - max(HORIZONS)), train_labels),
        LabelledSteps(val_labels.labelled(1_700 + max(HORIZONS), timeline.n_steps), val_labels),
    )


def train(timeline: MarketTimeline, seed: int, steps: int) -> tuple[torch.nn.Module, object]:
    config = CnnTrainingConfig(
        batch_size=64,
        lr=3e-3,
        max_steps=steps,
        eval_every=50,
        patience=100,
        select_on="loss",
        device="cpu",
        labels=LABELS,
    )
    model = build_model(timeline.layout, CNN, seed)
    train_part, val_part = parts(timeline)
    result = fit(model, timeline, train_part, val_part, config, seed=seed)
    return model, result


def test_cnn_learns_a_predictable_synthetic_series_clearly_above_the_majority(sine_timeline: MarketTimeline) -> None:
    assert sine_timeline.synthetic
    model, result = train(sine_timeline, seed=1, steps=300)
    train_part, val_part = parts(sine_timeline)
    scores = score_directions(model, sine_timeline, val_part, majority_classes(train_part))
    balanced = [s.balanced_accuracy for s in scores]
    majority = [s.majority_balanced_accuracy for s in scores]
    assert all(m == pytest.approx(1 / 3) for m in majority)
    # every horizon is learned, far above predicting the majority class
    assert min(balanced) > 0.6, balanced
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.selected_on == "loss"
    assert result.best_validation["loss"] == min(h["val_loss"] for h in result.history)
    assert result.history[-1]["val_balanced_accuracy"] > 0.6
    assert result.device == "cpu" and result.steps == 300


def test_training_is_deterministic_for_a_seed_on_cpu(sine_timeline: MarketTimeline) -> None:
    a, ra = train(sine_timeline, seed=5, steps=40)
    b, rb = train(sine_timeline, seed=5, steps=40)
    c, _ = train(sine_timeline, seed=6, steps=40)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert [h["val_loss"] for h in ra.history] == [h["val_loss"] for h in rb.history]
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_checkpoint_loads_weights_only_and_reproduces_the_outputs(sine_timeline: MarketTimeline, tmp_path) -> None:
    model, _ = train(sine_timeline, seed=2, steps=20)
    meta = {"spans": {"cnn": {"start": 16, "end": 1700}}, "data_fingerprint": "abc"}
    path = save_checkpoint(tmp_path / "cnn.pt", model, version="cnn-test-00000000", meta=meta)
    torch.load(path, weights_only=True)  # data only: no pickled code
    loaded, info = load_checkpoint(path)
    assert info["version"] == "cnn-test-00000000" and info["spans"] == meta["spans"]
    states = cnn_states(sine_timeline, np.arange(100, 400, 7), CPU)
    with torch.no_grad():
        want, got = model.eval()(states), loaded(states)
    assert torch.equal(want.predictions, got.predictions)
    assert torch.equal(want.hidden, got.hidden)
    assert torch.equal(want.pivot, got.pivot)


def test_a_checkpoint_with_the_old_eth_btc_names_loads_through_the_mapping(
    sine_timeline: MarketTimeline, tmp_path
) -> None:
    model, _ = train(sine_timeline, seed=2, steps=5)
    path = save_checkpoint(tmp_path / "cnn.pt", model, version="cnn-test-00000001", meta={})
    payload = torch.load(path, weights_only=True)
    # What a checkpoint written before the roles rename holds: eth_/btc_ component names and state keys.
    payload["state_dict"] = {
        k.replace(".traded_", ".eth_").replace(".reference_", ".btc_"): v for k, v in payload["state_dict"].items()
    }
    cfg = payload["state_config"]
    cfg["eth_timeframes"], cfg["btc_window"] = cfg.pop("traded_timeframes"), cfg.pop("reference_window")
    assert any(".eth_1m." in k for k in payload["state_dict"])
    torch.save(payload, tmp_path / "old.pt")
    with pytest.warns(DeprecationWarning, match="state.eth_timeframes is deprecated: it is now state.traded_tim"):
        loaded, _ = load_checkpoint(tmp_path / "old.pt")
    states = cnn_states(sine_timeline, np.arange(100, 200, 9), CPU)
    with torch.no_grad():
        assert torch.equal(model.eval()(states).predictions, loaded(states).predictions)


def test_folding_the_standardisation_changes_no_output(sine_timeline: MarketTimeline) -> None:
    model = build_model(sine_timeline.layout, CNN, seed=3).eval()
    steps = np.arange(16, 2_000, 3)
    states = cnn_states(sine_timeline, steps, CPU)
    standardise_inputs(model, input_statistics(sine_timeline, model.layout, steps, chunk=200))
    with torch.no_grad():
        for p in model.parameters():  # as if trained: the parametrised weights move
            p.add_(0.05 * torch.randn_like(p))
        before = model(states).predictions.clone()
        fold_inputs(model)
        after = model(states).predictions
    assert not any("parametrizations" in k for k in model.state_dict())
    assert set(model.state_dict()) == set(build_model(sine_timeline.layout, CNN, seed=3).state_dict())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_inputs_that_never_move_in_training_are_ignored(sine_timeline: MarketTimeline) -> None:
    model = build_model(sine_timeline.layout, CNN, seed=3).eval()
    steps = np.arange(16, 2_000, 3)
    stats = input_statistics(sine_timeline, model.layout, steps)
    mean, std = stats["williams"]
    still = np.flatnonzero(std == 0.0)  # e.g. the unused slots of every level
    assert still.size >= 10
    standardise_inputs(model, stats)
    fold_inputs(model)
    states = cnn_states(sine_timeline, steps[:50], CPU)
    shifted = states.clone()
    shifted[:, model.layout["williams"].offset + still] += 1_000.0
    with torch.no_grad():
        torch.testing.assert_close(model(shifted).predictions, model(states).predictions)
    # and the window statistics are those of the gathered states, per feature over all rows
    comp = model.layout["traded_1m"]
    rows = cnn_states(sine_timeline, steps, CPU)[:, comp.slice].reshape(-1, comp.features, comp.rows)
    np.testing.assert_allclose(stats["traded_1m"][0], rows.double().mean(dim=(0, 2)).numpy(), rtol=1e-5, atol=1e-9)


def test_class_weights_balance_the_training_classes() -> None:
    direction = np.array([[UP, DOWN], [UP, DOWN], [UP, FLAT], [DOWN, MASKED]])
    weights = class_weights(direction)
    np.testing.assert_allclose(weights[0], [4 / (3 * 3), 0.0, 4 / (3 * 1)])
    np.testing.assert_allclose(weights[1], [0.0, 3 / (3 * 1), 3 / (3 * 2)])


def test_balanced_accuracy_is_the_mean_recall_of_the_present_classes() -> None:
    true = np.array([UP, UP, UP, UP, DOWN, DOWN])
    pred = np.array([UP, UP, UP, UP, UP, DOWN])
    acc, bal = direction_scores(true, pred)
    assert acc == pytest.approx(5 / 6)
    assert bal == pytest.approx((1.0 + 0.5) / 2)
    assert np.isnan(direction_scores(true[:0], pred[:0])[0])


def test_masked_labels_add_nothing_to_the_loss(sine_timeline: MarketTimeline) -> None:
    model = build_model(sine_timeline.layout, CNN, seed=4).eval()
    out = model(cnn_states(sine_timeline, np.arange(100, 116), CPU))
    config = CnnTrainingConfig(labels=LABELS)
    weights = torch.ones(len(HORIZONS), 3)
    masked = {
        "direction": torch.full((16, len(HORIZONS)), MASKED),
        "move": torch.full((16, len(HORIZONS)), float("nan")),
        "pivot_kind": torch.full((16, 5), MASKED),
        "pivot_distance": torch.full((16, 5), float("nan")),
    }
    loss, parts_ = cnn_loss(out, masked, weights, config)
    assert float(loss.detach()) == 0.0 and all(v == 0.0 for v in parts_.values())
    masked["direction"][:, 0] = UP
    loss, parts_ = cnn_loss(out, masked, weights, config)
    assert parts_["direction"] > 0.0 and float(loss.detach()) == pytest.approx(parts_["direction"])


def test_cnn_input_statistics_come_from_the_training_steps_only(sine_timeline: MarketTimeline) -> None:
    # The same labelled steps on two timelines that differ only after the training span: the fitted model (one
    # step, so the first validation always wins whatever it scores) must be the same bits. Statistics taken over
    # any later step (the validation or evaluation span) would move the standardisation, and so the weights.
    train_part, val_part = parts(sine_timeline)
    last_train_ms = int(sine_timeline.step_time_ms[int(train_part.steps.max())])
    rng = np.random.default_rng(3)
    market = sine_market()
    changed_bars = {}
    for role, bars in (("traded", market.traded_bars["1m"]), ("reference", market.reference_bars["1m"])):
        out = bars.copy()
        later = out["open_time_ms"] > last_train_ms
        scale = rng.uniform(0.7, 1.4, later.sum())
        for col in ("open", "high", "low", "close"):
            out[col][later] *= scale
        out["volume"][later] *= rng.uniform(0.1, 10.0, later.sum())
        changed_bars[role] = out
    changed = build_timeline(
        MarketData(
            traded_bars={"1m": changed_bars["traded"]},
            reference_bars={"1m": changed_bars["reference"]},
            synthetic=True,
        ),
        sine_timeline.layout.config,
    )
    config = CnnTrainingConfig(batch_size=64, max_steps=1, eval_every=1, device="cpu", labels=LABELS)
    fitted = []
    for timeline in (sine_timeline, changed):
        model = build_model(timeline.layout, CNN, 4)
        result = fit(model, timeline, train_part, val_part, config, seed=4)
        fitted.append((model.state_dict(), result.best_validation))
    (weights_a, val_a), (weights_b, val_b) = fitted
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    assert val_a != val_b  # the change is real: the validation span sees it
