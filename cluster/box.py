"""The cluster in a box: the node types of ``ray_cluster.yaml`` (a CPU head, a learner node carrying its custom
resource, spot rollout nodes) on one machine, each node its own ``ray start --block`` with its own raylet,
temp dir and ports, sized for a small machine. ``rayscalp box up|status|down`` or ``python -m cluster.box``.

Starts and stops only the processes it launched, found by their node's temp dir (never ``ray stop``, which
stops every Ray on the machine); places nothing itself: where actors land is decided by what they ask for
and what each node offers, as on the cloud.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from pydantic import Field, ValidationError

from market.config import StrictModel
from market.errors import ConfigError, RayscalpError

REPO = Path(__file__).resolve().parents[1]
RAY_CLUSTER_YAML = REPO / "ray_cluster.yaml"
VENV_BIN = Path(sys.executable).parent
NODE_LABEL = "rayscalp/box-node"
"""Node label naming the box node (``head``, ``learner-1``, ``rollout-2``, ...) a Ray node is."""
GROUP_LABEL = "ray.io/node-group"
"""Ray's own label of a node's type (the autoscaler sets it on cloud nodes; the box sets it the same way)."""
DEFAULT_DIR = Path("/tmp/rayscalp-box")
"""Where ``rayscalp box up`` keeps its nodes' temp dirs and its state (short: unix socket paths are limited)."""
STATE_FILE = "box.json"


class BoxError(RayscalpError):
    """A box node did not start, or a box could not be found or reached."""


# --------------------------------------------------------------------------------------------- node types


@dataclass(frozen=True, slots=True)
class NodeType:
    """One node type of ``ray_cluster.yaml``: its name, its role, the custom resources it offers, spot or not."""

    name: str
    role: str
    resources: tuple[tuple[str, float], ...]
    spot: bool

    @property
    def resource_dict(self) -> dict[str, float]:
        """The custom resources as a dict (what ``ray start --resources`` takes)."""
        return dict(self.resources)


def read_node_types(path: Path = RAY_CLUSTER_YAML) -> dict[str, NodeType]:
    """The node types of a ``ray up`` config, by role: ``head``, ``learner`` (the type offering the ``learner``
    resource) and ``rollout`` (the other worker type).

    Raises
    ------
    ConfigError
        When the file is missing or lacks a head type, a learner type or a rollout type (naming the file).
    """
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the cluster config: {exc}") from None
    types = (doc or {}).get("available_node_types") or {}
    head_name = (doc or {}).get("head_node_type")
    if head_name not in types:
        raise ConfigError(f"{path}: head_node_type {head_name!r} is not among available_node_types {sorted(types)}")
    found: dict[str, NodeType] = {}
    for name, spec in types.items():
        resources = {str(k): float(v) for k, v in ((spec or {}).get("resources") or {}).items()}
        market = (((spec or {}).get("node_config") or {}).get("InstanceMarketOptions") or {}).get("MarketType")
        role = "head" if name == head_name else "learner" if "learner" in resources else "rollout"
        if role in found:
            raise ConfigError(f"{path}: node types {found[role].name!r} and {name!r} both have the role {role!r}")
        found[role] = NodeType(name, role, tuple(sorted(resources.items())), spot=market == "spot")
    missing = {"head", "learner", "rollout"} - set(found)
    if missing:
        raise ConfigError(f"{path}: no node type for {sorted(missing)} (the learner type offers 'learner')")
    return found


class BoxConfig(StrictModel):
    """Sizes of the box's nodes (CPUs are logical and whole numbers, as Ray requires).

    The default fits two cores: the head runs no task (the stream, the ingestion and a job's driver ask for
    no CPU), the learner node one CPU for the learner, and each rollout node one CPU for the workers
    (two workers of ``apex.worker_num_cpus=0.5`` fit one node, so a survivor can take a lost node's worker).
    """

    head_cpus: int = Field(0, ge=0, le=64)
    learner_cpus: int = Field(1, ge=1, le=64)
    rollout_cpus: int = Field(1, ge=1, le=64)
    rollout_nodes: int = Field(2, ge=1, le=16)
    object_store_mb: int = Field(200, ge=80, le=65_536)
    health_check_period_ms: int = Field(1_000, ge=100, le=60_000)
    """How often the GCS checks each raylet (a lost node is declared dead after a few missed checks)."""
    ray_cluster_yaml: Path = RAY_CLUSTER_YAML
    one_node: bool = False
    """The same CPUs and the learner resource on the head alone (the one-node peer of a measurement)."""


