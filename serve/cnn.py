"""The CNN as a Ray Serve app: hidden features + predictions per state, batched, by handle, over HTTP, and in bulk.

A thin shell around ``policies.cnn_inference.CnnPredictor``: it owns request batching, HTTP framing and
checkpoint swaps through ``user_config``. It never computes features itself (``market.features.gather``
does), never mixes two checkpoints in one answer, and never answers a bad payload with a 500.

Run it with ``serve run serve.cnn:build_app checkpoint=<path>`` or from Python with :func:`deploy`.
HTTP: ``POST /cnn/infer`` with a ``.npy`` body (``application/x-npy`` or ``application/octet-stream``) or
JSON ``{"states": [[...], ...]}``; the answer is a ``.npy`` of records ``(hidden [H], predictions [P])``
(header ``x-cnn-version``) or JSON ``{"hidden", "predictions", "version"}`` (``Accept: application/json``).
``GET /cnn/info`` says what is served; ``GET /cnn/health`` is liveness.

With a key in ``$RAYSCALP_API_KEY`` (``api_key_env``), every route but health answers 401 without
``X-API-Key``; without one the replicas refuse to start unless Serve's HTTP host is a loopback address
(``serve.common``, as the policy app). Bodies over ``max_body_bytes`` are refused with 413, a ``.npy`` body
whose header asks for more than ``max_request_rows x state_size`` values with 422, before any allocation.

Versions only move forward for a client when the app has one replica (the default): a reload swaps that
replica's model in place, and a redeploy adds the new replica to the routers as it removes the old one.
With several replicas, a client may meet both versions while a rollout is under way.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures (``request: Request``) at
# runtime through Serve's ingress wrapper, which cannot resolve string annotations.
import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from market.errors import ConfigError
from market.timeline import MarketTimeline
from policies.cnn_inference import (
    JSON_MEDIA_TYPE,
    NPY_MEDIA_TYPES,
    CnnAnswer,
    CnnPredictor,
    decode_json_states,
    encode_answer_json,
    encode_answer_npy,
)
from policies.npy import PayloadError, decode_npy

from .app_shape import AppShape, LiveBatching, running_serve_client, serve_config_entry
from .auth import DEFAULT_API_KEY_ENV, ApiKeyAuth, check_bind
from .common import DEFAULT_MAX_BODY_BYTES, BindCheck, authorize, media_type, read_body

logger = logging.getLogger("ray.serve")

VERSION_HEADER = "x-cnn-version"


class CnnLiveConfig(LiveBatching):
    """What a running replica takes through ``user_config`` and applies in place (no restart)."""

    chunk_rows: int = Field(2048, ge=1, le=1_000_000)


class CnnServeConfig(AppShape, CnnLiveConfig):
    """The CNN app: the checkpoint and batching (live, see :class:`CnnLiveConfig`) plus its shape on the cluster.

    ``max_batch_size`` counts states per forward pass; a request of more states than that skips the batcher
    and runs alone in chunks of ``chunk_rows``. ``max_surge_percent`` keeps old replicas serving until their
    replacements have loaded, when a redeploy restarts them.
    """

    app_name: str = "cnn"
    route_prefix: str = "/cnn"

    def live(self) -> CnnLiveConfig:
        """The part a replica applies in place."""
        return CnnLiveConfig(**{name: getattr(self, name) for name in CnnLiveConfig.model_fields})


def batch_rows(items: list[np.ndarray]) -> int:
    """Batch size in states, so that ``max_batch_size`` bounds one forward pass."""
    return sum(int(x.shape[0]) for x in items)


def _wants_json(accept: str, request_is_json: bool) -> bool:
    """The first of JSON or ``.npy`` that ``Accept`` names wins; otherwise answer in the request's format."""
    for part in accept.split(","):
        media = media_type(part)
        if media == JSON_MEDIA_TYPE:
            return True
        if media in NPY_MEDIA_TYPES:
            return False
    return request_is_json


ingress = FastAPI(title="rayscalp CNN", description="Hidden features and predictions of the multi-timeframe CNN.")


