"""What the cluster costs: the Ape-X job run on the cluster in a box (``cluster.box``), with per node the CPU and
memory its learner, its rollout workers and Ray's own processes use over a steady window; from those, the
instance counts of ``ray_cluster.yaml`` for a stated target of env steps/s. The peer is the same job on one
node with the same CPUs, measured in the same run.

``python -m bench.cluster_cost [--target 10000] [--window 30] [--set KEY=VALUE ...]``. Never a unit test:
what it measures depends on the machine; it prints a table and the bench line last.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench._common import SHARED_DATA, rate_line
from cluster.box import BoxConfig, ClusterBox, read_node_types, start_box

REPO = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"^\s*(\d+)s env ([\d,]+) .*?\| updates ([\d,]+) ")
INSTANCES: dict[str, tuple[int, float]] = {
    # AWS sizes (vCPUs, GiB of memory) of the instance types ray_cluster.yaml names.
    "m6i.xlarge": (4, 16.0),
    "c6i.2xlarge": (8, 16.0),
    "g5.xlarge": (4, 16.0),
}
GiB = 1024.0**3


@dataclass(frozen=True, slots=True)
class ProcessCost:
    """One process over the window: what it is, on which node, CPU cores used on average, resident memory."""

    what: str
    node: str
    cores: float
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class Measurement:
    """A steady window of one run: env steps/s and updates/s, and the processes' costs."""

    env_steps_per_s: float
    updates_per_s: float
    window_s: float
    processes: tuple[ProcessCost, ...]
    rollout_nodes: int

    def total(self, what: str) -> tuple[float, int, int]:
        """(cores, rss bytes, count) summed over the processes that are ``what``."""
        chosen = [p for p in self.processes if p.what == what]
        return sum(p.cores for p in chosen), sum(p.rss_bytes for p in chosen), len(chosen)


def _psutil() -> Any:
    import importlib

    import ray  # noqa: F401 - puts ray's bundled psutil on sys.path

    return importlib.import_module("psutil")


def _cpu_s(proc: Any) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except Exception:
        return float("nan")


def _rss(proc: Any) -> int:
    try:
        return int(proc.memory_info().rss)
    except Exception:
        return 0


def _driver(box: ClusterBox, args: list[str]) -> tuple[subprocess.Popen, list[tuple[int, int, int]], list[str]]:
    proc = box.start_driver(args)
    progress: list[tuple[int, int, int]] = []
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            match = PROGRESS.match(line)
            if match:
                progress.append(tuple(int(g.replace(",", "")) for g in match.groups()))  # type: ignore[arg-type]

    threading.Thread(target=read, daemon=True).start()
    return proc, progress, lines


def _processes(box: ClusterBox, driver_pid: int) -> dict[int, tuple[str, str, Any]]:
    """pid -> (what, node, process) for the learner, the workers, the driver and each node's Ray processes."""
    from ray.util.state import list_actors

    psutil = _psutil()
    names = {row.node_id: row.name for row in box.node_rows()}
    actors = list_actors(address=box.dashboard_url, filters=[("state", "=", "ALIVE")], detail=True, timeout=15)
    found: dict[int, tuple[str, str, Any]] = {}
    for actor in actors:
        what = {"LearnerActor": "learner", "RolloutWorker": "worker"}.get(actor.class_name)
        if what and actor.pid:
            found[int(actor.pid)] = (what, names.get(actor.node_id, "?"), psutil.Process(int(actor.pid)))
    found[driver_pid] = ("driver", "head", psutil.Process(driver_pid))
    for node in box.nodes.values():
        for proc in node.processes():
            found.setdefault(proc.pid, ("ray", node.name, proc))
    return found


