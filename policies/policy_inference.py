"""Policy inference without Serve: load a policy checkpoint, check request states, answer Q-values and actions.

Owns the ``/v1/act`` payload decoding (JSON forms; ``.npy`` through ``policies.cnn_inference.decode_npy``), the
agent-slot override, the greedy action with its confidence (named in the checkpoint's action set), and the
batching arithmetic; ``serve.policy`` is a thin shell around it. Never imports Ray, never trusts a payload (each
rejection is a ``PayloadError`` naming what was wrong), never changes the network's weights.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from market.errors import DataError
from market.layout import AGENT_FEATURES, StateLayout
from market.venue import ACTION_SETS

from .checkpoint import PolicyInfo, load_policy
from .cnn_inference import batch_offsets
from .device import resolve_device
from .dqn import QNetwork
from .npy import PayloadError, decode_npy
from .state_check import check_states, json_body, json_numbers


def action_names(action_set: str) -> tuple[str, ...]:
    """The actions of ``action_set`` as the HTTP answer spells them, index = the action's id (``BUY`` 0, ...)."""
    return tuple(name.upper() for name in ACTION_SETS[action_set])


#: The ``market`` action set's names (BUY 0, SELL 1, HOLD 2); every set starts with them.
ACTIONS: tuple[str, ...] = action_names("market")
#: What ``confidence`` means, said once for the docs and ``/v1/model``.
CONFIDENCE_DEFINITION = (
    "Q(chosen action) - Q(runner-up): the gap between the two largest Q-values, in the Q-values' own units "
    "(discounted n-step reward); 0 is a tie (broken towards the lower action index, as in training), larger "
    "is more decided; not a probability"
)
#: The largest magnitude a state value may have. States are normalised features (the real 1m klines' largest is
#: a Williams count in the thousands); a value beyond this is garbage and could overflow the network.
MAX_ABS_VALUE = 1e9
#: The keys a JSON ``/v1/act`` body may carry.
JSON_KEYS = frozenset({"state", "states", "agent", "symbol", "latest"})


@dataclass(frozen=True, slots=True)
class StateQuery:
    """A decoded request that carries its states: ``[S]`` (``single``) or ``[B, S]``, plus an optional agent.

    The arrays are not checked against a layout yet (:meth:`PolicyPredictor.prepare` does that).
    """

    states: np.ndarray
    agent: np.ndarray | None
    single: bool


@dataclass(frozen=True, slots=True)
class LatestQuery:
    """A decoded request for the live state of ``symbol``."""

    symbol: str


@dataclass(frozen=True, slots=True)
class PolicyAnswer:
    """What the policy says about a batch of states, and which checkpoint said it.

    Attributes
    ----------
    q_values : array [B, A] float32
        Q-values in the action set's order (``names``: BUY, SELL, HOLD, then the scalper's POST_BID, ...).
    actions : array [B] int64
        The greedy action per state (argmax, the lower index on a tie).
    confidence : array [B] float32
        See :data:`CONFIDENCE_DEFINITION`.
    version, cnn_version, updates
        The checkpoint's.
    action_set : str
        The checkpoint's action set (``market.venue.ACTION_SETS``), which names the actions.
    """

    q_values: np.ndarray
    actions: np.ndarray
    confidence: np.ndarray
    version: str
    cnn_version: str | None
    updates: int
    action_set: str = "market"

    @property
    def names(self) -> tuple[str, ...]:
        """The action names by index (:func:`action_names` of ``action_set``)."""
        return action_names(self.action_set)

    def decisions(self) -> list[dict[str, Any]]:
        """One ``{"action", "action_index", "q_values", "confidence"}`` per state, JSON-ready."""
        q, names = self.q_values.tolist(), self.names
        return [
            {"action": names[a], "action_index": a, "q_values": q[i], "confidence": c}
            for i, (a, c) in enumerate(zip(self.actions.tolist(), self.confidence.tolist(), strict=True))
        ]


