"""The state layout: every component of the state vector, its shape, and its slice, from the config.

Defined once and used by the env, the CNN, the learner and the policy server alike. Holds no data:
the arrays live in ``market.timeline`` and are read by ``market.features.gather``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from .config import StrictModel
from .indicator_registry import NameView
from .indicators import state_feature_names
from .timeframes import TIMEFRAME_MS

#: Per-tick features, in this order (the first two are prices, relative to the reference close at t; the
#: last is the tick's age at t, computed at gather time).
TICK_FEATURES: tuple[str, ...] = (
    "price_rel",
    "vwap_20_rel",
    "log_qty",
    "side",
    "log_dt_ms",
    "log_return_bp",
    "log_intensity_1s",
    "signed_log_qty",
    "buy_ratio_20",
    "age_s",
)
#: The bar features every bar has, before the indicators' (the first four are prices, normalised to the
#: reference close at t).
BAR_OHLCV_FEATURES: tuple[str, ...] = ("open_rel", "high_rel", "low_rel", "close_rel", "log_volume")
#: Per-bar features, in this order: :data:`BAR_OHLCV_FEATURES`, then each registered indicator's feature
#: columns (``market.indicator_registry``); a view that follows the registry.
BAR_FEATURES: Sequence[str] = NameView(lambda: BAR_OHLCV_FEATURES + state_feature_names())
#: Agent features the env supplies for s and s' (the learner's replay stores exactly these).
AGENT_FEATURES: tuple[str, ...] = (
    "position",
    "entry_rel",
    "unrealised_pnl",
    "log_time_in_trade",
    "episode_log_return",
    "fees_paid_frac",
)

Profile = Literal["default", "kline-1m", "tiny"]

#: The two market roles of a state: the market traded, and the reference market read beside it.
TRADED = "traded"
REFERENCE = "reference"
MARKETS: tuple[str, str] = (TRADED, REFERENCE)
#: State-config keys renamed to roles: old key -> new key. Old configs and checkpoints are read through it.
LEGACY_STATE_KEYS: dict[str, str] = {"eth_timeframes": "traded_timeframes", "btc_window": "reference_window"}
#: Component-name prefixes renamed to roles: old prefix -> new prefix (``eth_1m`` -> ``traded_1m``).
LEGACY_COMPONENT_PREFIXES: dict[str, str] = {"eth_": f"{TRADED}_", "btc_": f"{REFERENCE}_"}

#: Component roles. Windows: ``ticks`` and ``bars``. Vectors: ``cnn_hidden`` and ``cnn_pred`` (the CNN's
#: own outputs, filled by the caller of ``gather``), ``structure`` (Williams market structure) and ``regime``.
ROLE_TICKS = "ticks"
ROLE_BARS = "bars"
ROLE_CNN_HIDDEN = "cnn_hidden"
ROLE_CNN_PRED = "cnn_pred"
ROLE_STRUCTURE = "structure"
ROLE_REGIME = "regime"
ROLE_AGENT = "agent"
ROLES: tuple[str, ...] = (
    ROLE_TICKS,
    ROLE_BARS,
    ROLE_CNN_HIDDEN,
    ROLE_CNN_PRED,
    ROLE_STRUCTURE,
    ROLE_REGIME,
    ROLE_AGENT,
)
#: The CNN's own parts: supplied to ``gather`` by its caller, never stored in the timeline.
CNN_ROLES: tuple[str, ...] = (ROLE_CNN_HIDDEN, ROLE_CNN_PRED)
#: Vector roles computed from market data alone (the timeline holds them; the CNN reads them).
MARKET_VECTOR_ROLES: tuple[str, ...] = (ROLE_STRUCTURE, ROLE_REGIME)


@dataclass(frozen=True, slots=True)
class VectorComponent:
    """One vector component of the state, defined once: its name, its role, and where its size comes from.

    Attributes
    ----------
    name : str
        Component name in the layout.
    role : str
        One of :data:`ROLES` (``structure``, ``regime``, ``cnn_hidden``, ``cnn_pred``).
    size_key : str
        The :class:`StateConfig` field holding its size (0 masks it).
    masked_why : str
        Why it is missing when its size is 0.
    """

    name: str
    role: str
    size_key: str
    masked_why: str


#: The vector components in state order; :func:`build_layout` iterates it.
VECTOR_COMPONENTS: tuple[VectorComponent, ...] = (
    VectorComponent("cnn_hidden", ROLE_CNN_HIDDEN, "cnn_hidden", "CNN disabled"),
    VectorComponent("cnn_pred", ROLE_CNN_PRED, "cnn_predictions", "CNN disabled"),
    VectorComponent("williams", ROLE_STRUCTURE, "williams", "Williams structure disabled"),
    VectorComponent("regime", ROLE_REGIME, "regime", "regime features disabled"),
)


class StateConfig(StrictModel):
    """Sizes of the state. A profile fills every size it is not given; ``0`` removes a component.

    ``default`` steps every second where ticks exist; ``kline-1m`` steps every minute on kline-only history
    (no ticks, no 1s bars); ``tiny`` is for tests (short windows, small CNN part).
    """

    profile: Profile = "default"
    base_timeframe: str | None = None
    tick_window: int | None = Field(None, ge=0, le=10_000)
    bar_window: int | None = Field(None, ge=1, le=10_000)
    traded_timeframes: tuple[str, ...] | None = None
    reference_window: int | None = Field(None, ge=0, le=10_000)
    cnn_hidden: int | None = Field(None, ge=0, le=8192)
    cnn_predictions: int | None = Field(None, ge=0, le=1024)
    williams: int | None = Field(None, ge=0)
    regime: int | None = Field(None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        """Map the keys of configs written before the roles rename, with a deprecation warning."""
        if not isinstance(data, dict):
            return data
        old = [key for key in LEGACY_STATE_KEYS if key in data]
        if not old:
            return data
        data = dict(data)
        for key in old:
            new = LEGACY_STATE_KEYS[key]
            if new in data:
                raise ValueError(f"state: both {key!r} (the old name) and {new!r} are given; keep only {new!r}")
            warnings.warn(
                f"state.{key} is deprecated: it is now state.{new} (the same value); rename the key in the config",
                DeprecationWarning,
                stacklevel=2,
            )
            data[new] = data.pop(key)
        return data

    @model_validator(mode="after")
    def _fill_from_profile(self) -> StateConfig:
        preset = PROFILES[self.profile]
        for key, value in preset.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.base_timeframe not in TIMEFRAME_MS:
            raise ValueError(f"base_timeframe: unknown timeframe {self.base_timeframe!r}")
        unknown = [tf for tf in self.traded_timeframes if tf not in TIMEFRAME_MS]
        if unknown:
            raise ValueError(f"traded_timeframes: unknown timeframe(s) {unknown}")
        too_fine = [tf for tf in self.traded_timeframes if TIMEFRAME_MS[tf] < TIMEFRAME_MS[self.base_timeframe]]
        if too_fine:
            raise ValueError(f"traded_timeframes {too_fine} are finer than base_timeframe {self.base_timeframe!r}")
        if self.williams not in (0, 250):
            raise ValueError(f"williams must be 0 or 250 (the fixed Williams vector; got {self.williams})")
        if self.regime not in (0, 20):
            raise ValueError(f"regime must be 0 or 20 (the fixed regime vector; got {self.regime})")
        return self


PROFILES: dict[str, dict[str, object]] = {
    "default": {
        "base_timeframe": "1s",
        "tick_window": 300,
        "bar_window": 300,
        "traded_timeframes": ("1s", "1m", "1h", "1d"),
        "reference_window": 300,
        "cnn_hidden": 512,
        "cnn_predictions": 16,
        "williams": 250,
        "regime": 20,
    },
    "kline-1m": {
        "base_timeframe": "1m",
        "tick_window": 0,
        "bar_window": 300,
        "traded_timeframes": ("1m", "1h", "1d"),
        "reference_window": 300,
        "cnn_hidden": 512,
        "cnn_predictions": 16,
        "williams": 250,
        "regime": 20,
    },
    "tiny": {
        "base_timeframe": "1m",
        "tick_window": 0,
        "bar_window": 16,
        "traded_timeframes": ("1m", "1h"),
        "reference_window": 16,
        "cnn_hidden": 16,
        "cnn_predictions": 16,
        "williams": 250,
        "regime": 20,
    },
}


@dataclass(frozen=True, slots=True)
class Component:
    """One named part of the state: a window of ``rows`` steps x ``features`` or a vector of ``features``.

    A window sits in the flat state feature-major (``features x rows``: channels x time, oldest first,
    the forming bar last), the order a 1-D convolution reads.
    """

    name: str
    kind: Literal["window", "vector", "agent"]
    rows: int
    features: int
    offset: int
    #: What the component is (:data:`ROLES`); code selects components by role, never by name.
    role: str = ""
    #: For a window, whose data it holds (``"traded"`` or ``"reference"``) and its timeframe (``"ticks"`` for
    #: the tick window); empty for vectors.
    market: str = ""
    timeframe: str = ""

    @property
    def market_input(self) -> bool:
        """Whether the component is made from market data alone (what the CNN reads): windows, and vectors
        whose role is in :data:`MARKET_VECTOR_ROLES`."""
        return self.kind == "window" or self.role in MARKET_VECTOR_ROLES

    @property
    def size(self) -> int:
        """Number of floats this component takes in the state."""
        return self.rows * self.features

    @property
    def slice(self) -> slice:
        """Where this component sits in the flat state vector."""
        return slice(self.offset, self.offset + self.size)


@dataclass(frozen=True, slots=True)
class StateLayout:
    """The ordered components of the state, their slices, and what the profile masks out (with why)."""

    config: StateConfig
    components: tuple[Component, ...]
    masked: tuple[tuple[str, str], ...]

    @property
    def size(self) -> int:
        """Total floats in one state."""
        return sum(c.size for c in self.components)

    def __getitem__(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"no component {name!r} in this layout (have {[c.name for c in self.components]})")

    def __contains__(self, name: str) -> bool:
        return any(c.name == name for c in self.components)

    def by_role(self, *roles: str) -> tuple[Component, ...]:
        """The components of these roles, in state order."""
        return tuple(c for c in self.components if c.role in roles)

    def component_at(self, column: int) -> str:
        """Name of the component holding state column ``column`` (``"?"`` outside the state)."""
        for comp in self.components:
            if comp.offset <= column < comp.offset + comp.size:
                return comp.name
        return "?"

    @property
    def names(self) -> tuple[str, ...]:
        """Component names in state order."""
        return tuple(c.name for c in self.components)

    def describe(self) -> str:
        """A human-readable table of the layout, masked parts included."""
        lines = [f"state layout ({self.config.profile}, base {self.config.base_timeframe}): {self.size:,} floats"]
        for c in self.components:
            shape = f"{c.rows} x {c.features}" if c.kind == "window" else f"{c.features}"
            lines.append(f"  {c.name:<14} {shape:>10}  [{c.offset:>6}:{c.offset + c.size:>6})")
        for name, why in self.masked:
            lines.append(f"  {name:<14} {'masked':>10}  ({why})")
        return "\n".join(lines)


def bar_component_name(role: str, timeframe: str) -> str:
    """Name of a bar window component, e.g. ``traded_1m`` or ``reference_1s``."""
    return f"{role}_{timeframe}"


def tick_component_name(role: str = TRADED) -> str:
    """Name of the tick window component (``traded_ticks``)."""
    return f"{role}_ticks"


def upgrade_component_name(name: str) -> str:
    """The current name of a component named before the roles rename (``eth_1m`` -> ``traded_1m``).

    Names already current are returned as they are. Used to read old checkpoints, whose per-component
    weights and statistics are keyed by component name (a dotted key such as ``encoders.eth_1m.net.0.weight``
    is upgraded segment by segment).
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        for old, new in LEGACY_COMPONENT_PREFIXES.items():
            if part.startswith(old):
                parts[i] = new + part[len(old) :]
                break
    return ".".join(parts)


