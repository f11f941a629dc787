"""The ZeroMQ frames of bert-as-service 1.10.0, plus our error reply. numpy + pyzmq only.

Client -> server (PUSH -> PULL on ``port``), always 4 frames::

    [identity, payload, req_id, msg_len]

``payload`` is JSON: a list of texts, a list of token lists, or a control word
(SHOW_CONFIG, SHOW_STATUS, TERMINATION). ``req_id`` and ``msg_len`` are ASCII decimals.
Our extension, objects the stock 1.10.0 client never sends and the server never requires:
``{"texts": [...], "prompt_name": "query"}`` (or ``"prompt": "query: "``) asks for one of the
model's prompts, or a prompt of its own, before each text; ``"precision": "int8"`` (or uint8,
binary, ubinary: `quantization`) for quantized vectors instead of floats; ``"outputs": ["dense",
"sparse", "colbert"]`` (any of them the model has: `outputs`) for sparse or ColBERT vectors, all
from one forward pass; ``"model": "rerank"`` picks a model of a server that serves several (else
its default model); a task object asks a served head for scores::

    {"task": "predict", "texts": ["text", "A ||| B", ["A", "B"], ...], "raw_scores": false}
    {"task": "rerank", "query": "text", "documents": ["text", ...], "raw_scores": false}

answered with the result frames below (scores ``[N, num_labels]``; rerank: ``[N, 1]`` in
document order).

Server -> client (PUB -> SUB on ``port_out``, topic = identity)::

    config/status  [identity, json(dict), req_id]
    result         [identity, json({"dtype", "shape", "tokens"}), raw array bytes, req_id]
    outputs        [identity, json({"dtype", "shape", "tokens", "parts", "sparse_dim"}), raw array bytes,
                    part bytes, ..., req_id]      (a request that named outputs: the dense array, [N, 0]
                                                  if not asked for, then each part: [name, dtype, shape])
    error          [identity, json({"dtype": "<message>", "shape": [0], "tokens": "",
                                    "error": {"code", "message", "type"}}), b"", req_id]

The error reply keeps the result's shape so that the stock 1.10.0 client, which has no error
path, raises (``TypeError: data type '<message>' not understood``) instead of hanging; our
client reads ``error`` and raises the matching `bert_serving.errors` exception. The full
description is in ``docs/protocol.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import zmq

from .errors import BertServingError, InvalidRequestError, error_from_code
from .outputs import DENSE, KINDS, Ragged, from_parts, to_parts
from .quantization import PRECISIONS

__all__ = [
    "PROTOCOL_VERSION",
    "SHOW_CONFIG",
    "SHOW_STATUS",
    "TERMINATION",
    "Reply",
    "ClientMessage",
    "DataRequest",
    "MalformedRequest",
    "config_frames",
    "decode_data",
    "decode_texts",
    "keep_alive",
    "error_frames",
    "parse_reply",
    "parse_request",
    "predict_payload",
    "request_frames",
    "rerank_payload",
    "result_frames",
    "texts_payload",
]

PROTOCOL_VERSION = "1.10.0"  # the stock client insists its server_version equals this
SHOW_CONFIG = b"SHOW_CONFIG"
SHOW_STATUS = b"SHOW_STATUS"
TERMINATION = b"TERMINATION"
COMMANDS = (SHOW_CONFIG, SHOW_STATUS, TERMINATION)
ERROR_DTYPE_PREFIX = "bert-serving error: "
HEARTBEAT_IVL_MS = 10_000
HEARTBEAT_TIMEOUT_MS = 30_000


def keep_alive(sock: zmq.Socket) -> None:
    """Heartbeats (ZMTP PING/PONG) and TCP keep-alive, for sockets that may idle for hours: a
    connection a NAT or firewall dropped meanwhile is noticed, and ZeroMQ reconnects."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 15)


@dataclass(frozen=True)
class ClientMessage:
    """One well-formed client message; ``command`` is set for control words."""

    identity: bytes
    payload: bytes
    req_id: int
    msg_len: int

    @property
    def command(self) -> bytes | None:
        if self.payload in COMMANDS:
            return self.payload
        if self.payload.startswith(TERMINATION + b" "):  # TERMINATION <token>
            return TERMINATION
        return None

    @property
    def token(self) -> bytes | None:
        """The token a TERMINATION carries, if any: raw bytes, whatever a peer sent."""
        if self.payload.startswith(TERMINATION + b" "):
            return self.payload[len(TERMINATION) + 1 :]
        return None


def request_frames(identity: bytes, payload: bytes, req_id: int, msg_len: int = 0) -> list[bytes]:
    return [identity, payload, b"%d" % req_id, b"%d" % msg_len]


class MalformedRequest(InvalidRequestError):
    """A message that is not 4 well-formed frames; carries what could be salvaged to reply."""

    def __init__(self, message: str, identity: bytes | None, req_id: int) -> None:
        super().__init__(message)
        self.identity = identity
        self.req_id = req_id