def decide(q_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy actions and their confidence for Q-values ``[B, A]`` (A: the actions of an action set).

    Returns
    -------
    actions : array [B] int64
        ``argmax`` per row; the first maximum wins a tie (``numpy`` and ``torch`` agree on this).
    confidence : array [B] float32
        The largest Q-value minus the second largest (>= 0), see :data:`CONFIDENCE_DEFINITION`.
    """
    q = np.asarray(q_values, dtype=np.float32)
    widths = {name: len(names) for name, names in ACTION_SETS.items()}
    if q.ndim != 2 or q.shape[1] not in widths.values():
        sets = " or ".join(f"[B, {n}] ({name})" for name, n in widths.items())
        raise ValueError(f"q_values must be {sets}: one per action of an action set, got shape {q.shape}")
    actions = q.argmax(axis=1).astype(np.int64)
    top2 = np.sort(q, axis=1)[:, -2:]
    return actions, (top2[:, 1] - top2[:, 0]).astype(np.float32)


def check_answer(answer: PolicyAnswer) -> PolicyAnswer:
    """Return ``answer`` when every Q-value is finite, else raise :class:`PayloadError` naming the state.

    With finite weights and values within :data:`MAX_ABS_VALUE` this does not happen; it keeps a state that
    overflows the network from being answered with ``null`` Q-values.
    """
    finite = np.isfinite(answer.q_values)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise PayloadError(f"state {row} overflows the network (Q-values {answer.q_values[row].tolist()})")
    return answer


class PolicyPredictor:
    """A loaded Q-network that checks states, overrides their agent slot and answers batches of them.

    Parameters
    ----------
    network : QNetwork
        In eval mode, on ``device``.
    info : PolicyInfo
        The checkpoint's description (version, CNN version, updates, layout, action set).
    device : torch.device
    max_rows : int
        The most states one request may carry.
    chunk_rows : int
        The most states one forward pass takes.
    path : str, optional
        Where the checkpoint was read from (reported by :meth:`describe`).
    """

    def __init__(
        self,
        network: QNetwork,
        info: PolicyInfo,
        device: torch.device,
        *,
        max_rows: int = 4096,
        chunk_rows: int = 1024,
        path: str = "",
    ) -> None:
        if max_rows < 1 or chunk_rows < 1:
            raise ValueError(f"max_rows and chunk_rows must be >= 1 (got {max_rows}, {chunk_rows})")
        self.network = network.eval()
        self.info = info
        self.device = device
        self.max_rows = int(max_rows)
        self.chunk_rows = int(chunk_rows)
        self.path = str(path)
        self.layout: StateLayout = network.layout
        self.state_size = self.layout.size
        self.agent_slice = self.layout["agent"].slice
        self.agent_size = self.layout["agent"].size
        self.action_set = info.actions
        self.action_names = action_names(self.action_set)
        for name, tensor in [*network.named_parameters(), *network.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise DataError(f"policy checkpoint {path or info.version}: {name} holds non-finite values")

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", *, max_rows: int = 4096, chunk_rows: int = 1024
    ) -> PolicyPredictor:
        """Load a checkpoint written by ``policies.checkpoint.save_policy`` (``weights_only=True``).

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist (the message names it).
        DataError
            When a weight of the network is not finite.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"policy checkpoint {path} does not exist")
        dev = resolve_device(device)
        network, info = load_policy(path, dev)
        return cls(network, info, dev, max_rows=max_rows, chunk_rows=chunk_rows, path=str(path))

    @property
    def version(self) -> str:
        """The checkpoint's version string."""
        return self.info.version

    @property
    def cnn_version(self) -> str | None:
        """The CNN version the policy was trained under (its states' CNN part came from it)."""
        return self.info.cnn_version

    @property
    def updates(self) -> int:
        """Learner updates behind this checkpoint: the order in which versions move forward."""
        return self.info.updates

    def with_limits(self, *, max_rows: int) -> PolicyPredictor:
        """The same network and checkpoint with another request limit (a new object; this one is unchanged)."""
        return PolicyPredictor(
            self.network, self.info, self.device, max_rows=max_rows, chunk_rows=self.chunk_rows, path=self.path
        )

    # ------------------------------------------------------------------------------------------ checks

    def check_states(self, states: object) -> np.ndarray:
        """Return ``states`` (``[S]`` or ``[B, S]``) as a C-contiguous native float32 ``[B, S]`` array.

        Raises
        ------
        PayloadError
            Not an array, not float32, not 1-D or 2-D, the wrong width, no rows, too many rows, or a value
            that is not finite (the message names the row, the column and its layout component).
        """
        return check_states(states, self.layout, self.max_rows, single=True, max_abs=MAX_ABS_VALUE)

    def with_agent(self, states: np.ndarray, agent: object) -> np.ndarray:
        """A copy of checked ``states`` [B, S] whose agent slot holds ``agent`` ([A] for every row, or [B, A]).

        Raises
        ------
        PayloadError
            When ``agent`` is not numeric, has the wrong width or row count, or holds a non-finite value.
        """
        names = ", ".join(AGENT_FEATURES)
        if not isinstance(agent, np.ndarray) or agent.dtype.kind not in "iuf" or agent.dtype.fields is not None:
            raise PayloadError(f'"agent" must be {self.agent_size} numbers ({names})')
        rows = states.shape[0]
        if agent.ndim not in (1, 2) or agent.shape[-1] != self.agent_size:
            raise PayloadError(
                f'"agent" has shape {tuple(agent.shape)}: the layout\'s agent slot takes {self.agent_size} values '
                f"({names}), as [{self.agent_size}] or one row per state [{rows}, {self.agent_size}]"
            )
        if agent.ndim == 2 and agent.shape[0] != rows:
            raise PayloadError(f'"agent" has {agent.shape[0]} rows for {rows} states')
        with np.errstate(over="ignore"):
            values = agent.astype(np.float32)
        if not np.isfinite(values).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
            raise PayloadError(f'"agent"{list(index)} is {values[index]}: every value must be finite')
        if (np.abs(values) > MAX_ABS_VALUE).any():
            index = tuple(int(i) for i in np.argwhere(np.abs(values) > MAX_ABS_VALUE)[0])
            raise PayloadError(f'"agent"{list(index)} is {values[index]:g}: |value| must be at most {MAX_ABS_VALUE:g}')
        out = states.copy()
        out[:, self.agent_slice] = values
        return out

    def prepare(self, query: StateQuery) -> np.ndarray:
        """The checked ``[B, S]`` float32 states of ``query``, agent slot overridden when it carries one."""
        states = self.check_states(query.states)
        if query.agent is not None:
            states = self.with_agent(states, query.agent)
        return states

    # ----------------------------------------------------------------------------------------- forward

    def q_values(self, states: np.ndarray) -> np.ndarray:
        """Q-values ``[B, A]`` float32 of checked ``states`` ``[B, S]``, in chunks of ``chunk_rows``."""
        out = np.empty((states.shape[0], len(self.action_names)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, states.shape[0], self.chunk_rows):
                block = np.ascontiguousarray(states[start : start + self.chunk_rows])
                if not block.flags.writeable:
                    block = block.copy()  # torch wants writeable memory; a decoded body is read-only
                q = self.network(torch.from_numpy(block).to(self.device, non_blocking=True))
                out[start : start + block.shape[0]] = q.float().cpu().numpy()
        return out

    def _answer(self, q: np.ndarray) -> PolicyAnswer:
        actions, confidence = decide(q)
        return PolicyAnswer(q, actions, confidence, self.version, self.cnn_version, self.updates, self.action_set)

    def act(self, states: object) -> PolicyAnswer:
        """Answer one request of ``[S]`` or ``[B, S]`` float32 states (checked here, and so are the Q-values)."""
        return check_answer(self._answer(self.q_values(self.check_states(states))))

    def act_batch(self, requests: Sequence[np.ndarray]) -> list[PolicyAnswer]:
        """Answer several checked requests with one forward pass per ``chunk_rows`` states, each its own rows."""
        if not requests:
            return []
        offsets = batch_offsets([r.shape[0] for r in requests])
        answer = self._answer(self.q_values(np.concatenate(requests, axis=0)))
        return [
            PolicyAnswer(
                answer.q_values[a:b],
                answer.actions[a:b],
                answer.confidence[a:b],
                self.version,
                self.cnn_version,
                self.updates,
                self.action_set,
            )
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        """What is being served: versions, updates, layout, sizes, action set and names, device, checkpoint path."""
        return {
            "version": self.version,
            "cnn_version": self.cnn_version,
            "updates": self.updates,
            "profile": self.layout.config.profile,
            "state_size": self.state_size,
            "agent_features": list(AGENT_FEATURES),
            "agent_slot": [self.agent_slice.start, self.agent_slice.stop],
            "action_set": self.action_set,
            "actions": list(self.action_names),
            "confidence": CONFIDENCE_DEFINITION,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "max_rows": self.max_rows,
            "checkpoint": self.path,
        }


# ------------------------------------------------------------------------------------------------ codecs


def _numbers(value: object, key: str, ndim: int) -> np.ndarray:
    """``value`` as a numeric array of ``ndim`` dimensions, or a :class:`PayloadError` naming ``key``."""
    shape = "[...]" if ndim == 1 else "[[...], ...]"
    if not isinstance(value, list):
        raise PayloadError(f'"{key}" must be a JSON array {shape} of numbers, got {type(value).__name__}')
    array = json_numbers(value, key)
    if array.ndim != ndim:
        raise PayloadError(f'"{key}" must be {ndim}-D {shape}, got shape {tuple(array.shape)}')
    large = np.abs(array.astype(np.float64)) > MAX_ABS_VALUE
    if large.any():
        index = [int(i) for i in np.argwhere(large)[0]]
        # checked before the float32 cast, which would round 1e9 + 1e-7 down to the bound the schema states
        value = float(array[tuple(index)])
        raise PayloadError(f'"{key}"{index} is {value:g}: |value| must be at most {MAX_ABS_VALUE:g}')
    with np.errstate(over="ignore"):
        return array.astype(np.float32)  # a value beyond float32 becomes inf and is rejected as non-finite


def decode_act_json(body: bytes, symbols: Collection[str]) -> StateQuery | LatestQuery:
    """Read a JSON ``/v1/act`` body: ``{"state": [...]}``, ``{"states": [[...]]}`` or ``{"symbol", "latest": true}``.

    ``"agent"`` (with a state form only) overrides the states' agent slot. ``null`` counts as absent.

    Raises
    ------
    PayloadError
        Empty body, invalid JSON, not an object, unknown keys, none or several of the forms, values that
        are not numbers, ``latest`` not ``true``, or a symbol not in ``symbols``.
    """
    obj = json_body(body, '{"state": [...]}, {"states": [[...]]} or {"symbol", "latest"}')
    if not isinstance(obj, dict):
        raise PayloadError(f"JSON body must be an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - JSON_KEYS)
    if unknown:
        raise PayloadError(f"unknown key(s) {unknown}; a body takes {sorted(JSON_KEYS)}")
    given = {k for k, v in obj.items() if v is not None}
    forms = [k for k in ("state", "states") if k in given] + (["latest"] if given & {"symbol", "latest"} else [])
    if len(forms) != 1:
        what = "none" if not forms else " and ".join(forms)
        raise PayloadError(f'a body carries exactly one of "state", "states" or "symbol"+"latest"; got {what}')
    if forms[0] == "latest":
        if obj.get("latest") is not True:
            raise PayloadError(f'"latest" must be true with "symbol", got {obj.get("latest")!r}')
        if "agent" in given:
            raise PayloadError('"agent" is not taken with "latest": the live state carries the paper account\'s')
        symbol = obj.get("symbol")
        if not isinstance(symbol, str) or symbol not in symbols:
            raise PayloadError(f"unknown symbol {symbol!r} for latest; served: {sorted(symbols)}")
        return LatestQuery(symbol)
    key = forms[0]
    states = _numbers(obj[key], key, 1 if key == "state" else 2)
    agent = None
    if "agent" in given:
        value = obj["agent"]
        depth = 2 if isinstance(value, list) and value and isinstance(value[0], list) else 1
        agent = _numbers(value, "agent", depth)
    return StateQuery(states, agent, single=key == "state")


def decode_act_npy(body: bytes, max_elements: int | None = None) -> StateQuery:
    """Read a ``.npy`` ``/v1/act`` body (``[S]`` or ``[B, S]``; the agent features are in the state).

    Raises
    ------
    PayloadError
        As :func:`policies.npy.decode_npy` (empty, garbage, pickled, truncated, non-numeric, a bad or
        oversized shape: more than ``max_elements`` values).
    """
    states = decode_npy(body, max_elements=max_elements)
    return StateQuery(states, None, single=states.ndim == 1)


def encode_act_json(answer: PolicyAnswer, *, single: bool, extra: dict[str, Any] | None = None) -> bytes:
    """The ``/v1/act`` JSON answer: ``decisions`` per state, and the flat fields of the one state when ``single``.

    ``extra`` (latency, live-state fields) is merged in last.
    """
    decisions = answer.decisions()
    doc: dict[str, Any] = {
        "action": None,
        "action_index": None,
        "q_values": None,
        "confidence": None,
        "decisions": decisions,
        "action_set": answer.action_set,
        "actions": list(answer.names),
        "model_version": answer.version,
        "cnn_version": answer.cnn_version,
        "updates": answer.updates,
        # filled by the live path (``latest``): which symbol, the data's time, the CNN that built the state
        "symbol": None,
        "data_time_ms": None,
        "step_time_ms": None,
        "state_cnn_version": None,
        "cnn_source": None,
        "agent_source": None,
        "synthetic": None,
    }
    if single:
        doc.update(decisions[0])
    doc.update(extra or {})
    return orjson.dumps(doc)
