"""Benchmark: ``POST /v1/act`` of the policy app, 1 and 8 clients, against Serve's echo floor plus the bare Q forward.

``serve act state``: one ``.npy`` state per request (kline-1m layout, 10,404 floats, 41 KB), with the API key.
Per case: p50/p99 per request and requests/s. The peer is an echo deployment over HTTP with the same
``@serve.batch`` settings, the same ``.npy`` decoding and a JSON answer of the same shape but no network (Serve's
floor for this payload), plus the bare forward pass of one state in this process (same torch threads as the
replica). Clients take turns (1 client) or alternate runs (8 clients), so both sides see the same machine load.
Data: the real ETH/BTC 1m klines; without ../shared/data, seeded synthetic bars (labelled so).

``serve act latest``: ``{"symbol": "ETHUSDT", "latest": true}`` through the real live path: the unified stream
actor fed the first minutes of the real ETH/BTC trade captures, the ``rayscalp-live-state`` actor building the
default-profile state (15,804 floats; no CNN app and no paper account here, so its CNN part is zeros and its agent
features a flat account's, as the answer says), and a second policy app of that layout. Peer: the same app and
state posted as ``.npy`` (the state form), so the ratio is what the live lookup adds. Skipped, saying why, when
the captures or ``actors/live_state.py`` are absent. Weights are freshly initialised (untrained: latency does not
depend on them).
"""

# No ``from __future__ import annotations``: FastAPI reads the echo route's ``request: Request`` at runtime.
import http.client
import importlib.util
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
KEY_ENV = "RAYSCALP_BENCH_API_KEY"
os.environ.setdefault(KEY_ENV, secrets.token_urlsafe(24))  # before Ray starts: the replicas inherit it

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402
from ray import serve  # noqa: E402

from bench._common import SHARED_DATA, free_port, kline_timeline, npy_bytes, rate_line  # noqa: E402
from market.features import gather  # noqa: E402
from market.layout import AGENT_FEATURES, StateConfig  # noqa: E402
from policies.checkpoint import save_policy  # noqa: E402
from policies.cnn_inference import decode_npy  # noqa: E402
from policies.dqn import QNetwork  # noqa: E402
from policies.policy_inference import ACTIONS, PolicyPredictor  # noqa: E402
from serve.auth import API_KEY_HEADER  # noqa: E402
from serve.cnn import batch_rows  # noqa: E402
from serve.policy import PolicyServeConfig, deploy  # noqa: E402

STEPS = 2048  # timeline minutes the states are drawn from
STATES = 120  # distinct states sent
ONE_CLIENT_PASSES = 3  # passes over the states, one client, callers taking turns
CLIENTS = 8
PER_CLIENT = 40  # requests per client per 8-client run
RUNS = 3  # 8-client runs per side, alternating
MAX_BATCH = 64
WAIT_S = 0.002
NUM_CPUS = 1.0  # per replica: Ray gives it one torch thread, and the in-process forward gets the same
LIVE_MINUTES = 3  # of the real trade captures replayed into the stream for the latest form
LIVE_SYMBOLS = ("ETHUSDT", "BTCUSDT")
LATEST_BODY = b'{"symbol": "ETHUSDT", "latest": true}'


echo_api = FastAPI()


