"""The frames between the server and a local worker process (see `worker_main`), and how a
batch's `Features` travel: four raw buffers, no copy on the server's side."""

from __future__ import annotations

import numpy as np

from ...model.features import Features

__all__ = ["BATCH", "ERR", "OK", "READY", "SPEC", "STOP", "pack", "unpack"]

SPEC, BATCH, STOP, READY, OK, ERR = b"SPEC", b"BATCH", b"STOP", b"READY", b"OK", b"ERR"


def pack(features: Features) -> list:
    return [features.input_ids, features.type_ids, features.pool_mask.view(np.uint8), features.offsets]


def unpack(frames: list) -> Features:
    ids, types, mask, offsets = (f.buffer for f in frames)
    return Features(
        input_ids=np.frombuffer(ids, dtype=np.int32),
        type_ids=np.frombuffer(types, dtype=np.int8),
        pool_mask=np.frombuffer(mask, dtype=np.uint8).view(np.bool_),
        offsets=np.frombuffer(offsets, dtype=np.int64),
    )
