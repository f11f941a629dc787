"""`ModelSwitch`: which served model an HTTP request is for, in a server that serves several.

Each served model has its own app (its routes, request models and limits, `app.create_app`); this
ASGI middleware, inside the body limit and outside the default model's fast lane, reads a POST's
``model`` field (OpenAI's, Cohere's, and ours on TEI's and the original's routes) and hands the
request to that model's app. A request that names no model goes to the only served model of the
kind its route needs (an embedder for ``/v1/embeddings`` and ``/embed``, a reranker for
``/rerank``, a classifier or reranker for ``/predict``, a sparse model for ``/embed_sparse``), or,
for the routes any model answers (``/encode``, ``/tokenize``, ``/decode``), to the default model;
with several of the kind it is a 400 naming them. A name the server does not serve is a 404
(``model_not_found``) naming those it does. ``GET /info?model=NAME`` describes that model.

The JSON parsed here is handed on (``scope["bert_serving.json"]``), so the fast lane does not
parse the body a second time.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Mapping
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ...errors import BertServingError, InvalidRequestError, ModelNotFoundError
from ..pipeline.gateway import ServedModel, unknown_model

__all__ = ["PARSED", "ModelSwitch", "route_kind"]

PARSED = "bert_serving.json"  # the scope's key for the body parsed here
_INLINE_BYTES = 256 * 1024  # bodies up to this size are parsed on the event loop; bigger ones on a thread

# what a route needs of a model that a request does not name
_KINDS: dict[str, tuple[str, Callable[[ServedModel], bool]]] = {
    **{path: ("an embedding model", lambda m: m.task == "embed" and "dense" in m.outputs and not m.per_token)
       for path in ("/v1/embeddings", "/embeddings", "/embed", "/v2/embed", "/v1/embed")},
    "/embed_all": ("a model with token vectors", lambda m: m.task == "embed" and (m.per_token or "colbert" in m.outputs)),
    "/embed_sparse": ("a sparse model", lambda m: "sparse" in m.outputs),
    "/predict": ("a classifier or reranker", lambda m: m.task in ("classify", "rerank")),
    **{path: ("a reranker", lambda m: m.task == "rerank") for path in ("/rerank", "/v1/rerank", "/v2/rerank")},
}
_ANY = ("/encode", "/tokenize", "/decode", "/")  # any model answers these: the default one unless named


def route_kind(path: str) -> str | None:
    """What kind of model ``path`` needs (None: any)."""
    kind = _KINDS.get(path)
    return kind[0] if kind else None


class ModelSwitch:
    def __init__(self, app, *, apps: Mapping[str, object], models: Mapping[str, ServedModel], default: str,
                 refused: Callable[[Request, BertServingError], Response]) -> None:
        """``app``: the default model's; ``apps``: every other model's, by name."""
        self.app, self._apps, self._models, self._default = app, dict(apps), dict(models), default
        self._refused = refused

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/info":
            names = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("model")
            return await self._to(names[0] if names else None, path, scope, receive, send)
        if method != "POST" or (path not in _KINDS and path not in _ANY):
            return await self.app(scope, receive, send)
        message = await receive()  # the body limit's replay: the whole body in one message
        pending = [message]

        async def replay():
            return pending.pop() if pending else await receive()  # then: wait for a disconnect

        body = message.get("body", b"") if message["type"] == "http.request" else b""
        try:
            if len(body) > _INLINE_BYTES:  # off the event loop: other clients' requests go on meanwhile
                parsed = await asyncio.get_running_loop().run_in_executor(None, orjson.loads, body)
            else:
                parsed = orjson.loads(body)
        except orjson.JSONDecodeError:  # the default model's app answers it, in FastAPI's words
            return await self.app(scope, replay, send)
        scope[PARSED] = parsed
        name = parsed.get("model") if isinstance(parsed, dict) else None
        if name is not None and not isinstance(name, str):
            return await self.app(scope, replay, send)  # its validation says what is wrong
        await self._to(name, path, scope, replay, send)

    async def _to(self, name: str | None, path: str, scope, receive, send) -> None:
        try:
            name = self._choose(name, path)
        except BertServingError as exc:
            return await self._refused(Request(scope, receive), exc)(scope, receive, send)
        app = self.app if name == self._default else self._apps[name]
        await app(scope, receive, send)

    def _choose(self, name: str | None, path: str) -> str:
        if name is not None:
            if name not in self._models:
                raise ModelNotFoundError(unknown_model(name, list(self._models)), param="model")
            return name
        kind = _KINDS.get(path)
        if kind is None:
            return self._default
        what, fits = kind
        fitting = [n for n, m in self._models.items() if fits(m)]
        if len(fitting) == 1:
            return fitting[0]
        if not fitting:  # the default model's app says what it serves instead
            return self._default
        raise InvalidRequestError(f"this server serves {len(fitting)} models for {path} ({what}): name one in "
                                  f"the model field, one of {', '.join(map(repr, fitting))}", param="model")
