"""The sensitivity learner: a small DQN that picks how readily the main policy's orders reach the venue.

Sits between the main policy and the venue. Its actions are sensitivity levels, each an (open, close) pair
of thresholds on the main policy's confidence; its state is recent trade outcomes and context; its reward is
the realised net PnL of the trades opened under the level it chose. It decides only on what is known when it
decides (trades closed before that step, prices and Q-values up to it). Pure torch; never imports Ray.

Confidence (one definition, :func:`change_confidence`): at a position ``d`` the main policy's actions either
keep it (HOLD always; BUY when long; SELL when short, and in spot SELL when flat) or change it. The confidence
of a change is ``Q(best changing action) - Q(best keeping action)``; from flat this is the Q-gap between the
best side and HOLD (perp) or between BUY and staying flat (spot). A change from flat is sent when it reaches
the level's open threshold, a change from a position (a close in spot, a close-and-reverse in perp, the only
exits of the market action set) when it reaches the close threshold; otherwise HOLD is sent.

Decisions (the learner's steps): a level is chosen when the account is flat and no level is in force; it
stays in force until the trades opened under it have closed and the account is flat again, or until
``max_wait_steps`` flat steps pass without a trade (reward 0). Its reward is the sum of the net PnL (after
fees and funding) of the trades that closed while it was in force, all of which it opened; so the rewards of
an episode add up to the net PnL of the trades the gate let through.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from market.config import StrictModel
from market.errors import ConfigError, DataError
from market.trade_outcomes import OUTCOME_FEATURES, ClosedTrade, TradeLedger
from market.venue import BUY, HOLD, SELL

from .device import check_device_name, resolve_device

#: The context features after :data:`market.trade_outcomes.OUTCOME_FEATURES`, in order.
CONTEXT_FEATURES: tuple[str, ...] = (
    "open_threshold",
    "close_threshold",
    "volatility_regime",
    "confidence_mean",
    "confidence_std",
    "log_steps_since_trade",
)
#: The learner's state, in order (16 floats).
STATE_FEATURES: tuple[str, ...] = (*OUTCOME_FEATURES, *CONTEXT_FEATURES)
_FORMAT = 1


class SensitivityConfig(StrictModel):
    """The sensitivity learner (off unless ``enabled``).

    ``levels`` are (open, close) thresholds on the main policy's confidence (:func:`change_confidence`, in its
    Q-values' own units: calibrate them on the confidence the policy service reports), ordered from the most
    sensitive (lowest open threshold) to the least. A level is judged after its trades close, or after
    ``max_wait_steps`` flat steps without a trade. Rewards are reported in quote units and scaled inside the
    learner only: a net PnL of ``reward_unit`` times the realised equity at the decision is a reward of 1 to the
    network.

    Where its weights come from: ``checkpoint`` (a file :func:`save_gate` wrote: ``rayscalp evaluate`` leaves its
    gate as ``sensitivity.pt`` in its folder, paper trading in its storage folder); without one, ``rayscalp
    evaluate`` trains the gate on the span it tunes the rule baselines on (before the evaluation span, never in
    it), ``train_passes`` times, and paper trading starts a fresh gate. ``online`` lets paper trading's gate keep
    learning from the trades it has seen closed (only past outcomes, so nothing after the step it decides at).
    """

    enabled: bool = False
    levels: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.01, 0.005), (0.02, 0.01), (0.05, 0.025), (0.1, 0.05))
    initial_level: int | None = None
    max_wait_steps: int = Field(240, ge=1, le=1_000_000)
    hidden: tuple[int, ...] = (64, 64)
    lr: float = Field(1e-3, gt=0.0, lt=1.0)
    gamma: float = Field(0.5, ge=0.0, lt=1.0)
    batch_size: int = Field(64, ge=1, le=65_536)
    replay_capacity: int = Field(10_000, ge=1, le=10_000_000)
    learn_starts: int = Field(64, ge=1)
    updates_per_decision: int = Field(1, ge=0, le=64)
    target_sync_every: int = Field(100, ge=1)
    grad_clip: float = Field(10.0, gt=0.0)
    epsilon_start: float = Field(1.0, ge=0.0, le=1.0)
    epsilon_end: float = Field(0.05, ge=0.0, le=1.0)
    epsilon_decisions: int = Field(1_000, ge=1)
    reward_unit: float = Field(0.01, gt=0.0, le=1.0)
    trade_window: int = Field(20, ge=1, le=10_000)
    confidence_halflife: float = Field(50.0, gt=0.0)
    volatility_halflives: tuple[float, float] = (20.0, 400.0)
    device: str = "auto"
    checkpoint: Path | None = None
    online: bool = True
    train_passes: int = Field(1, ge=1, le=100)

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        if not 2 <= len(levels) <= 16:
            raise ValueError(f"needs 2 to 16 levels (got {len(levels)})")
        for i, (open_, close) in enumerate(levels):
            for name, value in (("open", open_), ("close", close)):
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"levels[{i}] {name} threshold must be finite and >= 0 (got {value!r})")
        opens = [o for o, _ in levels]
        for i in range(1, len(opens)):
            if opens[i] <= opens[i - 1]:
                raise ValueError(
                    f"levels[{i}] open threshold {opens[i]} must exceed levels[{i - 1}]'s {opens[i - 1]} "
                    "(levels go from the most sensitive to the least)"
                )
        return levels

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if not hidden or any(not 1 <= h <= 4096 for h in hidden):
            raise ValueError(f"hidden must be 1 to several widths in [1, 4096] (got {hidden})")
        return hidden

    @model_validator(mode="after")
    def _consistent(self) -> SensitivityConfig:
        check_device_name(self.device)
        if self.initial_level is not None and not 0 <= self.initial_level < len(self.levels):
            raise ValueError(f"initial_level {self.initial_level} is not a level index in [0, {len(self.levels) - 1}]")
        if self.epsilon_end > self.epsilon_start:
            raise ValueError(f"epsilon_end {self.epsilon_end} exceeds epsilon_start {self.epsilon_start}")
        short, long = self.volatility_halflives
        if not 0 < short < long:
            raise ValueError(f"volatility_halflives must be 0 < short < long (got {self.volatility_halflives})")
        return self

    @property
    def start_level(self) -> int:
        """The level in force before the first decision (``initial_level``, else the middle one)."""
        return len(self.levels) // 2 if self.initial_level is None else self.initial_level

    def epsilon(self, decisions: int) -> float:
        """Exploration after ``decisions`` decisions: linear from ``epsilon_start`` to ``epsilon_end``."""
        frac = min(1.0, decisions / self.epsilon_decisions)
        return self.epsilon_start + (self.epsilon_end - self.epsilon_start) * frac


def change_confidence(q_values: np.ndarray, direction: int, kind: str) -> tuple[int, float]:
    """The best position-changing action at ``direction`` and its confidence (see the module docstring).

    Parameters
    ----------
    q_values : array [3]
        The main policy's Q-values over BUY, SELL, HOLD (``market.venue`` order).
    direction : int
        The current position's sign: -1, 0 or +1.
    kind : {"spot", "perp"}

    Returns
    -------
    (action, confidence) : (int, float)
        ``Q(action) - max Q(keeping actions)``; negative when the main policy prefers to keep the position.
        On a tie among changing actions the lower action index wins (the main policy's own tie rule).
    """
    if direction > 0:
        changing = (SELL,)
    elif direction < 0:
        changing = (BUY,)
    else:
        changing = (BUY, SELL) if kind == "perp" else (BUY,)
    keeping = [a for a in (BUY, SELL, HOLD) if a not in changing]
    best = max(changing, key=lambda a: (q_values[a], -a))
    return best, float(q_values[best] - max(q_values[a] for a in keeping))


class SensitivityNetwork(nn.Module):
    """An MLP from the learner's state ``[B, F]`` to one Q-value per level ``[B, L]``."""

    def __init__(self, n_features: int, n_levels: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_levels))
        self.net = nn.Sequential(*layers)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


