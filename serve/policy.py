"""The learned policy as a Ray Serve app: ``POST /v1/act`` answers an action with its Q-values, batched, behind a key.

A thin shell around ``policies.policy_inference.PolicyPredictor``: it owns HTTP framing, the API key, request
batching, the live-state lookup and checkpoint swaps (``user_config`` or a watched directory). It never builds
states itself (the live-state actor does), never mixes two checkpoints in one answer, never answers a bad
payload with a 500, and never serves beyond 127.0.0.1 without an API key.

Run it with ``serve run serve.policy:build_app checkpoint=<path>`` or from Python with :func:`deploy`.

Routes (``route_prefix`` ``/``):

- ``POST /v1/act``: a ``.npy`` float32 body ``[S]`` or ``[B, S]`` (``application/x-npy`` or
  ``application/octet-stream``; the agent features are in the state), or JSON ``{"state": [...]}`` /
  ``{"states": [[...], ...]}`` with an optional ``"agent": [...]`` that overrides the states' agent slot, or
  ``{"symbol": "ETHUSDT", "latest": true}``: the live state of the symbol (unified stream, the paper account's
  agent features, the CNN part from the CNN deployment) from the Ray actor ``rayscalp-live-state``. The JSON
  answer carries the action (name and index), the Q-values (one per action of the checkpoint's action set:
  BUY, SELL, HOLD for ``market``, then POST_BID, POST_ASK, CANCEL for ``scalper``), the confidence (the gap between
  the two largest Q-values, see ``policies.policy_inference.CONFIDENCE_DEFINITION``), the model and CNN
  versions, for ``latest`` the data time, and the server-side latency. 422 names what is wrong with a payload;
  503 says why ``latest`` cannot be answered (no live-state actor, no answer in time, a state of another
  layout or CNN).
- ``GET /v1/health`` (never needs the key), ``GET /v1/model``, ``GET /docs``, ``GET /openapi.json``; health and
  model say the action set served.

With a key in ``$RAYSCALP_API_KEY`` (``api_key_env``) on the replicas' nodes, every route but health answers
401 without ``X-API-Key`` or with a wrong one. Without a key the replicas refuse to start unless Serve's HTTP
host is a loopback address.

Reloads: a new ``user_config`` (``checkpoint``) or a newer ``policy-*.pt`` in ``watch_dir`` loads beside the
serving network and swaps whole; a checkpoint with fewer learner updates than the served one is refused (kept
serving, the refusal shown by ``/v1/model``) unless ``allow_rollback``, and so is one of another layout or action
set (deploy it as a new app). With one replica (the default) a client
therefore sees versions only move forward; several replicas each swap on their own.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures (``request: Request``) at
# runtime through Serve's ingress wrapper, which cannot resolve string annotations.
import asyncio
import copy
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import ray
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from market.errors import ConfigError, RayscalpError
from market.venue import ACTION_SETS
from policies.cnn_inference import JSON_MEDIA_TYPE, NPY_MEDIA_TYPES, PayloadError
from policies.policy_inference import (
    CONFIDENCE_DEFINITION,
    MAX_ABS_VALUE,
    LatestQuery,
    PolicyAnswer,
    PolicyPredictor,
    action_names,
    check_answer,
    decode_act_json,
    decode_act_npy,
    encode_act_json,
)

from .app_shape import AppShape, LiveBatching, running_serve_client, serve_config_entry
from .auth import API_KEY_HEADER, DEFAULT_API_KEY_ENV, ApiKeyAuth, AuthError, check_bind
from .cnn import batch_rows
from .common import DEFAULT_MAX_BODY_BYTES, BindCheck, media_type, read_body

logger = logging.getLogger("ray.serve")

VERSION_HEADER = "x-policy-version"
LIVE_STATE_ACTOR = "rayscalp-live-state"
#: How long a missing live-state actor is remembered before it is looked up again.
_LIVE_LOOKUP_BACKOFF_S = 1.0
_HISTORY = 20
#: Every action name an answer may carry (the ``scalper`` set holds the ``market`` one).
ActionName = Literal[action_names("scalper")]  # type: ignore[valid-type]
#: The action sets a checkpoint may act in.
ActionSetName = Literal[tuple(ACTION_SETS)]  # type: ignore[valid-type]


class UnavailableError(RayscalpError):
    """A request cannot be answered now: no checkpoint yet, or no usable live state (503 with this message)."""


class LiveStateLike(Protocol):
    """What this app reads of ``rayscalp-live-state``'s ``latest_state(symbol)`` (``actors.live_state.LiveState``).

    ``cnn_source``, ``agent_source`` and ``cnn_error`` are passed on when present.
    """

    state: np.ndarray  # [S] float32, agent features of the paper account included
    step_time_ms: int
    data_time_ms: int
    cnn_version: str | None
    synthetic: bool


# ------------------------------------------------------------------------------------------------- config


class PolicyLiveConfig(LiveBatching):
    """What a running replica takes through ``user_config`` and applies in place (no restart).

    ``watch_dir``: poll it every ``poll_s`` for the newest ``watch_glob`` file and serve it when it has at least
    as many learner updates as the served one; with ``watch_marker``, a match counts only once a file of that
    name sits beside it. A folder of ``policy-*.pt`` files works as is; the learner's checkpoint store
    (``actors.checkpoints``: ``ckpt-<updates>/policy.pt``, ``meta.json`` written last) is watched with
    ``watch_glob: ckpt-*/policy.pt`` and ``watch_marker: meta.json``. ``allow_rollback`` lets a ``checkpoint``
    with fewer updates in (the watcher never goes back). ``live_timeout_s`` bounds the wait for the live state.
    """

    watch_dir: Path | None = None
    watch_glob: str = "policy-*.pt"
    watch_marker: str | None = None
    poll_s: float = Field(5.0, ge=0.05, le=3600.0)
    allow_rollback: bool = False
    live_timeout_s: float = Field(2.0, gt=0.0, le=60.0)
    max_update_jump: int = Field(10**9, ge=1)

    @field_validator("watch_glob")
    @classmethod
    def _pattern(cls, value: str) -> str:
        parts = value.split("/")
        if not value or value.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise ValueError(
                f"watch_glob must be a relative pattern inside watch_dir, e.g. policy-*.pt or ckpt-*/policy.pt "
                f"(got {value!r})"
            )
        return value

    @field_validator("watch_marker")
    @classmethod
    def _marker(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value in (".", "..")):
            raise ValueError(f"watch_marker must be a file name, e.g. meta.json (got {value!r})")
        return value


class PolicyServeConfig(AppShape, PolicyLiveConfig):
    """The policy app: the live part (:class:`PolicyLiveConfig`) plus its shape, its key and its host.

    ``host``/``port`` are where :func:`deploy` starts Serve's HTTP proxy when Serve is not running yet; a
    non-loopback host needs a key in ``$<api_key_env>``. ``symbols`` are those ``latest`` answers for;
    ``live_state_namespace`` is the live-state actor's Ray namespace (default: the namespace the app is built
    in). ``require_cnn_match`` refuses (503) a live state whose CNN version is not the policy's.
    """

    app_name: str = "policy"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65_535)
    symbols: tuple[str, ...] = ("ETHUSDT",)
    live_state_actor: str = LIVE_STATE_ACTOR
    live_state_namespace: str | None = None
    require_cnn_match: bool = True

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not (s.isalnum() and s.isupper() and 5 <= len(s) <= 20)]
        if not value or bad:
            raise ValueError(f"symbols must be upper-case Binance symbols such as ETHUSDT (got {list(value)})")
        return value

    def live(self) -> PolicyLiveConfig:
        """The part a replica applies in place."""
        return PolicyLiveConfig(**{name: getattr(self, name) for name in PolicyLiveConfig.model_fields})


# --------------------------------------------------------------------------------------- HTTP documents


class ErrorDetail(BaseModel):
    """Every 401, 422 and 503: the reason, in words."""

    detail: str


class Decision(BaseModel):
    """The policy's answer for one state."""

    action: ActionName
    action_index: int = Field(ge=0, le=len(action_names("scalper")) - 1)
    q_values: list[float] = Field(
        min_length=len(action_names("market")),
        max_length=len(action_names("scalper")),
        description="one Q-value per action of the action set, in ``actions`` order (Q(BUY), Q(SELL), Q(HOLD), ...)",
    )
    confidence: float = Field(ge=0.0, description=CONFIDENCE_DEFINITION)


