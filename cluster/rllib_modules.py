"""The project's Q-network (``policies.dqn.QNetwork``) as RLlib RLModules (new API stack), for ``train --engine rllib``.

Each module holds the very torch module the project's trainers train, as ``qnet``, so that its weights export
unchanged into a policy checkpoint (``policies.rllib_export``):

- :class:`QNetworkDQNModule` (DQN): ``qnet``'s outputs are the Q-values; epsilon-greedy exploration with uniform
  random actions, as ``policies.acting.act`` does; a target copy for the TD target.
- :class:`QNetworkPolicyModule` (PPO): ``qnet``'s outputs are the categorical policy's logits (the dueling
  ``V + A - mean A`` only shifts them, which a softmax ignores); a value head reads ``qnet``'s trunk.
- :class:`QNetworkAPPOModule` (APPO): the same, plus the old-policy copy APPO's learner asks for.

``model_config`` carries ``state_profile`` (the ``StateConfig`` profile whose layout the network is built on;
the observation space must have that layout's size) and ``qnet`` (a ``QNetworkConfig`` as a dict, whose action set
the action space must have as many actions as); DQN also
``double_q`` and ``epsilon`` (a constant or RLlib's ``[[t, value], ...]`` schedule over env steps).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_NEXT_PREDS, QF_PREDS, QF_TARGET_NEXT_PREDS
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import (
    TARGET_NETWORK_ACTION_DIST_INPUTS,
    InferenceOnlyAPI,
    QNetAPI,
    TargetNetworkAPI,
    ValueFunctionAPI,
)
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.schedules.scheduler import Scheduler
from torch import nn

from market.errors import ConfigError
from market.layout import StateConfig, build_layout
from policies.dqn import QNetwork, QNetworkConfig

STATE_PROFILE_KEY = "state_profile"
QNET_KEY = "qnet"


def build_qnet(module: TorchRLModule, extra_keys: tuple[str, ...] = ()) -> QNetwork:
    """The ``QNetwork`` of ``module.model_config``, checked against the module's spaces."""
    cfg = module.model_config or {}
    for key in (STATE_PROFILE_KEY, QNET_KEY, *extra_keys):
        if key not in cfg:
            raise ConfigError(f"{type(module).__name__}: model_config lacks {key!r} (has {sorted(cfg)})")
    layout = build_layout(StateConfig(profile=cfg[STATE_PROFILE_KEY]))
    shape = tuple(module.observation_space.shape or ())
    if shape != (layout.size,):
        raise ConfigError(
            f"{type(module).__name__}: observation space shape {shape} does not match the "
            f"{cfg[STATE_PROFILE_KEY]!r} layout's size ({layout.size},)"
        )
    network = QNetworkConfig.model_validate(cfg[QNET_KEY])
    if getattr(module.action_space, "n", None) != network.n_actions:
        raise ConfigError(
            f"{type(module).__name__}: action space {module.action_space} is not Discrete({network.n_actions}), "
            f"the {network.actions!r} action set of model_config[{QNET_KEY!r}]"
        )
    return QNetwork(layout, network)


def trunk_features(qnet: QNetwork, obs: torch.Tensor) -> torch.Tensor:
    """The shared trunk's output ``[B, trunk]``, which both the logits and the value head read."""
    return qnet.trunk(qnet.encoder(obs))


def scores_from_trunk(qnet: QNetwork, h: torch.Tensor) -> torch.Tensor:
    """``qnet``'s outputs from its trunk features: exactly ``qnet(obs)`` for ``h = trunk_features(qnet, obs)``."""
    advantage = qnet.advantage(h)
    return qnet.value(h) + advantage - advantage.mean(dim=1, keepdim=True)


class QNetworkDQNModule(TorchRLModule, QNetAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """RLlib DQN RLModule around :class:`policies.dqn.QNetwork` (the dueling head lives inside the network)."""

    def setup(self) -> None:
        self.qnet = build_qnet(self, ("double_q", "epsilon"))
        self.uses_double_q = bool(self.model_config["double_q"])
        self.epsilon_schedule = Scheduler(fixed_value_or_schedule=self.model_config["epsilon"], framework="torch")

    def compute_q_values(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {QF_PREDS: self.qnet(batch[Columns.OBS])}

    def make_target_networks(self) -> None:
        self.target_qnet = make_target_network(self.qnet)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.qnet, self.target_qnet)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {QF_PREDS: self.target_qnet(batch[Columns.OBS])}

    def get_non_inference_attributes(self) -> list[str]:
        return ["target_qnet"]

    def get_initial_state(self) -> dict:
        return {}

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self.qnet(batch[Columns.OBS]).argmax(dim=-1)}

    def _forward_exploration(self, batch: dict[str, Any], t: int = 0, **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            greedy = self.qnet(batch[Columns.OBS]).argmax(dim=-1)
        self.epsilon_schedule.update(t)
        explore = torch.rand(greedy.shape, device=greedy.device) < self.epsilon_schedule.get_current_value()
        random = torch.randint(0, self.qnet.config.n_actions, greedy.shape, device=greedy.device)
        return {Columns.ACTIONS: torch.where(explore, random, greedy)}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Q(s) (and Q(s') of the online network for double DQN, in the same pass) and target Q(s')."""
        if self.inference_only:
            raise RuntimeError("QNetworkDQNModule: an inference-only module cannot be trained")
        obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        out: dict[str, Any] = {}
        if self.uses_double_q:
            out[QF_PREDS], out[QF_NEXT_PREDS] = torch.chunk(self.qnet(torch.cat([obs, next_obs])), 2, dim=0)
        else:
            out[QF_PREDS] = self.qnet(obs)
        out[QF_TARGET_NEXT_PREDS] = self.target_qnet(next_obs)
        return out


class QNetworkPolicyModule(TorchRLModule, ValueFunctionAPI):
    """PPO RLModule: ``qnet``'s outputs (one per action) are the logits of a categorical policy; a value head on its
    trunk.

    RLlib's default action distribution for ``Discrete(A)`` (``TorchCategorical``) reads the logits; the greedy
    action (inference) is their argmax, the same rule the policy service applies to the exported network.
    """

    def setup(self) -> None:
        self.qnet = build_qnet(self)
        self.vf = nn.Linear(self.qnet.config.trunk, 1)

    def get_initial_state(self) -> dict:
        return {}

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.qnet(batch[Columns.OBS])}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        h = trunk_features(self.qnet, batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: scores_from_trunk(self.qnet, h), Columns.EMBEDDINGS: h}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = trunk_features(self.qnet, batch[Columns.OBS])
        return self.vf(embeddings).squeeze(-1)


class QNetworkAPPOModule(QNetworkPolicyModule, TargetNetworkAPI):
    """APPO RLModule: :class:`QNetworkPolicyModule` plus the old policy (a target copy of ``qnet``)."""

    def make_target_networks(self) -> None:
        self.old_qnet = make_target_network(self.qnet)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.qnet, self.old_qnet)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: self.old_qnet(batch[Columns.OBS])}

    def get_non_inference_attributes(self) -> list[str]:
        return ["old_qnet"]
