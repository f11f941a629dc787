"""The HTTP edge (``-http_port``): an ASGI app on uvicorn, in the server's own process.

Requests enter the same pipeline as ZeroMQ requests, through the `Gateway`; no pool of
clients sits in between: the requests of one turn of the event loop go in together (`handoff`),
and a valid request to a hot route skips FastAPI's per-request machinery (`fast_lane`). Routes:

- ``POST /encode``, ``GET /status/server``, ``GET /status/client``: the original's, same bodies
  (``"outputs": ["dense", "sparse", "colbert"]`` asks a model that has them for several at once);
- ``POST /v1/embeddings`` and ``/embeddings``: OpenAI's shapes (`openai_api`);
- ``GET /v1/models``, ``/v1/models/{id}``: OpenAI's (`models_api`);
- ``POST /predict`` and ``/rerank``: text-embeddings-inference's (`tei_api`), and ``POST
  /v1/rerank``, ``/v2/rerank``: Cohere's and Jina's (`rerank_api`), for a served classifier or
  cross-encoder; a route the served model cannot answer gets a 4xx saying what it serves;
- ``POST /embed``, ``/embed_all``, ``/embed_sparse``, ``POST /`` (the model's natural route):
  TEI's (`tei_embed_api`); ``GET /info``, ``POST /tokenize``, ``/decode``: TEI's (`tei_info_api`);
- ``POST /v2/embed``, ``/v1/embed``: Cohere's, with quantized embedding types (`cohere_api`);
- ``GET /health`` (alive), ``GET /ready`` (loaded, warm, not draining), ``GET /metrics``;
- ``GET /openapi.json`` and ``GET /docs`` (Swagger UI served from the package, not a CDN);
- ``GET /dashboard``: a live page of the same counters (`dashboard`).

A server with several models (``-extra_model``) has one such app per model, behind a
`model_switch.ModelSwitch` that reads a request's ``model`` field; ``/v1/models`` lists them all,
``/metrics`` labels each one's counters with its name.

Errors are answered in each route's shape (`responses`). With an API key set, inference and
status routes want ``Authorization: Bearer KEY``. A client that disconnects before its answer
abandons its request: its texts not yet run are dropped.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures' types,
# and the request models are built per server, inside create_app.
import asyncio
import hmac
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field, StrictBool, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from ... import __version__
from ...errors import AuthenticationError, BertServingError, InvalidRequestError
from ..pipeline.budget import MemoryBudget
from ..pipeline.gateway import Gateway, ModelGateway, Observation, ServedModel
from ..pipeline.request import Outcome
from .cohere_api import mount_cohere_embed
from .dashboard import index_page, mount_dashboard, wants_html
from .fast_lane import FastLane
from .handoff import Handoff
from .limits import BodyLimit
from .metrics import CONTENT_TYPE, render_metrics
from .model_switch import ModelSwitch
from .models_api import mount_models
from .openai_api import (
    PROMPT,
    PROMPT_NAME,
    EmbeddingsResponse,
    Integer,
    OpenAIError,
    Text,
    embeddings_body,
    embeddings_request_model,
    integer,
    one_of,
    prompt_name_field,
    request_texts,
)
from .rerank_api import mount_rerank
from .responses import (
    COHERE_EMBED_PATHS,
    OPENAI_PATHS,
    RERANK_PATHS,
    TEI_PATHS,
    ErrorBody,
    client_of,
    documented_errors,
    error_response,
    json_response,
    validation_error,
)
from .tei_api import mount_tei
from .tei_embed_api import colbert_json, mount_natural_route, mount_tei_embed, sparse_json
from .tei_info_api import mount_tei_info

__all__ = ["HttpSettings", "create_app"]

logger = logging.getLogger(__name__)

_INFERENCE_PATHS = ("/encode", *OPENAI_PATHS, *TEI_PATHS, *RERANK_PATHS, *COHERE_EMBED_PATHS)


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP edge's own settings (from `ServerConfig`)."""

    max_request_texts: int
    max_request_bytes: int
    cors: str = "*"
    api_key: str | None = None
    max_buffered_bytes: int = 2 * 1024**3  # request bodies being read and served, all together
    token_ids: bool = False  # the OpenAI route takes token ids (-http_token_ids)