@serve.deployment(name="EchoDeployment", max_ongoing_requests=256)
@serve.ingress(echo_api)
class Echo:
    """Serve's floor: the policy app's batching, .npy decoding and JSON answer, with no network behind them."""

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=WAIT_S, batch_size_fn=batch_rows)
    async def _batched(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        return [r[:, :3].copy() for r in requests]

    @echo_api.post("/v1/act")
    async def http_act(self, request: Request) -> Response:
        start = time.perf_counter()
        states = np.ascontiguousarray(decode_npy(await request.body()), dtype=np.float32).reshape(1, -1)
        q = (await self._batched(states))[0]
        action = int(q.argmax())
        decision = {"action": ACTIONS[action], "action_index": action, "q_values": q.tolist(), "confidence": 0.0}
        doc = {**decision, "decisions": [decision], "model_version": "echo", "latency_ms": time.perf_counter() - start}
        return Response(orjson.dumps(doc), media_type="application/json")


def http_caller(port: int, path: str, content_type: str = "application/x-npy") -> Callable[[bytes], dict]:
    """One keep-alive connection posting bodies with the key; returns the decoded JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": content_type, API_KEY_HEADER: os.environ[KEY_ENV]}

    def call(body: bytes) -> dict:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {resp.status} {data[:200]!r}")
        return orjson.loads(data)

    return call


def percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)) * 1e3, float(np.percentile(times, 99)) * 1e3


def pooled(runs: dict[str, list[tuple[float, list[float]]]]) -> dict[str, dict]:
    """Per side: the median requests/s of its ``many_clients`` runs and the percentiles of all their calls."""
    return {
        side: {"rps": statistics.median(r[0] for r in rs), "lat": percentiles([x for r in rs for x in r[1]])}
        for side, rs in runs.items()
    }


def policy_config(checkpoint: Path, **shape: object) -> PolicyServeConfig:
    """The policy app as both cases serve it (batching, one CPU, the key), with ``shape`` on top."""
    return PolicyServeConfig(
        checkpoint=checkpoint,
        max_batch_size=MAX_BATCH,
        batch_wait_timeout_s=WAIT_S,
        device="cpu",
        ray_actor_options={"num_cpus": NUM_CPUS},
        api_key_env=KEY_ENV,
        **shape,
    )


def one_client(callers: dict[str, Callable[[object], object]], inputs: dict[str, list[object]]) -> dict[str, dict]:
    """Per-call times of each caller, the callers taking turns on every state (same load for all)."""
    for name, call in callers.items():
        for x in inputs[name][:10]:
            call(x)
    times: dict[str, list[float]] = {name: [] for name in callers}
    for _ in range(ONE_CLIENT_PASSES):
        for i in range(STATES):
            for name, call in callers.items():
                start = time.perf_counter()
                call(inputs[name][i])
                times[name].append(time.perf_counter() - start)
    return {n: {"lat": percentiles(t), "rps": len(t) / sum(t)} for n, t in times.items()}


def many_clients(
    port: int, path: str, bodies: list[bytes], content_type: str = "application/x-npy"
) -> tuple[float, list[float]]:
    """``CLIENTS`` threads, each its own connection, ``PER_CLIENT`` requests each; (requests/s, per-call times)."""
    callers = [http_caller(port, path, content_type) for _ in range(CLIENTS)]
    for call in callers:
        call(bodies[0])
    times: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors: list[str] = []
    barrier = threading.Barrier(CLIENTS + 1)

    def client(i: int) -> None:
        barrier.wait()
        try:
            for j in range(PER_CLIENT):
                start = time.perf_counter()
                callers[i](bodies[(i * PER_CLIENT + j) % len(bodies)])
                times[i].append(time.perf_counter() - start)
        except Exception as exc:  # reported below; a benchmark with failed requests has no figure
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[:3]}")
    return CLIENTS * PER_CLIENT / wall, [x for t in times for x in t]


def case_line(name: str, ours: dict, echo: dict, bare_p50: float | None = None) -> str:
    peer = echo["lat"][0] + (bare_p50 or 0.0)
    peer_name = "echo+forward" if bare_p50 is not None else "echo"
    return (
        f"{name}: ours p50 {ours['lat'][0]:.2f} ms p99 {ours['lat'][1]:.2f} ms {ours['rps']:,.0f} req/s; "
        f"echo p50 {echo['lat'][0]:.2f} ms p99 {echo['lat'][1]:.2f} ms {echo['rps']:,.0f} req/s; "
        f"peer[{peer_name}] p50 {peer:.2f} ms, ratio {ours['lat'][0] / peer:.2f}"
    )


def live_path_missing() -> str:
    """Why the latest form cannot be measured here ("" when it can)."""
    if importlib.util.find_spec("actors.live_state") is None:
        return "actors/live_state.py (the rayscalp-live-state actor the latest form reads) is not in this tree"
    if not (SHARED_DATA / "binance" / "ws").is_dir():
        return f"the real trade captures the live stream is fed are not at {SHARED_DATA / 'binance' / 'ws'}"
    return ""


def start_live_path(tmp: Path) -> tuple[object, dict]:
    """The stream and live-state actors fed the first minutes of the real captures; (latest LiveState, facts)."""
    from actors.live_state import LIVE_STATE_ACTOR, LiveStateActor, LiveStateConfig
    from actors.messages import TickBatch
    from actors.stream import StreamConfig, UnifiedStreamActor
    from market.datasets import load_ws_capture

    root = SHARED_DATA / "binance" / "ws"
    capture = {s: load_ws_capture(root / f"spot_{s.lower()}_20240808.gz", symbol=s).trades for s in LIVE_SYMBOLS}
    end = int(capture["ETHUSDT"]["time_ms"][0]) + LIVE_MINUTES * 60_000
    capture = {s: a[a["time_ms"] < end] for s, a in capture.items()}
    stream = UnifiedStreamActor.options(name="rayscalp-stream").remote(
        StreamConfig(storage_dir=tmp / "stream", tick_cache_s=LIVE_MINUTES * 60)
    )
    ray.get(stream.ready.remote(), timeout=120)
    live = LiveStateActor.options(name=LIVE_STATE_ACTOR).remote(
        LiveStateConfig(state=StateConfig(profile="default"), poll_interval_ms=50)
    )
    ray.get(live.ready.remote(), timeout=120)
    times = np.concatenate([capture[s]["time_ms"] for s in LIVE_SYMBOLS])
    for seq, cut in enumerate(np.array_split(np.sort(times), 20)):
        lo, hi = cut[0], cut[-1]
        part = {s: a[(a["time_ms"] >= lo) & (a["time_ms"] <= hi)] for s, a in capture.items()}
        ray.get(stream.ingest.remote(TickBatch("replay", seq, part)), timeout=60)
    deadline = time.monotonic() + 60
    last_step = (end - 1) // 1000 * 1000 - 1
    while True:
        try:
            state = ray.get(live.latest_state.remote("ETHUSDT"), timeout=10)
            if state.step_time_ms >= last_step:
                break
        except Exception as exc:  # no step closed yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"the live state did not catch up: {exc}") from exc
        if time.monotonic() > deadline:
            raise RuntimeError("the live state did not reach the last step of the replayed trades")
        time.sleep(0.2)
    counts = ", ".join(f"{s} {capture[s].size:,}" for s in LIVE_SYMBOLS)
    label = f"real captures 2024-08-08, first {LIVE_MINUTES} minutes ({counts} trades) replayed"
    # the handles keep the actors alive: a named actor without handles is collected
    return state, {"label": label, "actors": (stream, live)}


def measure_latest(tmp: Path, port: int) -> dict:
    """The latest form against the state form of the same layout, same app, same state; 1 and 8 clients."""
    live_state, out = start_live_path(tmp)
    torch.manual_seed(1)
    from market.layout import build_layout

    network = QNetwork(build_layout(StateConfig(profile="default"))).eval()
    path = save_policy(tmp / "policy-live-untrained.pt", network, version="untrained-live", updates=0)
    deploy(policy_config(path, app_name="policy-live", route_prefix="/live"))
    state_body = npy_bytes(np.asarray(live_state.state))
    latest_call = http_caller(port, "/live/v1/act", "application/json")
    answer = latest_call(LATEST_BODY)
    assert answer["step_time_ms"] == live_state.step_time_ms, "the answer is not of the live state"
    actor = ray.get_actor("rayscalp-live-state")
    single = one_client(
        {
            "latest": latest_call,
            "state": http_caller(port, "/live/v1/act"),
            "actor": lambda _: ray.get(actor.latest_state.remote("ETHUSDT")),
        },
        {"latest": [LATEST_BODY] * STATES, "state": [state_body] * STATES, "actor": [None] * STATES},
    )
    runs: dict[str, list[tuple[float, list[float]]]] = {"latest": [], "state": []}
    for _ in range(RUNS):
        runs["latest"].append(many_clients(port, "/live/v1/act", [LATEST_BODY], "application/json"))
        runs["state"].append(many_clients(port, "/live/v1/act", [state_body]))
    multi = pooled(runs)
    for handle in out.pop("actors"):
        ray.kill(handle)
    return {
        **out,
        "size": int(np.asarray(live_state.state).size),
        "cnn_source": answer["cnn_source"],
        "agent_source": answer["agent_source"],
        "actor": single["actor"]["lat"],
        "1": {"latest": single["latest"], "state": single["state"]},
        str(CLIENTS): multi,
    }


def main() -> int:
    timeline, label = kline_timeline("kline-1m", STEPS)
    torch.manual_seed(0)
    network = QNetwork(timeline.layout).eval()
    agent = np.zeros((1, len(AGENT_FEATURES)), dtype=np.float32)
    picks = np.random.default_rng(0).choice(timeline.n_steps, STATES, replace=False)
    states = [gather(timeline, np.array([t], dtype=np.int64), agent)[0] for t in picks]
    bodies = [npy_bytes(s) for s in states]
    with tempfile.TemporaryDirectory() as tmp:
        path = save_policy(Path(tmp) / "policy-untrained.pt", network, version="untrained-bench", updates=0)
        port = free_port()
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            namespace="rayscalp-bench",  # a named one: the live-state actor is looked up by name from Serve
        )
        try:
            policy = deploy(policy_config(path, host="127.0.0.1", port=port))
            serve.run(Echo.options(ray_actor_options={"num_cpus": NUM_CPUS}).bind(), name="echo", route_prefix="/echo")
            threads = policy.info.remote().result()["torch_threads"]
            torch.set_num_threads(threads)
            predictor = PolicyPredictor.from_checkpoint(path, "cpu")
            ours_call, echo_call = http_caller(port, "/v1/act"), http_caller(port, "/echo/v1/act")
            check = ours_call(bodies[0])
            expected = predictor.act(states[0])
            assert check["action_index"] == int(expected.actions[0]), "the served answer is not the network's"
            single = one_client(
                {"ours": ours_call, "echo": echo_call, "bare": predictor.act},
                {"ours": bodies, "echo": bodies, "bare": states},
            )
            runs: dict[str, list[tuple[float, list[float]]]] = {"ours": [], "echo": []}
            for _ in range(RUNS):
                runs["ours"].append(many_clients(port, "/v1/act", bodies))
                runs["echo"].append(many_clients(port, "/echo/v1/act", bodies))
            largest = policy.info.remote().result()["largest_batch"]
            latest = None
            why_not = live_path_missing()
            if not why_not:
                latest = measure_latest(Path(tmp), port)
        finally:
            serve.shutdown()
            ray.shutdown()
    multi = pooled(runs)
    bare_p50, bare_p99 = single["bare"]["lat"]
    print(f"data: {label}; state {timeline.layout.size:,} floats (kline-1m profile), .npy body {len(bodies[0]):,} B")
    print(
        f"model: untrained QNetwork (default config, freshly initialised); replica num_cpus {NUM_CPUS}, torch "
        f"threads {threads} (bare forward likewise); batching max {MAX_BATCH} states, wait {WAIT_S * 1e3:g} ms; "
        f"API key on; largest batch seen {largest}"
    )
    print(f"bare Q forward of one state in process: p50 {bare_p50:.2f} ms p99 {bare_p99:.2f} ms")
    print(
        case_line(
            f"serve act state, 1 client ({STATES} states x {ONE_CLIENT_PASSES} passes)",
            single["ours"],
            single["echo"],
            bare_p50,
        )
    )
    print(
        case_line(
            f"serve act state, {CLIENTS} clients ({PER_CLIENT} requests each, median of {RUNS} runs)",
            multi["ours"],
            multi["echo"],
        )
    )
    if latest is None:
        print(f"serve act latest: not measured: {why_not}")
    else:
        print(
            f"latest form: {latest['label']}; live state {latest['size']:,} floats (default profile), CNN part "
            f"{latest['cnn_source']}, agent {latest['agent_source']}; bare latest_state actor call from the driver "
            f"p50 {latest['actor'][0]:.2f} ms"
        )
        for clients in ("1", str(CLIENTS)):
            ours, peer = latest[clients]["latest"], latest[clients]["state"]
            print(
                f"serve act latest, {clients} client(s): ours p50 {ours['lat'][0]:.2f} ms p99 {ours['lat'][1]:.2f} ms "
                f"{ours['rps']:,.0f} req/s; peer[state form, same app and state] p50 {peer['lat'][0]:.2f} ms "
                f"p99 {peer['lat'][1]:.2f} ms {peer['rps']:,.0f} req/s, ratio {ours['lat'][0] / peer['lat'][0]:.2f}"
            )
    print(
        rate_line(
            "serve act", multi["ours"]["rps"], multi["echo"]["rps"], f"echo over HTTP, {CLIENTS} clients", unit=" req/s"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
