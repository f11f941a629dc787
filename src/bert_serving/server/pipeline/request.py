"""`Request`: one client request inside the server, from tokenization to its single reply.

It carries the tokenized texts, how to answer (a callback owned by the edge it came from:
the ZeroMQ frontend or the HTTP app), and the reassembly state the sink keeps. A `Ticket` is
what the edge holds meanwhile: abandoning it (the client went away) drops the rows not yet run.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import BertServingError
from ...model.features import Features
from ...outputs import Ragged

__all__ = ["Outcome", "ReplyFn", "Request", "Ticket"]


@dataclass(frozen=True)
class Outcome:
    """How a request ended: its vectors (and word pieces), or the error that stopped it. A request
    for other outputs (`bert_serving.outputs`) gets them beside (``result``: its dense vectors, if
    it asked for them)."""

    result: np.ndarray | None = None
    tokens: list[list[str]] | None = None
    error: BertServingError | None = None
    num_tokens: int = 0  # tokens the model saw for it, [CLS]/[SEP] included
    sparse: Ragged | None = None  # per text: "indices" and "values"
    colbert: Ragged | None = None  # per text: "vectors", one per token but [CLS]

    @property
    def ragged(self) -> dict[str, Ragged] | None:
        """Its ragged outputs by kind, or None."""
        found = {kind: part for kind, part in (("sparse", self.sparse), ("colbert", self.colbert)) if part is not None}
        return found or None


ReplyFn = Callable[[Outcome], None]


_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    features: Features
    reply: ReplyFn
    client: str  # who asked, for statistics ("zmq:<identity>", "http:<address>")
    id: int = field(default_factory=lambda: next(_ids))
    received_at: float = field(default_factory=time.perf_counter)
    tokenized_at: float = 0.0
    first_batch_at: float = 0.0
    reserved_bytes: int = 0  # held in the pipeline's memory budget until answered
    outputs: int = 1  # what it asks for (`bert_serving.outputs.kind_bits`): dense vectors by default
    # reassembly state, owned by the sink
    result: np.ndarray | None = None
    pieces: dict[str, list[tuple[np.ndarray, Ragged]]] | None = None  # ragged outputs: (rows, their part)
    remaining: int = -1
    done: bool = False

    def __len__(self) -> int:
        return len(self.features)


class Ticket:
    """A submitted request as its edge holds it. `abandon` says the client has gone: the
    request's rows not yet run are dropped, and it gets no answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._request: Request | None = None
        self._on_abandon: Callable[[Request], None] | None = None

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def attach(self, request: Request, on_abandon: Callable[[Request], None]) -> bool:
        """Link the queued ``request``; False if the ticket was abandoned already (do not queue it)."""
        with self._lock:
            if self._abandoned:
                return False
            self._request, self._on_abandon = request, on_abandon
            return True

    def abandon(self) -> None:
        with self._lock:
            if self._abandoned:
                return
            self._abandoned = True
            request, on_abandon = self._request, self._on_abandon
        if request is not None and on_abandon is not None:
            on_abandon(request)