def measure(box: ClusterBox, args: list[str], window_s: float, num_workers: int, timeout_s: float = 240) -> Measurement:
    """Run the job against ``box``; once the learner is updating and every worker is alive, measure a window."""
    from ray.util.state import list_actors

    proc, progress, lines = _driver(box, args)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the driver exited ({proc.returncode}):\n{''.join(lines)[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no steady training within {timeout_s:.0f} s:\n{''.join(lines)[-3000:]}")
            if progress and progress[-1][2] > 0:
                alive = list_actors(address=box.dashboard_url, filters=[("state", "=", "ALIVE")], timeout=15)
                if sum(a.class_name == "RolloutWorker" for a in alive) == num_workers:
                    break
            time.sleep(0.5)
        time.sleep(2.0)  # past the first updates' warm-up
        procs = _processes(box, proc.pid)
        first = progress[-1]
        started = time.monotonic()
        cpu0 = {pid: _cpu_s(p) for pid, (_, _, p) in procs.items()}
        rss_max = {pid: _rss(p) for pid, (_, _, p) in procs.items()}
        while time.monotonic() - started < window_s:
            time.sleep(1.0)
            for pid, (_, _, p) in procs.items():
                rss_max[pid] = max(rss_max[pid], _rss(p))
        wall = time.monotonic() - started
        cpu1 = {pid: _cpu_s(p) for pid, (_, _, p) in procs.items()}
        last = progress[-1]
        proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    dt = max(1, last[0] - first[0])
    costs = tuple(
        ProcessCost(what, node, max(0.0, (cpu1[pid] - cpu0[pid]) / wall), rss_max[pid])
        for pid, (what, node, _) in procs.items()
        if math.isfinite(cpu1[pid] - cpu0[pid])
    )
    rollout_nodes = sum(1 for n in box.nodes.values() if n.role == "rollout")
    return Measurement((last[1] - first[1]) / dt, (last[2] - first[2]) / dt, wall, costs, rollout_nodes)


# --------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class CostModel:
    """Per-unit costs measured on the box, and the instance counts they give for ``target`` env steps/s."""

    target: float
    replay_ratio: float
    worker_core_s_per_step: float
    worker_rss: float
    learner_core_s_per_update: float
    learner_rss: float
    node_overhead_cores: float
    node_overhead_rss: float

    def rollout(self, instance: str) -> tuple[int, float, int]:
        """(workers per node, env steps/s per node, nodes for the target): one worker per free core (a worker
        runs torch on one thread), bounded by memory."""
        vcpus, mem_gib = INSTANCES[instance]
        by_cpu = math.floor(vcpus - self.node_overhead_cores)
        by_mem = math.floor((mem_gib * GiB - self.node_overhead_rss) / max(self.worker_rss, 1.0))
        workers = max(0, min(by_cpu, by_mem))
        per_node = workers / self.worker_core_s_per_step
        return workers, per_node, math.ceil(self.target / per_node) if per_node > 0 else 0

    @property
    def updates_needed(self) -> float:
        """Learner updates/s the replay ratio asks for at the target."""
        return self.target * self.replay_ratio

    @property
    def learner_cpu_updates_per_core(self) -> float:
        """What the learner measured here does per core (on the CPU)."""
        return 1.0 / self.learner_core_s_per_update


def cost_model(run: Measurement, target: float, replay_ratio: float) -> CostModel:
    """Per-unit costs from the box run: core-seconds per env step (workers), per update (learner), and each
    rollout node's own Ray processes."""
    w_cores, w_rss, w_n = run.total("worker")
    l_cores, l_rss, _ = run.total("learner")
    rollout_ray = [p for p in run.processes if p.what == "ray" and p.node.startswith("rollout-")]
    nodes = max(1, len({p.node for p in rollout_ray}))
    return CostModel(
        target=target,
        replay_ratio=replay_ratio,
        worker_core_s_per_step=w_cores / max(run.env_steps_per_s, 1e-9),
        worker_rss=w_rss / max(1, w_n),
        learner_core_s_per_update=l_cores / max(run.updates_per_s, 1e-9),
        learner_rss=float(l_rss),
        node_overhead_cores=sum(p.cores for p in rollout_ray) / nodes,
        node_overhead_rss=sum(p.rss_bytes for p in rollout_ray) / nodes,
    )


def node_table(run: Measurement, title: str) -> Table:
    """Per node and kind of process: how many, CPU cores used on average, resident memory."""
    table = Table(title=title, title_justify="left")
    for col in ("node", "processes", "count", "CPU cores", "RSS MiB"):
        table.add_column(col, justify="right")
    groups: dict[tuple[str, str], list[ProcessCost]] = {}
    for p in run.processes:
        groups.setdefault((p.node, p.what), []).append(p)
    for (node, what), procs in sorted(groups.items()):
        table.add_row(
            node,
            what,
            str(len(procs)),
            f"{sum(p.cores for p in procs):.2f}",
            f"{sum(p.rss_bytes for p in procs) / 2**20:,.0f}",
        )
    table.caption = (
        f"window {run.window_s:.0f} s: {run.env_steps_per_s:,.0f} env steps/s, {run.updates_per_s:,.1f} updates/s"
    )
    return table


def instance_table(model: CostModel, yaml_path: Path) -> Table:
    """ray_cluster.yaml's node types with the counts the model gives for the target."""
    import yaml

    doc = yaml.safe_load(yaml_path.read_text())
    types = read_node_types(yaml_path)
    spec = doc["available_node_types"]
    table = Table(title=f"ray_cluster.yaml for {model.target:,.0f} env steps/s", title_justify="left")
    for col in ("node type", "instance", "per instance", "count", "max_workers", "note"):
        table.add_column(col)
    head = types["head"].name
    table.add_row(head, spec[head]["node_config"]["InstanceType"], "GCS, dashboard, driver, stream", "1", "-", "")
    name = types["rollout"].name
    instance = spec[name]["node_config"]["InstanceType"]
    workers, per_node, count = model.rollout(instance)
    cap = int(spec[name].get("max_workers", 0))
    table.add_row(
        name,
        instance,
        f"{workers} workers, {per_node:,.0f} env steps/s",
        str(count),
        str(cap),
        "over max_workers: raise it" if count > cap else "",
    )
    name = types["learner"].name
    instance = spec[name]["node_config"]["InstanceType"]
    vcpus, _ = INSTANCES[instance]
    cpu_rate = model.learner_cpu_updates_per_core * vcpus
    note = (
        f"needs {model.updates_needed:,.0f} updates/s; the learner measured here (CPU) does "
        f"{model.learner_cpu_updates_per_core:,.0f}/s per core ({cpu_rate:,.0f}/s on {vcpus} vCPUs); its GPU rate "
        "is not measured on this machine"
    )
    table.add_row(name, instance, "1 learner", "1", str(spec[name].get("max_workers", 1)), note)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=10_000.0, help="Env steps/s the cluster must reach.")
    parser.add_argument("--window", type=float, default=30.0, help="Seconds of the measured window.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Experiment config override.")
    parser.add_argument("--no-peer", action="store_true", help="Skip the one-node run.")
    args = parser.parse_args(argv)
    console = Console(soft_wrap=True, width=200)
    num_workers, replay_ratio = 2, 0.25
    sets = [
        "output_dir=PLACEHOLDER",
        f"data.shared_dir={SHARED_DATA}",
        "apex.history_steps=3000",
        "apex.learning_starts=256",
        "apex.progress_every_s=1",
        "apex.learner.resource=learner",
        "apex.worker_resource=rollout",
        f"apex.num_workers={num_workers}",
        f"apex.replay_ratio={replay_ratio}",
        "apex.budget.env_steps=null",
        "apex.budget.updates=null",
        f"apex.budget.wall_seconds={args.window + 25:.0f}",
        "apex.checkpoint.every_updates=1000000",
        *args.overrides,
    ]
    import tempfile

    results: dict[str, Measurement] = {}
    for label, config in (("box", BoxConfig()), ("one node", BoxConfig(one_node=True))):
        if label == "one node" and args.no_peer:
            continue
        out = tempfile.mkdtemp(prefix="rscost-")
        train_args = ["--config", "configs/tiny.yaml"]
        for item in sets:
            train_args += ["--set", item.replace("PLACEHOLDER", out)]
        started = start_box(config)
        try:
            results[label] = measure(started, train_args, args.window, num_workers)
        finally:
            started.down()
        console.print(node_table(results[label], f"{label}: per node, over the measured window"))
    box_run = results["box"]
    model = cost_model(box_run, args.target, replay_ratio)
    console.print(
        f"per unit (tiny profile, CPU): {model.worker_core_s_per_step * 1e3:.3f} core-ms per env step in a worker "
        f"({model.worker_rss / 2**20:,.0f} MiB each), {model.learner_core_s_per_update * 1e3:.1f} core-ms per "
        f"update in the learner ({model.learner_rss / 2**20:,.0f} MiB), Ray's own processes per rollout node "
        f"{model.node_overhead_cores:.2f} cores and {model.node_overhead_rss / 2**20:,.0f} MiB"
    )
    console.print(instance_table(model, REPO / "ray_cluster.yaml"))
    per_node = box_run.env_steps_per_s / max(1, box_run.rollout_nodes)
    console.print(f"box: {per_node:,.0f} env steps/s per rollout node ({box_run.rollout_nodes} rollout nodes)")
    if "one node" in results:
        print(
            rate_line(
                "cluster_cost",
                box_run.env_steps_per_s,
                results["one node"].env_steps_per_s,
                "measured 1 node, same CPUs",
                unit=" env-steps/s",
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
