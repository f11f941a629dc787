"""The HTTP edge (``-http_port``): an ASGI app on uvicorn, in the server's own process.

Requests enter the same intake and batcher as ZeroMQ requests; no pool of clients sits in
between. Routes:

- ``POST /encode``, ``GET /status/server``, ``GET /status/client``: the original's, same bodies;
- ``POST /v1/embeddings`` and ``/embeddings``: OpenAI's shapes (`openai_api`);
- ``GET /health`` (alive), ``GET /ready`` (loaded, warm, not draining), ``GET /metrics``;
- ``GET /openapi.json`` and ``GET /docs`` (Swagger UI served from the package, not a CDN);
- ``GET /dashboard``: a live page of the same counters (`dashboard`).

Every error has its kind's status (`bert_serving.errors`) and the route's error body: OpenAI's
envelope on the OpenAI routes, ``{"description", "type", "code", "status"}`` elsewhere (the
original's flask-json shape). With an API key set, inference and status routes want
``Authorization: Bearer KEY``.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures' types,
# and the request models are built per server, inside create_app.
import asyncio
import hmac
import logging
import socket
import threading
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, Field, StrictBool, create_model

from .. import __version__
from ..errors import (AuthenticationError, BertServingError, ConfigurationError, InvalidRequestError,
                      PayloadTooLargeError)
from .dashboard import index_page, mount_dashboard, wants_html
from .metrics import CONTENT_TYPE, render_metrics
from .openai_api import (
    EmbeddingsResponse,
    Integer,
    OpenAIError,
    Text,
    embeddings_body,
    embeddings_request_model,
    integer,
    openai_error_body,
    request_texts,
)
from .request import Outcome

if TYPE_CHECKING:
    from .service import BertServer

__all__ = ["HttpServer", "create_app"]

logger = logging.getLogger(__name__)

_OPENAI_PATHS = ("/v1/embeddings", "/embeddings")
_INFERENCE_PATHS = ("/encode", *_OPENAI_PATHS)


class EncodeRequest(BaseModel):
    """The original's request; `encode_request_model` narrows it to a served model's limits."""

    id: Any = Field(None, description="Echoed back as is")
    texts: list[Text] | list[list[Text | Integer]] = Field(description="Texts, or token lists with is_tokenized")
    is_tokenized: StrictBool = Field(False, description="Accepted as the original's; as on the ZeroMQ wire, "
                                                        "lists of tokens are recognised by their shape")


def encode_request_model(vocab_size: int, max_texts: int) -> type[EncodeRequest]:
    token = integer(ge=0, lt=vocab_size)
    tokens = Annotated[list[Text | token], Field(min_length=1)]
    return create_model(
        "EncodeRequest",
        __base__=EncodeRequest,
        texts=(Annotated[list[Text], Field(min_length=1, max_length=max_texts)]
               | Annotated[list[tokens], Field(min_length=1, max_length=max_texts)],
               Field(description="Texts, or token lists (with is_tokenized)")),
    )


class EncodeResponse(BaseModel):
    id: Any = None
    result: list = Field(description="One vector per text ([N, D]), or per token with NONE pooling ([N, T, D])")
    status: int = 200


class ErrorBody(BaseModel):
    description: str
    type: str
    code: str
    status: int


def _json(content: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS), status, headers,
                    media_type="application/json")


def error_response(path: str, error: BertServingError) -> Response:
    """``error`` as the route at ``path`` reports errors."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationError) else None
    if path in _OPENAI_PATHS:
        return _json(openai_error_body(error), error.http_status, headers)
    body = {"description": error.message, "type": type(error).__name__, "code": error.code,
            "status": error.http_status}
    return _json(body, error.http_status, headers)


_ERRORS = {400: "Malformed request", 401: "Missing or wrong API key", 413: "Request too large",
           429: "Backlog full, retry later", 500: "The model failed", 503: "Not ready or shutting down"}


def _responses(model: type[BaseModel]) -> dict:
    return {status: {"model": model, "description": text} for status, text in _ERRORS.items()}


class _BodyLimit:
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


def client_of(request: Request) -> str:
    return f"http:{request.client.host if request.client else 'unknown'}"


def _validation_error(errors: list[dict]) -> InvalidRequestError:
    """pydantic's errors as one readable message: ``texts[1]: must not be empty or blank``."""
    problems, param = [], None
    for error in errors:
        # union members show up in the location as type tags ("list[constrained-str]"): skip them
        loc = [p for p in error["loc"][1:] if isinstance(p, int) or not any(c in p for c in "[]-")]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
        message = "must not be empty or blank" if "should match pattern" in error["msg"] else error["msg"]
        problem = f"{where}: {message}"
        if problem not in problems:
            problems.append(problem)
        param = param or (str(loc[0]) if loc else None)
    return InvalidRequestError("; ".join(problems[:4]) or "malformed request body", param=param)


