"""How the HTTP edge answers: JSON bodies, and every error in its route's shape.

Every error has its kind's status (`bert_serving.errors`) and the route's error body: OpenAI's
envelope on the OpenAI routes (embeddings, models), text-embeddings-inference's ``{"error",
"error_type"}`` on TEI's routes (``/embed``, ``/predict``, ``/tokenize``, ``POST /``...),
``{"message", "code", "type"}`` on Cohere's ``/v1|v2/rerank`` and ``/v1|v2/embed``,
``{"description", "type", "code", "status"}`` elsewhere (the original's flask-json shape).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from ...errors import AuthenticationError, BertServingError, InvalidRequestError
from .openai_api import openai_error_body

__all__ = ["COHERE_EMBED_PATHS", "OPENAI_PATHS", "RERANK_ERROR_RESPONSES", "RERANK_PATHS", "TEI_ERROR_RESPONSES",
           "TEI_INFO_PATHS", "TEI_PATHS", "ErrorBody", "client_of", "documented_errors", "error_response",
           "json_response", "validation_error"]

OPENAI_PATHS = ("/v1/embeddings", "/embeddings")
TEI_PATHS = ("/predict", "/rerank", "/embed", "/embed_all", "/embed_sparse", "/")  # "/": POST, the natural route
TEI_INFO_PATHS = ("/tokenize", "/decode", "/info")  # TEI's too, but the model never runs for them
RERANK_PATHS = ("/v1/rerank", "/v2/rerank")
COHERE_EMBED_PATHS = ("/v2/embed", "/v1/embed")
_OPENAI_PREFIXES = ("/v1/models", "/models")
# text-embeddings-inference's error_type by status
_TEI_TYPES = {413: "validation", 429: "overloaded", 500: "backend", 503: "unhealthy", 504: "backend"}


class ErrorBody(BaseModel):
    description: str
    type: str
    code: str
    status: int


class TeiErrorBody(BaseModel):
    error: str
    error_type: str


class RerankErrorBody(BaseModel):
    message: str
    code: str
    type: str


def json_response(content: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS), status, headers,
                    media_type="application/json")


def error_response(path: str, error: BertServingError) -> Response:
    """``error`` as the route at ``path`` reports errors."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationError) else None
    if path in OPENAI_PATHS or path.startswith(_OPENAI_PREFIXES):
        return json_response(openai_error_body(error), error.http_status, headers)
    if path in TEI_PATHS or path in TEI_INFO_PATHS:
        error_type = _TEI_TYPES.get(error.http_status, "validation" if error.http_status < 500 else "backend")
        return json_response({"error": error.message, "error_type": error_type}, error.http_status, headers)
    if path in RERANK_PATHS or path in COHERE_EMBED_PATHS:
        body = {"message": error.message, "code": error.code, "type": type(error).__name__}
        return json_response(body, error.http_status, headers)
    body = {"description": error.message, "type": type(error).__name__, "code": error.code,
            "status": error.http_status}
    return json_response(body, error.http_status, headers)


_ERRORS = {400: "Malformed request", 401: "Missing or wrong API key",
           404: "The served model does another task (embed, classify, rerank)", 413: "Request too large",
           429: "Backlog full, retry later", 500: "The model failed", 503: "Not ready or shutting down"}


def documented_errors(model: type[BaseModel]) -> dict:
    return {status: {"model": model, "description": text} for status, text in _ERRORS.items()}


TEI_ERROR_RESPONSES = documented_errors(TeiErrorBody)
RERANK_ERROR_RESPONSES = documented_errors(RerankErrorBody)


def client_of(request: Request) -> str:
    return f"http:{request.client.host if request.client else 'unknown'}"


def validation_error(errors: list[dict], max_texts: int | None = None) -> InvalidRequestError:
    """pydantic's errors as one readable message naming the first problem found:
    ``texts[1]: must not be empty or blank`` (and how many more there are, if any). More than
    ``max_texts`` texts (``-max_request_texts``, the schema's ``maxItems``) is said in the words
    ZeroMQ uses, whatever else is wrong with them; a 400 all the same, as for any request the
    schema does not allow (OpenAI answers too many inputs so)."""
    problems, param = [], None
    for error in errors:
        # union members show up in the location as type tags ("list[constrained-str]",
        # "input-texts"): skip them
        loc = [p for p in error["loc"][1:] if isinstance(p, int) or not any(c in p for c in "[]-")]
        limit = error.get("ctx") or {}
        if error["type"] == "json_invalid":
            return InvalidRequestError(f"the body is not valid JSON ({limit.get('error', error['msg'])})")
        if not loc and error["type"] == "model_attributes_type" and isinstance(error.get("input"), (bytes, str)):
            return InvalidRequestError("the body must be a JSON object, sent with Content-Type: application/json")
        if error["type"] == "too_long" and len(loc) == 1 and limit.get("max_length") == max_texts:
            return InvalidRequestError(f"{loc[0]}: {limit.get('actual_length')} texts in one request; this server "
                                       f"takes at most {max_texts} (-max_request_texts): split the list",
                                       param=str(loc[0]))
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
        message = "must not be empty or blank" if "should match pattern" in error["msg"] else error["msg"]
        message = message.removeprefix("Value error, ")  # our validators' own words
        problem = f"{where}: {message}"
        if problem not in problems:
            problems.append(problem)
        param = param or (str(loc[0]) if loc else None)
    if not problems:
        return InvalidRequestError("malformed request body")
    more = len(problems) - 1
    return InvalidRequestError(problems[0] + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""),
                               param=param)
