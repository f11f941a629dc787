"""Where 1.10.0 code imports its helpers from: ``from bert_serving.server.helper import get_args_parser``.

The names its users imported, with the original's signatures: the parsers, ``get_run_args``,
``set_logger``, ``send_ndarray``, ``check_max_seq_len``, ``auto_bind`` and ``TimeContext``.
``import_tf`` and ``check_tf_version`` are gone with TensorFlow.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import zmq

from .cli import get_args_parser, get_benchmark_parser, get_shutdown_parser
from .cli import max_seq_len as check_max_seq_len

__all__ = ["TimeContext", "auto_bind", "check_max_seq_len", "get_args_parser", "get_benchmark_parser", "get_run_args",
           "get_shutdown_parser", "send_ndarray", "set_logger"]


def get_run_args(parser_fn=get_args_parser, printed: bool = True):
    """Parse ``sys.argv`` with ``parser_fn()``, printing every argument as 1.10.0 did."""
    args = parser_fn().parse_args()
    if printed:
        values = "\n".join(f"{k:>20} = {v}" for k, v in sorted(vars(args).items()))
        print(f"usage: {' '.join(sys.argv)}\n{'ARG':>20}   VALUE\n{'_' * 50}\n{values}\n")
    return args


def set_logger(context: str, verbose: bool = False) -> logging.Logger:
    """A logger named ``context`` printing to stderr (DEBUG with ``verbose``), as 1.10.0's."""
    logger = logging.getLogger(context)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(levelname)-.1s:{context}:[%(filename).3s:%(funcName).3s:%(lineno)3d]:"
                                           "%(message)s", datefmt="%m-%d %H:%M:%S"))
    logger.handlers = [handler]
    return logger


def send_ndarray(src: zmq.Socket, dest: bytes, X, req_id: bytes = b"", flags: int = 0, copy: bool = True,  # noqa: N803
                 track: bool = False):
    """Send an array as the 1.10.0 server sent results: ``[dest, json{dtype, shape}, bytes, req_id]``."""
    meta = json.dumps({"dtype": str(X.dtype), "shape": list(X.shape)}).encode()
    return src.send_multipart([dest, meta, X, req_id], flags, copy=copy, track=track)


def auto_bind(socket: zmq.Socket) -> str:
    """Bind ``socket`` to a free local endpoint and return it (1.10.0 used ipc; this is TCP on
    127.0.0.1, which works everywhere)."""
    socket.bind_to_random_port("tcp://127.0.0.1")
    return socket.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")


class TimeContext:
    """``with TimeContext("encoding"):`` prints the message, then the seconds it took."""

    def __init__(self, msg: str) -> None:
        self._msg = msg
        self.duration = 0.0

    def __enter__(self) -> TimeContext:
        self.start = time.perf_counter()
        print(self._msg, end=" ...\t", flush=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self.duration = time.perf_counter() - self.start
        print(f"    [{self.duration:.3f} secs]", flush=True)