def create_app(server: "BertServer") -> FastAPI:
    config = server.config
    vocab_size = server.tokenizer.vocab_size
    EncodeBody = encode_request_model(vocab_size, config.max_request_texts)  # noqa: N806
    EmbeddingsBody = embeddings_request_model(vocab_size, server.spec.dim, config.max_request_texts)  # noqa: N806
    app = FastAPI(
        title="bert-serving",
        version=__version__,
        description="BERT sentence vectors over HTTP: the original /encode route and OpenAI's /v1/embeddings.",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in config.cors.split(",")],
                       allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(_BodyLimit, max_bytes=config.max_request_bytes)

    # errors raised here never reached the pipeline, which counts its own: count them as the
    # ZeroMQ edge counts a request it cannot decode
    def refused(request: Request, error: BertServingError) -> Response:
        if request.url.path in _INFERENCE_PATHS:
            server.stats.data_request(client_of(request), 0)
        server.stats.error(error.code)
        return error_response(request.url.path, error)

    @app.exception_handler(BertServingError)
    async def _on_error(request: Request, exc: BertServingError) -> Response:
        return refused(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> Response:
        return refused(request, _validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # e.g. a body that is not JSON at all
            return refused(request, InvalidRequestError(f"the body is not valid JSON ({exc.detail})"))
        body = {"description": str(exc.detail), "type": "HTTPException", "code": f"http_{exc.status_code}",
                "status": exc.status_code}
        return _json(body, exc.status_code, exc.headers)

    def authorized(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
            raise AuthenticationError("this server wants 'Authorization: Bearer <API key>'")

    guarded = [Depends(authorized)]

    async def encode(texts: list, is_tokenized: bool, client: str) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()

        def reply(outcome: Outcome) -> None:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(outcome))

        server.intake.submit(texts, is_tokenized, reply, client)
        return await future

    @app.post("/encode", response_model=EncodeResponse, responses=_responses(ErrorBody), dependencies=guarded,
              tags=["bert-as-service"])
    async def encode_route(body: EncodeBody, request: Request) -> Response:
        """Vectors for ``texts``, as bert-as-service's HTTP proxy answered."""
        is_tokenized = all(isinstance(t, list) for t in body.texts)
        outcome = await encode(body.texts, is_tokenized, client_of(request))
        if outcome.error is not None:
            return error_response(request.url.path, outcome.error)
        return _json({"id": body.id, "result": outcome.result, "status": 200})

    @app.get("/status/server", dependencies=guarded, tags=["bert-as-service"])
    async def status_server(request: Request) -> Response:
        """SHOW_STATUS: configuration and statistics."""
        return _json(server.status(with_statistic=True, client=client_of(request)))

    @app.get("/status/client", dependencies=guarded, tags=["bert-as-service"])
    async def status_client(request: Request) -> Response:
        """What the server knows of the caller."""
        me = client_of(request)
        seen = next((c for c in server.stats.clients() if c["client"] == me), {"client": me, "requests": 0})
        return _json(seen)

    for path in _OPENAI_PATHS:
        @app.post(path, response_model=EmbeddingsResponse, responses=_responses(OpenAIError), dependencies=guarded,
                  tags=["OpenAI"], name=f"embeddings{path.replace('/', '_')}")
        async def embeddings(body: EmbeddingsBody, request: Request) -> Response:
            """OpenAI-compatible embeddings."""
            texts, is_ids = request_texts(body)
            outcome = await encode(texts, is_ids, client_of(request))
            if outcome.error is not None:
                return error_response(request.url.path, outcome.error)
            return _json(embeddings_body(body, outcome.result, outcome.num_tokens, server.spec.source.name))

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        """Alive: the process answers."""
        return _json({"status": "ok"})

    @app.get("/ready", tags=["operations"], responses={503: {"description": "Loading, degraded or stopping"}})
    async def ready() -> Response:
        """Ready: the model is loaded and warm, every worker is up, and the server is not draining."""
        state = server.readiness()
        return _json(state, 200 if state["ready"] else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(render_metrics(server.stats, server.is_ready.is_set), media_type=CONTENT_TYPE)

    @app.get("/", tags=["operations"])
    async def index(request: Request) -> Response:
        """What is served here, and where (for a browser, a page of links)."""
        info = {"name": "bert-serving", "version": __version__, "model": server.spec.source.name,
                "dim": server.spec.dim, "docs": "/docs", "openapi": "/openapi.json", "dashboard": "/dashboard",
                "routes": ["/encode", "/v1/embeddings", "/status/server", "/health", "/ready", "/metrics"]}
        return index_page(info) if wants_html(request) else _json(info)

    _mount_docs(app)
    mount_dashboard(app, server, guarded)
    return app


def _mount_docs(app: FastAPI) -> None:
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="swagger-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="bert-serving API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")


class HttpServer:
    """uvicorn on a socket bound up front (so a busy port fails at start), in its own thread."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                     timeout_graceful_shutdown=10))
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # answers are small and go out in two writes (head, body): without this, Nagle's
        # algorithm meets the client's delayed ACK and every response waits ~40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(f"cannot serve HTTP on {self.host}:{self.port} ({exc.strerror}); "
                                     "choose another -http_port") from None
        sock.listen(2048)
        sock.setblocking(False)
        self._socket = sock

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def close(self) -> None:
        """Stop taking connections, let open ones finish, stop."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(15)
        if self._socket is not None:
            self._socket.close()