class EncodeRequest(BaseModel):
    """The original's request; `encode_request_model` narrows it to a served model's limits."""

    id: Any = Field(None, description="Echoed back as is")
    texts: list[Text] | list[list[Text | Integer]] = Field(description="Texts, or token lists with is_tokenized")
    is_tokenized: StrictBool = Field(False, description="Accepted as the original's; as on the ZeroMQ wire, "
                                                        "lists of tokens are recognised by their shape")
    prompt_name: str | None = Field(None, description=PROMPT_NAME)
    prompt: str | None = Field(None, description=PROMPT)
    outputs: list[Literal["dense", "sparse", "colbert"]] | None = Field(
        None, min_length=1, description="Outputs of a model that has several (BGE-M3), from one forward pass: the "
                                        "result is then an object with each (sparse: [{index, value}, ...] per text; "
                                        "colbert: a vector per token but [CLS], per text)")


def _texts_kind(value: object) -> str | None:
    if not isinstance(value, list):
        return None
    return "texts-tokenized" if value and isinstance(value[0], list) else "texts-plain"


def _token_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "token-text"
    return "token-id" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def encode_request_model(vocab_size: int, max_texts: int, prompt_names: tuple[str, ...] = ()) -> type[EncodeRequest]:
    token = one_of({"token-text": Text, "token-id": integer(ge=0, lt=vocab_size)}, _token_kind,
                   "a word piece (string) or a token id")
    tokens = Annotated[list[token], Field(min_length=1)]
    texts = one_of({"texts-plain": Annotated[list[Text], Field(min_length=1, max_length=max_texts)],
                    "texts-tokenized": Annotated[list[tokens], Field(min_length=1, max_length=max_texts)]},
                   _texts_kind, "a list of texts, or a list of token lists")
    return create_model(
        "EncodeRequest",
        __base__=EncodeRequest,
        texts=(texts, Field(description="Texts, or token lists (with is_tokenized)")),
        prompt_name=prompt_name_field(prompt_names),
    )


class EncodeResponse(BaseModel):
    id: Any = None
    result: list | dict = Field(description="One vector per text ([N, D]), or per token with NONE pooling ([N, T, D]); "
                                            "with outputs, an object of each output asked for")
    status: int = 200


async def observe(gateway: Gateway, **what) -> Observation:
    """`Gateway.observe`, awaited."""
    return await asyncio.wrap_future(gateway.observe(**what))


def create_app(gateway: Gateway, config: HttpSettings) -> FastAPI:
    """The ASGI app of one server: every route goes through ``gateway``. With several served
    models, each has an app of its own, reached through the default model's (`ModelSwitch`)."""
    models: Mapping[str, ServedModel] = getattr(gateway, "models", None) or {gateway.model.name: gateway.model}
    if len(models) == 1:
        return _model_app(gateway, config, models)
    default, *others = models
    apps = {name: _model_app(ModelGateway(gateway, name), config, models, inner=True) for name in others}
    return _model_app(ModelGateway(gateway, default), config, models, switch=apps)