def parse_request(frames: list[bytes]) -> ClientMessage:
    """Check the 4-frame shape; raise `MalformedRequest` (with a reply address if any)."""
    identity = bytes(frames[0]) if frames and 0 < len(frames[0]) <= 256 else None
    last = bytes(frames[-1]) if frames else b""
    salvaged_id = int(last) if last.isdigit() and len(last) < 19 else 0
    if len(frames) != 4:
        raise MalformedRequest(
            f"expected 4 frames [identity, payload, req_id, msg_len], got {len(frames)}", identity, salvaged_id
        )
    identity_f, payload, req_id, msg_len = (bytes(f) for f in frames)
    if identity is None:
        raise MalformedRequest("the identity frame must be 1 to 256 bytes", None, 0)
    if not (req_id.isdigit() and msg_len.isdigit()) or len(req_id) > 18 or len(msg_len) > 18:
        raise MalformedRequest("req_id and msg_len must be ASCII decimal numbers", identity, salvaged_id)
    return ClientMessage(identity_f, payload, int(req_id), int(msg_len))


def _load(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except UnicodeDecodeError:
        raise InvalidRequestError("the payload is not UTF-8 encoded JSON") from None
    except ValueError as exc:
        raise InvalidRequestError(f"the payload is not valid JSON: {exc}") from None


def decode_texts(payload: bytes) -> tuple[list, bool]:
    """The texts of a 1.10.0 data request (a JSON list) and whether they are pre-tokenized
    (lists of tokens). `decode_data` also reads our objects."""
    texts = _load(payload)
    if not isinstance(texts, list):
        raise InvalidRequestError(f"the payload must be a JSON list of texts, got {type(texts).__name__}")
    return texts, _tokenized(texts)


@dataclass(frozen=True)
class DataRequest:
    """A data request: the original's (a list), or one of our objects (a prompt, a task)."""

    texts: list  # texts or token lists; for predict / rerank, texts and [A, B] pairs
    is_tokenized: bool = False
    prompt_name: object = None  # checked where the model's prompts are known
    prompt: object = None
    task: str | None = None  # None: the original's request; "predict" or "rerank"
    raw_scores: bool = False
    precision: str | None = None  # quantized vectors (`quantization.PRECISIONS`); None: as the model gives them
    outputs: tuple[str, ...] | None = None  # what to answer (`outputs.KINDS`); None: the dense vectors
    model: str | None = None  # which served model (a server with several); None: its default model


_DATA_FIELDS = ("texts", "prompt_name", "prompt", "precision", "outputs", "model")


def decode_data(payload: bytes) -> DataRequest:
    """Any data request: the 1.10.0 JSON list of texts, ``{"texts": [...], "prompt_name"|"prompt": ...}``
    or a task object; raises `InvalidRequestError` naming what is wrong with it."""
    value = _load(payload)
    if isinstance(value, list):
        return DataRequest(value, _tokenized(value))
    if not isinstance(value, dict):
        raise InvalidRequestError(f"the payload must be a JSON list of texts, got {type(value).__name__}")
    model = value.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequestError(f"model must be the name of a served model, got {model!r:.60}", param="model")
    if "task" in value:
        return replace(_decode_task(value), model=model)
    unknown = sorted(set(value) - set(_DATA_FIELDS))
    if unknown or "texts" not in value:
        raise InvalidRequestError(
            'the payload must be a JSON list of texts, or an object {"texts": [...], "prompt_name"|"prompt": ..., '
            '"precision": ..., "outputs": [...]} (or a task object {"task": "predict"|"rerank", ...}); '
            f"got an object with {', '.join(map(str, value)) or 'no fields'}")
    texts, precision = value["texts"], value.get("precision")
    if not isinstance(texts, list):
        raise InvalidRequestError(f"texts must be a JSON list of texts, got {type(texts).__name__}", param="texts")
    if precision is not None and precision not in PRECISIONS:
        raise InvalidRequestError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r:.40}",
                                  param="precision")
    outputs = value.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not outputs or not all(o in KINDS for o in outputs):
            raise InvalidRequestError(f"outputs must be a non-empty list of {', '.join(KINDS)}, got {outputs!r:.60}",
                                      param="outputs")
        if precision is not None and list(outputs) != [DENSE]:
            raise InvalidRequestError("precision quantizes dense vectors; ask for outputs [\"dense\"] with it",
                                      param="precision")
        outputs = tuple(outputs)
    return DataRequest(texts, _tokenized(texts), value.get("prompt_name"), value.get("prompt"), precision=precision,
                       outputs=outputs, model=model)


def _decode_task(value: dict) -> DataRequest:
    task, raw_scores = value.get("task"), value.get("raw_scores", False)
    if task not in ("predict", "rerank"):
        raise InvalidRequestError(f"unknown task {task!r:.40} in the payload; one of predict, rerank", param="task")
    if "prompt_name" in value or "prompt" in value:
        raise InvalidRequestError(f"prompts are for embeddings; the {task} task takes none", param="prompt_name")
    if not isinstance(raw_scores, bool):
        raise InvalidRequestError("raw_scores must be true or false", param="raw_scores")
    if task == "predict":
        return DataRequest(value.get("texts"), task=task, raw_scores=raw_scores)
    query, documents = value.get("query"), value.get("documents")
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequestError("query must be a non-blank text", param="query")
    if not isinstance(documents, list) or not documents:
        raise InvalidRequestError("documents must be a non-empty list of texts", param="documents")
    for i, document in enumerate(documents):
        if not isinstance(document, str) or not document.strip():
            raise InvalidRequestError(f"documents[{i}] must be a non-blank text, got {document!r:.80}",
                                      param="documents")
    return DataRequest([[query, d] for d in documents], task=task, raw_scores=raw_scores)