def build_layout(config: StateConfig) -> StateLayout:
    """Build the layout of ``config``.

    Order: traded-market ticks, traded bars by increasing timeframe, reference bars (base timeframe), CNN
    hidden, CNN predictions, Williams structure, regime, agent. A component of size 0 is masked (listed, not stored).
    """
    components: list[Component] = []
    masked: list[tuple[str, str]] = []

    def add(name: str, kind: str, rows: int, features: int, role: str, market: str = "", timeframe: str = "") -> None:
        """Append a component right after the last one."""
        offset = components[-1].offset + components[-1].size if components else 0
        components.append(Component(name, kind, rows, features, offset, role, market, timeframe))  # type: ignore[arg-type]

    if config.tick_window:
        add(tick_component_name(), "window", config.tick_window, len(TICK_FEATURES), ROLE_TICKS, TRADED, "ticks")
    else:
        masked.append((tick_component_name(), "no tick data in this profile"))
    for tf in ("1s", "1m", "1h", "1d"):
        name = bar_component_name(TRADED, tf)
        if tf in config.traded_timeframes:
            add(name, "window", config.bar_window, len(BAR_FEATURES), ROLE_BARS, TRADED, tf)
        else:
            masked.append((name, f"timeframe not in profile {config.profile!r}"))
    if config.reference_window:
        tf = str(config.base_timeframe)
        name = bar_component_name(REFERENCE, tf)
        add(name, "window", config.reference_window, len(BAR_FEATURES), ROLE_BARS, REFERENCE, tf)
    else:
        masked.append((REFERENCE, "reference market disabled"))
    for vector in VECTOR_COMPONENTS:
        size = int(getattr(config, vector.size_key))
        if size:
            add(vector.name, "vector", 1, size, vector.role)
        else:
            masked.append((vector.name, vector.masked_why))
    add("agent", "agent", 1, len(AGENT_FEATURES), ROLE_AGENT)
    return StateLayout(config=config, components=tuple(components), masked=tuple(masked))