class ActResponse(BaseModel):
    """``POST /v1/act``: ``decisions`` per state; the flat fields repeat the one decision of a one-state request."""

    action: ActionName | None
    action_index: int | None
    q_values: list[float] | None
    confidence: float | None
    decisions: list[Decision]
    action_set: ActionSetName = Field(description="the served checkpoint's action set (market.venue.ACTION_SETS)")
    actions: list[str] = Field(description="action names by index")
    model_version: str
    cnn_version: str | None = Field(description="the CNN the policy was trained under")
    updates: int = Field(description="learner updates behind the served checkpoint")
    latency_ms: float = Field(description="server-side time from the request reaching the replica to the answer")
    symbol: str | None = None
    data_time_ms: int | None = Field(None, description="latest: time of the newest market data in the state")
    step_time_ms: int | None = Field(None, description="latest: the base step the state is for")
    state_cnn_version: str | None = Field(None, description="latest: the CNN that filled the live state")
    cnn_source: str | None = Field(None, description="latest: where the live state's CNN part came from")
    agent_source: str | None = Field(None, description="latest: paper (the paper account's) or flat (zeros)")
    synthetic: bool | None = Field(None, description="latest: the live state was built from synthetic data")


class ModelInfo(BaseModel):
    """``GET /v1/model``: what is served (more keys may follow)."""

    model_config = ConfigDict(extra="allow")

    version: str
    cnn_version: str | None
    updates: int
    profile: str
    state_size: int
    action_set: ActionSetName
    actions: list[str]
    confidence: str


