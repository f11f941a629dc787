"""The messages between an edge process and the coordinator, over their `processes.channel.Channel`.

Frames are bytes: JSON, and raw arrays sent from their own memory (never pickles)::

    edge -> coordinator
      [READY, json{pid}]                              the edge serves (after its set-up)
      [SUBMIT, json{"r": [[id, rows, received_at, tokenized_at(, outputs)], ...](, "m": model)},
               input_ids i32, type_ids i8, pool_mask u8, offsets i64]
                                                      requests, tokenized, their rows end to end;
                                                      outputs: what one asks for, when not its
                                                      dense vectors alone (`bert_serving.outputs`);
                                                      model: which served model they are for (its
                                                      index in the orders' models; 0, the default,
                                                      when absent)
      [ABANDON, json{"ids": [...]}]                   their clients went away
      [STATS, json(Stats.take())]                     what the edge counted since it last said
      [CALL, json{"call": n, "what": ..., ...}]       a view (observe) or control (stop)
      [SYNCED, json{"sync": n}]                       stats handed over, as SYNC n asked
    coordinator -> edge
      [ANSWERS, json[[id, dtype, shape(, parts)] | [id, {code, message}], ...], array, ...]
                                                      results (an array each) or errors, of one batch;
                                                      with parts [[name, dtype, shape], ...] its ragged
                                                      outputs follow its array (`outputs.to_parts`);
                                                      dtype null: no dense array
      [RETURN, json{"call": n, "value": ...}]         a call's answer
      [SYNC, json{"sync": n}]                         hand over your stats now (a view is asked for)
      [CLOSE]                                         stop taking requests (the server drains)
      [STOP]                                          go, once everything handed over is answered

Times are ``time.perf_counter()`` readings, the same clock in every process of a machine.
"""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np

from ...errors import BertServingError, error_from_code
from ...model.features import Features
from ...outputs import Ragged, from_parts, to_parts

__all__ = ["ABANDON", "ANSWERS", "CALL", "CLOSE", "READY", "RETURN", "STATS", "STOP", "SUBMIT", "SYNC",
           "SYNCED", "answer_frames", "dumps", "read_answers", "read_submission", "submission_frames",
           "submission_header"]

READY, SUBMIT, ABANDON, STATS, CALL, SYNCED = b"READY", b"SUBMIT", b"ABANDON", b"STATS", b"CALL", b"SYNCED"
ANSWERS, RETURN, SYNC, CLOSE, STOP = b"ANSWERS", b"RETURN", b"SYNC", b"CLOSE", b"STOP"


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def submission_frames(requests: list[tuple[int, Features, float, float, int]], model: int = 0) -> list:
    """One SUBMIT for ``(id, features, received_at, tokenized_at, outputs)`` of several requests
    for the served model ``model`` (an index: 0 is the default model)."""
    meta = [[rid, len(features), received, tokenized] if outputs == 1 else
            [rid, len(features), received, tokenized, outputs]
            for rid, features, received, tokenized, outputs in requests]
    parts = [features for _, features, _, _, _ in requests]
    if len(parts) == 1:
        ids, types, mask, lengths = parts[0].input_ids, parts[0].type_ids, parts[0].pool_mask, parts[0].lengths
    else:
        ids = np.concatenate([p.input_ids for p in parts])
        types = np.concatenate([p.type_ids for p in parts])
        mask = np.concatenate([p.pool_mask for p in parts])
        lengths = np.concatenate([p.lengths for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return [SUBMIT, dumps({"r": meta, "m": model} if model else {"r": meta}), np.ascontiguousarray(ids, dtype=np.int32),
            np.ascontiguousarray(types, dtype=np.int8), np.ascontiguousarray(mask).view(np.uint8), offsets]


def submission_header(frames: list) -> dict:
    """A SUBMIT's JSON: its requests (``r``) and the served model they are for (``m``, an index;
    absent: 0, the default)."""
    return json.loads(bytes(frames[1]))


def read_submission(frames: list, header: dict | None = None) -> Iterator[tuple[int, Features, float, float, int]]:
    """The requests of a SUBMIT: ``(id, features, received_at, tokenized_at, outputs)``, their
    features views of the message's buffer (``header``: its `submission_header`, if read)."""
    meta = (header or submission_header(frames))["r"]
    whole = Features(input_ids=np.frombuffer(frames[2], dtype=np.int32), type_ids=np.frombuffer(frames[3], dtype=np.int8),
                     pool_mask=np.frombuffer(frames[4], dtype=np.uint8).view(np.bool_),
                     offsets=np.frombuffer(frames[5], dtype=np.int64))
    if len(meta) == 1:
        rid, _, received, tokenized, *outputs = meta[0]
        yield rid, whole, received, tokenized, outputs[0] if outputs else 1
        return
    start = 0
    for rid, rows, received, tokenized, *outputs in meta:
        yield rid, whole.rows(start, start + rows), received, tokenized, outputs[0] if outputs else 1
        start += rows


Answer = tuple[int, "np.ndarray | None", "BertServingError | None", "dict[str, Ragged] | None"]


def answer_frames(answers: list[Answer]) -> list:
    """One ANSWERS message for ``(id, result, error, ragged outputs)`` of several requests."""
    meta, arrays = [], []
    for rid, result, error, ragged in answers:
        if error is not None:
            meta.append([rid, error.to_dict()])
            continue
        entry = [rid, None, None]
        if result is not None:
            result = np.ascontiguousarray(result)
            entry = [rid, result.dtype.str, result.shape]
            arrays.append(result)
        if ragged:
            parts = to_parts(ragged)
            entry.append([[name, array.dtype.str, array.shape] for name, array in parts])
            arrays.extend(np.ascontiguousarray(array).reshape(-1) for _, array in parts)  # flat: some are empty
        meta.append(entry)
    return [ANSWERS, dumps(meta), *arrays]


def read_answers(frames: list) -> Iterator[Answer]:
    arrays = iter(frames[2:])
    for entry in json.loads(bytes(frames[1])):
        if len(entry) == 2:
            rid, detail = entry
            error = error_from_code(detail["code"], detail["message"])
            error.param = detail.get("param")
            yield rid, None, error, None
            continue
        rid, dtype, shape, *parts = entry
        result = None if dtype is None else np.frombuffer(next(arrays), dtype=dtype).reshape(shape)
        ragged = None
        if parts:
            ragged = from_parts((name, np.frombuffer(next(arrays), dtype=kind).reshape(size))
                                for name, kind, size in parts[0])
        yield rid, result, None, ragged
