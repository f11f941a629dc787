"""``POST /v2/embed`` and ``POST /v1/embed`` in Cohere's shapes, so the ``cohere`` SDK (``ClientV2.embed``,
``Client.embed``) and what is built on it work against a served embedder unchanged.

- request: ``texts``; ``input_type`` (``search_query``, ``search_document``, ``classification``,
  ``clustering``) picks the model's matching prompt (`PROMPTS_FOR`: e5's ``query`` / ``passage``,
  nomic's ``search_query`` / ``search_document``...), else its default prompt applies;
  ``embedding_types`` (``float``, ``int8``, ``uint8``, ``binary``, ``ubinary``: `quantization`;
  ``base64``: little-endian float32 bytes); ``output_dimension`` (the leading dimensions,
  re-normalised); ``truncate`` ``END`` or ``NONE`` (inputs are cut at ``-max_seq_len``, at their
  end; ``START`` is refused); ``max_tokens`` (at least ``-max_seq_len``); ``model`` (accepted; the
  served model answers); images and mixed ``inputs`` are refused (the server embeds text);
- response: ``{"id", "embeddings": {type: [...]}, "texts", "meta", "response_type":
  "embeddings_by_type"}``; ``/v1/embed`` without ``embedding_types`` answers ``"embeddings": [[...]]``
  with ``"response_type": "embeddings_floats"``, as Cohere's v1 API.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types (built per server).

import base64
import uuid
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from ...errors import InvalidRequestError, UnsupportedTaskError
from ...quantization import quantize
from ..pipeline.gateway import ServedModel
from .fast_lane import Route
from .openai_api import Text, integer
from .responses import COHERE_EMBED_PATHS, RERANK_ERROR_RESPONSES, client_of, error_response, json_response
from .tei_api import Submit

__all__ = ["PROMPTS_FOR", "CohereEmbedRequest", "mount_cohere_embed"]

EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
InputType = Literal["search_query", "search_document", "classification", "clustering"]
# the model's prompt each input_type stands for: the first of these names the model has
PROMPTS_FOR = {"search_query": ("search_query", "query"),
               "search_document": ("search_document", "document", "passage"),
               "classification": ("classification",), "clustering": ("clustering",)}


class CohereEmbedRequest(BaseModel):
    """Cohere's embed request; `cohere_embed_request_model` narrows it to a served model's limits."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"texts": ["hello", "goodbye"], "model": "embed-v4.0", "input_type": "search_document",
         "embedding_types": ["float", "ubinary"]}]})

    texts: list[Text] = Field(description="The texts to embed")
    model: str | None = Field(None, description="Accepted for compatibility; the served model answers")
    input_type: InputType | None = Field(None, description="Picks the model's matching prompt, if it has one")
    embedding_types: Annotated[list[EmbeddingType], Field(min_length=1)] | None = Field(
        None, description="What to return; default: float")
    truncate: Literal["NONE", "END"] | None = Field(None, description="Inputs are always cut at -max_seq_len, "
                                                                        "at their end")
    max_tokens: integer(ge=1) | None = Field(None, description="At least -max_seq_len: inputs are cut there")
    output_dimension: integer(ge=1) | None = Field(None, description="Keep this many leading dimensions, "
                                                                     "re-normalised")

    # Cohere's other inputs, out of the schema: refused in words (`mount_cohere_embed`)
    images: SkipJsonSchema[list | None] = None
    inputs: SkipJsonSchema[list | None] = None


def cohere_embed_request_model(model: ServedModel, max_texts: int) -> type[CohereEmbedRequest]:
    return create_model(
        "CohereEmbedRequest", __base__=CohereEmbedRequest,
        texts=(Annotated[list[Text], Field(min_length=1, max_length=max_texts)], Field(description="The texts")),
        max_tokens=(integer(ge=model.max_input_length or 1) | None,
                    Field(None, description=f"At least {model.max_input_length} (-max_seq_len): inputs are cut "
                                            "there")),
        output_dimension=(integer(ge=1, le=model.dim) | None,
                          Field(None, description="Keep this many leading dimensions, re-normalised")),
    )


def prompt_for(model: ServedModel, input_type: str | None) -> str | None:
    """The model's prompt for ``input_type`` (None: its default prompt applies)."""
    return next((name for name in PROMPTS_FOR.get(input_type or "", ()) if name in model.prompts), None)


def embeddings_by_type(vectors: np.ndarray, types: list[str]) -> dict[str, list]:
    vectors = vectors.astype(np.float32, copy=False)
    out: dict[str, list] = {}
    for kind in dict.fromkeys(types):
        if kind == "base64":
            out[kind] = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            out[kind] = np.ascontiguousarray(quantize(vectors, kind))
    return out


def mount_cohere_embed(app: FastAPI, model: ServedModel, submit: Submit, guarded: list[Depends], max_texts: int,
                       ) -> dict[str, Route]:
    """Add ``/v2/embed`` and ``/v1/embed`` to ``app``; their `FastLane` routes."""
    Body = cohere_embed_request_model(model, max_texts)  # noqa: N806
    sentence_vectors = model.task == "embed" and not model.per_token
    fast: dict[str, Route] = {}

    for path in COHERE_EMBED_PATHS:
        @app.post(path, responses=RERANK_ERROR_RESPONSES, dependencies=guarded, tags=["Cohere / Jina"],
                  name=f"embed{path.replace('/', '_')}", include_in_schema=sentence_vectors)
        async def embed(body: Body, request: Request) -> Response:
            """Vectors for the texts, in the types asked for (quantized on the server)."""
            if model.per_token:
                raise UnsupportedTaskError("this server returns token vectors (-pooling_strategy NONE); Cohere's "
                                           "embed API answers sentence vectors: start it with an embedding "
                                           "-pooling_strategy (e.g. REDUCE_MEAN)")
            for name in ("images", "inputs"):
                if getattr(body, name) is not None:
                    raise InvalidRequestError(f"{name}: this server embeds texts only; send them as texts", param=name)
            version = request.url.path[2]  # /v1/embed, /v2/embed
            outcome = await submit(body.texts, False, client_of(request), request=request, task="embed",
                                   prompt_name=prompt_for(model, body.input_type))
            if outcome.error is not None:
                return error_response(request.url.path, outcome.error)
            vectors = outcome.result.astype(np.float32, copy=False)
            if body.output_dimension is not None:
                vectors = vectors[:, : body.output_dimension]
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            meta = {"api_version": {"version": version}, "billed_units": {"input_tokens": outcome.num_tokens}}
            answer = {"id": str(uuid.uuid4()), "texts": body.texts, "meta": meta}
            if version == "1" and body.embedding_types is None:
                return json_response({**answer, "embeddings": vectors, "response_type": "embeddings_floats"})
            by_type = embeddings_by_type(vectors, body.embedding_types or ["float"])
            return json_response({**answer, "embeddings": by_type, "response_type": "embeddings_by_type"})

        fast[path] = (Body, embed)
    return fast
