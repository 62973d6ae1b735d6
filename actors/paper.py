"""Paper trading: the policy on the live state, with simulated fills by the one venue step and risk limits.

``PaperTrader`` is the plain class doing the work (tested without Ray): it reads the live-state service's records
(``actors.live_state.LiveState``, one per base step: it builds no state of its own), asks the policy at each step,
fills through ``market.venue.step`` (the env's one venue step: latency, spread, fees, margin, liquidation,
funding), and keeps only what is its own: the risk review (``actors.risk``), the kill switch and persistence.
``PaperTradingActor`` is the thin Ray shell that polls the live-state actor, exports the paper metrics and answers
the kill switch. Never fills at a price the market did not offer after the decision, never trades while the kill
switch is engaged.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import orjson
import ray
from pydantic import Field

from market import venue as vn
from market.agent import agent_features as agent_features_of
from market.clock import wall_ms
from market.config import StrictModel, SymbolsConfig
from market.datasets import read_parquet, write_parquet
from market.errors import ConfigError, DataError
from market.layout import AGENT_FEATURES, StateConfig, StateLayout, build_layout
from market.shared_json import write_json
from policies.sensitivity import SensitivityConfig, SensitivityGate, load_gate, save_gate

from .live_state import LIVE_STATE_ACTOR, LiveState
from .risk import RiskConfig, RiskManager, RiskState

__all__ = [
    "API_KEY_ENV",
    "API_KEY_HEADER",
    "FILL_DTYPE",
    "PAPER_ACTOR",
    "REASONS",
    "CheckpointPolicy",
    "HttpPolicy",
    "PaperConfig",
    "PaperTrader",
    "PaperTradingActor",
    "Policy",
    "ScriptedPolicy",
    "agent_features",
    "kill_paper",
    "start_paper",
]

#: The name the paper trading actor is registered under.
PAPER_ACTOR = "rayscalp-paper"
#: Why a fill happened: the policy's order, or a close forced by the kill switch, the daily loss or the venue.
REASONS: tuple[str, ...] = ("policy", "kill_switch", "max_daily_loss", "liquidation", "max_leverage")
#: One simulated fill (a leg of an order, ``market.venue.LEGS``), as persisted in ``fills/*.parquet``.
FILL_DTYPE = np.dtype(
    [
        ("time_ms", np.int64),  # when it filled: the decision's step time plus the latency (forced: the step's time)
        ("step", np.int64),  # the base step it filled in: time // base timeframe
        ("leg", np.int8),  # market.venue.LEGS: close, open, forced
        ("side", np.int8),  # +1 buy, -1 sell
        ("price", np.float64),
        ("qty", np.float64),  # absolute, base units
        ("fee", np.float64),  # quote units
        ("reason", np.int8),  # REASONS
        ("position_after", np.float64),  # signed position once the step's fills are done
        ("equity_after", np.float64),  # equity at the step's close once they are done
    ]
)

#: The policy service's key: read from this environment variable and sent in this header (``serve.auth``'s names).
API_KEY_ENV = "RAYSCALP_API_KEY"
API_KEY_HEADER = "X-API-Key"

_ACCOUNT_FILE = "account.json"
_GATE_FILE = "sensitivity.pt"
_FILLS_DIR = "fills"
_FORMAT = 1
#: The ``market.venue.Accounts`` fields kept in ``account.json``: name, type, and the value a file written before
#: the field existed reads as (None: the field is required). ``order_queue`` is not kept: tick fills only.
_ACCOUNT_FIELDS: tuple[tuple[str, type[float] | type[int], float | int | None], ...] = (
    ("cash", float, None),
    ("qty", float, None),
    ("entry_price", float, None),
    ("entry_step", int, None),
    ("fees", float, None),
    ("funding", float, None),
    ("trades", int, None),
    ("refusals", int, 0),
    ("margin_lost", float, 0.0),
    ("order_side", int, 0),
    ("order_price", float, 0.0),
    ("order_target", int, 0),
)


# ---------------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------------


class Policy(Protocol):
    """What paper trading asks at each step: an action (``market.venue.BUY``, ``SELL`` or ``HOLD``).

    Attributes
    ----------
    kind : str
        ``checkpoint``, ``http``, ``scripted``, ...
    needs_state : bool
        Whether ``act`` reads the state (a state is built only then).
    version : str
        The policy's version (a checkpoint's version, the server's model version).
    """

    kind: str
    needs_state: bool
    version: str

    def prepare(self, layout: StateLayout) -> None:
        """Check that the policy reads states of ``layout`` (raise ``ConfigError`` when it does not)."""
        ...

    def act(self, state: np.ndarray | None, step_time_ms: int) -> int:
        """The action for ``state`` [S] float32 at the step at ``step_time_ms``."""
        ...

    def decide(self, state: np.ndarray | None, step_time_ms: int) -> dict[str, Any]:
        """The decision record for ``state``: ``action_index`` and ``step_time_ms``, and where the policy has them
        ``q_values`` (BUY, SELL, HOLD) and ``confidence``; nothing sent anywhere yet (see :meth:`record`)."""
        ...

    def record(self, decision: dict[str, Any]) -> None:
        """Take the final decision record (after the sensitivity learner, when one sits between policy and venue)."""
        ...


class CheckpointPolicy:
    """A policy checkpoint loaded in this process (``policies.policy_inference.PolicyPredictor``), greedy.

    Parameters
    ----------
    path : path-like
        A checkpoint written by ``policies.checkpoint.save_policy``.
    device : str
        ``cpu``, ``cuda[:N]`` or ``auto``.
    """

    kind = "checkpoint"
    needs_state = True

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu") -> None:
        self.path = Path(path)
        self.device = device
        self._predictor: Any = None

    def load(self) -> Any:
        """The ``PolicyPredictor`` (loaded on first use, in the process that acts)."""
        if self._predictor is None:
            from policies.policy_inference import PolicyPredictor

            self._predictor = PolicyPredictor.from_checkpoint(self.path, self.device)
        return self._predictor

    @property
    def version(self) -> str:
        return self.load().version

    @property
    def action_set(self) -> str:
        """The action set the checkpoint's network answers in (paper trading's ``actions`` must be it)."""
        return self.load().action_set

    def prepare(self, layout: StateLayout) -> None:
        theirs = self.load().layout
        if theirs != layout:
            raise ConfigError(
                f"policy checkpoint {self.path}: its state layout ({theirs.config.profile!r}, {theirs.size} floats) "
                f"is not paper trading's ({layout.config.profile!r}, {layout.size} floats): state must be the same"
            )

    def decide(self, state: np.ndarray | None, step_time_ms: int) -> dict[str, Any]:
        answer = self.load().act(state)
        decision = answer.decisions()[0]
        decision["step_time_ms"] = int(step_time_ms)
        decision["actions"] = list(answer.names)  # the action names by index, the order of ``q_values``
        return decision

    def record(self, decision: dict[str, Any]) -> None:
        """Nothing to do here (``actors.board.RecordingPolicy`` sends it to the dashboard's board)."""

    def act(self, state: np.ndarray | None, step_time_ms: int) -> int:
        decision = self.decide(state, step_time_ms)
        self.record(decision)
        return int(decision["action_index"])


class HttpPolicy:
    """The policy service over HTTP: ``POST`` the state as ``.npy`` to ``/v1/act``, read ``action_index``.

    Parameters
    ----------
    url : str
        The act endpoint, e.g. ``http://127.0.0.1:8000/policy/v1/act``.
    timeout_s : float
    api_key_env : str
        The environment variable holding the service's key (the one the service reads, :data:`API_KEY_ENV`);
        when set, the key is sent in :data:`API_KEY_HEADER`. Read at each call, never stored in a config.
    """

    kind = "http"
    needs_state = True

    def __init__(self, url: str, timeout_s: float = 2.0, api_key_env: str = API_KEY_ENV) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"policy url must start with http:// or https:// (got {url!r})")
        self.url = url
        self.timeout_s = float(timeout_s)
        self.api_key_env = api_key_env
        self.version = "unknown"

    def headers(self) -> dict[str, str]:
        """The request headers, with the key from ``api_key_env`` when it is set."""
        out = {"Content-Type": "application/x-npy", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            out[API_KEY_HEADER] = key
        return out

    def prepare(self, layout: StateLayout) -> None:
        """Nothing to check here: the service answers a state of another layout with HTTP 422 and the reason."""

    def act(self, state: np.ndarray | None, step_time_ms: int) -> int:
        return int(self.decide(state, step_time_ms)["action_index"])

    def record(self, decision: dict[str, Any]) -> None:
        """Nothing to do: the service keeps its own records."""

    def decide(self, state: np.ndarray | None, step_time_ms: int) -> dict[str, Any]:
        buf = io.BytesIO()
        np.save(buf, np.asarray(state, dtype=np.float32), allow_pickle=False)
        request = urllib.request.Request(
            self.url,
            data=buf.getvalue(),
            headers=self.headers(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - http(s) checked
            answer = orjson.loads(response.read())
        self.version = str(answer.get("model_version", self.version))
        action = answer.get("action_index")
        if not isinstance(action, int) or not 0 <= action < len(vn.SCALPER_ACTION_NAMES):
            raise DataError(f"{self.url}: answer has action_index {action!r}, expected 0 to 5")
        decision = {"action_index": int(action), "step_time_ms": int(step_time_ms)}
        for key in ("action", "q_values", "confidence"):
            if key in answer:
                decision[key] = answer[key]
        return decision


class ScriptedPolicy:
    """Replays recorded actions by step time (HOLD at every other step); reads no state.

    For replays that must repeat a known action sequence (and compare it with the env's books). ``q_values``, when
    given, are a recorded policy's Q-values (BUY, SELL, HOLD) by step time, answered with the action in
    :meth:`decide` (what the sensitivity learner reads).
    """

    kind = "scripted"
    needs_state = False

    def __init__(
        self,
        actions: Mapping[int, int],
        version: str = "scripted",
        q_values: Mapping[int, Sequence[float]] | None = None,
    ) -> None:
        bad = {t: a for t, a in actions.items() if a not in range(len(vn.SCALPER_ACTION_NAMES))}
        if bad:
            t, a = next(iter(bad.items()))
            names = ", ".join(f"{i} ({n})" for i, n in enumerate(vn.SCALPER_ACTION_NAMES))
            raise ConfigError(f"scripted action at {t} is {a!r}; actions are {names}")
        self.actions = {int(t): int(a) for t, a in actions.items()}
        self.q_values = {int(t): [float(v) for v in q] for t, q in (q_values or {}).items()}
        self.version = version

    def prepare(self, layout: StateLayout) -> None:
        """Any layout: the script reads no state."""

    def act(self, state: np.ndarray | None, step_time_ms: int) -> int:
        return self.actions.get(int(step_time_ms), vn.HOLD)

    def decide(self, state: np.ndarray | None, step_time_ms: int) -> dict[str, Any]:
        decision: dict[str, Any] = {"action_index": self.act(state, step_time_ms), "step_time_ms": int(step_time_ms)}
        if int(step_time_ms) in self.q_values:
            decision["q_values"] = self.q_values[int(step_time_ms)]
        return decision

    def record(self, decision: dict[str, Any]) -> None:
        """Nothing to do: the script is its own record."""


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


class PaperConfig(StrictModel):
    """Paper trading of the traded symbol.

    Attributes
    ----------
    symbols : SymbolsConfig
    state : StateConfig
        The state the policy reads (its training layout); the live states must have it.
    venue : VenueConfig
        Latency, spread, fees, leverage, margin, funding and filters: the env's venue.
    initial_equity : float
        Quote units the account starts with (finite, positive).
    risk : RiskConfig
    storage_dir : Path
        Where the account (``account.json``) and the fills (``fills/*.parquet``) are kept and restored from.
    max_step_lag_ms : int, optional
        A step whose time is further than this behind the newest trade is marked but not acted on (an order
        decided on it would reach a market already gone); None acts on every step (replays).
    recent_fills : int
        Fills kept in memory for the status.
    poll_interval_ms : int
        How often the actor polls the live-state actor.
    live_state_actor : str
        Name of the live-state actor whose records are traded on.
    actions : {"market", "scalper"}
        The action set the policy answers in (``market.venue.ACTION_SETS``; the env's ``actions``).
    sensitivity : SensitivityConfig
        The sensitivity learner between the policy's Q-values and the venue (off unless ``enabled``; ``market``
        actions only). Its weights: the storage folder's ``sensitivity.pt`` when paper trading saved one, else
        ``sensitivity.checkpoint`` (e.g. the one ``rayscalp evaluate`` wrote), else untrained; it keeps learning
        from the trades it has seen closed when ``sensitivity.online``.
    recent_decisions : int
        Decision records (policy answer, level, action sent) kept in memory for the status, with the learner on.
    """

    symbols: SymbolsConfig = SymbolsConfig()
    state: StateConfig = StateConfig()
    venue: vn.VenueConfig = vn.VenueConfig()
    initial_equity: float = Field(10_000.0, gt=0.0, allow_inf_nan=False)
    risk: RiskConfig = RiskConfig()
    storage_dir: Path = Path("data/paper")
    max_step_lag_ms: int | None = Field(5_000, ge=0)
    recent_fills: int = Field(50, ge=0, le=100_000)
    poll_interval_ms: int = Field(250, ge=10, le=60_000)
    live_state_actor: str = LIVE_STATE_ACTOR
    actions: Literal["market", "scalper"] = "market"
    sensitivity: SensitivityConfig = SensitivityConfig()
    recent_decisions: int = Field(50, ge=0, le=100_000)


# ---------------------------------------------------------------------------------------------------
# The agent features: the env's own definition
# ---------------------------------------------------------------------------------------------------


def agent_features(acc: vn.Accounts, step: int, price: float, equity0: float) -> np.ndarray:
    """The agent features (``market.layout.AGENT_FEATURES``) of account 0 at ``step`` and ``price``, float32 [A].

    ``market.agent.agent_features``, the env's own definition, so that the live state's agent part is the one
    the policy was trained with.
    """
    return agent_features_of(acc, step, price, equity0, np.array([0]))[0]


# ---------------------------------------------------------------------------------------------------
# The plain trader
# ---------------------------------------------------------------------------------------------------


def _float(value: Any) -> float:
    """A float from JSON, where orjson writes NaN as null."""
    return float("nan") if value is None else float(value)


class PaperTrader:
    """Paper trading on the live states: one account, one policy, the one venue step, risk limits.

    Each live state (one per base step, in order): the order decided at the previous step (after the risk review)
    and the bar of this step go through ``market.venue.step``, exactly as the env steps from t to t+1 (fill after
    the latency at this bar's open, or at the previous close with ``latency_ms: 0``, with the half-spread known
    then; liquidation on this bar; funding); the daily loss limit may then close the position at once; then,
    unless the kill switch is engaged or the step is stale, the policy is asked on the state (with this account's
    agent features) and its order, as the risk manager allows it, waits for the next step. So the same actions on
    the same trades and quotes give the env's books exactly.

    Persistence: after every call that changed anything, new fills go to ``fills/part-*.parquet`` and then the
    account, the pending order, the risk state, the counters and the caller's ``cursor`` go to ``account.json``
    (atomically); a new trader on the same folder carries on from there, skipping states at or before the last
    step acted on.

    Parameters
    ----------
    config : PaperConfig
    policy : Policy
    clock : callable, optional
        Wall time in ms (for the kill switch's time before any step).

    Raises
    ------
    ConfigError
        The policy reads another layout or answers in another action set, or ``account.json`` belongs to another
        symbol, venue or starting equity.
    DataError
        ``account.json`` or a fills file is unreadable.
    """

    def __init__(self, config: PaperConfig, policy: Policy, *, clock: Callable[[], int] = wall_ms) -> None:
        self.config = config
        self.policy = policy
        self._clock = clock
        self._lock = threading.RLock()
        self.layout = build_layout(config.state)
        policy.prepare(self.layout)
        served = getattr(policy, "action_set", None)  # a checkpoint says its set; HTTP answers are checked per step
        if served is not None and served != config.actions:
            raise ConfigError(
                f"policy {policy.kind} answers in the {served!r} action set, paper trading's actions is "
                f"{config.actions!r}: set actions: {served} (the env's actions the policy was trained with)"
            )
        self.base_ms = _base_ms(config.state)
        self.equity0 = float(config.initial_equity)
        self.acc = vn.Accounts.open(1, self.equity0)
        self.risk = RiskManager(config.risk, config.venue)
        self._fills = vn.Fills.empty(1)
        self.last_step_ms = -1
        self.last_close = float("nan")
        self.last_half_spread = float("nan")
        self.pending: dict[str, int] | None = None
        self.data_time_ms = -1
        self.synthetic = False
        self.live_seq = -1
        self.steps = 0
        self.skipped_stale = 0
        self.skipped_done = 0
        self.missed_states = 0
        self.policy_calls = 0
        self.policy_errors = 0
        self.last_policy_error = ""
        self.last_action: int | None = None
        self.last_refusal = ""
        self.fills_written = 0
        self.cursor: dict[str, Any] = {}
        self._unsaved: list[np.ndarray] = []
        self._recent: deque[np.ndarray] = deque(maxlen=max(config.recent_fills, 1))
        self._events: list[tuple[str, dict[str, str], float]] = []
        self._dirty = False
        self.root = Path(config.storage_dir)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=max(config.recent_decisions, 1))
        self.gate = self._make_gate()
        self._restore()

    def _make_gate(self) -> SensitivityGate | None:
        """The sensitivity learner (``None`` when off): from the storage folder's file, else the configured
        checkpoint (on a new account), else untrained."""
        cfg = self.config
        sens = cfg.sensitivity
        if not sens.enabled:
            return None
        if cfg.actions != "market":
            raise ConfigError(
                f"paper trading: sensitivity.enabled needs actions 'market' (the gate filters BUY / SELL / HOLD), "
                f"got {cfg.actions!r}"
            )
        gate = SensitivityGate(sens, kind=cfg.venue.kind, initial_equity=self.equity0)
        own = self.root / _GATE_FILE
        if own.exists():
            load_gate(gate, own)
        elif sens.checkpoint is not None:
            load_gate(gate, sens.checkpoint)
            gate.new_account()
        gate.training = sens.online
        return gate

    # -- the live states -----------------------------------------------------------------------------

    def on_states(
        self,
        states: Sequence[LiveState],
        *,
        complete: bool = True,
        cursor: Mapping[str, Any] | None = None,
    ) -> int:
        """Trade every live state in order, and persist; return the steps taken.

        Parameters
        ----------
        states : sequence of LiveState
            The live-state service's records, in step order.
        complete : bool
            False when records were missed before these (counted; the venue step then bridges the hole).
        cursor : mapping, optional
            The caller's position in the live-state service, persisted with the account (``self.cursor``).
        """
        with self._lock:
            if not complete:
                self.missed_states += 1
            if states:
                self.data_time_ms = max(self.data_time_ms, max(int(s.data_time_ms) for s in states))
            n = 0
            for live in states:
                n += self._step(live)
            if cursor is not None and dict(cursor) != self.cursor:
                self.cursor = dict(cursor)
                self._dirty = True
            if self._dirty:
                self.save()
            return n

    def _check(self, live: LiveState) -> None:
        if live.symbol != self.config.symbols.traded or np.shape(live.state) != (self.layout.size,):
            raise DataError(
                f"live state of {live.symbol} with {np.size(live.state)} floats: paper trading trades "
                f"{self.config.symbols.traded} on states of {self.layout.size} floats ({self.config.state.profile})"
            )

    def _step(self, live: LiveState) -> int:
        cfg, acc, fills, venue = self.config, self.acc, self._fills, self.config.venue
        time_ms = int(live.step_time_ms)
        self.live_seq = max(self.live_seq, int(live.seq))
        if time_ms <= self.last_step_ms:  # acted on before a restart
            self.skipped_done += 1
            return 0
        self._check(live)
        close = float(live.close)
        step = time_ms // self.base_ms
        if self.last_step_ms >= 0:
            self._venue_step(live, step)
        buy, sell = self._quote(close, float(live.half_spread))
        if self.risk.start_step(time_ms, float(acc.equity(close)[0])):
            self._event("rayscalp_paper_risk_limit_trips", {"limit": "max_daily_loss"})
            self._cancel_resting()
            if acc.qty[0] != 0:
                fills.clear()
                vn.close_positions(acc, np.array([True]), buy, sell, venue.fee, fills)
                self._gate_fills()
                self._take_fills(time_ms, step, "max_daily_loss", close)
        elif self.risk.leverage_drifted(acc, close):  # the price moved a held position past the limit
            self._event("rayscalp_paper_risk_limit_trips", {"limit": "max_leverage"})
            fills.clear()
            vn.close_positions(acc, np.array([True]), buy, sell, venue.fee, fills)
            self._gate_fills()
            self._take_fills(time_ms, step, "max_leverage", close)
        if self.gate is not None:
            self.gate.observe_step(close)
        self.last_step_ms = time_ms
        self.last_close = close
        self.last_half_spread = float(live.half_spread)
        self.synthetic = bool(live.synthetic)
        self.data_time_ms = max(self.data_time_ms, int(live.data_time_ms))
        self.steps += 1
        self._dirty = True
        if self.risk.state.kill_engaged:
            return 1
        # the newest data of the whole batch: records read late (after a restart) are stale, however fresh when built
        if cfg.max_step_lag_ms is not None and self.data_time_ms - time_ms > cfg.max_step_lag_ms:
            self.skipped_stale += 1
            return 1
        state = None
        if self.policy.needs_state:
            state = np.array(live.state, dtype=np.float32)
            state[self.layout["agent"].slice] = agent_features(acc, step, close, self.equity0)
        self.policy_calls += 1
        try:
            action = int(self.policy.act(state, time_ms)) if self.gate is None else self._gated(state, time_ms)
            if not 0 <= action < len(vn.ACTION_SETS[cfg.actions]):
                raise DataError(f"policy {self.policy.kind} answered action {action!r} ({cfg.actions} actions)")
        except Exception as exc:  # a policy service down or a bad answer: hold, count it, say why
            self.policy_errors += 1
            self.last_policy_error = f"{type(exc).__name__}: {exc}"
            return 1
        self.last_action = action
        current = np.sign(acc.qty).astype(np.int8)
        target = int(vn.target_direction(np.array([action]), current, venue.kind)[0])
        rest = vn.resting_orders(np.array([action]), current, venue.kind)
        post, post_target, cancel = int(rest.post[0]), int(rest.target[0]), bool(rest.cancel[0])
        if post:  # a post is reviewed like the market order it may become
            verdict = self.risk.review(acc, post_target, float(buy[0]), float(sell[0]), close, step, time_ms)
            if verdict.target != post_target:
                post = 0
        else:
            verdict = self.risk.review(acc, target, float(buy[0]), float(sell[0]), close, step, time_ms)
            target = int(verdict.target)
        if verdict.limit is not None:
            self.last_refusal = f"{time_ms}: {verdict.reason}"
            self._event("rayscalp_paper_risk_limit_trips", {"limit": verdict.limit})
        if target != int(current[0]) or post or cancel:
            self.pending = {
                "target": target,
                "post": post,
                "post_target": post_target,
                "cancel": int(cancel),
                "time_ms": time_ms,
            }
            if target != int(current[0]) or post:
                self.risk.record_order(time_ms)
        return 1

    def _gated(self, state: np.ndarray | None, time_ms: int) -> int:
        """The policy's answer through the sensitivity learner: the action sent, its decision record kept (and
        handed to the policy's :meth:`Policy.record`) with the level in force, its thresholds and the confidence."""
        gate = self.gate
        assert gate is not None
        decision = self.policy.decide(state, time_ms)
        q = decision.get("q_values")
        if q is None:
            raise DataError(
                f"policy {self.policy.kind} answers no Q-values: the sensitivity learner (sensitivity.enabled) "
                "needs them"
            )
        position = float(self.acc.qty[0])
        asked = int(decision["action_index"])
        sent = gate.filter(q, position)
        names = vn.ACTION_SETS["market"]
        decision.update(
            policy_action=names[asked].upper() if 0 <= asked < len(names) else str(asked),
            action=names[sent].upper(),
            action_index=sent,
            level=gate.level,
            thresholds=list(gate.thresholds),
            change_confidence=gate.confidence,
            position=position,
        )
        self.decisions.append(decision)
        self.policy.record(decision)
        return sent

    def _gate_fills(self, funding: float = 0.0, margin_lost: float = 0.0) -> None:
        """Show the sensitivity learner the fills in ``self._fills`` (row 0), the step's funding and margin lost."""
        if self.gate is not None:
            f = self._fills
            self.gate.observe_fill(f.qty[0].copy(), f.price[0].copy(), f.fee[0].copy(), funding, margin_lost)

    def _cancel_resting(self) -> None:
        """Cancel the resting limit order (a risk action: the kill switch, the daily loss limit)."""
        acc = self.acc
        acc.order_side[0], acc.order_price[0], acc.order_target[0] = 0, 0.0, 0

    def _quote(self, close: float, half_spread: float) -> tuple[np.ndarray, np.ndarray]:
        """Where a market buy and sell would fill now: ``close`` plus or minus the half-spread (or slippage)."""
        venue = self.config.venue
        return vn.round_to_ticks(*vn.fill_prices(np.array([close]), venue.slippage_bps, np.array([half_spread])), venue)

    def _venue_step(self, live: LiveState, step: int) -> None:
        """The one venue step from the last step acted on to ``live``: the pending order, the bar, funding."""
        acc, fills, venue = self.acc, self._fills, self.config.venue
        target = np.sign(acc.qty).astype(np.int8)
        orders = None
        if self.pending is not None:
            p = self.pending
            target = np.array([p["target"]], dtype=np.int8)
            if self.config.actions == "scalper":
                orders = vn.RestingOrders(
                    post=np.array([p.get("post", 0)], np.int8),
                    target=np.array([p.get("post_target", 0)], np.int8),
                    cancel=np.array([bool(p.get("cancel", 0))]),
                )
        elif self.config.actions == "scalper":
            orders = vn.RestingOrders(np.zeros(1, np.int8), np.zeros(1, np.int8), np.zeros(1, bool))
        market = vn.StepMarket(
            close=np.array([self.last_close]),
            half_spread=np.array([self.last_half_spread]),
            next_open=np.array([live.open]),
            next_high=np.array([live.high]),
            next_low=np.array([live.low]),
            next_close=np.array([live.close]),
            time_ms=np.array([self.last_step_ms]),
            next_time_ms=np.array([live.step_time_ms]),
            funding_rate=venue.funding_rate_8h,
            next_volume=np.array([live.volume]),
        )
        decided = self.last_step_ms
        fills.clear()
        refusals = int(acc.refusals[0])
        funding, lost = float(acc.funding[0]), float(acc.margin_lost[0])
        outcome = vn.step(acc, target, market, venue, fills, decided // self.base_ms, orders)
        self._gate_fills(float(acc.funding[0]) - funding, float(acc.margin_lost[0]) - lost)
        if int(acc.refusals[0]) > refusals:
            self.last_refusal = f"{decided}: the exchange filters refused the order (below min notional or lot step)"
            self._event("rayscalp_paper_risk_limit_trips", {"limit": "exchange_filters"})
        forced = fills.qty[0, vn.FORCED_LEG]
        fills.qty[0, vn.FORCED_LEG] = 0.0  # the order's legs first, then the liquidation's
        arrived = decided + venue.latency
        self._take_fills(arrived, arrived // self.base_ms, "policy", float(live.close))
        if outcome.liquidated[0]:
            fills.qty[0, :] = 0.0
            fills.qty[0, vn.FORCED_LEG] = forced
            self._take_fills(int(live.step_time_ms), step, "liquidation", float(live.close))
        self.pending = None

    def _take_fills(self, time_ms: int, step: int, reason: str, mark: float) -> None:
        """Record the legs in ``self._fills`` (row 0) as fills of ``reason``."""
        f = self._fills
        legs = np.flatnonzero(f.qty[0] != 0.0)
        if legs.size == 0:
            return
        rows = np.zeros(legs.size, dtype=FILL_DTYPE)
        rows["time_ms"] = time_ms
        rows["step"] = step
        rows["leg"] = legs
        rows["side"] = np.sign(f.qty[0, legs])
        rows["price"] = f.price[0, legs]
        rows["qty"] = np.abs(f.qty[0, legs])
        rows["fee"] = f.fee[0, legs]
        rows["reason"] = REASONS.index(reason)
        rows["position_after"] = self.acc.qty[0]
        rows["equity_after"] = self.acc.equity(mark)[0]
        self._unsaved.append(rows)
        for row in rows:
            self._recent.append(row.copy())
        symbol = self.config.symbols.traded
        for side, fee in zip(rows["side"].tolist(), rows["fee"].tolist(), strict=True):
            self._event("rayscalp_paper_fills", {"symbol": symbol, "side": "buy" if side > 0 else "sell"}, 1.0)
            self._event("rayscalp_paper_fees", {"symbol": symbol}, fee)
        self._dirty = True

    def _event(self, name: str, tags: dict[str, str], value: float = 1.0) -> None:
        self._events.append((name, tags, float(value)))

    def drain_events(self) -> list[tuple[str, dict[str, str], float]]:
        """Counter increments since the last drain (fills, fees, risk trips), for the metrics."""
        with self._lock:
            out, self._events = self._events, []
            return out

    # -- kill switch ---------------------------------------------------------------------------------

    def kill(self, reason: str = "") -> dict[str, Any]:
        """Engage the kill switch: drop the pending and resting orders, close the position now at the last step's
        close (with the half-spread or slippage, and fees), and take no policy order until :meth:`release`.
        Persisted; returns the status."""
        with self._lock:
            self.pending = None
            self._cancel_resting()
            at = self.last_step_ms if self.last_step_ms >= 0 else int(self._clock())
            if self.risk.engage(reason, at):
                self._event("rayscalp_paper_risk_limit_trips", {"limit": "kill_switch"})
            if self.acc.qty[0] != 0 and self.last_step_ms >= 0:
                venue = self.config.venue
                buy, sell = self._quote(self.last_close, self.last_half_spread)
                self._fills.clear()
                vn.close_positions(self.acc, np.array([True]), buy, sell, venue.fee, self._fills)
                self._gate_fills()
                self._take_fills(self.last_step_ms, self.last_step_ms // self.base_ms, "kill_switch", self.last_close)
            self._dirty = True
            self.save()
            return self.status()

    def release(self) -> dict[str, Any]:
        """Release the kill switch: the policy is asked again from the next step. Persisted; returns the status."""
        with self._lock:
            self.risk.release()
            self._dirty = True
            self.save()
            return self.status()

    # -- views ---------------------------------------------------------------------------------------

    def agent_features(self) -> dict[str, Any]:
        """The account's agent features at its last step (``features`` [A] float32, ``step_time_ms``; -1 before any)."""
        with self._lock:
            if self.last_step_ms < 0:
                return {"features": np.zeros(len(AGENT_FEATURES), np.float32), "step_time_ms": -1}
            step = self.last_step_ms // self.base_ms
            return {
                "features": agent_features(self.acc, step, self.last_close, self.equity0),
                "step_time_ms": self.last_step_ms,
            }

    def pnl(self) -> dict[str, float]:
        """Net profit and loss in quote units at the last close: total, realized and unrealized."""
        acc = self.acc
        if self.last_step_ms < 0:
            return {"total": 0.0, "realized": 0.0, "unrealized": 0.0}
        equity = float(acc.equity(self.last_close)[0])
        unrealized = float(acc.qty[0] * (self.last_close - acc.entry_price[0])) if acc.qty[0] != 0 else 0.0
        total = equity - self.equity0
        return {"total": total, "realized": total - unrealized, "unrealized": unrealized}

    def fills(self) -> np.ndarray:
        """Every fill of this account (persisted and pending), oldest first, FILL_DTYPE."""
        with self._lock:
            parts = [*self._read_fill_files(), *self._unsaved]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=FILL_DTYPE)

    def status(self) -> dict[str, Any]:
        """Everything paper trading does, JSON-ready, for the dashboard."""
        with self._lock:
            acc, cfg, st = self.acc, self.config, self.risk.state
            price = self.last_close
            known = self.last_step_ms >= 0
            equity = float(acc.equity(price)[0]) if known else self.equity0
            recent = list(self._recent)[-cfg.recent_fills :] if cfg.recent_fills else []
            return {
                "symbol": cfg.symbols.traded,
                "venue": cfg.venue.kind,
                "fill_model": cfg.venue.describe(),
                "synthetic": self.synthetic,
                "running": not st.kill_engaged,
                "kill_switch": {"engaged": st.kill_engaged, "reason": st.kill_reason, "at_ms": st.kill_at_ms},
                "position": float(acc.qty[0]),
                "entry_price": float(acc.entry_price[0]),
                "cash": float(acc.cash[0]),
                "equity": equity,
                "initial_equity": self.equity0,
                "leverage": float(acc.leverage(price)[0]) if known else 0.0,
                "pnl": self.pnl(),
                "fees": float(acc.fees[0]),
                "funding": float(acc.funding[0]),
                "orders": int(acc.trades[0]),
                "pending_order": dict(self.pending) if self.pending else None,
                "resting_order": None
                if acc.order_side[0] == 0
                else {"side": int(acc.order_side[0]), "price": float(acc.order_price[0])},
                "refusals": int(acc.refusals[0]),
                "margin_lost": float(acc.margin_lost[0]),
                "fills": self.fills_written + sum(int(a.size) for a in self._unsaved),
                "recent_fills": [_fill_dict(r) for r in recent],
                "last_price": price if known else None,
                "last_step_ms": self.last_step_ms,
                "steps": self.steps,
                "skipped_stale": self.skipped_stale,
                "skipped_done": self.skipped_done,
                "data_time_ms": self.data_time_ms,
                "live_state": {
                    "seq": self.live_seq,
                    "missed": self.missed_states,
                    "half_spread": self.last_half_spread,
                },
                "policy": {
                    "kind": self.policy.kind,
                    "version": self.policy.version if self.policy_calls else None,
                    "calls": self.policy_calls,
                    "errors": self.policy_errors,
                    "last_error": self.last_policy_error,
                    "last_action": None if self.last_action is None else vn.ACTION_SETS[cfg.actions][self.last_action],
                },
                "risk": {
                    "limits": cfg.risk.model_dump(),
                    "trips": dict(st.trips),
                    "orders_last_minute": self.risk.orders_last_minute(),
                    "day_start_equity": st.day_start_equity if st.day >= 0 else None,
                    "daily_loss": self.risk.daily_loss(equity) if st.day >= 0 else 0.0,
                    "daily_locked": st.daily_locked,
                    "last_refusal": self.last_refusal,
                },
                "sensitivity": self._sensitivity_status(),
                "cursor": dict(self.cursor),
            }

    def _sensitivity_status(self) -> dict[str, Any]:
        """The sensitivity learner: off, or its levels, the level in force, what it did and the last decision."""
        if self.gate is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "online": self.gate.training,
            **self.gate.summary(),
            "last_decision": dict(self.decisions[-1]) if self.decisions else None,
        }

    # -- persistence ---------------------------------------------------------------------------------

    def _fill_files(self) -> list[Path]:
        return sorted((self.root / _FILLS_DIR).glob("part-*.parquet"))

    def _read_fill_files(self) -> list[np.ndarray]:
        return [read_parquet(p, FILL_DTYPE) for p in self._fill_files()]

    def _drop_unsaved_fill_files(self, account: Path) -> None:
        """Remove fills files written by a save that stopped before its ``account.json`` (never part of it)."""
        total = 0
        for path in self._fill_files():
            if total == self.fills_written:
                path.unlink()
                continue
            total += int(read_parquet(path, FILL_DTYPE).size)
        if total != self.fills_written:
            raise DataError(
                f"{account}: fills_written is {self.fills_written} but {self.root / _FILLS_DIR} holds {total} fills"
            )

    def save(self) -> None:
        """Write new fills, then the account (``account.json``, atomically)."""
        with self._lock:
            if self._unsaved:
                rows = np.concatenate(self._unsaved)
                files = self._fill_files()
                number = int(files[-1].stem.split("-")[1]) + 1 if files else 0
                write_parquet(rows, self.root / _FILLS_DIR / f"part-{number:08d}.parquet", metadata={"kind": "fills"})
                self.fills_written += int(rows.size)
                self._unsaved = []
            if self.gate is not None:
                save_gate(self.gate, self.root / _GATE_FILE)
            acc = self.acc
            write_json(
                self.root / _ACCOUNT_FILE,
                {
                    "format": _FORMAT,
                    "symbol": self.config.symbols.traded,
                    "venue": self.config.venue.kind,
                    "initial_equity": self.equity0,
                    "account": {name: kind(getattr(acc, name)[0]) for name, kind, _ in _ACCOUNT_FIELDS},
                    "risk": self.risk.state.to_dict(),
                    "last_step_ms": self.last_step_ms,
                    "last_close": self.last_close,
                    "last_half_spread": self.last_half_spread,
                    "pending": self.pending,
                    "data_time_ms": self.data_time_ms,
                    "steps": self.steps,
                    "skipped_stale": self.skipped_stale,
                    "policy_calls": self.policy_calls,
                    "policy_errors": self.policy_errors,
                    "fills_written": self.fills_written,
                    "cursor": self.cursor,
                    "saved_ms": int(self._clock()),
                },
            )
            self._dirty = False

    def _restore(self) -> None:
        path = self.root / _ACCOUNT_FILE
        if not path.exists():
            return
        try:
            raw = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable paper account ({exc})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: a paper account must be a JSON object, got {type(raw).__name__}")
        cfg = self.config
        for key, ours in (("symbol", cfg.symbols.traded), ("venue", cfg.venue.kind), ("initial_equity", self.equity0)):
            if raw.get(key) != ours:
                raise ConfigError(
                    f"{path}: {key} is {raw.get(key)!r} but paper trading is configured with {ours!r}; "
                    "use another storage_dir for another account"
                )
        try:
            a = raw["account"]
            for name, kind, default in _ACCOUNT_FIELDS:
                getattr(self.acc, name)[0] = kind(a[name] if default is None else a.get(name, default))
            self.last_step_ms = int(raw["last_step_ms"])
            self.last_close = _float(raw["last_close"])
            self.last_half_spread = _float(raw.get("last_half_spread"))
            pending = raw.get("pending")
            if pending is not None:
                self.pending = {str(k): int(v) for k, v in dict(pending).items()}
            self.data_time_ms = int(raw.get("data_time_ms", -1))
            self.steps = int(raw["steps"])
            self.skipped_stale = int(raw["skipped_stale"])
            self.policy_calls = int(raw["policy_calls"])
            self.policy_errors = int(raw["policy_errors"])
            self.fills_written = int(raw["fills_written"])
            self.cursor = dict(raw["cursor"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: paper account is missing or has a bad {exc!s} entry") from None
        self.risk.state = RiskState.from_dict(raw["risk"], str(path))
        self._drop_unsaved_fill_files(path)
        for part in self._read_fill_files():
            for row in part[-self._recent.maxlen :]:
                self._recent.append(row.copy())


def _base_ms(state: StateConfig) -> int:
    from market.timeframes import TIMEFRAME_MS

    return TIMEFRAME_MS[str(state.base_timeframe)]


def _fill_dict(row: np.ndarray) -> dict[str, Any]:
    return {
        "time_ms": int(row["time_ms"]),
        "leg": vn.LEGS[int(row["leg"])],
        "side": "buy" if row["side"] > 0 else "sell",
        "price": float(row["price"]),
        "qty": float(row["qty"]),
        "fee": float(row["fee"]),
        "reason": REASONS[int(row["reason"])],
        "position_after": float(row["position_after"]),
    }


# ---------------------------------------------------------------------------------------------------
# The Ray shell
# ---------------------------------------------------------------------------------------------------


def _record_metrics(trader: PaperTrader, events: list[tuple[str, dict[str, str], float]]) -> None:
    from .metrics import record

    status = trader.status()
    record("rayscalp_paper_position", status["position"], {"symbol": status["symbol"]})
    record("rayscalp_paper_equity", status["equity"])
    for kind in ("realized", "unrealized"):
        record("rayscalp_paper_pnl", status["pnl"][kind], {"kind": kind})
    record("rayscalp_paper_kill_switch", 1.0 if status["kill_switch"]["engaged"] else 0.0)
    for name, tags, value in events:
        if value > 0:
            record(name, value, tags)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class PaperTradingActor:
    """Paper trading as a Ray actor (start it with ``.options(name=PAPER_ACTOR)``): one :class:`PaperTrader`
    restored from ``storage_dir`` on every (re)start, reading the live-state actor's records
    (``states_since``; its position and the live-state service's epoch are persisted with the account),
    exporting the ``rayscalp_paper_*`` metrics.

    ``kill(reason)`` is the kill switch (also behind ``rayscalp paper-kill`` and the dashboard's HTTP route):
    the position is closed at once and no order is taken until ``release()``.
    """

    def __init__(self, config: PaperConfig | Mapping[str, object], policy: Policy) -> None:
        cfg = config if isinstance(config, PaperConfig) else PaperConfig.model_validate(config)
        self._config = cfg
        self._trader = PaperTrader(cfg, policy)
        self._task: asyncio.Task | None = None
        self._polls = 0
        self._last_error = ""
        self._started_ms = wall_ms()

    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        cfg, trader = self._config, self._trader
        period = cfg.poll_interval_ms / 1000
        while True:
            try:
                live = ray.get_actor(cfg.live_state_actor)
                epoch = trader.cursor.get("live_epoch_ms")
                reply = await live.states_since.remote(int(trader.cursor.get("since_seq", 0)))
                if epoch is not None and reply.epoch_ms != epoch:  # the live-state service restarted: from its start
                    reply = await live.states_since.remote(0)
                self._polls += 1
                cursor = {"since_seq": reply.seq, "live_epoch_ms": reply.epoch_ms}
                await asyncio.to_thread(trader.on_states, reply.states, complete=reply.complete, cursor=cursor)
                _record_metrics(trader, trader.drain_events())
                self._last_error = ""
            except Exception as exc:  # the live-state actor restarting or not up yet: keep trying, say why
                self._last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(period)

    async def ready(self) -> dict[str, Any]:
        """Start polling (once); return the status."""
        self._ensure_loop()
        return await self.status()

    async def status(self) -> dict[str, Any]:
        """:meth:`PaperTrader.status`, the actor's polls and last error, and its process and start time (both move
        on a restart)."""
        self._ensure_loop()
        actor = {
            "polls": self._polls,
            "last_error": self._last_error,
            "pid": os.getpid(),
            "started_ms": self._started_ms,
        }
        return {**self._trader.status(), **actor}

    async def kill(self, reason: str = "") -> dict[str, Any]:
        """The kill switch: close the position now and stop taking orders; returns the status."""
        status = await asyncio.to_thread(self._trader.kill, reason)
        _record_metrics(self._trader, self._trader.drain_events())
        return status

    async def release(self) -> dict[str, Any]:
        """Release the kill switch; returns the status."""
        status = await asyncio.to_thread(self._trader.release)
        _record_metrics(self._trader, self._trader.drain_events())
        return status

    async def agent_features(self) -> dict[str, Any]:
        """The account's agent features at its last step (for the live state)."""
        return self._trader.agent_features()


def start_paper(config: PaperConfig, policy: Policy, *, name: str = PAPER_ACTOR) -> Any:
    """Start (or join) the named paper trading actor on the running Ray, detached, and wait until it answers.

    Returns
    -------
    ray.actor.ActorHandle
    """
    actor = PaperTradingActor.options(name=name, lifetime="detached", get_if_exists=True).remote(config, policy)
    ray.get(actor.ready.remote(), timeout=60)
    return actor


def kill_paper(reason: str, *, name: str = PAPER_ACTOR, timeout_s: float = 30.0) -> dict[str, Any]:
    """Engage the kill switch of the named paper trading actor on the running Ray; return its status.

    Raises
    ------
    ConfigError
        No paper trading actor of that name is running.
    """
    try:
        actor = ray.get_actor(name)
    except ValueError:
        raise ConfigError(f"no paper trading actor named {name!r} is running") from None
    return ray.get(actor.kill.remote(reason), timeout=timeout_s)
