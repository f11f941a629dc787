"""`BodyLimit`: the ASGI middleware that caps request bodies (``-max_request_bytes``)."""

from __future__ import annotations

from ...errors import PayloadTooLargeError
from .responses import error_response

__all__ = ["BodyLimit"]


class BodyLimit:
    """ASGI middleware: reads the body first (at most ``max_bytes``; 413 beyond), then hands
    the app a replay of it. Bodies here are JSON, read whole by the app anyway."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_large = PayloadTooLargeError(f"the request body exceeds {self.max_bytes} bytes (-max_request_bytes)")
        length = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            return await error_response(scope["path"], too_large)(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await error_response(scope["path"], too_large)(scope, receive, send)
            if not message.get("more_body"):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()  # then: wait for a disconnect

        await self.app(scope, replay, send)
