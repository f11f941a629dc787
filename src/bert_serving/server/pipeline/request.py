"""`Request`: one client request inside the server, from tokenization to its single reply.

It carries the tokenized texts, how to answer (a callback owned by the edge it came from:
the ZeroMQ frontend or the HTTP app), and the reassembly state the sink keeps.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import BertServingError
from ...model.features import Features

__all__ = ["Outcome", "ReplyFn", "Request"]


@dataclass(frozen=True)
class Outcome:
    """How a request ended: its vectors (and word pieces), or the error that stopped it."""

    result: np.ndarray | None = None
    tokens: list[list[str]] | None = None
    error: BertServingError | None = None
    num_tokens: int = 0  # tokens the model saw for it, [CLS]/[SEP] included


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
    # reassembly state, owned by the sink
    result: np.ndarray | None = None
    remaining: int = -1
    done: bool = False

    def __len__(self) -> int:
        return len(self.features)
