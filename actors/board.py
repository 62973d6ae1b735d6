"""What the dashboard shows of the policy at work: its decisions, the paper account's curve, the replay clock, the run.

``Board`` is the plain class (tested without Ray): decisions (action, Q-values, confidence per live step, named in
the policy's action set) sent by :class:`RecordingPolicy`, the paper account's equity per step beside buy-and-hold
from the same start, its fills, the replay exchange's clock and loop count, and the training run's summary.
``BoardActor`` ("rayscalp-board") is the thin Ray shell that polls the paper account. Never invents a figure:
what it was not told, it says it lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import ray

from market.venue import ACTION_NAMES

from .paper import CheckpointPolicy

__all__ = ["BOARD_ACTOR", "Board", "BoardActor", "RecordingPolicy"]

#: The name the board actor is registered under.
BOARD_ACTOR = "rayscalp-board"
#: Wall seconds without a new trade after which the replay feed counts as stopped.
FEED_STOPPED_S = 10.0


def wall_ms() -> int:
    """Wall-clock time in integer ms since the epoch (UTC)."""
    return time.time_ns() // 1_000_000


class Board:
    """The decisions, the paper curve and the replay clock, bounded.

    Parameters
    ----------
    max_decisions : int
        Decisions kept (the newest).
    max_points : int
        Equity points kept (the newest).
    """

    def __init__(self, max_decisions: int = 300, max_points: int = 5_000) -> None:
        self.decisions: deque[dict[str, Any]] = deque(maxlen=max_decisions)
        self.equity: deque[list[float]] = deque(maxlen=max_points)
        self.fills: deque[dict[str, Any]] = deque(maxlen=max_points)
        self._fill_keys: set[tuple[Any, ...]] = set()
        self.start: dict[str, float] | None = None
        self.last_step_ms = -1
        self.paper: dict[str, Any] = {}
        self.replay: dict[str, Any] = {}
        self.run: dict[str, Any] = {}
        self.notes: dict[str, Any] = {}
        self.actions: dict[str, int] = {}
        self.action_names: list[str] = []  # the policy's action set, by index (from its decisions)
        self._feed = (-1, 0)  # (newest data time, wall ms it was first seen)

    def add_decision(self, decision: Mapping[str, Any]) -> None:
        """One decision: ``step_time_ms``, ``action``, ``q_values``, ``confidence`` (and ``close`` when known).

        ``actions`` (the action names by index, the order of ``q_values``), when given, names the table's columns.
        """
        d = dict(decision)
        names = d.pop("actions", None)
        if names is not None:
            self.action_names = [str(n) for n in names]
        self.decisions.append(d)
        self.actions[str(d["action"])] = self.actions.get(str(d["action"]), 0) + 1

    def observe_paper(self, status: Mapping[str, Any]) -> None:
        """The paper account's ``status()``: a new equity point once its last step moved on, and its new fills."""
        self.paper = dict(status)
        step = int(status.get("last_step_ms", -1))
        close = status.get("last_price")
        if step > self.last_step_ms and close is not None and math.isfinite(float(close)):
            equity = float(status["equity"])
            if self.start is None:
                # buy-and-hold from the same start: all in at the first step's close, one taker fee in
                fee = float(status.get("taker_fee", 0.0))
                self.start = {"time_ms": step, "close": float(close), "equity": float(status["initial_equity"])}
                self.start["qty"] = self.start["equity"] * (1 - fee) / float(close)
            hold = self.start["qty"] * float(close)
            self.equity.append([step, equity, hold, float(close)])
            self.last_step_ms = step
        for fill in status.get("recent_fills", []):
            key = (fill["time_ms"], fill["leg"], fill["side"], fill["price"], fill["qty"])
            if key not in self._fill_keys:
                self._fill_keys.add(key)
                self.fills.append(dict(fill))

    def set_replay(self, replay: Mapping[str, Any]) -> None:
        """The replay exchange's clock (``clock_ms``), loop (``loop``, ``loops``) and what it replays (``source``)."""
        self.replay = {**dict(replay), "updated_ms": wall_ms()}

    def set_run(self, run: Mapping[str, Any]) -> None:
        """The training run to show (curves, evaluation table, out-of-sample equity) and where it came from."""
        self.run = dict(run)

    def set_notes(self, notes: Mapping[str, Any]) -> None:
        """What the page must say about the live path: the layout, warm windows, the period against training."""
        self.notes = {**self.notes, **dict(notes)}

    def why_no_trade(self) -> str:
        """Why the paper account has no fill yet ("" once it has one)."""
        if int(self.paper.get("fills", 0) or 0) > 0 or self.fills:
            return ""
        n = len(self.decisions)
        if not n:
            return "no decision yet: waiting for the first closed live step"
        if self.paper.get("kill_switch", {}).get("engaged"):
            return "the kill switch is engaged"
        conf = [float(d["confidence"]) for d in self.decisions if d.get("confidence") is not None]
        spread = f"; confidence {min(conf):.4g}..{max(conf):.4g} (Q gap)" if conf else ""
        counts = ", ".join(f"{a} {c}" for a, c in sorted(self.actions.items()))
        if set(self.actions) <= {"HOLD"}:
            return f"HOLD on every step so far ({counts}){hold_margins(self.decisions, self.action_names)}{spread}"
        flat = not float(self.paper.get("position", 0.0) or 0.0)
        if flat and self.paper.get("venue") == "spot" and set(self.actions) <= {"HOLD", "SELL"}:
            return f"SELL or HOLD on every step while flat on spot (long or flat: nothing to sell; {counts}){spread}"
        pending = self.paper.get("pending_order")
        if pending:
            return f"an order is pending ({counts}): it fills at the next step's price after the latency"
        return f"no order changed the position yet ({counts}){spread}"

    def snapshot(self, data_time_ms: int | None = None, now_ms: int | None = None) -> dict[str, Any]:
        """Everything the page draws from the board, JSON-ready.

        Parameters
        ----------
        data_time_ms : int, optional
            The newest trade the stream holds (the lag is the replay clock minus it, in replay time).
        now_ms : int, optional
            Wall time (default now).
        """
        now = wall_ms() if now_ms is None else int(now_ms)
        feed = dict(self.replay)
        if data_time_ms is not None and data_time_ms > self._feed[0]:
            self._feed = (int(data_time_ms), now)
        clock = feed.get("clock_ms")
        if clock is not None and data_time_ms is not None:
            feed["lag_ms"] = max(int(clock) - int(data_time_ms), 0)
        feed["data_time_ms"] = data_time_ms
        feed["data_still_s"] = (now - self._feed[1]) / 1000 if self._feed[0] >= 0 else None
        feed["stopped"] = self._feed[0] < 0 or (now - self._feed[1]) / 1000 > FEED_STOPPED_S
        pnl = self.paper.get("pnl", {}) if isinstance(self.paper.get("pnl"), Mapping) else {}
        risk = self.paper.get("risk", {})
        return {
            "decisions": list(self.decisions)[-50:][::-1],
            "decision_count": sum(self.actions.values()),
            "actions": dict(self.actions),
            "action_names": list(self.action_names),
            "equity": list(self.equity),
            "start": self.start,
            "fills": list(self.fills)[-200:],
            "why_no_trade": self.why_no_trade(),
            "account": {
                "equity": self.paper.get("equity"),
                "initial_equity": self.paper.get("initial_equity"),
                "realized": pnl.get("realized"),
                "unrealized": pnl.get("unrealized"),
                "total": pnl.get("total"),
                "fees": self.paper.get("fees"),
                "position": self.paper.get("position"),
                "fills": self.paper.get("fills"),
                "fill_model": self.paper.get("fill_model"),
            },
            "risk": risk_use(risk, self.paper),
            "replay": feed,
            "run": self.run,
            "notes": self.notes,
        }