def _model_app(gateway: Gateway, config: HttpSettings, models: Mapping[str, ServedModel], *, inner: bool = False,
               switch: Mapping[str, FastAPI] | None = None) -> FastAPI:
    """The routes of ``gateway.model``; ``inner``: one reached through another's `ModelSwitch`
    (``switch``: the other models' apps), which bounds the body and answers CORS."""
    model = gateway.model
    vocab_size = model.vocab_size
    names = tuple(model.prompts)
    EncodeBody = encode_request_model(vocab_size, config.max_request_texts, names)  # noqa: N806
    EmbeddingsBody = embeddings_request_model(vocab_size, model.dim, config.max_request_texts,  # noqa: N806
                                              token_ids=config.token_ids, prompt_names=names)
    app = FastAPI(
        title="bert-serving",
        version=__version__,
        description=f"BERT over HTTP, serving {model.name} ({model.task}): the original /encode route, OpenAI's "
                    "/v1/embeddings and /v1/models, text-embeddings-inference's /embed, /predict, /rerank, "
                    "/tokenize and /info, Cohere's /v2/embed and /v2/rerank.",
        docs_url=None,
        redoc_url=None,
    )
    if not inner:
        app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in config.cors.split(",")],
                           allow_methods=["*"], allow_headers=["*"])
        app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes,
                           budget=MemoryBudget(config.max_buffered_bytes,
                                               what="the request bodies being served (-max_queued_bytes)"),
                           stats=gateway.stats)

    # errors raised here never reached the pipeline, which counts its own: count them as the
    # ZeroMQ edge counts a request it cannot decode
    def refused(request: Request, error: BertServingError) -> Response:
        if request.url.path in _INFERENCE_PATHS:
            gateway.stats.data_request(client_of(request), 0)
        gateway.stats.error(error.code)
        return error_response(request.url.path, error)

    @app.exception_handler(BertServingError)
    async def _on_error(request: Request, exc: BertServingError) -> Response:
        return refused(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> Response:
        return refused(request, validation_error(exc.errors(), config.max_request_texts))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # e.g. a body that is not JSON at all
            return refused(request, InvalidRequestError(f"the body is not valid JSON ({exc.detail})"))
        body = {"description": str(exc.detail), "type": "HTTPException", "code": f"http_{exc.status_code}",
                "status": exc.status_code}
        headers = exc.headers
        if exc.status_code == 405:  # "/" has two routes (GET, TEI's POST): Starlette's Allow names the first's
            methods = {m for r in app.routes if getattr(r, "path", None) == request.url.path
                       for m in getattr(r, "methods", None) or ()}
            headers = {**(headers or {}), "Allow": ", ".join(sorted(methods))}
        return json_response(body, exc.status_code, headers)

    def has_key(request: Request) -> bool:
        if config.api_key is None:
            return True
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), config.api_key.encode())

    async def authorized(request: Request) -> None:  # async: FastAPI would run a plain def on a thread pool
        if not has_key(request):
            raise AuthenticationError("this server wants 'Authorization: Bearer <API key>'")

    guarded = [Depends(authorized)]
    handoff: Handoff | None = None  # made on the first request, in the server's event loop

    async def encode(texts: list, is_tokenized: bool, client: str, *, request: Request | None = None,
                     **task) -> Outcome:
        """The pipeline's answer to one request (`Handoff.outcome`; ``task``: `Gateway.submit`'s
        task, raw_scores, prompt_name, prompt)."""
        nonlocal handoff
        loop = asyncio.get_running_loop()
        if handoff is None or handoff.loop is not loop:
            handoff = Handoff(gateway, loop)
        return await handoff.outcome(texts, is_tokenized, client, request, **task)

    @app.post("/encode", response_model=EncodeResponse, responses=documented_errors(ErrorBody), dependencies=guarded,
              tags=["bert-as-service"])
    async def encode_route(body: EncodeBody, request: Request) -> Response:
        """Vectors for ``texts``, as bert-as-service's HTTP proxy answered."""
        is_tokenized = all(isinstance(t, list) for t in body.texts)
        outcome = await encode(body.texts, is_tokenized, client_of(request), request=request,
                               prompt_name=body.prompt_name, prompt=body.prompt, outputs=body.outputs)
        if outcome.error is not None:
            return error_response(request.url.path, outcome.error)
        if body.outputs is None:
            return json_response({"id": body.id, "result": outcome.result, "status": 200})
        result = {"dense": outcome.result, "sparse": None if outcome.sparse is None else sparse_json(outcome.sparse),
                  "colbert": None if outcome.colbert is None else colbert_json(outcome.colbert)}
        return json_response({"id": body.id, "result": {k: v for k, v in result.items() if k in body.outputs},
                              "status": 200})

    @app.get("/status/server", dependencies=guarded, tags=["bert-as-service"])
    async def status_server(request: Request) -> Response:
        """SHOW_STATUS: configuration and statistics."""
        observed = await observe(gateway, status=True, with_statistic=True, client=client_of(request))
        return json_response(observed.status)

    @app.get("/status/client", dependencies=guarded, tags=["bert-as-service"])
    async def status_client(request: Request) -> Response:
        """What the server knows of the caller."""
        me = client_of(request)
        observed = await observe(gateway, stats=True)
        seen = next((c for c in observed.stats.clients() if c["client"] == me), {"client": me, "requests": 0})
        return json_response(seen)

    for path in OPENAI_PATHS:
        @app.post(path, response_model=EmbeddingsResponse, responses=documented_errors(OpenAIError), dependencies=guarded,
                  tags=["OpenAI"], name=f"embeddings{path.replace('/', '_')}", include_in_schema=model.task == "embed")
        async def embeddings(body: EmbeddingsBody, request: Request) -> Response:
            """OpenAI-compatible embeddings."""
            texts, is_ids = request_texts(body)
            outcome = await encode(texts, is_ids, client_of(request), request=request, task="embed",
                                   prompt_name=body.prompt_name, prompt=body.prompt)
            if outcome.error is not None:
                return error_response(request.url.path, outcome.error)
            return json_response(embeddings_body(body, outcome.result, outcome.num_tokens, model.name))

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        """Alive: the process answers."""
        return json_response({"status": "ok"})

    @app.get("/ready", tags=["operations"], responses={503: {"description": "Loading, degraded or stopping"}})
    async def ready() -> Response:
        """Ready: the model is loaded and warm, every worker is up, and the server is not draining."""
        try:
            state = (await observe(gateway, readiness=True)).readiness
        except BertServingError:  # no answer from the coordinator: it is stopping
            state = {"ready": False, "status": "stopping"}
        return json_response(state, 200 if state["ready"] else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        observed = await observe(gateway, stats=True, readiness=True)
        return Response(render_metrics(observed.stats, lambda: observed.readiness["ready"], model, models),
                        media_type=CONTENT_TYPE)

    @app.get("/", tags=["operations"])
    async def index(request: Request) -> Response:
        """What is served here, and where (for a browser, a page of links)."""
        embed = ["/embed_all"] if model.per_token else ["/v1/embeddings", "/embed", "/v2/embed", "/v1/embed"] \
            if "dense" in model.outputs else []
        embed += ["/embed_sparse"] * ("sparse" in model.outputs) + ["/embed_all"] * ("colbert" in model.outputs)
        routes = {"embed": ["/encode", *embed], "classify": ["/encode", "/predict"],
                  "rerank": ["/encode", "/predict", "/rerank", "/v1/rerank", "/v2/rerank"]}[model.task]
        info = {"name": "bert-serving", "version": __version__, "model": model.name, "task": model.task,
                "dim": model.dim, "prompts": dict(model.prompts), "default_prompt_name": model.default_prompt_name,
                "docs": "/docs", "openapi": "/openapi.json", "dashboard": "/dashboard",
                "routes": [*routes, "/tokenize", "/decode", "/info", "/v1/models", "/status/server", "/health",
                           "/ready", "/metrics"]}
        if len(models) > 1:
            info["models"] = {name: served.task for name, served in models.items()}
        return index_page(info) if wants_html(request) else json_response(info)

    fast = {"/encode": (EncodeBody, encode_route), **{path: (EmbeddingsBody, embeddings) for path in OPENAI_PATHS},
            **mount_tei(app, model, encode, guarded, config.max_request_texts),
            **mount_rerank(app, model, encode, guarded, config.max_request_texts),
            **mount_tei_embed(app, model, encode, guarded, config.max_request_texts),
            **mount_cohere_embed(app, model, encode, guarded, config.max_request_texts)}
    fast |= mount_natural_route(app, model, fast, guarded)
    mount_tei_info(app, model, guarded, config.max_request_texts)
    mount_models(app, list(models.values()), guarded)
    if switch:  # outside the fast lane: a request for another model goes to that model's app
        app.user_middleware.append(Middleware(ModelSwitch, apps=switch, models=models, default=model.name,
                                              refused=refused))
    app.user_middleware.append(Middleware(FastLane, routes=fast, authorized=has_key, refused=refused))  # innermost
    if not inner:
        _mount_docs(app)
        mount_dashboard(app, gateway, observe, guarded, api_key_required=config.api_key is not None)
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
