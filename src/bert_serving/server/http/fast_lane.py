"""`FastLane`: the hot POST routes (embeddings, ``/encode``, ``/predict``, the rerank routes) without
FastAPI's per-request machinery, for the requests that need none of it.

Under many small requests about half of the HTTP edge's CPU went to FastAPI's own handling of
each request (routing, dependency solving, body parsing and validation, exception layers)
rather than to serving it. This ASGI middleware, inside the body limit and CORS, answers a POST to
one of those routes itself when its body is JSON that the route's own request model accepts and
its key (if the server has one) is right: it calls the very endpoint FastAPI would have called,
with the same validated body. Everything else (a body that does not validate, a wrong key, any
other route) goes on to FastAPI unchanged, so every error is still FastAPI's, word for word. A big
body is parsed and validated on a thread, off the event loop, so that a flood of large requests
does not hold up the small ones of other clients.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from ...errors import BertServingError
from .model_switch import PARSED

__all__ = ["FastLane", "Route"]

Route = tuple[type[BaseModel], Callable[[BaseModel, Request], Awaitable[Response]]]
_JSON = "application/json"
_INLINE_BYTES = 256 * 1024  # bodies up to this size are parsed on the event loop; bigger ones on a thread


def _validate(model: type[BaseModel], body: bytes, parsed: object = None) -> BaseModel:
    """``parsed``: the body's JSON, when a `ModelSwitch` parsed it already."""
    return model.model_validate(orjson.loads(body) if parsed is None else parsed)


class FastLane:
    def __init__(self, app, routes: dict[str, Route], authorized: Callable[[Request], bool],
                 refused: Callable[[Request, BertServingError], Response]) -> None:
        self.app, self.routes = app, routes
        self._authorized, self._refused = authorized, refused

    async def __call__(self, scope, receive, send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            return await self.app(scope, receive, send)
        message = await receive()  # the body limit's replay: the whole body in one message
        pending = [message]

        async def replay():
            return pending.pop() if pending else await receive()  # then: wait for a disconnect

        request = Request(scope, replay)
        body = self._body(message, request)
        if body is None or not self._authorized(request):
            return await self.app(scope, replay, send)
        model, endpoint = route
        try:  # as FastAPI validates a body: the parsed JSON, in Python mode
            known = scope.get(PARSED)
            if len(body) > _INLINE_BYTES:  # off the event loop: other clients' requests go on meanwhile
                parsed = await asyncio.get_running_loop().run_in_executor(None, _validate, model, body, known)
            else:
                parsed = _validate(model, body, known)
        except Exception:  # not JSON, not valid, a validator's own error: FastAPI answers it, in its words
            return await self.app(scope, replay, send)
        pending.clear()
        try:
            response = await endpoint(parsed, request)
        except BertServingError as exc:
            response = self._refused(request, exc)
        await response(scope, replay, send)

    @staticmethod
    def _body(message: dict, request: Request) -> bytes | None:
        if message["type"] != "http.request" or message.get("more_body"):
            return None
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != _JSON:  # FastAPI decides what else to accept
            return None
        return message.get("body", b"")