# --------------------------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` (an IPv4 or IPv6 address or a name) that was free a moment ago."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _psutil() -> Any:
    import importlib

    import ray  # noqa: F401 - importing ray puts its bundled psutil (ray/thirdparty_files) on sys.path

    return importlib.import_module("psutil")


@dataclass(frozen=True, slots=True)
class BoxNode:
    """One started node: its box name, type, temp dir, the pid of its ``ray start --block`` and its log."""

    name: str
    node_type: str
    role: str
    temp_dir: Path
    pid: int
    log_path: Path
    num_cpus: int
    resources: dict[str, float] = field(default_factory=dict)

    def processes(self) -> list[Any]:
        """Every live process of this node: the ``ray start`` process's tree, and any process whose command
        line names this node's temp dir (Ray's workers and agents do, even once reparented)."""
        psutil = _psutil()
        found: dict[int, Any] = {}
        with contextlib.suppress(psutil.Error, ValueError):  # ValueError: no pid of its own (a removed node)
            root = psutil.Process(self.pid)
            if _is_ours(root, self.temp_dir):
                for proc in [root, *root.children(recursive=True)]:
                    found[proc.pid] = proc
        marker = f"{self.temp_dir}/"
        flag = f"--temp-dir={self.temp_dir}"
        for proc in psutil.process_iter(["cmdline"]):
            args = proc.info.get("cmdline") or []
            if any(marker in a or a == flag for a in args):
                found.setdefault(proc.pid, proc)
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        found.setdefault(child.pid, child)
        return [p for p in found.values() if _alive(p)]


def _is_ours(proc: Any, temp_dir: Path) -> bool:
    """Whether ``proc`` is still the ``ray start`` of ``temp_dir`` (a recycled pid is someone else's)."""
    try:
        return any(a == f"--temp-dir={temp_dir}" for a in proc.cmdline())
    except Exception:
        return False


def _alive(proc: Any) -> bool:
    psutil = _psutil()
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (not a zombie)."""
    psutil = _psutil()
    try:
        return _alive(psutil.Process(pid))
    except psutil.Error:
        return False


def _terminate(procs: list[Any], grace_s: float) -> None:
    """SIGTERM then, after ``grace_s``, SIGKILL (``grace_s`` 0: SIGKILL at once, as a preempted node)."""
    psutil = _psutil()
    first = signal.SIGTERM if grace_s > 0 else signal.SIGKILL
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(first)
    _, alive = psutil.wait_procs(procs, timeout=max(grace_s, 0.5))
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def _env(node_type: NodeType, name: str, config: BoxConfig, head: bool) -> dict[str, str]:
    env = dict(os.environ)
    # A driver's RAY_ADDRESS must not leak into a node; nodes run without token auth and usage reporting.
    env.pop("RAY_ADDRESS", None)
    env.update(
        {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            # Two shared cores: torch's OpenMP threads spin against each other (see tests/conftest.py).
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            # The labels the autoscaler gives a cloud node of this type, and the box's own name of the node.
            "RAY_NODE_TYPE_NAME": node_type.name,
            "RAY_OVERRIDE_LABELS": json.dumps({NODE_LABEL: name}),
        }
    )
    if node_type.spot:
        env["RAY_NODE_MARKET_TYPE"] = "spot"
    else:
        env.pop("RAY_NODE_MARKET_TYPE", None)
    if head:
        env["RAY_health_check_period_ms"] = str(config.health_check_period_ms)
    return env


# --------------------------------------------------------------------------------------------- the box


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One Ray node as the state API reports it, with the box's name of it.

    Attributes
    ----------
    name : str
        The box's name of the node (its ``rayscalp/box-node`` label: ``head``, ``rollout-2``, ...), ``?`` if unlabelled.
    node_type : str
        Its ``ray_cluster.yaml`` node type (Ray's ``ray.io/node-group`` label), ``?`` if unlabelled.
    node_id, state : str
        Ray's node id, and ``ALIVE`` or ``DEAD``.
    is_head : bool
    cpus : float
        Logical CPUs it offers.
    resources : dict
        Its custom resources (CPU, GPU, memory and Ray's own ``node:`` resources left out).
    spot : bool
        Whether its ``ray.io/market-type`` label says spot.
    """

    name: str
    node_type: str
    node_id: str
    state: str
    is_head: bool
    cpus: float
    resources: dict[str, float]
    spot: bool


