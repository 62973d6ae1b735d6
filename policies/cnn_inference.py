"""CNN inference without Serve: load a checkpoint, check request states, answer one batch, fill a timeline.

Owns the payload codecs (``.npy`` and JSON in, ``.npy`` and JSON out), the batching arithmetic and the bulk fill
of a timeline's CNN component; ``serve.cnn`` is a thin shell around it. Never imports Ray, never trusts a
payload (every rejection is a :class:`PayloadError` naming what was wrong), never touches the model's weights.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from market.errors import DataError
from market.features import gather
from market.layout import AGENT_FEATURES, StateLayout
from market.timeline import MarketTimeline

from .cnn import MultiTimeframeCNN, load_checkpoint
from .device import resolve_device
from .npy import PayloadError as PayloadError  # re-exported: the codecs here raise it too
from .npy import decode_npy as decode_npy  # re-exported: the one .npy request decoder
from .state_check import check_states, json_body, json_numbers

#: Media types of the binary payload, in and out.
NPY_MEDIA_TYPES = ("application/x-npy", "application/octet-stream")
JSON_MEDIA_TYPE = "application/json"




@dataclass(frozen=True, slots=True)
class CnnAnswer:
    """What the CNN says about a batch of states, and which checkpoint said it.

    Attributes
    ----------
    hidden : array [B, H] float32
        The hidden vector per state (the state's ``cnn_hidden`` slots).
    predictions : array [B, P] float32
        Per horizon P(up), P(flat), P(down) and the expected move (the state's ``cnn_pred`` slots).
    version : str
        The checkpoint's version.
    """

    hidden: np.ndarray
    predictions: np.ndarray
    version: str

    def as_dict(self) -> dict[str, Any]:
        """``{"hidden", "predictions", "version"}``, the shape a handle caller receives."""
        return {"hidden": self.hidden, "predictions": self.predictions, "version": self.version}


def batch_offsets(sizes: Sequence[int]) -> np.ndarray:
    """Row offsets of requests of ``sizes`` rows laid end to end: request ``i`` is ``[off[i], off[i + 1])``."""
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)


class CnnPredictor:
    """A loaded CNN that answers batches of states and fills timelines in chunks.

    Parameters
    ----------
    model : MultiTimeframeCNN
        In eval mode, on ``device``.
    version : str
        The checkpoint's version, returned with every answer.
    device : torch.device
    max_rows : int
        The most states one request may carry.
    chunk_rows : int
        The most states one forward pass takes (big requests and bulk fills are cut into chunks of this).
    meta : dict, optional
        The checkpoint's metadata.
    """

    def __init__(
        self,
        model: MultiTimeframeCNN,
        version: str,
        device: torch.device,
        *,
        max_rows: int = 4096,
        chunk_rows: int = 2048,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if max_rows < 1 or chunk_rows < 1:
            raise ValueError(f"max_rows and chunk_rows must be >= 1 (got {max_rows}, {chunk_rows})")
        self.model = model.eval()
        self.version = str(version)
        self.device = device
        self.max_rows = int(max_rows)
        self.chunk_rows = int(chunk_rows)
        self.meta = dict(meta or {})
        self.layout: StateLayout = model.layout
        self.state_size = self.layout.size
        self.hidden_size = model.config.hidden
        self.prediction_size = 4 * len(model.config.horizons)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", *, max_rows: int = 4096, chunk_rows: int = 2048
    ) -> CnnPredictor:
        """Load a checkpoint written by ``policies.cnn.save_checkpoint`` (``weights_only=True``).

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist (the message names it).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"CNN checkpoint {path} does not exist")
        dev = resolve_device(device)
        model, meta = load_checkpoint(path, dev)
        return cls(
            model,
            str(meta.get("version", "")),
            dev,
            max_rows=max_rows,
            chunk_rows=chunk_rows,
            meta={**meta, "path": str(path)},
        )

    # ------------------------------------------------------------------------------------------ checks

    def check_states(self, states: object) -> np.ndarray:
        """Return ``states`` as a C-contiguous native float32 ``[B, S]`` array, or raise :class:`PayloadError`.

        A request is 1 to ``max_rows`` states of this layout's width, float32, every value finite.
        """
        return check_states(states, self.layout, self.max_rows, single=False)

    # ----------------------------------------------------------------------------------------- forward

    def _forward_into(self, states: np.ndarray, hidden: np.ndarray, predictions: np.ndarray) -> None:
        """Run ``states`` through the model in chunks of ``chunk_rows``, writing into the output arrays."""
        chunk = self.chunk_rows
        with torch.inference_mode():
            for start in range(0, states.shape[0], chunk):
                block = np.ascontiguousarray(states[start : start + chunk])
                if not block.flags.writeable:
                    block = block.copy()  # torch wants writeable memory; a decoded body is read-only
                out = self.model(torch.from_numpy(block).to(self.device, non_blocking=True))
                stop = start + block.shape[0]
                hidden[start:stop] = out.hidden.float().cpu().numpy()
                predictions[start:stop] = out.predictions.float().cpu().numpy()

    def _empty_outputs(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.empty((rows, self.hidden_size), dtype=np.float32),
            np.empty((rows, self.prediction_size), dtype=np.float32),
        )

    def predict(self, states: np.ndarray) -> CnnAnswer:
        """Answer one request (checked with :meth:`check_states`)."""
        states = self.check_states(states)
        hidden, predictions = self._empty_outputs(states.shape[0])
        self._forward_into(states, hidden, predictions)
        return CnnAnswer(hidden, predictions, self.version)

    def predict_batch(self, requests: Sequence[np.ndarray]) -> list[CnnAnswer]:
        """Answer several requests with one forward pass per ``chunk_rows`` states, each answer its own rows.

        Every request must already have passed :meth:`check_states` (a batch never fails for one bad request).
        """
        if not requests:
            return []
        offsets = batch_offsets([r.shape[0] for r in requests])
        states = np.concatenate(requests, axis=0)
        hidden, predictions = self._empty_outputs(states.shape[0])
        self._forward_into(states, hidden, predictions)
        return [
            CnnAnswer(hidden[a:b], predictions[a:b], self.version)
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        ]

    def bulk_fill(self, timeline: MarketTimeline, steps: np.ndarray | None = None) -> CnnAnswer:
        """The CNN component of ``timeline`` at ``steps`` (all steps by default), in chunks of ``chunk_rows``.

        States are gathered with ``market.features.gather`` (agent features zero: the CNN never reads them),
        so the answer equals per-step :meth:`predict` calls on the gathered states.

        Returns
        -------
        CnnAnswer
            ``hidden`` [n, H] and ``predictions`` [n, P], row ``i`` for ``steps[i]``.

        Raises
        ------
        DataError
            When the timeline's layout is not the checkpoint's, or a step is out of range.
        """
        if not isinstance(timeline, MarketTimeline):
            raise DataError(f"bulk_fill needs a MarketTimeline, got {type(timeline).__name__}")
        if timeline.layout != self.layout:
            raise DataError(
                f"timeline layout ({timeline.layout.config.profile!r}, {timeline.layout.size} floats) is not the "
                f"checkpoint's ({self.layout.config.profile!r}, {self.layout.size} floats)"
            )
        n_steps = timeline.n_steps
        if steps is None:
            steps = np.arange(n_steps, dtype=np.int64)
        else:
            steps = np.asarray(steps)
            if steps.ndim != 1 or steps.dtype.kind not in "iu":
                raise DataError(f"steps must be a 1-D integer array, got {steps.dtype.str} shape {steps.shape}")
            steps = steps.astype(np.int64)
            if steps.size and (steps.min() < 0 or steps.max() >= n_steps):
                bad = int(steps[(steps < 0) | (steps >= n_steps)][0])
                raise DataError(f"step {bad} is outside the timeline's [0, {n_steps})")
        hidden, predictions = self._empty_outputs(steps.size)
        chunk = self.chunk_rows
        agent = np.zeros((min(chunk, max(steps.size, 1)), len(AGENT_FEATURES)), dtype=np.float32)
        for start in range(0, steps.size, chunk):
            idx = steps[start : start + chunk]
            states = gather(timeline, idx, agent[: idx.size])
            stop = start + idx.size
            self._forward_into(states, hidden[start:stop], predictions[start:stop])
        return CnnAnswer(hidden, predictions, self.version)

    def with_limits(self, *, max_rows: int, chunk_rows: int) -> CnnPredictor:
        """The same model and version with other request and chunk limits (a new object; this one is unchanged)."""
        return CnnPredictor(
            self.model, self.version, self.device, max_rows=max_rows, chunk_rows=chunk_rows, meta=self.meta
        )

    def describe(self) -> dict[str, Any]:
        """What is being served: version, layout, sizes, device, torch threads, checkpoint path."""
        return {
            "version": self.version,
            "profile": self.layout.config.profile,
            "state_size": self.state_size,
            "hidden_size": self.hidden_size,
            "prediction_size": self.prediction_size,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "max_rows": self.max_rows,
            "checkpoint": self.meta.get("path", ""),
        }


# ------------------------------------------------------------------------------------------------ codecs


def decode_json_states(body: bytes) -> np.ndarray:
    """Read ``{"states": [[...], ...]}`` into a float32 array (numbers only; ragged rows rejected).

    Raises
    ------
    PayloadError
        Empty body, invalid JSON, another shape of object, ragged rows, or values that are not numbers.
    """
    obj = json_body(body, '{"states": [[...], ...]}')
    if not isinstance(obj, dict) or set(obj) != {"states"}:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise PayloadError(f'JSON body must be an object with the one key "states", got {keys}')
    array = json_numbers(obj["states"], "states")
    with np.errstate(over="ignore"):
        return array.astype(np.float32)  # a value beyond float32 becomes inf and is rejected as non-finite


def answer_dtype(hidden_size: int, prediction_size: int) -> np.dtype:
    """The record of one state's answer in a ``.npy`` reply: ``hidden`` [H] and ``predictions`` [P] float32."""
    return np.dtype([("hidden", "<f4", (hidden_size,)), ("predictions", "<f4", (prediction_size,))])


def encode_answer_npy(hidden: np.ndarray, predictions: np.ndarray) -> bytes:
    """A ``.npy`` of one structured record per state (:func:`answer_dtype`); ``np.load`` reads it, no pickle."""
    out = np.empty(hidden.shape[0], dtype=answer_dtype(hidden.shape[1], predictions.shape[1]))
    out["hidden"] = hidden
    out["predictions"] = predictions
    buf = io.BytesIO()
    np.save(buf, out, allow_pickle=False)
    return buf.getvalue()


def decode_answer_npy(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(hidden [B, H], predictions [B, P])`` from a reply written by :func:`encode_answer_npy`."""
    records = np.load(io.BytesIO(body), allow_pickle=False)
    return np.ascontiguousarray(records["hidden"]), np.ascontiguousarray(records["predictions"])


def encode_answer_json(hidden: np.ndarray, predictions: np.ndarray, version: str) -> bytes:
    """``{"hidden": [[...]], "predictions": [[...]], "version": ...}`` as JSON bytes."""
    return orjson.dumps(
        {"hidden": hidden, "predictions": predictions, "version": version}, option=orjson.OPT_SERIALIZE_NUMPY
    )