def _tokenized(texts: list) -> bool:
    return bool(texts) and all(isinstance(t, list) for t in texts)


def texts_payload(texts: list, *, prompt_name: str | None = None, prompt: str | None = None,
                  precision: str | None = None, outputs: list[str] | None = None, model: str | None = None) -> bytes:
    """The payload of a data request: the 1.10.0 list, or with a prompt, a precision or outputs our object form."""
    options = {key: value for key, value in (("prompt_name", prompt_name), ("prompt", prompt),
                                             ("precision", precision), ("outputs", outputs), ("model", model))
               if value is not None}
    return json.dumps({"texts": texts, **options} if options else texts).encode("utf-8")


def predict_payload(texts: list, raw_scores: bool = False, model: str | None = None) -> bytes:
    """The payload asking a served head for the scores of ``texts`` (strings, or [A, B] pairs)."""
    return json.dumps({"task": "predict", "texts": texts, "raw_scores": raw_scores,
                       **({"model": model} if model is not None else {})}).encode("utf-8")


def rerank_payload(query: str, documents: list, raw_scores: bool = False, model: str | None = None) -> bytes:
    """The payload asking a served reranker for the relevance of each document to ``query``."""
    return json.dumps({"task": "rerank", "query": query, "documents": documents, "raw_scores": raw_scores,
                       **({"model": model} if model is not None else {})}).encode("utf-8")


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")


@lru_cache(maxsize=None)
def _dtype_name(dtype: np.dtype) -> str:
    return str(dtype)  # "float32": what 1.10.0 wrote; numpy builds the name in Python, each time


def result_frames(identity: bytes, req_id: int, array: np.ndarray, tokens: list | None = None,
                  ragged: dict[str, Ragged] | None = None, sparse_dim: int = 0) -> list:
    if ragged is not None:  # outputs a request named: their parts after the dense array
        parts = to_parts(ragged)
        header = _json({"dtype": _dtype_name(array.dtype), "shape": list(array.shape), "tokens": tokens or "",
                        "parts": [[name, a.dtype.str, list(a.shape)] for name, a in parts], "sparse_dim": sparse_dim})
        return [identity, header, np.ascontiguousarray(array).reshape(-1),
                *(np.ascontiguousarray(a).reshape(-1) for _, a in parts), b"%d" % req_id]
    if tokens is None:  # the usual answer: json.dumps's bytes, written directly (a few microseconds less)
        header = b'{"dtype": "%s", "shape": [%s], "tokens": ""}' % (
            _dtype_name(array.dtype).encode(), ", ".join(map(str, array.shape)).encode())
    else:
        header = _json({"dtype": _dtype_name(array.dtype), "shape": list(array.shape), "tokens": tokens})
    return [identity, header, np.ascontiguousarray(array), b"%d" % req_id]


def error_frames(identity: bytes, req_id: int, error: BertServingError) -> list[bytes]:
    header = {
        "dtype": f"{ERROR_DTYPE_PREFIX}{error.message}",
        "shape": [0],
        "tokens": "",
        "error": error.to_dict(),
    }
    return [identity, _json(header), b"", b"%d" % req_id]


def config_frames(identity: bytes, req_id: int, config: dict) -> list[bytes]:
    return [identity, _json(config), b"%d" % req_id]


@dataclass(frozen=True)
class Reply:
    """A server message as a client sees it: exactly one of the three is set."""

    req_id: int
    embedding: np.ndarray | None = None
    tokens: Any = ""
    config: dict | None = None
    error: BertServingError | None = None
    ragged: dict[str, Ragged] | None = None  # the sparse / ColBERT outputs a request named
    sparse_dim: int = 0


def parse_reply(frames: list) -> Reply:
    req_id = int(bytes(frames[-1]))
    header = json.loads(bytes(frames[1]))
    if len(frames) == 3:
        return Reply(req_id, config=header)
    if "error" in header:
        err = header["error"]
        return Reply(req_id, error=error_from_code(err.get("code", ""), err.get("message", "server error")))
    array = np.frombuffer(frames[2], dtype=header["dtype"]).reshape(header["shape"])
    ragged = None
    if "parts" in header:
        ragged = from_parts((name, np.frombuffer(frame, dtype=dtype).reshape(shape))
                            for (name, dtype, shape), frame in zip(header["parts"], frames[3:-1]))
    return Reply(req_id, embedding=array, tokens=header.get("tokens", ""), ragged=ragged,
                 sparse_dim=header.get("sparse_dim", 0))
