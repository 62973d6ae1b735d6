"""Benchmark: the CNN Serve app per call (handle, HTTP) and in bulk, each against Serve's floor plus the bare model.

``cnn handle`` / ``cnn http``: p50/p99 of one-state calls, one caller at a time, against an echo deployment
with the same ``@serve.batch`` settings and the same codecs (Serve's floor) plus the bare forward pass of one
state in this process: the peer's p50 is the sum of the two. ``cnn bulk``: steps/s of ``bulk_fill`` over an
``ObjectRef`` of the timeline against gather + forward in this process, same chunks and torch threads.
Data: the real ETH/BTC 1m klines, ``kline-1m`` profile; without ../shared/data, seeded synthetic bars
(labelled so). Weights are untrained (latency and throughput do not depend on them).
"""

# No ``from __future__ import annotations``: FastAPI reads the echo route's ``request: Request`` at runtime.
import http.client
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402
from ray import serve  # noqa: E402

from bench._common import alternating_medians, free_port, kline_timeline, npy_bytes, rate_line  # noqa: E402
from market.features import gather  # noqa: E402
from market.layout import AGENT_FEATURES  # noqa: E402
from market.timeline import MarketTimeline  # noqa: E402
from policies.cnn import MultiTimeframeCNN, save_checkpoint  # noqa: E402
from policies.cnn_inference import CnnPredictor, decode_answer_npy, decode_npy, encode_answer_npy  # noqa: E402
from serve.cnn import CnnServeConfig, batch_rows, deploy  # noqa: E402

STEPS = 4096  # timeline steps filled in bulk
CALLS = 150  # one-state calls per latency repeat
REPEATS = 3  # passes over the states for latency
BULK_REPEATS = 5
MAX_BATCH = 64
WAIT_S = 0.002
NUM_CPUS = 1.0  # per replica: Ray gives it one torch thread, and the in-process peer gets the same


echo_api = FastAPI()


@serve.deployment(name="EchoDeployment", max_ongoing_requests=256)
@serve.ingress(echo_api)
class Echo:
    """Serve's floor: the same batching and codecs as the CNN app, answering slices of the input."""

    def __init__(self, hidden: int, predictions: int) -> None:
        self.hidden, self.predictions = hidden, predictions

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=WAIT_S, batch_size_fn=batch_rows)
    async def _batched(self, requests: list[np.ndarray]) -> list[dict]:
        return [
            {"hidden": r[:, : self.hidden].copy(), "predictions": r[:, : self.predictions].copy(), "version": "echo"}
            for r in requests
        ]

    async def infer(self, states: np.ndarray) -> dict:
        return await self._batched(states)

    @echo_api.post("/infer")
    async def http_infer(self, request: Request) -> Response:
        answer = await self._batched(np.ascontiguousarray(decode_npy(await request.body()), dtype=np.float32))
        body = encode_answer_npy(answer["hidden"], answer["predictions"])
        return Response(body, media_type="application/x-npy", headers={"x-cnn-version": "echo"})


def interleaved_latencies(
    callers: dict[str, Callable[[np.ndarray], object]], states: list[np.ndarray]
) -> dict[str, tuple[float, float]]:
    """p50 and p99 per call in ms for each caller, the callers taking turns on every state (same load for all).

    One warm-up pass, then ``REPEATS`` passes over ``states``.
    """
    for x in states[:20]:
        for call in callers.values():
            call(x)
    times: dict[str, list[float]] = {name: [] for name in callers}
    for _ in range(REPEATS):
        for x in states:
            for name, call in callers.items():
                start = time.perf_counter()
                call(x)
                times[name].append(time.perf_counter() - start)
    return {name: (float(np.percentile(t, 50)) * 1e3, float(np.percentile(t, 99)) * 1e3) for name, t in times.items()}


def latency_line(name: str, ours: tuple[float, float], echo: tuple[float, float], bare: tuple[float, float]) -> str:
    peer = echo[0] + bare[0]
    return (
        f"  ({name}: echo p50 {echo[0]:.2f} ms p99 {echo[1]:.2f} ms, bare forward p50 {bare[0]:.2f} ms)\n"
        f"{name}: ours p50 {ours[0]:.2f} ms p99 {ours[1]:.2f} ms, peer[echo+forward] p50 {peer:.2f} ms, "
        f"ratio {ours[0] / peer:.2f}"
    )