@dataclass(frozen=True, slots=True)
class SensitivityDecision:
    """One finished decision: the level chosen at ``step`` and what its trades realised.

    ``reward`` is the net PnL (quote units) of the ``trades`` that closed while the level was in force;
    ``end_step`` is where it stopped being in force; ``greedy`` whether it was the network's choice (not a
    random exploration).
    """

    step: int
    end_step: int
    level: int
    reward: float
    trades: int
    greedy: bool


class SensitivityGate:
    """The sensitivity learner, as a filter on the main policy's actions. Plain class; no Ray.

    Per base step, in this order::

        gate.observe_step(price)                      # the price known at the step (volatility regime)
        action = gate.filter(q_values, position)      # the action actually sent to the venue
        ...venue step...
        gate.observe_fill(qty, price, fee, funding, margin_lost)
            # that step's fills per leg, funding and margin lost: a row of the env's fill_qty / fill_price /
            # fill_fee, its step_funding and the step's change of margin_lost
        gate.end_episode()                            # at an episode's end (after its last fills)

    ``observe_step`` also counts the steps that holding times and decisions are recorded in.

    Parameters
    ----------
    config : SensitivityConfig
    kind : {"spot", "perp"}
        The venue kind (what SELL from flat means).
    initial_equity : float
        The account's starting equity (returns, drawdown and the reward scale are relative to it).
    seed : int
        Seeds the network initialisation, exploration and replay sampling.
    device : str or torch.device, optional
        Overrides ``config.device``.

    Attributes
    ----------
    level : int
        The level in force.
    training : bool
        Explore and learn (True) or act greedily and learn nothing (False).
    decisions : deque of SensitivityDecision
        The most recent finished decisions (10,000).
    total_reward : float
        Sum of the rewards of all finished decisions (quote units).
    level_counts : array [L] int64
        How many decisions chose each level.
    held_back : int
        Steps where the main policy's greedy action changed the position and the gate sent HOLD instead.
    confidence : float
        The confidence :meth:`filter` read at its last call (NaN before the first).
    """

    def __init__(
        self,
        config: SensitivityConfig,
        *,
        kind: Literal["spot", "perp"] = "spot",
        initial_equity: float = 10_000.0,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        if kind not in ("spot", "perp"):
            raise ConfigError(f"SensitivityGate: kind must be spot or perp (got {kind!r})")
        self.config = config
        self.kind = kind
        self.device = resolve_device(config.device if device is None else device)
        self.levels = np.asarray(config.levels, dtype=np.float64)
        self.threshold_scale = max(float(self.levels.max()), 1e-12)
        self.ledger = TradeLedger(initial_equity, history=max(config.trade_window, 3))
        self.rng = np.random.default_rng(seed)
        n_features, n_levels = len(STATE_FEATURES), len(config.levels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.online = SensitivityNetwork(n_features, n_levels, config.hidden).to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=config.lr)
        cap = config.replay_capacity
        self.replay_s = torch.zeros((cap, n_features), device=self.device)
        self.replay_next = torch.zeros((cap, n_features), device=self.device)
        self.replay_a = torch.zeros(cap, dtype=torch.int64, device=self.device)
        self.replay_r = torch.zeros(cap, device=self.device)
        self.replay_done = torch.zeros(cap, device=self.device)
        self.replay_size = 0
        self.replay_next_slot = 0
        self.training = True
        self.decisions: deque[SensitivityDecision] = deque(maxlen=10_000)
        self.total_reward = 0.0
        self.n_decisions = 0
        self.level_counts = np.zeros(n_levels, dtype=np.int64)
        self.held_back = 0
        self.confidence = float("nan")
        self.updates = 0
        self.last_loss = float("nan")
        self.step = -1
        self.level = config.start_level
        # Context the state reads, updated as steps, Q-values and fills arrive.
        self._last_price = float("nan")
        self._var_short = self._var_long = 0.0
        self._conf_mean = self._conf_sq = 0.0
        self._conf_seen = False
        self._last_close_step = -1
        # The decision in force: its state, level, start, greedy flag, flat steps and what its trades realised.
        self._active = False
        self._state: np.ndarray | None = None
        self._start_step = -1
        self._greedy = False
        self._wait = 0
        self._reward = 0.0
        self._trades = 0
        self._equity = float(initial_equity)
        # A finished decision waiting for the next state (its s').
        self._pending: tuple[np.ndarray, int, float] | None = None

    # ----- the per-step API -----

    @property
    def thresholds(self) -> tuple[float, float]:
        """(open, close) of the level in force."""
        open_, close = self.levels[self.level]
        return float(open_), float(close)

    def observe_step(self, price: float) -> None:
        """Start a base step whose known price is ``price`` (before :meth:`filter` of that step)."""
        price = float(price)
        if not math.isfinite(price) or price <= 0:
            raise DataError(f"SensitivityGate.observe_step: price {price!r} is not a positive finite number")
        self.step += 1
        if math.isfinite(self._last_price):
            r2 = math.log(price / self._last_price) ** 2
            short, long = self.config.volatility_halflives
            self._var_short += (1.0 - 0.5 ** (1.0 / short)) * (r2 - self._var_short)
            self._var_long += (1.0 - 0.5 ** (1.0 / long)) * (r2 - self._var_long)
        self._last_price = price

    def filter(self, q_values: Any, position: float) -> int:
        """The action to send for the main policy's ``q_values`` [3] (BUY, SELL, HOLD) at ``position``.

        ``position`` is the account's position (its sign is used: -1 short, 0 flat, +1 long). Chooses a new
        level first when one is due (see the module docstring). Returns BUY, SELL or HOLD.
        """
        q = np.asarray(q_values, dtype=np.float64).reshape(-1)
        if q.shape != (3,):
            raise DataError(f"SensitivityGate.filter: q_values must be 3 finite numbers (got {q.size} values)")
        if not np.isfinite(q).all():
            raise DataError(f"SensitivityGate.filter: q_values must be 3 finite numbers (got {q.tolist()})")
        p = float(position)
        if not math.isfinite(p):
            raise DataError(f"SensitivityGate.filter: position {position!r} is not finite")
        direction = int(np.sign(p))
        if direction < 0 and self.kind == "spot":
            raise DataError(f"SensitivityGate.filter: a spot account cannot be short (position {position!r})")
        if self.step < 0:
            self.step = 0
        flat = direction == 0
        if self._active and flat:
            if self._trades > 0 or self._wait >= self.config.max_wait_steps:
                self._finish(done=False)
            else:
                self._wait += 1
        if not self._active and flat:
            self._decide()
        # The confidence read after the decision: the state at this step sees the Q-values up to the last one.
        action, confidence = change_confidence(q, direction, self.kind)
        self.confidence = confidence
        self._track_confidence(confidence)
        open_, close = self.thresholds
        if confidence >= (open_ if direction == 0 else close):
            return action
        if int(np.argmax(q)) == action:  # the main policy's greedy choice was this change: the gate holds it back
            self.held_back += 1
        return HOLD

    def observe_fill(
        self, qty: Any, price: Any, fee: Any, funding: float = 0.0, margin_lost: float = 0.0
    ) -> list[ClosedTrade]:
        """The step's fills per leg (``market.venue.LEGS``), funding and liquidation margin lost (see
        ``market.trade_outcomes.TradeLedger.observe_legs``); return the trades they closed."""
        closed = self.ledger.observe_legs(self.step, qty, price, fee, funding, margin_lost)
        for trade in closed:
            self._reward += trade.net_pnl
            self._trades += 1
            self._last_close_step = trade.close_step
        return closed

    def end_episode(self) -> None:
        """End the episode: the decision in force is finished (terminal), an open position is forgotten.

        Call it after the episode's last fills (an env with ``close_at_end`` has closed the position by then; a
        position still open realised nothing and is dropped, so is the level in force's share of it).
        """
        if self._active:
            self._finish(done=True)
        self.ledger.drop_open()
        self._last_price = float("nan")

    def new_account(self) -> None:
        """Start on a new account of the same initial equity (an evaluation after training): no trades, no decision
        in force, the counters of what it did back to 0; the networks, replay and exploration schedule are kept."""
        self.ledger.reset()
        self.decisions.clear()
        self.total_reward = 0.0
        self.level_counts[:] = 0
        self.held_back = 0
        self._active, self._state, self._pending = False, None, None
        self._last_price = float("nan")
        self._last_close_step = -1

    # ----- the learner -----

    def features(self) -> np.ndarray:
        """The learner's state now (:data:`STATE_FEATURES`), float32 [16]."""
        cfg = self.config
        outcome = self.ledger.outcome_features(cfg.trade_window, cfg.reward_unit, cfg.max_wait_steps)
        open_, close = self.thresholds
        vol = 0.0
        if self._var_short > 0 and self._var_long > 0:
            vol = float(np.clip(0.5 * math.log(self._var_short / self._var_long), -3.0, 3.0))
        std = math.sqrt(max(self._conf_sq - self._conf_mean**2, 0.0))
        since = self.step - self._last_close_step if self._last_close_step >= 0 else cfg.max_wait_steps
        context = np.array(
            [
                open_ / self.threshold_scale,
                close / self.threshold_scale,
                vol,
                np.clip(self._conf_mean / self.threshold_scale, -10.0, 10.0),
                min(std / self.threshold_scale, 10.0),
                math.log1p(max(since, 0)) / math.log1p(cfg.max_wait_steps),
            ],
            dtype=np.float32,
        )
        return np.concatenate([outcome, context])

    @torch.no_grad()
    def level_values(self, state: np.ndarray | None = None) -> np.ndarray:
        """The network's Q-value of every level at ``state`` (the current features by default)."""
        s = self.features() if state is None else state
        return self.online(torch.as_tensor(s, device=self.device)[None]).squeeze(0).cpu().numpy()

    def _decide(self) -> None:
        state = self.features()
        if self._pending is not None:
            s, a, r = self._pending
            self._push(s, a, r, state, 0.0)
            self._pending = None
            self._learn()
        epsilon = self.config.epsilon(self.n_decisions) if self.training else 0.0
        explore = self.training and self.rng.random() < epsilon
        self.level = int(self.rng.integers(len(self.levels))) if explore else int(np.argmax(self.level_values(state)))
        self.n_decisions += 1
        self.level_counts[self.level] += 1
        self._active, self._state, self._start_step, self._greedy = True, state, self.step, not explore
        self._wait, self._reward, self._trades = 0, 0.0, 0
        self._equity = max(self.ledger.realised_equity, 1e-9 * self.ledger.initial_equity)

    def _finish(self, *, done: bool) -> None:
        assert self._state is not None
        reward = self._reward
        self.decisions.append(
            SensitivityDecision(self._start_step, self.step, self.level, reward, self._trades, self._greedy)
        )
        self.total_reward += reward
        # The network learns returns (PnL over the realised equity at the decision): an account that compounds
        # would otherwise feed it rewards whose scale grows with its equity.
        scaled = reward / (self.config.reward_unit * self._equity)
        if done:
            self._push(self._state, self.level, scaled, np.zeros_like(self._state), 1.0)
            self._learn()
        else:
            self._pending = (self._state, self.level, scaled)
        self._active = False
        self._state = None

    def _push(self, s: np.ndarray, a: int, r: float, s_next: np.ndarray, done: float) -> None:
        if not self.training:
            return
        i = self.replay_next_slot
        self.replay_s[i] = torch.as_tensor(s, device=self.device)
        self.replay_next[i] = torch.as_tensor(s_next, device=self.device)
        self.replay_a[i] = a
        self.replay_r[i] = r
        self.replay_done[i] = done
        self.replay_next_slot = (i + 1) % self.config.replay_capacity
        self.replay_size = min(self.replay_size + 1, self.config.replay_capacity)

    def _learn(self) -> None:
        cfg = self.config
        if not self.training or self.replay_size < cfg.learn_starts:
            return
        for _ in range(cfg.updates_per_decision):
            idx = torch.as_tensor(self.rng.integers(0, self.replay_size, cfg.batch_size), device=self.device)
            s, a, r = self.replay_s[idx], self.replay_a[idx], self.replay_r[idx]
            s_next, done = self.replay_next[idx], self.replay_done[idx]
            q = self.online(s).gather(1, a[:, None]).squeeze(1)
            with torch.no_grad():
                best = self.online(s_next).argmax(dim=1, keepdim=True)
                target = r + cfg.gamma * (1.0 - done) * self.target(s_next).gather(1, best).squeeze(1)
            loss = nn.functional.smooth_l1_loss(q, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.online.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.updates += 1
            self.last_loss = float(loss.detach())
            if self.updates % cfg.target_sync_every == 0:
                self.target.load_state_dict(self.online.state_dict())

    def _track_confidence(self, confidence: float) -> None:
        c = float(np.clip(confidence, -10.0 * self.threshold_scale, 10.0 * self.threshold_scale))
        if not self._conf_seen:
            self._conf_mean, self._conf_sq, self._conf_seen = c, c * c, True
            return
        w = 1.0 - 0.5 ** (1.0 / self.config.confidence_halflife)
        self._conf_mean += w * (c - self._conf_mean)
        self._conf_sq += w * (c * c - self._conf_sq)

    # ----- checkpoints -----

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimiser, replay, counters, exploration RNG and context, for checkpoints (CPU tensors)."""
        n = self.replay_size

        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t[:n].detach().to("cpu", copy=True)

        return {
            "format": _FORMAT,
            "levels": [list(level) for level in self.config.levels],
            "kind": self.kind,
            "online": {k: v.detach().to("cpu", copy=True) for k, v in self.online.state_dict().items()},
            "target": {k: v.detach().to("cpu", copy=True) for k, v in self.target.state_dict().items()},
            # A copy: the optimiser's moments are updated in place by later steps.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "replay": {
                "s": cpu(self.replay_s),
                "next": cpu(self.replay_next),
                "a": cpu(self.replay_a),
                "r": cpu(self.replay_r),
                "done": cpu(self.replay_done),
                "next_slot": self.replay_next_slot,
            },
            "counters": {
                "decisions": self.n_decisions,
                "level_counts": self.level_counts.tolist(),
                "held_back": self.held_back,
                "updates": self.updates,
                "step": self.step,
                "level": self.level,
                "total_reward": self.total_reward,
            },
            "rng": self.rng.bit_generator.state,
            "context": [
                self._last_price,
                self._var_short,
                self._var_long,
                self._conf_mean,
                self._conf_sq,
                float(self._conf_seen),
                self._last_close_step,
            ],
            "ledger": self.ledger.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved into a gate of the same levels and kind.

        The decision in force when it was saved is not restored: the next flat step chooses a level afresh.

        Raises
        ------
        ConfigError
            When the checkpoint's levels or venue kind are not this gate's.
        DataError
            When the checkpoint is not a sensitivity learner's or is damaged.
        """
        try:
            if state.get("format") != _FORMAT:
                raise DataError(f"sensitivity checkpoint: format {state.get('format')!r}, expected {_FORMAT}")
            theirs = [tuple(float(v) for v in level) for level in state["levels"]]
            if theirs != [tuple(level) for level in self.config.levels]:
                raise ConfigError(f"sensitivity checkpoint: levels {theirs} are not this gate's {self.config.levels}")
            if state["kind"] != self.kind:
                raise ConfigError(f"sensitivity checkpoint: venue kind {state['kind']!r} is not {self.kind!r}")
            self.online.load_state_dict(state["online"])
            self.target.load_state_dict(state["target"])
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
            replay = state["replay"]
            n = int(replay["a"].shape[0])
            if n > self.config.replay_capacity:
                raise DataError(
                    f"sensitivity checkpoint: {n} replay rows exceed capacity {self.config.replay_capacity}"
                )
            for name, buffer in (
                ("s", self.replay_s),
                ("next", self.replay_next),
                ("a", self.replay_a),
                ("r", self.replay_r),
                ("done", self.replay_done),
            ):
                buffer[:n] = replay[name].to(self.device, dtype=buffer.dtype)
            counters = state["counters"]
            self.ledger.load_state_dict(state["ledger"])
            self.rng.bit_generator.state = state["rng"]
            context = [float(v) for v in state["context"]]
        except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
            raise DataError(f"sensitivity checkpoint: {type(exc).__name__}: {exc}") from exc
        self.replay_size = n
        self.replay_next_slot = int(replay["next_slot"]) % self.config.replay_capacity
        self.n_decisions = int(counters["decisions"])
        self.level_counts = np.asarray(counters.get("level_counts", self.level_counts), dtype=np.int64).copy()
        self.held_back = int(counters.get("held_back", 0))
        self.updates = int(counters["updates"])
        self.step = int(counters["step"])
        self.level = int(counters["level"])
        self.total_reward = float(counters["total_reward"])
        (self._last_price, self._var_short, self._var_long, self._conf_mean, self._conf_sq, seen, last_close) = context
        self._conf_seen = bool(seen)
        self._last_close_step = int(last_close)
        self._active, self._state, self._pending = False, None, None

    def summary(self) -> dict[str, Any]:
        """What the gate has done on its account (since :meth:`new_account`), JSON-ready: the levels, the level in
        force, the decisions per level, the reward sum (the net PnL of the trades it let through), the trades
        closed, the greedy orders it held back; and its learning (``decisions_total`` counts every decision)."""
        return {
            "levels": [list(level) for level in self.config.levels],
            "level": self.level,
            "thresholds": list(self.thresholds),
            "decisions": int(self.level_counts.sum()),
            "decisions_total": self.n_decisions,
            "level_counts": self.level_counts.tolist(),
            "reward_sum": self.total_reward,
            "trades_closed": self.ledger.closed_count,
            "held_back": self.held_back,
            "training": self.training,
            "updates": self.updates,
        }


def save_gate(gate: SensitivityGate, path: str | os.PathLike[str]) -> Path:
    """Write ``gate.state_dict()`` to ``path`` (atomically: a reader never sees half a file); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(gate.state_dict(), tmp)
    tmp.replace(path)
    return path


def load_gate(gate: SensitivityGate, path: str | os.PathLike[str]) -> None:
    """Restore ``gate`` from a file :func:`save_gate` wrote.

    Raises
    ------
    DataError
        When the file is missing, unreadable or not a sensitivity learner's (naming the file).
    ConfigError
        When it was saved with other levels or another venue kind.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: unreadable sensitivity checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: a sensitivity checkpoint holds a dict, got {type(state).__name__}")
    try:
        gate.load_state_dict(state)
    except (DataError, ConfigError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
