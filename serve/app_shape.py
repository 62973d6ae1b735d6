"""What the configs of the model-serving apps (CNN, policy) share: the live batching part and the cluster shape.

Owns the fields both apps validate the same way, the deployment options built from them, the app's entry in a
Serve config file and the lookup of a running Serve. Never decides what an app serves or how it answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from pydantic import Field, field_validator

from market.config import StrictModel
from policies.device import check_device_name

from .auth import DEFAULT_API_KEY_ENV
from .common import DEFAULT_MAX_BODY_BYTES, check_route_prefix

__all__ = ["ActorOptions", "AppShape", "LiveBatching", "running_serve_client", "serve_config_entry"]


class ActorOptions(StrictModel):
    """Resources of one replica: a fraction of a CPU, and a GPU when the cluster has one."""

    num_cpus: float = Field(0.5, gt=0.0, le=64.0)
    num_gpus: float = Field(0.0, ge=0.0, le=1.0)


class LiveBatching(StrictModel):
    """The part of an app's live config (its ``user_config``) that every model-serving app has.

    ``max_batch_size`` counts states per forward pass, ``max_request_rows`` states per request, and
    ``max_body_bytes`` caps a request body (413 beyond it).
    """

    checkpoint: Path
    max_batch_size: int = Field(64, ge=1, le=65_536)
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, le=1.0)
    max_request_rows: int = Field(4096, ge=1, le=1_000_000)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, le=2**31)


class AppShape(StrictModel):
    """An app's shape on the cluster: replicas, rollout surge, device, resources, name, route and key variable.

    A subclass sets the defaults of ``app_name`` and ``route_prefix`` and implements :meth:`live`.
    """

    num_replicas: int = Field(1, ge=1, le=1024)
    max_ongoing_requests: int = Field(256, ge=1, le=100_000)
    max_surge_percent: int = Field(100, ge=0, le=100)
    device: str = "auto"
    ray_actor_options: ActorOptions = ActorOptions()
    app_name: str
    route_prefix: str
    api_key_env: str = Field(DEFAULT_API_KEY_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        return check_device_name(value)

    @field_validator("route_prefix")
    @classmethod
    def _route(cls, value: str) -> str:
        return check_route_prefix(value)

    def live(self) -> StrictModel:
        """The part a replica applies in place (the deployment's ``user_config``)."""
        raise NotImplementedError(f"{type(self).__name__} does not say which part is live")

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Deployment.options`` for this shape, the live part as ``user_config``."""
        return {
            "num_replicas": self.num_replicas,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_surge_percent": self.max_surge_percent,
            "ray_actor_options": self.ray_actor_options.model_dump(),
            "user_config": self.live().model_dump(mode="json"),
        }


def serve_config_entry(
    config: AppShape, import_path: str, deployment: str, live: StrictModel | None = None
) -> dict[str, Any]:
    """The app's entry in a Serve config file (``serve deploy`` / ``serve run <file>.yaml``).

    ``config`` stays the builder's ``args``; ``live`` (default ``config.live()``) is the ``user_config`` of the
    deployment named ``deployment``. Deploying the same entry with another ``live`` changes nothing but the
    ``user_config``, so Serve calls ``reconfigure`` on the running replicas instead of replacing them.
    """
    live = live or config.live()
    return {
        "name": config.app_name,
        "route_prefix": config.route_prefix,
        "import_path": import_path,
        "args": config.model_dump(mode="json"),
        "deployments": [{"name": deployment, "user_config": live.model_dump(mode="json")}],
    }


def running_serve_client() -> Any | None:
    """The client of the Serve instance running on the connected Ray cluster, or ``None`` when there is none."""
    if not ray.is_initialized():
        return None
    from ray.serve.context import _get_global_client

    return _get_global_client(raise_if_no_controller_running=False)