class Health(BaseModel):
    """``GET /v1/health``."""

    status: Literal["ok"]
    loaded: bool
    action_set: ActionSetName | None = Field(None, description="the served checkpoint's action set (None: none yet)")


def act_request_schema(state_size: int, agent_size: int, symbols: list[str], max_rows: int) -> dict[str, Any]:
    """JSON schema of a JSON ``/v1/act`` body for this layout (sizes exact, numbers within ``MAX_ABS_VALUE``)."""
    number = {"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE}
    state = {"type": "array", "items": number, "minItems": state_size, "maxItems": state_size}
    agent = {
        "anyOf": [
            {"type": "array", "items": number, "minItems": agent_size, "maxItems": agent_size},
            {"type": "null"},
        ],
        "description": "replaces the agent slot of the state(s); with states, [B, A] (one row each) also works; "
        "null counts as absent",
    }
    return {
        "oneOf": [
            {
                "title": "OneState",
                "type": "object",
                "properties": {"state": state, "agent": agent},
                "required": ["state"],
                "additionalProperties": False,
            },
            {
                "title": "States",
                "type": "object",
                "properties": {
                    "states": {"type": "array", "items": state, "minItems": 1, "maxItems": max_rows},
                    "agent": agent,
                },
                "required": ["states"],
                "additionalProperties": False,
            },
            {
                "title": "Latest",
                "type": "object",
                "properties": {"symbol": {"type": "string", "enum": symbols}, "latest": {"const": True}},
                "required": ["symbol", "latest"],
                "additionalProperties": False,
            },
        ]
    }


_ERRORS = {
    401: {"model": ErrorDetail, "description": "no API key, or a wrong one"},
    422: {"model": ErrorDetail, "description": "a bad payload; the reason says what is wrong"},
}
_ACT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON_MEDIA_TYPE: {"schema": {"type": "object"}},  # replaced per layout by act_request_schema
            **{media: {"schema": {"type": "string", "format": "binary"}} for media in NPY_MEDIA_TYPES},
        },
    }
}


def _file_key(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path), stat.st_mtime_ns, stat.st_size)


def newest_checkpoint(
    directory: Path, pattern: str, marker: str | None = None
) -> tuple[Path, tuple[str, int, int]] | None:
    """The most recently written file of ``directory`` matching ``pattern`` and its ``(path, mtime, size)`` key.

    With ``marker``, only files with a file of that name beside them count (a checkpoint is complete once its
    marker is written). Files that vanish while looking are skipped; a tie in time goes to the later name.
    ``None`` when none match.
    """
    best: tuple[Path, tuple[str, int, int]] | None = None
    try:
        candidates = list(directory.glob(pattern))
    except OSError:
        return None
    for path in candidates:
        key = _file_key(path)
        if key is None or not path.is_file() or (marker is not None and not (path.parent / marker).is_file()):
            continue
        if best is None or (key[1], key[0]) > (best[1][1], best[1][0]):
            best = (path, key)
    return best


