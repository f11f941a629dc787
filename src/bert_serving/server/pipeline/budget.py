"""`MemoryBudget`: bytes held for accepted work, bounded; past the bound, new work is refused.

The pipeline keeps one (``-max_queued_bytes``) for what it holds per request: its texts from
admission until tokenized (their size as sent), then its result buffer until answered (``N x D``
floats, ``N x T x D`` with NONE pooling). The HTTP edge keeps its own for the request bodies it
is reading. An empty budget takes work of any size: a single request is bounded by the
per-request limits (``-max_request_bytes``, ``-max_result_bytes``) instead.
"""

from __future__ import annotations

import threading

from ...errors import OverloadedError

__all__ = ["MemoryBudget", "human_bytes", "size_of_texts"]


class MemoryBudget:
    def __init__(self, limit_bytes: int, *, what: str = "the server's backlog") -> None:
        self.limit_bytes = limit_bytes
        self._what = what
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._used

    def reserve(self, nbytes: int) -> None:
        """Hold ``nbytes``; `OverloadedError` at once if that would pass the limit."""
        with self._lock:
            if self._used and self._used + nbytes > self.limit_bytes:
                raise OverloadedError(f"{self._what} is full ({human_bytes(self._used)} of {human_bytes(self.limit_bytes)} "
                                      "held for requests in progress); retry later")
            self._used += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes


def size_of_texts(texts: object) -> int:
    """About what a request's decoded texts occupy: characters plus a string's own overhead."""
    if not isinstance(texts, list):
        return 0
    total = 56 * len(texts)
    for text in texts:
        if isinstance(text, str):
            total += len(text)
        elif isinstance(text, list):
            total += sum(56 + len(t) if isinstance(t, str) else 32 for t in text)
    return total


def human_bytes(nbytes: float) -> str:
    """``1.5 GiB``, for messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"
