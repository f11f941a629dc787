"""The dashboard's routes on the HTTP app, and the page of links a browser gets at ``/``.

- ``GET /dashboard``: the page (static HTML; it holds no data, so it needs no key);
- ``GET /dashboard/static/...``: its script, styles and the vendored uPlot;
- ``GET /dashboard/data``: `dashboard_view` as JSON, behind the API key like ``/status/server``.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from .view import dashboard_view

if TYPE_CHECKING:
    from ...pipeline.gateway import Gateway, Observation

__all__ = ["STATIC", "index_page", "mount_dashboard", "wants_html"]

STATIC = Path(__file__).parent / "static"
_NO_CACHE = {"Cache-Control": "no-cache"}  # a new server version brings a new page


def mount_dashboard(app: FastAPI, gateway: Gateway, observe: Callable[..., Awaitable[Observation]],
                    guarded: list[Depends], *, api_key_required: bool) -> None:
    """Add the dashboard's routes to ``app``; ``observe`` reads the server's counters (`Gateway.observe`,
    awaited); ``guarded`` checks the API key."""
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_NO_CACHE)

    @app.get("/dashboard/data", dependencies=guarded, tags=["operations"])
    async def dashboard_data() -> Response:
        """What the dashboard shows: model settings, readiness, raw counters, latency, clients."""
        observed = await observe(gateway, stats=True, readiness=True)
        body = orjson.dumps(dashboard_view(observed, gateway.model, api_key_required=api_key_required,
                                           models=getattr(gateway, "models", None)),
                            option=orjson.OPT_NON_STR_KEYS)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def wants_html(request: Request) -> bool:
    """A browser navigating here, rather than a program asking for JSON."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def index_page(info: dict[str, object]) -> HTMLResponse:
    """``/`` for a browser: what is served here, with links."""
    links = {"Dashboard": "/dashboard", "API docs": "/docs", "OpenAPI schema": "/openapi.json",
             "Metrics": "/metrics", "Health": "/health", "Readiness": "/ready"}
    items = "".join(f'<li><a href="{escape(href)}">{escape(text)}</a></li>' for text, href in links.items())
    title = f"bert-serving {escape(str(info['version']))}"
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<link rel="icon" href="data:,"></head><body style="font-family: system-ui, sans-serif">'
        f"<h1>{title}</h1><p>Model <b>{escape(str(info['model']))}</b>, {escape(str(info['dim']))} dimensions.</p>"
        f"<ul>{items}</ul></body></html>"
    )
