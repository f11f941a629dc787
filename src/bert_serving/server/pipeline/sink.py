"""`Sink`: writes each batch's output into its requests' results, in the requests' own row
order, and answers every request exactly once: with its vectors when the last row is in, or
with the first error that hit it. An abandoned request (its client went away) is answered
never: it is only marked done, so the batcher drops its rows not yet run.

Ragged outputs (sparse, ColBERT: `bert_serving.outputs`) are kept as each batch's part of a
request's rows, and put in the request's row order when its last row is in."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import numpy as np

from ...errors import BertServingError
from ...model.outputs import OutputLayout
from ...outputs import DENSE, Ragged, kind_bits
from .batcher import Batch
from .budget import MemoryBudget
from .request import Outcome, Request
from .stats import Stats

__all__ = ["Sink"]

logger = logging.getLogger(__name__)

_DENSE = kind_bits([DENSE])


class Sink:
    def __init__(self, outputs: OutputLayout, stats: Stats, *, show_tokens: bool = False,
                 budget: MemoryBudget | None = None,
                 gathered: Callable[[], AbstractContextManager[None]] = nullcontext) -> None:
        """``gathered``: the answers of one batch are given inside one such block (the coordinator
        sends each edge process its answers of a batch in one message)."""
        self._gathered = gathered
        self._outputs = outputs
        self._show_tokens = show_tokens
        self._stats = stats
        self._budget = budget
        self._lock = threading.Lock()
        self._outstanding: dict[int, Request] = {}  # accepted, not yet answered

    def track(self, request: Request) -> None:
        """Register an accepted request: from now on it will be answered, whatever happens."""
        with self._lock:
            self._outstanding[request.id] = request

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    def fail_outstanding(self, error: BertServingError) -> int:
        """Answer every request still unanswered with ``error`` (shutdown); how many there were."""
        with self._lock:
            pending = list(self._outstanding.values())
        for request in pending:
            self.fail_request(request, error)
        return len(pending)

    def deliver(self, batch: Batch, block: np.ndarray, ragged: dict[str, Ragged] | None = None) -> None:
        """Place ``block`` (the model output for ``batch``, rows in batch order) and the batch's
        ``ragged`` outputs, each request getting what it asked for."""
        finished: list[Request] = []
        start = 0
        with self._lock:
            for request, rows in batch.segments:
                stop = start + len(rows)
                part = block[start:stop]
                if request.done:
                    start = stop
                    continue
                if request.remaining < 0:
                    if request.outputs & _DENSE:
                        request.result = self._outputs.buffer(request.features.lengths)
                    request.remaining = len(request)
                if request.outputs & _DENSE:
                    self._outputs.place(request.result, rows, part, request.features.lengths[rows])
                for kind, rows_of_batch in (ragged or {}).items():
                    if request.outputs & kind_bits([kind]):
                        request.pieces = request.pieces or {}
                        request.pieces.setdefault(kind, []).append((rows, rows_of_batch.rows(start, stop)))
                start = stop
                request.remaining -= len(rows)
                if request.remaining == 0:
                    self._finish(request)
                    finished.append(request)
        with self._gathered():
            for request in finished:
                self._answer(request, request.result, None)

    def fail(self, batch: Batch, error: BertServingError) -> None:
        with self._gathered():
            for request, _ in batch.segments:
                self.fail_request(request, error)

    def fail_request(self, request: Request, error: BertServingError) -> None:
        with self._lock:
            if request.done:
                return
            self._finish(request)
            request.result = request.pieces = None
        self._answer(request, None, error)

    def abandon(self, request: Request) -> None:
        """Its client went away: no answer, and its rows not yet run are dropped."""
        with self._lock:
            if request.done:
                return
            self._finish(request)
            request.result = request.pieces = None
        self._stats.error("abandoned")

    def _finish(self, request: Request) -> None:
        """Mark ``request`` answered (under the lock) and give back what it held."""
        request.done = True
        self._outstanding.pop(request.id, None)
        if self._budget is not None and request.reserved_bytes:
            self._budget.release(request.reserved_bytes)
            request.reserved_bytes = 0

    def _answer(self, request: Request, result: np.ndarray | None, error: BertServingError | None) -> None:
        tokens = None
        if error is None and self._show_tokens and request.features.tokens is not None:
            tokens = [list(t) for t in request.features.tokens]
        ragged = _assembled(request.pieces) if error is None and request.pieces else {}
        request.pieces = None
        self._stats.request_done(request, error, time.perf_counter())
        try:
            request.reply(Outcome(result, tokens, error, request.features.num_tokens, **ragged))
        except Exception:  # an edge's reply failing must not take the sink down
            logger.exception("replying to request %d failed", request.id)


def _assembled(pieces: dict[str, list[tuple[np.ndarray, Ragged]]]) -> dict[str, Ragged]:
    """Each kind's parts in the request's own row order."""
    out = {}
    for kind, parts in pieces.items():
        rows = np.concatenate([r for r, _ in parts])
        out[kind] = Ragged.concat([p for _, p in parts]).take(np.argsort(rows, kind="stable"))
    return out
