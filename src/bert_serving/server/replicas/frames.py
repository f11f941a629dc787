"""The messages between the coordinator and one local worker process, over their `Channel`.

The worker learns what to load from a JSON document on its standard input (`processes.child`);
batches and results then travel over one end of a socket pair that the worker inherits::

    server -> worker  [BATCH, json{seq}, input_ids i32, type_ids i8, pool_mask u8, offsets i64(, kinds u8)]
                      [STOP]
    worker -> server  [READY, json{pid, device}]  after loading and one warm-up pass
                      [OK, json{seq, dtype, shape(, parts)}, vectors(, part, ...)]
                      [ERR, json{seq, message, out_of_memory}]   a failed batch, or a failed start (seq -1)

A batch whose texts want more than their dense vectors carries ``kinds``, per text the outputs
it asks for (`bert_serving.outputs.kind_bits`); its answer then carries the sparse and ColBERT
rows as named flat arrays after the vectors (``parts``: ``[[name, dtype, shape], ...]``,
`outputs.to_parts`).

Batches are answered in the order they were sent; the server may send the next ones before the
first is answered (``-prefetch_size``), so the worker never waits for the server between two.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing

import numpy as np

from ...model.features import Features
from ...model.outputs import BatchOutput
from ...model.settings import EncoderSettings
from ...outputs import Ragged, from_parts, to_parts

__all__ = ["BATCH", "ERR", "OK", "READY", "STOP", "error_frames", "ok_frames", "pack", "read_ok", "settings_from_json",
           "settings_to_json", "unpack"]

BATCH, STOP, READY, OK, ERR = b"BATCH", b"STOP", b"READY", b"OK", b"ERR"


def pack(seq: int, features: Features, kinds: np.ndarray | None = None) -> list:
    frames = [BATCH, json.dumps({"seq": seq}).encode(), features.input_ids, features.type_ids,
              features.pool_mask.view(np.uint8), features.offsets]
    return frames if kinds is None else [*frames, kinds]


def unpack(frames: list) -> tuple[Features, np.ndarray | None]:
    """A batch's features, and its texts' output kinds (None: dense vectors alone)."""
    ids, types, mask, offsets, *kinds = frames
    features = Features(
        input_ids=np.frombuffer(ids, dtype=np.int32),
        type_ids=np.frombuffer(types, dtype=np.int8),
        pool_mask=np.frombuffer(mask, dtype=np.uint8).view(np.bool_),
        offsets=np.frombuffer(offsets, dtype=np.int64),
    )
    return features, np.frombuffer(kinds[0], dtype=np.uint8) if kinds else None


def ok_frames(seq: int, result: np.ndarray | BatchOutput) -> list:
    """A batch's answer: its vectors, or a `BatchOutput` (dense vectors and ragged outputs)."""
    ragged = None
    if isinstance(result, BatchOutput):
        result, ragged = result.dense, result.ragged
    vectors = np.ascontiguousarray(result)
    meta = {"seq": seq, "dtype": vectors.dtype.str, "shape": vectors.shape}
    if not ragged:
        return [OK, json.dumps(meta).encode(), vectors]
    parts = to_parts(ragged)
    meta["parts"] = [[name, array.dtype.str, array.shape] for name, array in parts]
    # flat: an empty [N, 0] block has no bytes to view as such (the shapes travel in the JSON)
    return [OK, json.dumps(meta).encode(), vectors.reshape(-1), *(np.ascontiguousarray(a).reshape(-1) for _, a in parts)]


def read_ok(meta: dict, frames: list) -> tuple[np.ndarray, dict[str, Ragged] | None]:
    """The vectors and ragged outputs of an OK message (its frames after the JSON)."""
    vectors = np.frombuffer(frames[0], dtype=meta["dtype"]).reshape(meta["shape"])
    if "parts" not in meta:
        return vectors, None
    return vectors, from_parts((name, np.frombuffer(frame, dtype=dtype).reshape(shape))
                               for (name, dtype, shape), frame in zip(meta["parts"], frames[1:]))


def error_frames(seq: int, exc: BaseException) -> list[bytes]:
    out_of_memory = type(exc).__name__ == "OutOfMemoryError"  # torch.cuda.OutOfMemoryError, without importing torch
    return [ERR, json.dumps({"seq": seq, "message": f"{type(exc).__name__}: {exc}",
                             "out_of_memory": out_of_memory}).encode()]


def settings_to_json(settings: EncoderSettings) -> dict[str, object]:
    """``settings`` as plain JSON values: enums by name, tuples as lists."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = value.name if isinstance(value, enum.Enum) else list(value) if isinstance(value, tuple) else value
    return out


def settings_from_json(values: dict[str, object]) -> EncoderSettings:
    """The inverse of `settings_to_json`, guided by the fields' types."""
    hints = typing.get_type_hints(EncoderSettings)
    kwargs = {}
    for f in dataclasses.fields(EncoderSettings):
        if f.name not in values:
            continue
        value, kinds = values[f.name], typing.get_args(hints[f.name]) or (hints[f.name],)
        enum_kind = next((k for k in kinds if isinstance(k, type) and issubclass(k, enum.Enum)), None)
        if enum_kind is not None and isinstance(value, str):
            value = enum_kind[value]
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return EncoderSettings(**kwargs)
