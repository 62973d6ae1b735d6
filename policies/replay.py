"""Prioritized replay of compact transitions (``policies.transitions.Transitions``), on any torch device.

Owns the ring of compact transitions, proportional prioritisation over a float64 sum/min tree,
stratified sampling, importance weights, stale-update dropping and save/load. It never stores a whole
state (the learner rebuilds states from timeline steps) and never imports Ray.

One transition is one packed row of 32-bit words, so a sample gathers one row per item (one cache
miss, one torch call) instead of one per field. Words, at agent width ``A``:
``[0:2]`` timeline step of s (int64), ``[2:4]`` step of s' (int64), ``[4:4+A]`` agent features of s
(float32), ``[4+A:4+2A]`` of s', ``[4+2A]`` n-step return (float32), ``[5+2A]`` discount (float32),
``[6+2A]`` action (int32), ``[7+2A]`` slot generation (int32). Rows are 8-byte aligned for the int64
view, so an int8 action would be padded back to the same 32 + 8A bytes: the action takes a word.

Bytes per transition at 1M slots, A = 6, fanout 16: 76 B of transition + 4 B generation + ~13 B of
tree (an 8 B float64 leaf shared by the sum and min trees, ~1 B of inner levels, a 4 B int32 stamp
that resolves repeated slots in a batch) = ~93 B, against ~126 KB for two float32 states of 15,794
features. Agent features stay float32: they carry entry prices and unrealised PnL whose small
differences matter, and up to A = 13 the total still fits a 150 B budget, so float16 would buy
nothing worth its rounding.

On a CPU, run torch with one or few intra-op threads (``torch.set_num_threads``): the batched ops here
touch a few hundred items, and fanning them out to cores that other work is using costs
milliseconds a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from market.errors import ConfigError, DataError
from policies.sum_tree import SumMinTree

from .device import resolve_device
from .transitions import Transitions

if TYPE_CHECKING:
    from policies.config import ReplayConfig

ArrayLike = torch.Tensor | np.ndarray
_FORMAT = 1
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class BetaSchedule:
    """Linear anneal of the importance-sampling exponent from ``start`` to ``end`` over ``steps``."""

    start: float = 0.4
    end: float = 1.0
    steps: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"BetaSchedule.{name} must lie in [0, 1] (got {value})")
        if self.steps <= 0:
            raise ConfigError(f"BetaSchedule.steps must be positive (got {self.steps})")

    def at(self, step: int) -> float:
        """Beta after ``step`` learner steps (clamped to ``end`` past the anneal)."""
        frac = min(1.0, max(0, step) / self.steps)
        return self.start + (self.end - self.start) * frac


@dataclass(frozen=True, slots=True)
class ReplayBatch:
    """One sampled batch: ``B`` transitions (tensors on the replay's device) and what prioritisation needs.

    ``transitions`` holds the schema's fields (all but ``action`` are strided views into one gathered
    block). ``indices`` and ``generations`` go back, unchanged, to :meth:`PrioritizedReplay.update_priorities`.
    """

    transitions: Transitions
    indices: torch.Tensor  # int64 slots
    generations: torch.Tensor  # int32 slot generations at sampling time
    weights: torch.Tensor  # float32 importance weights, max 1
    beta: float


@dataclass(frozen=True, slots=True)
class ReplayMemory:
    """Bytes the replay holds on its device."""

    storage_bytes: int
    tree_bytes: int
    generation_bytes: int
    capacity: int

    @property
    def total_bytes(self) -> int:
        """Storage, trees and generations together."""
        return self.storage_bytes + self.tree_bytes + self.generation_bytes

    @property
    def bytes_per_transition(self) -> float:
        """Total bytes over capacity."""
        return self.total_bytes / self.capacity


class PrioritizedReplay:
    """Proportional prioritized ring buffer of compact transitions (Schaul et al., Ape-X).

    Parameters
    ----------
    capacity : int
        Slots in the ring; the oldest transition is overwritten first.
    agent_dim : int
        Width ``A`` of the agent features stored for s and for s'.
    device : str or torch.device
        Where storage and trees live (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``).
    alpha : float
        Priority exponent: a slot is drawn with probability ``p^alpha / sum p^alpha``.
    beta : BetaSchedule, optional
        Importance-sampling exponent schedule (0.4 -> 1.0 by default), stepped by :meth:`anneal_beta`.
    num_actions : int
        Actions are checked to lie in ``[0, num_actions)``.
    fanout : int
        Children per tree node (``policies/sum_tree.py`` says how it was chosen).
    seed : int
        Seeds the CPU generator of the stratified draws (the same draws on every device).
    priority_eps : float
        Added to ``|TD|`` by whoever computes a priority (:attr:`priority_eps`), so that none is zero.
    """

    def __init__(
        self,
        capacity: int,
        agent_dim: int,
        *,
        device: str | torch.device = "cpu",
        alpha: float = 0.6,
        beta: BetaSchedule | None = None,
        num_actions: int = 3,
        fanout: int = 16,
        seed: int = 0,
        priority_eps: float = 1e-6,
    ) -> None:
        if capacity <= 0:
            raise ConfigError(f"replay capacity must be positive (got {capacity})")
        if agent_dim <= 0:
            raise ConfigError(f"replay agent_dim must be positive (got {agent_dim})")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"replay alpha must lie in [0, 1] (got {alpha})")
        if not 0 < num_actions <= 2**31 - 1:
            raise ConfigError(f"replay num_actions must be positive (got {num_actions})")
        if not 0.0 < priority_eps < _INF:
            raise ConfigError(f"replay priority_eps must be finite and > 0 (got {priority_eps})")
        self.priority_eps = float(priority_eps)
        self.capacity = capacity
        self.agent_dim = agent_dim
        self.device = resolve_device(device)
        self.alpha = alpha
        self.beta_schedule = beta or BetaSchedule()
        self.num_actions = num_actions
        self.fanout = fanout
        A = agent_dim
        self._cols = _Columns(A)
        self._rows = torch.zeros(capacity, self._cols.width, dtype=torch.int32, device=self.device)
        self._generation = self._rows[:, self._cols.generation]  # a strided view of the rows
        self._tree = SumMinTree(capacity, fanout, self.device)
        f64 = {"dtype": torch.float64, "device": self.device}
        self._max_priority = torch.ones((), **f64)  # running max of p^alpha, the default for adds
        self._fresh_updates = torch.zeros((), dtype=torch.int64, device=self.device)
        # Draws come from a CPU generator so a seed gives the same draws on every device and its
        # state saves and loads across devices.
        self._rng = torch.Generator(device="cpu")
        self._rng.manual_seed(seed)
        self._offsets: dict[int, torch.Tensor] = {}
        # (values, fresh) of recent updates, folded into the running max and the fresh count in bulk.
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._ptr = 0
        self._size = 0
        self._added = 0
        self._updates = 0
        self._beta_step = 0

    @classmethod
    def from_config(
        cls,
        config: ReplayConfig,
        agent_dim: int,
        *,
        beta_steps: int,
        device: str | torch.device = "cpu",
        num_actions: int = 3,
        seed: int = 0,
    ) -> PrioritizedReplay:
        """Build from the experiment's :class:`policies.config.ReplayConfig`; ``beta_steps`` is the
        number of learner steps over which beta anneals from ``beta_start`` to ``beta_end``."""
        beta = BetaSchedule(config.beta_start, config.beta_end, beta_steps)
        return cls(
            config.capacity,
            agent_dim,
            device=device,
            alpha=config.alpha,
            beta=beta,
            num_actions=num_actions,
            seed=seed,
            priority_eps=config.priority_eps,
        )

    # ------------------------------------------------------------------ counters
    def __len__(self) -> int:
        return self._size

    @property
    def size(self) -> int:
        """Transitions held (at most ``capacity``)."""
        return self._size

    @property
    def added(self) -> int:
        """Transitions ever added, overwritten ones included."""
        return self._added

    @property
    def dropped_updates(self) -> int:
        """Priority updates dropped because their slot was overwritten after sampling (host sync)."""
        self._fold_pending()
        return self._updates - int(self._fresh_updates.item())

    @property
    def max_priority(self) -> float:
        """Running max of ``priority^alpha``, given to transitions added without one (host sync)."""
        self._fold_pending()
        return float(self._max_priority.item())

    @property
    def beta(self) -> float:
        """The current importance-sampling exponent."""
        return self.beta_schedule.at(self._beta_step)

    @property
    def tree(self) -> SumMinTree:
        """The priority tree; its leaves hold ``priority^alpha``."""
        return self._tree

    @property
    def generations(self) -> torch.Tensor:
        """int32 ``[capacity]`` slot generations (a read-only view; +1 on every write of a slot)."""
        return self._generation

    def anneal_beta(self, step: int | None = None) -> float:
        """Advance the beta schedule by one step, or set it to learner step ``step``; return beta."""
        self._beta_step = self._beta_step + 1 if step is None else step
        return self.beta

    # ------------------------------------------------------------------ adding
    def add(self, transitions: Transitions, priorities: ArrayLike | None = None) -> torch.Tensor:
        """Append ``M`` transitions, overwriting the oldest slots when full.

        Parameters
        ----------
        transitions : Transitions
            ``M`` transitions (numpy arrays or tensors on any device): ``next_step >= step >= 0``, finite
            agent features and returns, actions in ``[0, num_actions)``, discounts in ``[0, 1]``.
        priorities : array-like of float, optional
            ``[M]`` initial priorities ``|td| + priority_eps`` (> 0), raised to alpha here. Absent: the
            running max priority.

        Returns
        -------
        torch.Tensor
            int64 ``[M]`` slots written, on the replay's device (only the newest ``capacity`` when
            ``M > capacity``).

        Raises
        ------
        DataError
            Not a ``Transitions``, a shape does not match, or a value is non-finite or out of range (named in
            the message).
        """
        if not isinstance(transitions, Transitions):
            raise DataError(f"replay.add: expected Transitions, got {type(transitions).__name__}")
        A = self.agent_dim
        st = self._tensor(transitions.step, torch.int64, "step")
        M = st.shape[0] if st.dim() else -1
        fields = {
            "step": (st, (M,)),
            "next_step": (self._tensor(transitions.next_step, torch.int64, "next_step"), (M,)),
            "agent": (self._tensor(transitions.agent, torch.float32, "agent"), (M, A)),
            "next_agent": (self._tensor(transitions.next_agent, torch.float32, "next_agent"), (M, A)),
            "action": (self._tensor(transitions.action, torch.int64, "action"), (M,)),
            "n_return": (self._tensor(transitions.n_return, torch.float32, "n_return"), (M,)),
            "discount": (self._tensor(transitions.discount, torch.float32, "discount"), (M,)),
        }
        if priorities is not None:
            fields["priorities"] = (self._tensor(priorities, torch.float64, "priorities"), (M,))
        for name, (t, shape) in fields.items():
            if tuple(t.shape) != shape:
                raise DataError(f"replay.add: {name} has shape {tuple(t.shape)}, expected {shape} (M, A={A})")
        if M == 0:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        st, nst, ag, nag, act, ret, disc = (fields[k][0] for k in list(fields)[:7])
        pri = fields["priorities"][0] if "priorities" in fields else None
        checks = {
            "step >= 0": (st >= 0).all(),
            "next_step >= step": (nst >= st).all(),
            "agent finite": torch.isfinite(ag).all(),
            "next_agent finite": torch.isfinite(nag).all(),
            f"0 <= action < {self.num_actions}": ((act >= 0) & (act < self.num_actions)).all(),
            "n_return finite": torch.isfinite(ret).all(),
            "0 <= discount <= 1": ((disc >= 0) & (disc <= 1)).all(),
        }
        if pri is not None:
            checks["priorities finite and > 0"] = ((pri > 0) & (pri < _INF)).all()
        _raise_failed("replay.add", checks)
        values = None
        if pri is not None:  # every given priority counts toward the running max, kept or not
            values = pri.pow(self.alpha)
            torch.maximum(self._max_priority, values.max(), out=self._max_priority)
        if self.capacity < M:  # only the newest ``capacity`` rows survive a ring this small
            skip = M - self.capacity
            st, nst, ag, nag, act, ret, disc = (t[skip:] for t in (st, nst, ag, nag, act, ret, disc))
            values = None if values is None else values[skip:]
            # The skipped rows still overwrite their slots once each: count those generations.
            self._generation += skip // self.capacity
            passed = (self._ptr + torch.arange(skip % self.capacity, device=self.device)) % self.capacity
            self._generation.index_add_(0, passed, torch.ones_like(passed, dtype=torch.int32))
            self._ptr = (self._ptr + skip) % self.capacity
            self._added += skip
            M = self.capacity
        start = self._ptr
        slots = (start + torch.arange(M, device=self.device)) % self.capacity
        c = self._cols
        block = torch.empty(M, c.width, dtype=torch.int32, device=self.device)
        wide, flt = block.view(torch.int64), block.view(torch.float32)
        wide[:, 0] = st
        wide[:, 1] = nst
        flt[:, c.agent] = ag
        flt[:, c.next_agent] = nag
        flt[:, c.n_return] = ret
        flt[:, c.discount] = disc
        block[:, c.action] = act.to(torch.int32)
        block[:, c.generation] = self._generation.index_select(0, slots) + 1
        first = min(M, self.capacity - start)  # the ring wraps at most once
        self._rows[start : start + first] = block[:first]
        self._rows[: M - first] = block[first:]
        if values is None:
            self._fold_pending()
            values = self._max_priority.expand(M)
        self._tree.set(slots, values, unique=True)
        self._ptr = (start + M) % self.capacity
        self._size = min(self.capacity, self._size + M)
        self._added += M
        return slots

    def _tensor(self, x: ArrayLike, dtype: torch.dtype, name: str) -> torch.Tensor:
        try:
            return torch.as_tensor(x, dtype=dtype, device=self.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DataError(f"replay: {name} cannot be read as {dtype}: {exc}") from exc

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, beta: float | None = None) -> ReplayBatch:
        """Draw ``batch_size`` transitions, one per equal segment of the total priority mass.

        Parameters
        ----------
        batch_size : int
            ``B``; the total mass is cut into ``B`` equal segments and one uniform draw is made in each.
        beta : float, optional
            Importance-sampling exponent; the schedule's current value when absent.

        Returns
        -------
        ReplayBatch
            Transitions, their slots and generations, and weights
            ``w_i = (N P(i))^-beta / max_j (N P(j))^-beta = (p_i / p_min)^-beta``, the max taken
            over all held transitions through the min tree.
        """
        if self._size == 0:
            raise DataError("replay.sample: the replay is empty")
        if batch_size <= 0:
            raise ConfigError(f"replay.sample: batch_size must be positive (got {batch_size})")
        beta = self.beta if beta is None else beta
        offsets = self._offsets.get(batch_size)
        if offsets is None:
            offsets = torch.arange(batch_size, dtype=torch.float64).div_(batch_size).unsqueeze(1)
            self._offsets[batch_size] = offsets
        # mass_i = (i + u_i) * total / B: one uniform draw in each of B equal segments.
        draws = torch.rand(batch_size, 1, generator=self._rng, dtype=torch.float64)
        fractions = torch.add(offsets, draws, alpha=1.0 / batch_size)
        if self.device.type != "cpu":
            fractions = fractions.to(self.device)
        tree = self._tree
        idx = tree.find_prefix(fractions.mul_(tree.total()), limit=self._size)
        weights = (tree.get(idx) / tree.min()).float().pow_(-beta)
        block = self._rows.index_select(0, idx)
        wide, flt, c = block.view(torch.int64), block.view(torch.float32), self._cols
        transitions = Transitions(
            step=wide[:, 0],
            next_step=wide[:, 1],
            agent=flt[:, c.agent],
            next_agent=flt[:, c.next_agent],
            action=block[:, c.action].long(),
            n_return=flt[:, c.n_return],
            discount=flt[:, c.discount],
        )
        return ReplayBatch(transitions, idx, block[:, c.generation], weights, beta)

    @torch.inference_mode()  # nothing here needs autograd, and skipping its dispatch saves ~10%
    def update_priorities(self, indices: ArrayLike, generations: ArrayLike, priorities: ArrayLike) -> None:
        """Set new priorities ``|td| + eps`` (raised to alpha here) for sampled slots.

        An entry whose slot generation has moved on since it was sampled (the slot was overwritten)
        is dropped and counted in :attr:`dropped_updates`. Repeated slots: the last fresh entry wins.

        Raises
        ------
        DataError
            Lengths differ, a slot is outside the filled part of the ring, or a priority is not
            finite and positive.
        """
        idx = self._tensor(indices, torch.int64, "indices")
        gen = self._tensor(generations, torch.int32, "generations")
        pri = self._tensor(priorities, torch.float64, "priorities")
        if not idx.shape == gen.shape == pri.shape or idx.dim() != 1:
            raise DataError(
                "replay.update_priorities: indices, generations and priorities must be equal 1-d shapes "
                f"(got {tuple(idx.shape)}, {tuple(gen.shape)}, {tuple(pri.shape)})"
            )
        if idx.numel() == 0:
            return
        self._check_update(idx, pri)
        values = pri.pow(self.alpha)
        fresh = self._generation.index_select(0, idx) == gen
        self._tree.set(idx, values, apply=fresh)
        self._updates += idx.numel()
        self._pending.append((values, fresh))
        if len(self._pending) >= 64:
            self._fold_pending()

    @torch.inference_mode()
    def _fold_pending(self) -> None:
        """Fold the pending updates into the running max priority and the count of fresh updates."""
        if not self._pending:
            return
        values, fresh = (torch.cat(parts) for parts in zip(*self._pending, strict=True))
        self._pending.clear()
        self._fresh_updates += fresh.sum()
        torch.maximum(self._max_priority, (values * fresh).amax(), out=self._max_priority)

    def _check_update(self, idx: torch.Tensor, pri: torch.Tensor) -> None:
        """Slots inside the filled ring, priorities finite and positive (one host sync)."""
        lo, hi = idx.aminmax()
        plo, phi = pri.aminmax()
        if self.device.type == "cpu":
            bounds = [lo.item(), hi.item(), plo.item(), phi.item()]
        else:
            bounds = torch.stack((lo.double(), hi.double(), plo, phi)).tolist()
        if not (bounds[0] >= 0 and bounds[1] < self._size):
            raise DataError(
                f"replay.update_priorities: indices span [{bounds[0]:.0f}, {bounds[1]:.0f}], "
                f"outside the filled slots [0, {self._size})"
            )
        if not (bounds[2] > 0 and bounds[3] < _INF):  # NaN fails both
            raise DataError(
                f"replay.update_priorities: priorities must be finite and > 0 (got min {bounds[2]}, max {bounds[3]})"
            )

    # ------------------------------------------------------------------ memory and persistence
    def memory_bytes(self) -> ReplayMemory:
        """Bytes of storage (transitions), trees (priorities) and slot generations."""
        generation = self.capacity * self._generation.element_size()
        return ReplayMemory(self._rows.nbytes - generation, self._tree.nbytes(), generation, self.capacity)

    def state_dict(self) -> dict[str, object]:
        """Everything: config, transitions, trees, generations, counters, running max, RNG state."""
        self._fold_pending()
        return {
            "format": _FORMAT,
            "config": {
                "capacity": self.capacity,
                "agent_dim": self.agent_dim,
                "alpha": self.alpha,
                "num_actions": self.num_actions,
                "fanout": self.fanout,
                "beta_start": self.beta_schedule.start,
                "beta_end": self.beta_schedule.end,
                "beta_steps": self.beta_schedule.steps,
                "priority_eps": self.priority_eps,
            },
            "rows": self._rows,
            "tree": self._tree.state_dict(),
            "max_priority": self._max_priority,
            "fresh_updates": self._fresh_updates,
            "rng_state": self._rng.get_state(),
            "counters": {
                "ptr": self._ptr,
                "size": self._size,
                "added": self._added,
                "updates": self._updates,
                "beta_step": self._beta_step,
            },
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` to ``path`` with ``torch.save``."""
        torch.save(self.state_dict(), Path(path))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> PrioritizedReplay:
        """Read a buffer saved by :meth:`save` onto ``device``, whatever device it was saved from.

        Raises
        ------
        DataError
            The file is missing, unreadable, or not a replay of a known format.
        """
        path = Path(path)
        dev = resolve_device(device)
        try:
            state = torch.load(path, map_location=dev, weights_only=True)
        except FileNotFoundError as exc:
            raise DataError(f"replay file {path} does not exist") from exc
        except Exception as exc:  # torch raises many types on a corrupt or foreign file
            raise DataError(f"replay file {path} is not readable: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise DataError(f"replay file {path}: unknown format {got!r} (expected {_FORMAT})")
        try:
            cfg = state["config"]
            replay = cls(
                cfg["capacity"],
                cfg["agent_dim"],
                device=dev,
                alpha=cfg["alpha"],
                beta=BetaSchedule(cfg["beta_start"], cfg["beta_end"], cfg["beta_steps"]),
                num_actions=cfg["num_actions"],
                fanout=cfg["fanout"],
                # Files saved before the transition schema have no priority_eps: theirs was the fixed 1e-6.
                priority_eps=cfg.get("priority_eps", 1e-6),
            )
            replay._load_state(state)
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"replay file {path}: missing or malformed entry {exc}") from exc
        except ConfigError as exc:
            raise DataError(f"replay file {path}: {exc}") from exc
        return replay

    def _load_state(self, state: dict[str, Any]) -> None:
        for name in ("rows", "max_priority", "fresh_updates"):
            dst: torch.Tensor = getattr(self, f"_{name}")
            src = state[name]
            if tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
                raise ConfigError(
                    f"entry {name!r} is {tuple(src.shape)} {src.dtype}, expected {tuple(dst.shape)} {dst.dtype}"
                )
            dst.copy_(src)
        self._tree.load_state_dict(state["tree"])
        self._rng.set_state(state["rng_state"].cpu())
        counters = state["counters"]
        self._ptr = int(counters["ptr"])
        self._size = int(counters["size"])
        self._added = int(counters["added"])
        self._updates = int(counters["updates"])
        self._beta_step = int(counters["beta_step"])


class _Columns:
    """Word offsets of the fields in a packed row (see the module docstring)."""

    __slots__ = ("action", "agent", "discount", "generation", "n_return", "next_agent", "width")

    def __init__(self, A: int) -> None:
        self.agent = slice(4, 4 + A)
        self.next_agent = slice(4 + A, 4 + 2 * A)
        self.n_return = 4 + 2 * A
        self.discount = 5 + 2 * A
        self.action = 6 + 2 * A
        self.generation = 7 + 2 * A
        self.width = 8 + 2 * A


def _raise_failed(where: str, checks: dict[str, torch.Tensor]) -> None:
    """One host sync for all checks; names every one that failed."""
    ok = torch.stack(list(checks.values())).tolist()
    failed = [name for name, good in zip(checks, ok, strict=True) if not good]
    if failed:
        raise DataError(f"{where}: input violates {', '.join(failed)}")
