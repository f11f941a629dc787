"""`BodyLimit`: the ASGI middleware that bounds request bodies, one by one and all together.

One body may hold at most ``-max_request_bytes`` (413 beyond); all the bodies being read and
served at once at most ``-max_queued_bytes`` (a `MemoryBudget`: 429 ``overloaded`` beyond, at
once, before the body is read when it announces its length, and the connection closed rather
than the rest of the body read). So many clients sending large bodies at the same time cannot
make the server buffer them without bound, nor spend its time reading what it refused. Each refusal is
counted in the server's errors (``/metrics``, SHOW_STATUS), as every other refusal is.
"""

from __future__ import annotations

from ...errors import BertServingError, PayloadTooLargeError
from ..pipeline.budget import MemoryBudget
from ..pipeline.stats import Stats
from .responses import error_response

__all__ = ["BodyLimit"]


class BodyLimit:
    """ASGI middleware: reads the body first (at most ``max_bytes``; 413 beyond), holding its
    size in ``budget`` until the request is answered, then hands the app a replay of it.
    Bodies here are JSON, read whole by the app anyway."""

    def __init__(self, app, max_bytes: int, budget: MemoryBudget | None = None, stats: Stats | None = None) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.budget = budget or MemoryBudget(1 << 62)
        self.stats = stats or Stats()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        announced = int(length) if length.isdigit() else None
        if announced is not None and announced > self.max_bytes:
            too_large = PayloadTooLargeError(f"the request body exceeds {self.max_bytes} bytes (-max_request_bytes)")
            self.stats.error(too_large.code)
            return await _unread(error_response(scope["path"], too_large))(scope, receive, send)
        held = [0]  # bytes of the budget this request holds
        try:
            body = await self._read(receive, announced, held)
            if body is None:
                return  # the client went away
        except BertServingError as exc:  # too large, or the budget is spent: refuse at once
            self.budget.release(held[0])
            self.stats.error(exc.code)
            return await _unread(error_response(scope["path"], exc))(scope, receive, send)
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        del body

        async def replay():
            return pending.pop() if pending else await receive()  # then: wait for a disconnect

        try:
            await self.app(scope, replay, send)
        finally:
            self.budget.release(held[0])

    async def _read(self, receive, announced: int | None, held: list[int]) -> bytes | None:
        if announced is not None:
            self.budget.reserve(announced)
            held[0] = announced
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                self.budget.release(held[0])
                held[0] = 0
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                raise PayloadTooLargeError(f"the request body exceeds {self.max_bytes} bytes (-max_request_bytes)")
            if size > held[0]:  # no length announced, or more than announced
                self.budget.reserve(size - held[0])
                held[0] = size
            if not message.get("more_body"):
                return b"".join(chunks)


def _unread(response):
    """A refusal sent before the body was read whole: the connection closes after it, so that the
    rest of the body is never read (a flood of large bodies costs its refusals, not its bytes)."""
    response.headers["Connection"] = "close"
    return response