class HeadAddresses:
    """The addresses of a Ray head on 127.0.0.1, from its GCS and dashboard ports (the box's head, or any head
    started on this machine with ``ray start --head``)."""

    gcs_port: int
    dashboard_port: int | None

    @property
    def address(self) -> str:
        """The GCS address a driver joins (``RAY_ADDRESS`` / ``ray.init(address=...)``)."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """The job server and state API (``rayscalp submit --address``)."""
        return f"http://127.0.0.1:{self.dashboard_port}"


class ClusterBox(HeadAddresses):
    """A running box: its head's addresses and its nodes. Built by :func:`start_box` or :meth:`load`.

    Parameters
    ----------
    root : Path
        The box's folder: one temp dir per node and ``box.json``.
    gcs_port, dashboard_port : int
    config : BoxConfig
    nodes : list of BoxNode
    """

    def __init__(
        self, root: Path, gcs_port: int, dashboard_port: int, config: BoxConfig, nodes: list[BoxNode] | None = None
    ) -> None:
        self.root = Path(root)
        self.gcs_port = gcs_port
        self.dashboard_port = dashboard_port
        self.config = config
        self.types = read_node_types(config.ray_cluster_yaml)
        self.nodes: dict[str, BoxNode] = {n.name: n for n in nodes or []}
        self.removed: list[str] = []

    # ------------------------------------------------------------------------------------------ drivers
    def driver_env(self) -> dict[str, str]:
        """This process's environment for a driver joining the box: its ``RAY_ADDRESS``, no token auth, no usage
        reporting, one OpenMP thread unless set (two shared cores)."""
        return {
            **os.environ,
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }

    def start_driver(self, args: list[str], module: str = "cluster.train") -> subprocess.Popen[str]:
        """``python -m <module> ARGS`` from the repo, joined to the box; stdout and stderr together, as text lines."""
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=self.driver_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    # ------------------------------------------------------------------------------------------ nodes
    def _next_name(self, role: str) -> str:
        if role == "head":
            return "head"
        used = {n for n in [*self.nodes, *self.removed] if n.startswith(f"{role}-")}
        i = 1
        while f"{role}-{i}" in used:
            i += 1
        return f"{role}-{i}"

    def _launch(self, role: str) -> BoxNode:
        node_type = self.types[role]
        name = self._next_name(role)
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=False)
        cfg = self.config
        cpus = {"head": cfg.head_cpus, "learner": cfg.learner_cpus}.get(role, cfg.rollout_cpus)
        resources = node_type.resource_dict
        head = role == "head"
        if head and cfg.one_node:
            # Everything on one raylet: the CPUs of every node of the box and the custom resources of each type.
            cpus = cfg.head_cpus + cfg.learner_cpus + cfg.rollout_cpus * cfg.rollout_nodes
            for other in self.types.values():
                resources = {**resources, **other.resource_dict}
        cmd = [
            str(VENV_BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            f"--object-store-memory={self.config.object_store_mb * 1024 * 1024}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
        ]
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        if head:
            cmd += [
                "--head",
                f"--port={self.gcs_port}",
                f"--ray-client-server-port={free_port()}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            cmd.append(f"--address={self.address}")
        log_path = self.root / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_env(node_type, name, self.config, head),
                start_new_session=True,
            )
        node = BoxNode(name, node_type.name, role, temp_dir, process.pid, log_path, cpus, resources)
        self.nodes[name] = node
        return node

    def add_node(self, role: str = "rollout", *, wait: bool = True, timeout_s: float = 120.0) -> BoxNode:
        """Start one more node of ``role`` (``rollout`` or ``learner``), as the autoscaler adds one on demand.

        A node whose ``ray start`` exits while joining is started once more (under the next name).

        Raises
        ------
        BoxError
            When it is not alive in the cluster within ``timeout_s`` (its ``ray start`` log is quoted).
        """
        if role not in ("rollout", "learner"):
            raise BoxError(f"box: cannot add a node of role {role!r} (rollout or learner)")
        deadline = time.monotonic() + timeout_s
        for attempt in range(2):
            node = self._launch(role)
            if not wait:
                break
            try:
                self.wait_alive([node.name], max(10.0, deadline - time.monotonic()))
                break
            except BoxError:
                # On a loaded machine a joining `ray start` can give up on a GCS call ("Deadline Exceeded") and
                # exit; such a node is started once more under a new name. A node still running is not retried.
                if attempt or _pid_alive(node.pid):
                    raise
                self.remove_node(node.name)
        self.save()
        return node

    def remove_node(self, name: str, *, graceful: bool = False) -> list[int]:
        """Take a node away: SIGKILL every process of it at once (a spot preemption), or SIGTERM first when
        ``graceful``. Its temp dir stays until :meth:`down`. Returns the pids that were ended.

        Raises
        ------
        BoxError
            For the head (the box ends with :meth:`down`) or a name the box does not have.
        """
        if name not in self.nodes:
            raise BoxError(f"box: no node {name!r} (nodes: {sorted(self.nodes)})")
        if self.nodes[name].role == "head":
            raise BoxError("box: the head is not removed on its own; use down()")
        node = self.nodes.pop(name)
        self.removed.append(name)
        procs = node.processes()
        _terminate(procs, grace_s=5.0 if graceful else 0.0)
        self.save()
        return [p.pid for p in procs]

    def node_rows(self, timeout_s: float = 10.0) -> list[NodeRow]:
        """Every node the cluster knows (alive and dead), from Ray's state API."""
        from ray.util.state import list_nodes

        try:
            states = list_nodes(address=self.dashboard_url, detail=True, timeout=int(max(1, timeout_s)), limit=1000)
        except Exception as exc:  # the state API raises RayStateApiException, ConnectionError, ...
            raise BoxError(f"box: the state API at {self.dashboard_url} did not answer: {exc}") from exc
        rows = []
        for s in states:
            labels = s.labels or {}
            resources = dict(s.resources_total or {})
            custom = {
                k: v
                for k, v in resources.items()
                if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith("node:")
            }
            rows.append(
                NodeRow(
                    name=labels.get(NODE_LABEL, "?"),
                    node_type=labels.get(GROUP_LABEL, "?"),
                    node_id=s.node_id,
                    state=s.state,
                    is_head=bool(s.is_head_node),
                    cpus=float(resources.get("CPU", 0.0)),
                    resources=custom,
                    spot=labels.get("ray.io/market-type", "").lower() == "spot",
                )
            )
        return sorted(rows, key=lambda r: (r.state != "ALIVE", not r.is_head, r.name))

    def wait_alive(self, names: list[str], timeout_s: float = 120.0) -> list[NodeRow]:
        """Wait until every node of ``names`` is ALIVE in the cluster; return the node table then.

        Raises
        ------
        BoxError
            When a node's ``ray start`` exited, or ``timeout_s`` passed (quoting the node's log).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            for name in names:
                node = self.nodes[name]
                if not _pid_alive(node.pid):
                    raise BoxError(f"box: node {name} exited while starting:\n{_tail(node.log_path)}")
            with contextlib.suppress(BoxError):
                rows = self.node_rows(timeout_s=5)
                alive = {r.name for r in rows if r.state == "ALIVE"}
                if set(names) <= alive:
                    return rows
            if time.monotonic() >= deadline:
                late = [n for n in names if n not in locals().get("alive", set())]
                raise BoxError(
                    f"box: nodes {late} not alive after {timeout_s:.0f} s:\n"
                    + "\n".join(_tail(self.nodes[n].log_path) for n in late)
                )
            time.sleep(0.5)

    # ------------------------------------------------------------------------------------------ lifetime
    def save(self) -> Path:
        """Write ``box.json`` (what ``rayscalp box status|down`` read)."""
        state = {
            "root": str(self.root),
            "gcs_port": self.gcs_port,
            "dashboard_port": self.dashboard_port,
            "config": self.config.model_dump(mode="json"),
            "nodes": [
                {**asdict(n), "temp_dir": str(n.temp_dir), "log_path": str(n.log_path)} for n in self.nodes.values()
            ],
            "removed": self.removed,
        }
        path = self.root / STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        return path

    @classmethod
    def load(cls, root: Path = DEFAULT_DIR) -> ClusterBox:
        """The box whose ``box.json`` is in ``root``.

        Raises
        ------
        BoxError
            When there is none or it is not readable.
        """
        path = Path(root) / STATE_FILE
        try:
            state = json.loads(path.read_text())
            nodes = [
                BoxNode(**{**n, "temp_dir": Path(n["temp_dir"]), "log_path": Path(n["log_path"])})
                for n in state["nodes"]
            ]
            box = cls(
                Path(state["root"]),
                int(state["gcs_port"]),
                int(state["dashboard_port"]),
                BoxConfig.model_validate(state["config"]),
                nodes,
            )
        except FileNotFoundError:
            raise BoxError(f"box: no box in {root} (no {STATE_FILE}); start one with `rayscalp box up`") from None
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            raise BoxError(f"box: {path} is not a box state file: {exc}") from None
        box.removed = list(state.get("removed", []))
        return box

    def __enter__(self) -> ClusterBox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """``with start_box() as box:`` takes the box down when the block ends, however it ends."""
        self.down()

    def pids(self) -> list[int]:
        """Pids of every live process of the box's nodes."""
        return sorted({p.pid for node in self.nodes.values() for p in node.processes()})

    def down(self, remove_dir: bool = True) -> None:
        """End every process of every node (workers and the learner node first, the head last) and remove
        the box's folder."""
        order = sorted(self.nodes.values(), key=lambda n: n.role == "head")
        for node in order:
            _terminate(node.processes(), grace_s=5.0)
        # Anything left under any node's temp dir, removed ones included.
        for name in self.removed:
            ghost = BoxNode(name, "", "", self.root / name, -1, self.root / f"{name}.log", 0)
            _terminate(ghost.processes(), grace_s=0.0)
        self.nodes.clear()
        if remove_dir:
            shutil.rmtree(self.root, ignore_errors=True)