ingress = FastAPI(
    title="rayscalp policy",
    description="Greedy actions and Q-values of the learned scalping policy (its action set: BUY / SELL / HOLD, "
    "and with scalper actions POST_BID / POST_ASK / CANCEL).",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,  # served by the replica itself, behind the key (see http_openapi)
)


@serve.deployment(name="PolicyDeployment")
@serve.ingress(ingress)
class PolicyDeployment:
    """One replica: the predictor of the current checkpoint, swapped whole on a reload."""

    def __init__(
        self,
        device: str = "auto",
        api_key_env: str = DEFAULT_API_KEY_ENV,
        symbols: tuple[str, ...] = ("ETHUSDT",),
        live_state_actor: str = LIVE_STATE_ACTOR,
        live_state_namespace: str | None = None,
        require_cnn_match: bool = True,
    ) -> None:
        self._device = device
        self._auth = ApiKeyAuth.from_env(api_key_env)
        self._bind = BindCheck(self._auth)
        self._symbols = tuple(symbols)
        self._live_name = live_state_actor
        self._live_namespace = live_state_namespace
        self._require_cnn_match = require_cnn_match
        self._live_actor: Any = None
        self._live_retry_at = 0.0
        self._live_missing_reason = ""
        self._predictor: PolicyPredictor | None = None
        self._config_key: tuple[tuple[str, int, int] | None, bool] | None = None
        self._live: PolicyLiveConfig | None = None
        self._reload_lock = asyncio.Lock()
        self._watcher: asyncio.Task | None = None
        self._watching: tuple[Path, str, str | None, float] | None = None
        self._seen: deque[tuple[str, int, int]] = deque(maxlen=1024)
        self._history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        self._refusal: dict[str, Any] | None = None
        self._batches = 0
        self._largest_batch = 0

    # ------------------------------------------------------------------------------------------ reloads

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a :class:`PolicyLiveConfig`: load a changed checkpoint beside the serving one, then swap.

        The first load's errors stop the replica (there is nothing to serve); later ones are refused and
        recorded (``/v1/model`` shows them) while the served checkpoint keeps answering.

        Raises
        ------
        ConfigError
            Without an API key while Serve's HTTP proxy listens beyond loopback.
        """
        live = PolicyLiveConfig.model_validate(user_config)
        await self._bind.ensure()
        async with self._reload_lock:
            key = _file_key(live.checkpoint)
            # A checkpoint considered once (taken or refused) is not loaded again for a batching-only update.
            considered = (key, live.allow_rollback)
            current = self._predictor
            if current is None:
                self._take(await self._load(live.checkpoint, live.max_request_rows), key, "user_config")
                self._config_key = considered
            elif key is None or considered != self._config_key:
                self._config_key = considered
                try:
                    new = await self._load(live.checkpoint, live.max_request_rows)
                except Exception as exc:  # a bad file must not take the served policy down
                    self._refuse(live.checkpoint, f"cannot load: {type(exc).__name__}: {exc}")
                else:
                    self._offer(new, key, "user_config", allow_rollback=live.allow_rollback)
            if self._predictor is not None and self._predictor.max_rows != live.max_request_rows:
                self._predictor = self._predictor.with_limits(max_rows=live.max_request_rows)
            self._batched.set_max_batch_size(live.max_batch_size)
            self._batched.set_batch_wait_timeout_s(live.batch_wait_timeout_s)
            self._live = live
        self._restart_watcher(live)

    async def _load(self, path: Path, max_rows: int) -> PolicyPredictor:
        return await asyncio.to_thread(PolicyPredictor.from_checkpoint, path, self._device, max_rows=max_rows)

    def _take(self, new: PolicyPredictor, key: tuple[str, int, int] | None, source: str) -> None:
        old = self._predictor
        self._predictor = new
        if key is not None:
            self._seen.append(key)
        self._history.append(
            {
                "version": new.version,
                "updates": new.updates,
                "checkpoint": new.path,
                "source": source,
                "at_ms": int(time.time() * 1000),
            }
        )
        logger.info(
            "policy: serving %s version %s (%d updates) from %s (was %s)",
            new.path,
            new.version,
            new.updates,
            source,
            old.version if old else None,
        )

    def _refuse(self, path: Path, reason: str) -> None:
        self._refusal = {"checkpoint": str(path), "reason": reason, "at_ms": int(time.time() * 1000)}
        logger.warning("policy: refused %s: %s", path, reason)

    def _offer(
        self, new: PolicyPredictor, key: tuple[str, int, int] | None, source: str, *, allow_rollback: bool
    ) -> bool:
        """Swap ``new`` in unless :meth:`_unfit` finds a reason against it; say whether it was taken."""
        reason = self._unfit(new, allow_rollback=allow_rollback)
        if reason:
            self._refuse(Path(new.path), reason)
            return False
        self._take(new, key, source)
        return True

    def _unfit(self, new: PolicyPredictor, *, allow_rollback: bool) -> str:
        """Why ``new`` may not replace the served predictor ("" when it may): another action set or layout, an
        implausible jump in updates, or fewer updates without ``allow_rollback``."""
        current = self._predictor
        if current is None:
            return ""
        if new.action_set != current.action_set:
            return (
                f"action set {new.action_set!r} ({', '.join(new.action_names)}) differs from the served "
                f"{current.action_set!r} ({', '.join(current.action_names)}); deploy it as a new app"
            )
        if new.layout != current.layout:
            return (
                f"state layout {new.layout.config.profile!r} ({new.state_size} floats) differs from the served "
                f"{current.layout.config.profile!r} ({current.state_size} floats); deploy it as a new app"
            )
        jump = self._live.max_update_jump if self._live is not None else 10**9
        if new.updates - current.updates > jump:
            return (
                f"version {new.version} claims {new.updates} updates, {new.updates - current.updates} past the "
                f"served {current.version}: more than max_update_jump={jump} is not plausible"
            )
        if new.updates < current.updates and not allow_rollback:
            return (
                f"version {new.version} ({new.updates} updates) is behind the served {current.version} "
                f"({current.updates} updates); versions only move forward (allow_rollback to go back)"
            )
        return ""

    def _restart_watcher(self, live: PolicyLiveConfig) -> None:
        wanted = (
            (live.watch_dir, live.watch_glob, live.watch_marker, live.poll_s) if live.watch_dir is not None else None
        )
        if wanted == self._watching and (self._watcher is None or not self._watcher.done()):
            return
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        self._watching = wanted
        if wanted is not None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(*wanted))

    async def _watch(self, directory: Path, pattern: str, marker: str | None, poll_s: float) -> None:
        """Poll ``directory`` for a newer checkpoint than any seen; load and offer it (forward only)."""
        logger.info("policy: watching %s/%s every %.2f s", directory, pattern, poll_s)
        while True:
            try:
                await self._poll_watch_dir(directory, pattern, marker)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher outlives a bad poll; the next one tries again
                logger.exception("policy: polling %s failed", directory)
            await asyncio.sleep(poll_s)

    async def _poll_watch_dir(self, directory: Path, pattern: str, marker: str | None) -> bool:
        """One poll: serve the newest unseen ``pattern`` file of ``directory`` if it moves forward."""
        found = await asyncio.to_thread(newest_checkpoint, directory, pattern, marker)
        if found is None or found[1] in self._seen:
            return False
        path, key = found
        async with self._reload_lock:
            self._seen.append(key)
            max_rows = self._live.max_request_rows if self._live else 4096
            try:
                new = await self._load(path, max_rows)
            except Exception as exc:
                self._refuse(path, f"cannot load: {type(exc).__name__}: {exc}")
                return False
            current = self._predictor
            if current is not None and (new.updates, new.version) == (current.updates, current.version):
                return False  # the served checkpoint, copied or re-published
            return self._offer(new, key, "watch_dir", allow_rollback=False)

    def _require_predictor(self) -> PolicyPredictor:
        predictor = self._predictor
        if predictor is None:
            raise UnavailableError("no policy checkpoint loaded yet")
        return predictor

    # ------------------------------------------------------------------------------------- answering

    async def _answer(self, states: np.ndarray) -> PolicyAnswer:
        """States checked by the predictor, answered through the batcher (or alone when larger than a batch)."""
        if self._live is not None and states.shape[0] > self._live.max_batch_size:
            predictor = self._require_predictor()
            return await asyncio.to_thread(predictor.act_batch, [states])
        return await self._batched(states)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, batch_size_fn=batch_rows)
    async def _batched(self, requests: list[np.ndarray]) -> list[PolicyAnswer]:
        # One predictor for the whole batch: a swap during the forward pass affects the next batch only.
        predictor = self._require_predictor()
        self._batches += 1
        self._largest_batch = max(self._largest_batch, batch_rows(requests))
        return await asyncio.to_thread(predictor.act_batch, requests)

    async def act(self, states: np.ndarray, agent: np.ndarray | None = None) -> dict[str, Any]:
        """Greedy actions of ``states`` ([S] or [B, S] float32), optionally with their agent slot replaced.

        Returns
        -------
        dict
            ``q_values`` [B, A] (the A actions of ``action_set``), ``actions`` [B] int64, ``confidence`` [B]
            float32, ``version``, ``cnn_version``, ``updates`` and ``action_set`` of the checkpoint that answered.

        Raises
        ------
        PayloadError
            When the states or the agent features are malformed (nothing else in the batch fails).
        """
        predictor = self._require_predictor()
        checked = predictor.check_states(states)
        if agent is not None:
            checked = predictor.with_agent(checked, np.asarray(agent))
        a = check_answer(await self._answer(checked))
        return {
            "q_values": a.q_values,
            "actions": a.actions,
            "action_set": a.action_set,
            "confidence": a.confidence,
            "version": a.version,
            "cnn_version": a.cnn_version,
            "updates": a.updates,
        }

    async def _get_live_actor(self) -> Any:
        if self._live_actor is not None:
            return self._live_actor
        now = time.monotonic()
        if now < self._live_retry_at:
            raise UnavailableError(self._live_missing_reason)
        try:
            self._live_actor = await asyncio.to_thread(ray.get_actor, self._live_name, self._live_namespace)
        except ValueError:  # ray.get_actor's "failed to look up actor"
            self._live_retry_at = now + _LIVE_LOOKUP_BACKOFF_S
            self._live_missing_reason = (
                f"live state unavailable: no Ray actor {self._live_name!r} in namespace "
                f"{self._live_namespace or ray.get_runtime_context().namespace!r}; start the live stream first "
                "(state requests work without it)"
            )
            raise UnavailableError(self._live_missing_reason) from None
        return self._live_actor

    async def _live_state(self, symbol: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The live state of ``symbol`` (checked against the served layout) and what the answer says about it.

        Raises
        ------
        UnavailableError
            No live-state actor, it died or failed, no answer within ``live_timeout_s``, or its state does not
            fit this policy (layout, non-finite values, another CNN version).
        """
        predictor = self._require_predictor()
        actor = await self._get_live_actor()
        timeout = self._live.live_timeout_s if self._live else 2.0
        try:
            live = await asyncio.wait_for(actor.latest_state.remote(symbol), timeout)
        except TimeoutError:
            raise UnavailableError(
                f"live state unavailable: {self._live_name!r} gave no {symbol} state within {timeout:g} s"
            ) from None
        except ray.exceptions.RayActorError as exc:
            self._live_actor = None  # looked up again next time: it may have been restarted
            raise UnavailableError(f"live state unavailable: {self._live_name!r} is gone ({exc})") from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise UnavailableError(
                f"live state unavailable: {self._live_name!r} could not give the {symbol} state "
                f"({type(cause).__name__}: {cause})"
            ) from None
        except ray.exceptions.RayError as exc:  # the actor is restarting or unreachable
            raise UnavailableError(f"live state unavailable: {self._live_name!r}: {exc}") from None
        try:
            state = np.asarray(live.state)
            extra = {
                "symbol": symbol,
                "data_time_ms": int(live.data_time_ms),
                "step_time_ms": int(live.step_time_ms),
                "state_cnn_version": live.cnn_version,
                "cnn_source": getattr(live, "cnn_source", None),
                "agent_source": getattr(live, "agent_source", None),
                "synthetic": bool(live.synthetic),
            }
        except (AttributeError, TypeError, ValueError) as exc:
            raise UnavailableError(f"live state unavailable: {self._live_name!r} answered {exc}") from None
        if state.ndim != 1:
            raise UnavailableError(f"live state unavailable: state has shape {state.shape}, expected [S]")
        try:
            checked = predictor.check_states(state)
        except PayloadError as exc:
            raise UnavailableError(f"live {symbol} state does not fit the served policy: {exc}") from None
        expected = predictor.cnn_version
        if self._require_cnn_match and expected is not None and live.cnn_version != expected:
            why = getattr(live, "cnn_error", "")
            raise UnavailableError(
                f"live {symbol} state was built with CNN {live.cnn_version!r}{f' ({why})' if why else ''}, the "
                f"policy was trained under {expected!r}; serve the matching CNN (or require_cnn_match: false)"
            )
        return checked, extra

    def info(self) -> dict[str, Any]:
        """The served checkpoint, layout, batching, reload history and refusals, and this replica's counts."""
        predictor = self._require_predictor()
        live = self._live.model_dump(mode="json", exclude={"checkpoint"}) if self._live else {}
        return {
            **predictor.describe(),
            **live,
            "auth": f"api key ({API_KEY_HEADER})" if self._auth.enabled else "none (loopback only)",
            "symbols": list(self._symbols),
            "live_state_actor": self._live_name,
            "live_state_namespace": self._live_namespace,
            "history": list(self._history),
            "refused": self._refusal,
            "replica": serve.get_replica_context().replica_id.unique_id,
            "batches": self._batches,
            "largest_batch": self._largest_batch,
        }

    # --------------------------------------------------------------------------------------- HTTP API

    def _authorize(self, request: Request) -> None:
        try:
            self._auth.check(request.headers.get(API_KEY_HEADER))
        except AuthError as exc:
            raise HTTPException(401, detail=str(exc)) from None

    @ingress.post(
        "/v1/act",
        responses={200: {"model": ActResponse}, **_ERRORS, 503: {"model": ErrorDetail, "description": "latest: why"}},
        openapi_extra=_ACT_BODY,
        summary="Greedy action and Q-values for a state, a batch of states, or the latest live state",
    )
    async def http_act(self, request: Request) -> Response:
        """See the module docstring; 422 on a bad payload, 503 when ``latest`` cannot be answered."""
        start = time.perf_counter()
        self._authorize(request)
        content_type = media_type(request.headers.get("content-type", ""))
        body = await read_body(request, self._live.max_body_bytes if self._live else DEFAULT_MAX_BODY_BYTES)
        extra: dict[str, Any] = {}
        try:
            predictor = self._require_predictor()
            if content_type == JSON_MEDIA_TYPE:
                query = decode_act_json(body, self._symbols)
            elif content_type in (*NPY_MEDIA_TYPES, ""):
                query = decode_act_npy(body, max_elements=predictor.max_rows * predictor.state_size)
            else:
                raise PayloadError(
                    f"unsupported content-type {content_type!r}: send {', '.join(NPY_MEDIA_TYPES)} or JSON"
                )
            if isinstance(query, LatestQuery):
                states, extra = await self._live_state(query.symbol)
                single = True
            else:
                states, single = predictor.prepare(query), query.single
            answer = check_answer(await self._answer(states))
        except PayloadError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        except UnavailableError as exc:
            raise HTTPException(503, detail=str(exc)) from None
        extra["latency_ms"] = (time.perf_counter() - start) * 1e3
        return Response(
            encode_act_json(answer, single=single, extra=extra),
            media_type=JSON_MEDIA_TYPE,
            headers={VERSION_HEADER: answer.version},
        )

    @ingress.get("/v1/health", responses={200: {"model": Health}}, summary="Liveness (no key needed)")
    async def http_health(self) -> dict[str, Any]:
        """``{"status": "ok", "loaded": <a checkpoint is served>, "action_set": <its action set or None>}``."""
        predictor = self._predictor
        return {"status": "ok", "loaded": predictor is not None, "action_set": predictor and predictor.action_set}

    @ingress.get("/v1/model", responses={200: {"model": ModelInfo}, 401: _ERRORS[401]}, summary="What is served")
    async def http_model(self, request: Request) -> dict[str, Any]:
        """Version, CNN version, updates, layout size and profile, batching, reloads and refusals."""
        self._authorize(request)
        return self.info()

    def openapi(self, root_path: str = "") -> dict[str, Any]:
        """The app's OpenAPI document with this layout's request schema and, with a key, its security scheme."""
        predictor = self._require_predictor()
        doc = copy.deepcopy(ingress.openapi())
        act = doc["paths"]["/v1/act"]["post"]
        act["requestBody"]["content"][JSON_MEDIA_TYPE]["schema"] = act_request_schema(
            predictor.state_size,
            predictor.agent_size,
            list(self._symbols),
            self._live.max_request_rows if self._live else predictor.max_rows,
        )
        if self._auth.enabled:
            doc.setdefault("components", {})["securitySchemes"] = {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
            }
            for path, operations in doc["paths"].items():
                if path != "/v1/health":
                    for operation in operations.values():
                        operation["security"] = [{"ApiKeyAuth": []}]
        if root_path:
            doc["servers"] = [{"url": root_path}]
        return doc

    @ingress.get("/openapi.json", include_in_schema=False)
    async def http_openapi(self, request: Request) -> dict[str, Any]:
        """The OpenAPI document (behind the key when one is set)."""
        self._authorize(request)
        return self.openapi(request.scope.get("root_path", ""))

    @ingress.get("/docs", include_in_schema=False)
    async def http_docs(self, request: Request) -> Response:
        """Swagger UI over ``/openapi.json`` (behind the key when one is set, like the document it reads)."""
        self._authorize(request)
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="rayscalp policy")


