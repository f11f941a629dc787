"""The HTTP app with and without its fast lane (`bert_serving.server.http.fast_lane`), asked the
same requests: what each answered, and which requests the lane left to FastAPI."""

from __future__ import annotations

import asyncio

import httpx
from starlette.middleware import Middleware

from bert_serving.server.http.app import HttpSettings, create_app
from bert_serving.server.http.fast_lane import FastLane


def both_answers(server, settings: HttpSettings, requests: list[tuple[str, object]]) -> tuple[list, list, list[bool]]:
    """``(with the lane, without it, passed on)``: each answer as ``(status, sorted headers,
    body bytes)``; ``passed_on[i]``: the lane left request ``i`` to FastAPI. One request at a
    time, so that each is a batch of its own both times."""
    gateway = server.gateway()
    with_lane, without = create_app(gateway, settings), create_app(gateway, settings)
    assert any(m.cls is FastLane for m in with_lane.user_middleware)
    without.user_middleware = [m for m in without.user_middleware if m.cls is not FastLane]
    seen: list[str] = []

    class Recorder:  # innermost, after the lane: sees what it passes on
        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope, receive, send) -> None:
            seen.append(scope["path"])
            await self.app(scope, receive, send)

    with_lane.user_middleware.append(Middleware(Recorder))

    async def ask(app, passed_on: list[bool]) -> list:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            out = []
            for path, body in requests:
                seen.clear()
                response = await client.post(path, json=body, headers={"origin": "http://example.org"})
                out.append((response.status_code, sorted(response.headers.multi_items()), response.content))
                passed_on.append(bool(seen))
            return out

    passed_on: list[bool] = []
    fast = asyncio.run(ask(with_lane, passed_on))
    return fast, asyncio.run(ask(without, [])), passed_on