def _tail(path: Path, chars: int = 2500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"<no log at {path}>"


def _wait_head(box: ClusterBox, timeout_s: float) -> None:
    head = box.nodes["head"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(head.pid):
            raise BoxError(f"box: the head's ray start exited:\n{_tail(head.log_path)}")
        try:
            with urllib.request.urlopen(f"{box.dashboard_url}/api/version", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise BoxError(f"box: the head did not answer within {timeout_s:.0f} s:\n{_tail(head.log_path)}")


def start_box(config: BoxConfig | None = None, root: Path | None = None, *, timeout_s: float = 180.0) -> ClusterBox:
    """Start a head, one learner node and ``config.rollout_nodes`` rollout nodes; return once all are alive
    (with ``config.one_node``: only the head, carrying all of their CPUs and the learner resource).

    Parameters
    ----------
    config : BoxConfig, optional
    root : Path, optional
        The box's folder (must not hold a box). Default: a new folder under ``/tmp``.
    timeout_s : float
        For the whole start; on failure (or Ctrl-C) every process started so far is ended.

    Raises
    ------
    BoxError
        When a node does not start (its log is quoted).
    """
    config = config or BoxConfig()
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="rsb-", dir="/tmp"))
    else:
        root = Path(root)
        if (root / STATE_FILE).exists():
            raise BoxError(f"box: {root} already holds a box; `rayscalp box down --dir {root}` first")
        root.mkdir(parents=True, exist_ok=True)
    if len(str(root)) > 40:
        raise BoxError(f"box: {root} is too long a folder (unix socket paths under it are limited to 107 bytes)")
    box = ClusterBox(root, free_port(), free_port(), config)
    started = time.monotonic()
    try:
        box._launch("head")
        box.save()
        _wait_head(box, timeout_s)
        names = []
        if not config.one_node:
            names = [box._launch("learner").name] + [box._launch("rollout").name for _ in range(config.rollout_nodes)]
        box.save()
        box.wait_alive(["head", *names], max(10.0, timeout_s - (time.monotonic() - started)))
    except BaseException:
        box.down()
        raise
    box.save()
    return box


# --------------------------------------------------------------------------------------------- printing


def node_table(rows: list[NodeRow]) -> Any:
    """A rich table of the nodes: box name, node type, Ray node id, state, CPUs, custom resources, spot."""
    from rich.table import Table

    table = Table(title="box nodes", title_justify="left")
    for col in ("node", "type", "node id", "state", "CPU", "resources", "market"):
        table.add_column(col)
    for r in rows:
        resources = ", ".join(f"{k}: {v:g}" for k, v in sorted(r.resources.items())) or "-"
        table.add_row(
            r.name + (" (head)" if r.is_head else ""),
            r.node_type,
            r.node_id[:12],
            r.state,
            f"{r.cpus:g}",
            resources,
            "spot" if r.spot else "on-demand",
        )
    return table


def _print_box(box: ClusterBox) -> None:
    from rich.console import Console

    console = Console(soft_wrap=True)
    console.print(f"address: {box.address}")
    console.print(f"dashboard (jobs, state API): {box.dashboard_url}")
    console.print(node_table(box.node_rows()))
    console.print(
        f"train on it:  RAY_ADDRESS={box.address} python -m cluster.train --config configs/tiny.yaml "
        "--apex-set learner.resource=learner\n"
        f"submit to it: rayscalp submit --address {box.dashboard_url} -- python -m cluster.train ..."
    )


# --------------------------------------------------------------------------------------------- CLI

DIR_OPTION = click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="The box's folder (node temp dirs, logs, box.json).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def box() -> None:
    """A multi-node Ray on this machine: the head, a learner node and rollout nodes of ray_cluster.yaml."""


@box.command("up")
@DIR_OPTION
@click.option("--rollout-nodes", type=int, default=2, show_default=True, help="Rollout nodes to start.")
@click.option("--rollout-cpus", type=int, default=1, show_default=True, help="CPUs of each rollout node.")
@click.option("--learner-cpus", type=int, default=1, show_default=True, help="CPUs of the learner node.")
@click.option("--foreground", is_flag=True, help="Stay in the foreground and take the box down on Ctrl-C.")
def box_up(root: Path, rollout_nodes: int, rollout_cpus: int, learner_cpus: int, foreground: bool) -> None:
    """Start the box and print its address and node table."""
    try:
        config = BoxConfig(rollout_nodes=rollout_nodes, rollout_cpus=rollout_cpus, learner_cpus=learner_cpus)
    except ValidationError as exc:
        raise ConfigError(f"rayscalp box up: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    started = start_box(config, root)
    _print_box(started)
    if not foreground:
        click.echo(f"stop it with: rayscalp box down --dir {started.root}")
        return
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        started.down()
        click.echo("box down")


@box.command("status")
@DIR_OPTION
def box_status(root: Path) -> None:
    """Print the box's address and node table."""
    _print_box(ClusterBox.load(root))


@box.command("add")
@DIR_OPTION
@click.option("--role", type=click.Choice(["rollout", "learner"]), default="rollout", show_default=True)
def box_add(root: Path, role: str) -> None:
    """Add a node (as the autoscaler replaces a preempted one)."""
    node = ClusterBox.load(root).add_node(role)
    click.echo(f"added {node.name}")


@box.command("remove")
@DIR_OPTION
@click.argument("name")
def box_remove(root: Path, name: str) -> None:
    """Kill node NAME at once, as a spot preemption does (e.g. rollout-1)."""
    pids = ClusterBox.load(root).remove_node(name)
    click.echo(f"removed {name} ({len(pids)} processes)")


@box.command("down")
@DIR_OPTION
def box_down(root: Path) -> None:
    """End every process of the box and remove its folder."""
    ClusterBox.load(root).down()
    click.echo(f"box in {root} is down")


def main() -> None:
    """``python -m cluster.box ARGS``: ``rayscalp box ARGS``, through the one entry point that turns the project's
    errors into one line and exit code 2."""
    from cluster.cli import entry

    sys.argv.insert(1, "box")
    entry()


if __name__ == "__main__":
    main()