def _validated(config: PolicyServeConfig | dict[str, Any]) -> PolicyServeConfig:
    if isinstance(config, PolicyServeConfig):
        return config
    try:
        return PolicyServeConfig.model_validate(config)
    except ValueError as exc:
        raise ConfigError(f"policy serve config: {exc}") from None


def build_app(config: PolicyServeConfig | dict[str, Any]) -> serve.Application:
    """The policy app for ``serve.run`` (or ``serve run serve.policy:build_app checkpoint=...``).

    Raises
    ------
    ConfigError
        When ``config`` has an unknown key or a bad value (the message names it).
    """
    config = _validated(config)
    namespace = config.live_state_namespace
    if namespace is None and ray.is_initialized():
        namespace = ray.get_runtime_context().namespace
    return PolicyDeployment.options(**config.deployment_options()).bind(
        device=config.device,
        api_key_env=config.api_key_env,
        symbols=config.symbols,
        live_state_actor=config.live_state_actor,
        live_state_namespace=namespace,
        require_cnn_match=config.require_cnn_match,
    )


def app_config(config: PolicyServeConfig, live: PolicyLiveConfig | None = None) -> dict[str, Any]:
    """The app's entry in a Serve config file (``serve deploy`` / ``serve run <file>.yaml``).

    ``config`` stays the builder's ``args``; ``live`` (default ``config.live()``) is the deployment's
    ``user_config``. Deploying the same entry with another ``live`` (a new checkpoint, other batching) changes
    nothing but the ``user_config``, so the running replicas reload in place. Set ``live_state_namespace``
    here: a config file's app is built inside Serve, whose namespace is not the live-state actor's.
    """
    return serve_config_entry(config, "serve.policy:build_app", "PolicyDeployment", live)


def deploy(config: PolicyServeConfig, *, blocking: bool = False) -> DeploymentHandle:
    """Deploy (or redeploy) the policy app and return its handle; start Serve on ``config.host`` if needed.

    Raises
    ------
    ConfigError
        Before anything starts, when the HTTP host (the running Serve's, else ``config.host``) is not a
        loopback address and ``$<api_key_env>`` holds no key.
    """
    config = _validated(config)
    auth = ApiKeyAuth.from_env(config.api_key_env)
    check_bind(config.host, auth)
    client = running_serve_client()
    if client is None:
        serve.start(http_options={"host": config.host, "port": config.port})
    else:
        check_bind(client.http_config.host, auth)  # a running Serve keeps its host, whatever the config says
    return serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix, blocking=blocking)
