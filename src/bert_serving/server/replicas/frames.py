"""The messages between the coordinator and one local worker process, over their `Channel`.

The worker learns what to load from a JSON document on its standard input (`processes.child`);
batches and results then travel over one end of a socket pair that the worker inherits::

    server -> worker  [BATCH, json{seq}, input_ids i32, type_ids i8, pool_mask u8, offsets i64]
                      [STOP]
    worker -> server  [READY, json{pid, device}]  after loading and one warm-up pass
                      [OK, json{seq, dtype, shape}, vectors]
                      [ERR, json{seq, message, out_of_memory}]   a failed batch, or a failed start (seq -1)

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
from ...model.settings import EncoderSettings

__all__ = ["BATCH", "ERR", "OK", "READY", "STOP", "error_frames", "pack", "settings_from_json",
           "settings_to_json", "unpack"]

BATCH, STOP, READY, OK, ERR = b"BATCH", b"STOP", b"READY", b"OK", b"ERR"


def pack(seq: int, features: Features) -> list:
    return [BATCH, json.dumps({"seq": seq}).encode(), features.input_ids, features.type_ids,
            features.pool_mask.view(np.uint8), features.offsets]


def unpack(frames: list) -> Features:
    ids, types, mask, offsets = frames
    return Features(
        input_ids=np.frombuffer(ids, dtype=np.int32),
        type_ids=np.frombuffer(types, dtype=np.int8),
        pool_mask=np.frombuffer(mask, dtype=np.uint8).view(np.bool_),
        offsets=np.frombuffer(offsets, dtype=np.int64),
    )


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
