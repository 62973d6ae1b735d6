"""The project's Q-network (``policies.dqn.QNetwork``) as an RLlib RLModule, for the RLlib peer benchmark.

Wraps the very torch module the single-process trainer trains, so RLlib's DQN and ours run the same network;
adds only what RLlib's DQN learner asks of a module (Q-values, a target copy, epsilon-greedy exploration).
Benchmarks only: product code never imports it.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_NEXT_PREDS, QF_PREDS, QF_TARGET_NEXT_PREDS
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.schedules.scheduler import Scheduler
from torch import nn

from market.errors import ConfigError
from market.layout import StateConfig, build_layout
from policies.dqn import N_ACTIONS, QNetwork, QNetworkConfig

#: ``model_config`` keys the module reads (RLlib's DQN adds ``double_q``, ``dueling``, ``epsilon`` itself).
STATE_PROFILE_KEY = "state_profile"
QNET_KEY = "qnet"


class QNetworkRLModule(TorchRLModule, QNetAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """RLlib DQN RLModule around :class:`policies.dqn.QNetwork` (dueling inside the network itself).

    ``model_config`` carries ``state_profile`` (the ``StateConfig`` profile whose layout the network is built
    on; the observation space must have that layout's size), ``qnet`` (a ``QNetworkConfig`` as a dict),
    ``double_q`` and ``epsilon`` (a constant or RLlib's ``[[t, value], ...]`` schedule over env steps).
    Exploration is epsilon-greedy with uniform random actions, as ``policies.acting.act`` does.
    """

    def setup(self) -> None:
        cfg = self.model_config or {}
        for key in (STATE_PROFILE_KEY, QNET_KEY, "double_q", "epsilon"):
            if key not in cfg:
                raise ConfigError(f"QNetworkRLModule: model_config lacks {key!r} (has {sorted(cfg)})")
        layout = build_layout(StateConfig(profile=cfg[STATE_PROFILE_KEY]))
        shape = tuple(self.observation_space.shape or ())
        if shape != (layout.size,):
            raise ConfigError(
                f"QNetworkRLModule: observation space shape {shape} does not match the "
                f"{cfg[STATE_PROFILE_KEY]!r} layout's size ({layout.size},)"
            )
        n = getattr(self.action_space, "n", None)
        if n != N_ACTIONS:
            raise ConfigError(f"QNetworkRLModule: action space {self.action_space} is not Discrete({N_ACTIONS})")
        self.qnet = QNetwork(layout, QNetworkConfig.model_validate(cfg[QNET_KEY]))
        self.uses_double_q = bool(cfg["double_q"])
        self.epsilon_schedule = Scheduler(fixed_value_or_schedule=cfg["epsilon"], framework="torch")

    # -- QNetAPI / TargetNetworkAPI / InferenceOnlyAPI -----------------------------------------------------
    def compute_q_values(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"qf_preds": Q[B, 3]}`` of the online network."""
        return {QF_PREDS: self.qnet(batch[Columns.OBS])}

    def make_target_networks(self) -> None:
        self._target_qnet = make_target_network(self.qnet)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.qnet, self._target_qnet)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {QF_PREDS: self._target_qnet(batch[Columns.OBS])}

    def get_non_inference_attributes(self) -> list[str]:
        return ["_target_qnet"]

    def get_initial_state(self) -> dict:
        return {}

    # -- forward passes --------------------------------------------------------------------------------------
    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self.qnet(batch[Columns.OBS]).argmax(dim=-1)}

    def _forward_exploration(self, batch: dict[str, Any], t: int = 0, **kwargs: Any) -> dict[str, Any]:
        with torch.no_grad():
            greedy = self.qnet(batch[Columns.OBS]).argmax(dim=-1)
        self.epsilon_schedule.update(t)
        epsilon = self.epsilon_schedule.get_current_value()
        explore = torch.rand(greedy.shape, device=greedy.device) < epsilon
        random = torch.randint(0, N_ACTIONS, greedy.shape, device=greedy.device)
        return {Columns.ACTIONS: torch.where(explore, random, greedy)}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Q(s) (and Q(s') of the online network for double DQN, in the same pass) and target Q(s')."""
        if self.inference_only:
            raise RuntimeError("QNetworkRLModule: an inference-only module cannot be trained")
        obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        out: dict[str, Any] = {}
        if self.uses_double_q:
            out[QF_PREDS], out[QF_NEXT_PREDS] = torch.chunk(self.qnet(torch.cat([obs, next_obs])), 2, dim=0)
        else:
            out[QF_PREDS] = self.qnet(obs)
        out[QF_TARGET_NEXT_PREDS] = self._target_qnet(next_obs)
        return out