def hold_margins(decisions: Iterable[Mapping[str, Any]], names: Sequence[str] = ()) -> str:
    """How far every other action's Q-value stayed below HOLD's over ``decisions`` (the closest each came), or "".

    The policy is greedy: an order needs its action's Q-value above HOLD's, so the closest approach says how far
    the policy was from trading. Decisions carry ``q_values`` in the order of ``names`` (the policy's action set;
    empty: the ``market`` set, BUY, SELL, HOLD).
    """
    names = list(names) or [n.upper() for n in ACTION_NAMES]
    q = np.array([d["q_values"] for d in decisions if len(d.get("q_values", ())) == len(names)], dtype=np.float64)
    if not q.size:
        return ""
    hold = names.index("HOLD")
    closest = (q[:, hold : hold + 1] - q).min(axis=0)  # > 0: HOLD led
    (first, gap), *rest = [(n, closest[i]) for i, n in enumerate(names) if i != hold]
    tail = "".join(f", Q({n}) by {c:.4g}" for n, c in rest)
    return f": Q({first}) stayed below Q(HOLD) by {gap:.4g} at the closest{tail} over the last {q.shape[0]} decisions"


def risk_use(risk: Mapping[str, Any], paper: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every configured risk limit with its current use, as rows ``{"limit", "value", "use"}``."""
    limits = dict(risk.get("limits", {}) or {})
    equity = paper.get("equity")
    price = paper.get("last_price")
    position = paper.get("position") or 0.0
    use: dict[str, Any] = {
        "max_daily_loss": risk.get("daily_loss"),
        "max_orders_per_minute": risk.get("orders_last_minute"),
        "max_leverage": paper.get("leverage"),
        "max_position": abs(float(position)),
    }
    if price is not None and equity:
        use["max_notional"] = abs(float(position)) * float(price)
        use["max_position_fraction"] = abs(float(position)) * float(price) / float(equity)
    rows = []
    for name, value in limits.items():
        rows.append({"limit": name, "value": value, "use": use.get(name, use.get(name.replace("_pct", "")))})
    trips = risk.get("trips", {}) or {}
    for row in rows:
        row["trips"] = int(trips.get(row["limit"], 0))
    return rows


class RecordingPolicy(CheckpointPolicy):
    """A policy checkpoint, greedy, that sends each decision (action, Q-values, confidence) to the board actor.

    ``actors.paper.CheckpointPolicy`` (the same loading and layout check) that also tells the board. The board is
    told without waiting for it (a board that is down loses the record, never the decision).

    Parameters
    ----------
    path : str
        A checkpoint written by ``policies.checkpoint.save_policy``.
    board_actor : str
    device : str
    """

    def __init__(self, path: str, board_actor: str = BOARD_ACTOR, device: str = "cpu") -> None:
        super().__init__(path, device)
        self.board_actor = board_actor
        self.board: Any = None

    def record(self, decision: dict[str, Any]) -> None:
        """Send the final decision (with the sensitivity level when the learner is on) to the board."""
        with contextlib.suppress(Exception):  # no board: the decision stands, unrecorded
            if self.board is None:
                self.board = ray.get_actor(self.board_actor)
            self.board.add_decision.remote(decision)


@ray.remote(num_cpus=0, max_restarts=-1)
class BoardActor:
    """The board as a Ray actor: polls the paper account (``paper_actor``) every ``poll_s`` for its curve and fills."""

    def __init__(self, paper_actor: str = "rayscalp-paper", poll_s: float = 1.0, taker_fee: float = 0.0) -> None:
        self._board = Board()
        self._paper_actor = paper_actor
        self._poll_s = float(poll_s)
        self._taker_fee = float(taker_fee)
        self._task: asyncio.Task | None = None
        self._last_error = ""

    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                status = await ray.get_actor(self._paper_actor).status.remote()
                self._board.observe_paper({**status, "taker_fee": self._taker_fee})
                self._last_error = ""
            except Exception as exc:  # no paper account yet: keep trying, say why
                self._last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self._poll_s)

    async def add_decision(self, decision: dict[str, Any]) -> None:
        self._ensure_loop()
        self._board.add_decision(decision)

    async def set_replay(self, replay: dict[str, Any]) -> None:
        self._ensure_loop()
        self._board.set_replay(replay)

    async def set_run(self, run: dict[str, Any]) -> None:
        self._ensure_loop()
        self._board.set_run(run)

    async def set_notes(self, notes: dict[str, Any]) -> None:
        self._ensure_loop()
        self._board.set_notes(notes)

    async def snapshot(self, data_time_ms: int | None = None) -> dict[str, Any]:
        """:meth:`Board.snapshot`, and the last error of the paper poll."""
        self._ensure_loop()
        return {**self._board.snapshot(data_time_ms), "last_error": self._last_error}