@serve.deployment(name="CnnDeployment")
@serve.ingress(ingress)
class CnnDeployment:
    """One replica: the predictor of the current checkpoint, swapped whole when ``user_config`` changes."""

    def __init__(self, device: str = "auto", api_key_env: str = DEFAULT_API_KEY_ENV) -> None:
        self._device = device
        self._auth = ApiKeyAuth.from_env(api_key_env)
        self._bind = BindCheck(self._auth)
        self._predictor: CnnPredictor | None = None
        self._loaded: tuple[str, int, int] | None = None
        self._live: CnnLiveConfig | None = None
        self._batches = 0
        self._largest_batch = 0
        self._reload_lock = asyncio.Lock()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a :class:`CnnLiveConfig`: load the checkpoint beside the serving one, then swap.

        Requests already holding the old predictor finish on it; the next ones get the new one. A checkpoint
        with another state layout is refused (clients build states of the served layout).
        """
        live = CnnLiveConfig.model_validate(user_config)
        await self._bind.ensure()
        async with self._reload_lock:
            stat = live.checkpoint.stat() if live.checkpoint.is_file() else None
            key = (str(live.checkpoint), stat.st_mtime_ns, stat.st_size) if stat else None
            current = self._predictor
            if current is None or key is None or key != self._loaded:
                new = await asyncio.to_thread(
                    CnnPredictor.from_checkpoint,
                    live.checkpoint,
                    self._device,
                    max_rows=live.max_request_rows,
                    chunk_rows=live.chunk_rows,
                )
                if current is not None and new.layout != current.layout:
                    raise ConfigError(
                        f"checkpoint {live.checkpoint}: state layout {new.layout.config.profile!r} "
                        f"({new.state_size} floats) differs from the served {current.layout.config.profile!r} "
                        f"({current.state_size} floats); deploy it as a new app instead"
                    )
                self._predictor, self._loaded = new, key
                logger.info(
                    "cnn: serving %s version %s (was %s)",
                    live.checkpoint,
                    new.version,
                    current.version if current else None,
                )
            else:
                self._predictor = current.with_limits(max_rows=live.max_request_rows, chunk_rows=live.chunk_rows)
            self._batched.set_max_batch_size(live.max_batch_size)
            self._batched.set_batch_wait_timeout_s(live.batch_wait_timeout_s)
            self._live = live

    def _require_predictor(self) -> CnnPredictor:
        predictor = self._predictor
        if predictor is None:
            raise ConfigError("no checkpoint loaded: deploy with user_config={'checkpoint': <path>}")
        return predictor

    # ------------------------------------------------------------------------------------- handle API

    async def infer(self, states: np.ndarray) -> dict[str, Any]:
        """Hidden features and predictions of ``states`` [B, S] float32, with the checkpoint version.

        Returns
        -------
        dict
            ``hidden`` [B, H] float32, ``predictions`` [B, P] float32, ``version`` str.

        Raises
        ------
        PayloadError
            When ``states`` is not a finite float32 [B, S] array of this layout (nothing else in the batch fails).
        """
        return (await self._answer(states)).as_dict()

    async def _answer(self, states: object) -> CnnAnswer:
        predictor = self._require_predictor()
        states = predictor.check_states(states)
        if self._live is not None and states.shape[0] > self._live.max_batch_size:
            return await asyncio.to_thread(predictor.predict, states)
        return await self._batched(states)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, batch_size_fn=batch_rows)
    async def _batched(self, requests: list[np.ndarray]) -> list[CnnAnswer]:
        # One predictor for the whole batch: a swap during the forward pass affects the next batch only.
        predictor = self._require_predictor()
        self._batches += 1
        self._largest_batch = max(self._largest_batch, batch_rows(requests))
        return await asyncio.to_thread(predictor.predict_batch, requests)

    async def bulk_fill(
        self, timeline: MarketTimeline | ray.ObjectRef, steps: np.ndarray | None = None
    ) -> dict[str, Any]:
        """The CNN component of a whole timeline (or of ``steps``), gathered and run in large chunks.

        Parameters
        ----------
        timeline : MarketTimeline or ObjectRef to one
            Pass ``ray.put(timeline)`` so that the arrays are read from the object store, zero-copy.
        steps : array [n] int64, optional
            Base steps to fill; all of them by default.

        Returns
        -------
        dict
            ``hidden`` [n, H], ``predictions`` [n, P] float32 and the ``version`` that filled them (one
            checkpoint for the whole fill, even if a reload lands meanwhile).
        """
        if isinstance(timeline, ray.ObjectRef):
            timeline = await timeline
        predictor = self._require_predictor()
        answer = await asyncio.to_thread(predictor.bulk_fill, timeline, steps)
        return answer.as_dict()

    def info(self) -> dict[str, Any]:
        """The served version, layout sizes, device, batching, and batches run so far by this replica."""
        live = self._live.model_dump(mode="json", exclude={"checkpoint"}) if self._live else {}
        counts = {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "batches": self._batches,
            "largest_batch": self._largest_batch,
        }
        return {**self._require_predictor().describe(), **live, **counts}

    # --------------------------------------------------------------------------------------- HTTP API

    @ingress.post("/infer")
    async def http_infer(self, request: Request) -> Response:
        """States in as ``.npy`` or JSON, answer likewise (see the module docstring); 422 on a bad payload."""
        authorize(self._auth, request)
        content_type = media_type(request.headers.get("content-type", ""))
        is_json = content_type == JSON_MEDIA_TYPE
        if not is_json and content_type not in (*NPY_MEDIA_TYPES, ""):
            raise HTTPException(
                422, detail=f"unsupported content-type {content_type!r}: send {', '.join(NPY_MEDIA_TYPES)} or JSON"
            )
        max_body = self._live.max_body_bytes if self._live is not None else DEFAULT_MAX_BODY_BYTES
        body = await read_body(request, max_body)
        try:
            predictor = self._require_predictor()
            limit = predictor.max_rows * predictor.state_size
            states = decode_json_states(body) if is_json else decode_npy(body, max_elements=limit)
            answer = await self._answer(states)
        except PayloadError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        headers = {VERSION_HEADER: answer.version}
        if _wants_json(request.headers.get("accept", ""), is_json):
            payload = encode_answer_json(answer.hidden, answer.predictions, answer.version)
            return Response(payload, media_type=JSON_MEDIA_TYPE, headers=headers)
        return Response(
            encode_answer_npy(answer.hidden, answer.predictions), media_type=NPY_MEDIA_TYPES[0], headers=headers
        )

    @ingress.get("/info")
    async def http_info(self, request: Request) -> dict[str, Any]:
        """What is served (JSON); the checkpoint's local path only to a caller that presented the key."""
        authorize(self._auth, request)
        info = self.info()
        if not self._auth.enabled:
            info["checkpoint"] = Path(str(info.get("checkpoint", ""))).name
        return info

    @ingress.get("/health")
    async def http_health(self) -> dict[str, Any]:
        """``{"status": "ok", "loaded": <a checkpoint is served>}`` (never needs the key)."""
        return {"status": "ok", "loaded": self._predictor is not None}


