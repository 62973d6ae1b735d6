"""Start the one live state of the traded symbol on the running Ray (``rayscalp paper`` and ``rayscalp demo``).

Only starts the actor with the experiment's symbols, layout and indicators; what it computes is ``actors.live_state``.
"""

from __future__ import annotations

from typing import Any

from .config import ExperimentConfig


def start_live_state(config: ExperimentConfig, *, detached: bool, **options: Any) -> Any:
    """The live-state actor (the one that exists under its name, else a new one) reading the stream actor.

    Parameters
    ----------
    config : ExperimentConfig
        Symbols, state layout and indicators of the live state (the policy's).
    detached : bool
        Outlive the driver (``rayscalp paper``); else the actor ends with it, and the caller must keep the
        handle (a named actor whose last handle goes out of scope is stopped).
    **options
        Further :class:`actors.live_state.LiveStateConfig` fields (``cnn_app``, ``warm_start_from_stream``, ...).
    """
    from actors.live_state import LIVE_STATE_ACTOR, LiveStateActor, LiveStateConfig
    from actors.paper import PAPER_ACTOR

    from .stream_runner import STREAM_ACTOR

    live_config = LiveStateConfig(
        symbols=config.symbols,
        state=config.state,
        indicators=config.indicators,
        stream_actor=STREAM_ACTOR,
        paper_actor=PAPER_ACTOR,
        **options,
    )
    lifetime = {"lifetime": "detached"} if detached else {}
    return LiveStateActor.options(name=LIVE_STATE_ACTOR, get_if_exists=True, **lifetime).remote(live_config)