def http_caller(port: int, path: str) -> Callable[[np.ndarray], object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(x: np.ndarray) -> object:
        conn.request("POST", path, body=npy_bytes(x), headers={"content-type": "application/x-npy"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {resp.status} {body[:200]!r}")
        return decode_answer_npy(body)

    return call


def bare_bulk(model: MultiTimeframeCNN, timeline: MarketTimeline, chunk: int) -> None:
    """The peer: gather + forward in chunks, in this process."""
    agent = np.zeros((chunk, len(AGENT_FEATURES)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, timeline.n_steps, chunk):
            steps = np.arange(start, min(start + chunk, timeline.n_steps), dtype=np.int64)
            out = model(torch.from_numpy(gather(timeline, steps, agent[: steps.size])))
            out.hidden.numpy(), out.predictions.numpy()


def main() -> int:
    timeline, label = kline_timeline("kline-1m", STEPS)
    torch.manual_seed(0)
    model = MultiTimeframeCNN(timeline.layout).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "cnn.pt", model, version="untrained-bench", meta={})
        config = CnnServeConfig(
            checkpoint=path,
            max_batch_size=MAX_BATCH,
            batch_wait_timeout_s=WAIT_S,
            device="cpu",
            ray_actor_options={"num_cpus": NUM_CPUS},
        )
        port = free_port()
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            cnn = deploy(config)
            hidden, preds = model.config.hidden, 4 * len(model.config.horizons)
            echo = serve.run(
                Echo.options(ray_actor_options={"num_cpus": NUM_CPUS}).bind(hidden, preds),
                name="echo",
                route_prefix="/echo",
            )
            info = cnn.info.remote().result()
            torch.set_num_threads(info["torch_threads"])
            predictor = CnnPredictor(model, "untrained-bench", torch.device("cpu"), chunk_rows=config.chunk_rows)
            agent = np.zeros((1, len(AGENT_FEATURES)), dtype=np.float32)
            picks = np.random.default_rng(0).choice(timeline.n_steps, CALLS, replace=False)
            states = [gather(timeline, np.array([t], dtype=np.int64), agent) for t in picks]

            lat = interleaved_latencies(
                {
                    "bare": predictor.predict,
                    "handle": lambda x: cnn.infer.remote(x).result(),
                    "handle_echo": lambda x: echo.infer.remote(x).result(),
                    "http": http_caller(port, "/cnn/infer"),
                    "http_echo": http_caller(port, "/echo/infer"),
                },
                states,
            )

            ref = ray.put(timeline)
            t_ours, t_peer = alternating_medians(
                lambda: cnn.bulk_fill.remote(ref).result(),
                lambda: bare_bulk(model, timeline, config.chunk_rows),
                BULK_REPEATS,
            )
        finally:
            serve.shutdown()
            ray.shutdown()
    n = timeline.n_steps
    print(f"data: {label}; state {timeline.layout.size:,} floats (kline-1m profile)")
    print(
        f"model: untrained MultiTimeframeCNN, hidden {hidden}; replica num_cpus {NUM_CPUS}, device "
        f"{info['device']}, torch threads {info['torch_threads']} (peer likewise); batching max {MAX_BATCH} "
        f"states, wait {WAIT_S * 1e3:g} ms"
    )
    print(
        f"one-state calls, one caller, the five callers taking turns: {CALLS} states x {REPEATS} passes; "
        f"bare forward p50 {lat['bare'][0]:.2f} ms p99 {lat['bare'][1]:.2f} ms"
    )
    print(latency_line("cnn handle", lat["handle"], lat["handle_echo"], lat["bare"]))
    print(latency_line("cnn http", lat["http"], lat["http_echo"], lat["bare"]))
    print(f"bulk fill of {n:,} steps in chunks of {config.chunk_rows}: ours {t_ours:.2f} s, peer {t_peer:.2f} s")
    print(rate_line("cnn bulk", n / t_ours, n / t_peer, "gather+forward in process", unit=" steps/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