def build_app(config: CnnServeConfig | dict[str, Any]) -> serve.Application:
    """The CNN app for ``serve.run`` (or ``serve run serve.cnn:build_app checkpoint=...``).

    Raises
    ------
    ConfigError
        When ``config`` has an unknown key or a bad value (the message names it).
    """
    if not isinstance(config, CnnServeConfig):
        try:
            config = CnnServeConfig.model_validate(config)
        except ValueError as exc:
            raise ConfigError(f"CNN serve config: {exc}") from None
    return CnnDeployment.options(**config.deployment_options()).bind(
        device=config.device, api_key_env=config.api_key_env
    )


def app_config(config: CnnServeConfig, live: CnnLiveConfig | None = None) -> dict[str, Any]:
    """The app's entry in a Serve config file (``serve deploy`` / ``serve run <file>.yaml``).

    ``config`` is what the app was first deployed with and stays the builder's ``args``; ``live`` (default
    ``config.live()``) is the deployment's ``user_config``. Deploying the same entry with another ``live``
    (a new checkpoint, other batching) changes nothing but the ``user_config``, so Serve calls ``reconfigure``
    on the running replicas, which load the checkpoint beside the serving model and swap, instead of
    replacing the replicas.
    """
    return serve_config_entry(config, "serve.cnn:build_app", "CnnDeployment", live)


def deploy(config: CnnServeConfig, *, blocking: bool = False) -> DeploymentHandle:
    """Deploy (or redeploy) the CNN app under ``config.app_name`` and return its handle.

    Redeploying with another checkpoint replaces the replicas: each new replica loads its checkpoint before
    it takes traffic, and the old ones finish the requests they hold (``max_surge_percent``).

    Raises
    ------
    ConfigError
        When the running Serve listens beyond loopback and ``$<api_key_env>`` holds no key.
    """
    client = running_serve_client()
    if client is not None:
        check_bind(client.http_config.host, ApiKeyAuth.from_env(config.api_key_env))
    return serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix, blocking=blocking)
