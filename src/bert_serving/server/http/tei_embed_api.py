"""``POST /embed``, ``/embed_all``, ``/embed_sparse`` and ``POST /`` in text-embeddings-inference's
shapes, so TEI's clients (LlamaIndex's ``TextEmbeddingsInference``, ``huggingface_hub``'s
``InferenceClient.feature_extraction``, Haystack's TEI embedders) work against the server unchanged.

- ``/embed``: ``{"inputs": "text" | ["text", ...] | [id, ...] | [[id, ...], ...], "normalize": true,
  "dimensions", "prompt_name", "truncate", "truncation_direction"}`` -> ``[[float, ...], ...]``, one
  vector per input (a single input too);
- ``/embed_all``: the same inputs -> every token's vector, ``[[[float, ...], ...], ...]``, on a
  server that returns token vectors (``-pooling_strategy NONE``), or BGE-M3's ColBERT vectors (one
  per token but [CLS]); others answer a 404 saying so;
- ``/embed_sparse``: the same inputs -> per input its non-zero weights, ``[[{"index", "value"}, ...],
  ...]`` (vocabulary ids ascending), on a server with sparse vectors (SPLADE, BGE-M3); others
  answer a 404 naming what the model has;
- ``POST /``: TEI's catch-all, the served model's natural route: ``/embed`` (``/embed_all`` with
  token vectors, ``/embed_sparse`` for SPLADE), ``/predict`` for a classifier, ``/rerank`` for a
  cross-encoder.

``normalize`` L2-normalises (after ``dimensions`` keeps the leading ones); ``false`` gives the
server's own vectors, which are unit vectors anyway on a server that normalises (the default
MiniLM; start it with ``-no_normalize`` for raw ones). Inputs are always cut at ``-max_seq_len``
at their end (``truncate`` changes nothing; ``truncation_direction`` is ``right``). Token ids are
the served model's own; its special tokens are added unless the ids bring them (as ``/tokenize``
gives them). Errors are TEI's ``{"error", "error_type"}`` (`responses`).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types (built per server).

from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model
from starlette.concurrency import run_in_threadpool

from ...errors import UnsupportedTaskError
from ...outputs import COLBERT, DENSE, SPARSE, Ragged
from ..pipeline.gateway import ServedModel
from ..pipeline.request import Outcome
from ..pipeline.tasks import describe_outputs
from .fast_lane import Route
from .openai_api import Text, integer, one_of, prompt_name_field
from .responses import TEI_ERROR_RESPONSES, client_of, error_response, json_response
from .tei_api import Submit

__all__ = ["EmbedRequest", "mount_tei_embed", "natural_route"]

_INPUTS = "a string, a list of strings, a list of token ids, or a list of token-id lists"
_TAG = "text-embeddings-inference"


class EmbedAllRequest(BaseModel):
    """TEI's request for token vectors (and sparse ones); `embed_request_models` narrows it."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"inputs": "What is Deep Learning?"}]})

    inputs: Text | list[Text] | list[int] | list[list[int]] = Field(description=f"Model input: {_INPUTS}")
    truncate: StrictBool | None = Field(False, description="Accepted; inputs are always cut at -max_seq_len")
    truncation_direction: Literal["right", "Right"] | None = Field(
        "right", description="Only right: inputs are cut at their end")
    prompt_name: str | None = None


class EmbedRequest(EmbedAllRequest):
    normalize: StrictBool = Field(True, description="L2-normalise the vectors; false: the server's own vectors")
    dimensions: integer(ge=1) | None = Field(None, description="Keep this many leading dimensions")


def _inputs_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "inputs-text"
    if not isinstance(value, list):
        return None
    if value and isinstance(value[0], list):
        return "inputs-many-ids"
    return "inputs-ids" if value and isinstance(value[0], (int, float)) and not isinstance(value[0], bool) \
        else "inputs-texts"


def embed_request_models(model: ServedModel, max_texts: int) -> tuple[type[EmbedRequest], type[EmbedAllRequest]]:
    """`EmbedRequest` and `EmbedAllRequest` with this server's limits written into their schemas."""
    ids = Annotated[list[integer(ge=0, lt=model.vocab_size)], Field(min_length=1)]
    inputs = one_of({"inputs-text": Text,
                     "inputs-texts": Annotated[list[Text], Field(min_length=1, max_length=max_texts)],
                     "inputs-ids": ids,
                     "inputs-many-ids": Annotated[list[ids], Field(min_length=1, max_length=max_texts)]},
                    _inputs_kind, _INPUTS)
    fields = {"inputs": (inputs, Field(description=f"Model input: {_INPUTS}")),
              "prompt_name": prompt_name_field(tuple(model.prompts))}
    dimensions = (integer(ge=1, le=model.dim) | None, Field(None, description="Keep this many leading dimensions"))
    return (create_model("EmbedRequest", __base__=EmbedRequest, dimensions=dimensions, **fields),
            create_model("EmbedAllRequest", __base__=EmbedAllRequest, **fields))


def request_texts(inputs: str | list, model: ServedModel) -> tuple[list, bool]:
    """The texts of TEI ``inputs``, and whether they are token ids (their special tokens taken
    off, when they bring them: the pipeline frames token ids as it frames texts)."""
    if isinstance(inputs, str):
        return [inputs], False
    if isinstance(inputs[0], int):
        return [_unframed(inputs, model)], True
    if isinstance(inputs[0], list):
        return [_unframed(ids, model) for ids in inputs], True
    return list(inputs), False


def _unframed(ids: list[int], model: ServedModel) -> list[int]:
    """``ids`` without the special tokens that frame a single text ([CLS] ... [SEP]), if they
    bring them; ids that are nothing but those stay as sent."""
    if model.tokenizer is None:
        return ids
    frame = model.tokenizer.template.single
    bare = ids
    if frame.prefix and tuple(bare[: len(frame.prefix)]) == frame.prefix:
        bare = bare[len(frame.prefix):]
    if frame.suffix and tuple(bare[-len(frame.suffix):]) == frame.suffix:
        bare = bare[: -len(frame.suffix)]
    return bare or ids


def _serves(model: ServedModel) -> str:
    if model.task != "embed":
        return {"classify": "classifier scores", "rerank": "reranker scores"}.get(model.task, model.task)
    strategy = model.settings.get("pooling_strategy_name", "?")
    if model.per_token:
        return "token vectors (-pooling_strategy NONE)"
    if model.outputs != (DENSE,):
        return describe_outputs(model)
    return f"sentence vectors of {model.dim} dimensions (-pooling_strategy {strategy})"


def embed_vectors(vectors: np.ndarray, normalize: bool, dimensions: int | None) -> np.ndarray:
    """``vectors`` as ``/embed`` answers them: the leading ``dimensions``, then L2-normalised."""
    vectors = vectors.astype(np.float32, copy=False)
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(vectors)


def sparse_json(sparse: Ragged) -> list[list[dict]]:
    """Sparse vectors as TEI answers them: per text ``[{"index", "value"}, ...]``."""
    ids, values, offsets = sparse.columns["indices"].tolist(), sparse.columns["values"].tolist(), sparse.offsets.tolist()
    return [[{"index": i, "value": v} for i, v in zip(ids[a:b], values[a:b])] for a, b in zip(offsets, offsets[1:])]


def colbert_json(colbert: Ragged) -> list[np.ndarray]:
    vectors, offsets = colbert.columns["vectors"], colbert.offsets.tolist()
    return [vectors[a:b] for a, b in zip(offsets, offsets[1:])]


def natural_route(model: ServedModel) -> str:
    """The route TEI's ``POST /`` stands for on this server."""
    if model.task == "embed" and DENSE not in model.outputs:
        return "/embed_sparse"
    if model.task == "embed":
        return "/embed_all" if model.per_token else "/embed"
    return "/predict" if model.task == "classify" else "/rerank"


def mount_tei_embed(app: FastAPI, model: ServedModel, submit: Submit, guarded: list[Depends], max_texts: int,
                    ) -> dict[str, Route]:
    """Add ``/embed``, ``/embed_all`` and ``/embed_sparse`` to ``app``; their `FastLane` routes."""
    EmbedBody, EmbedAllBody = embed_request_models(model, max_texts)  # noqa: N806
    sentence_vectors = model.task == "embed" and not model.per_token and DENSE in model.outputs
    colbert = COLBERT in model.outputs

    async def run(body, request: Request, outputs: list[str] | None = None) -> tuple[Outcome, list, bool]:
        """The pipeline's outcome for the body's inputs (and those inputs, as submitted)."""
        texts, is_ids = request_texts(body.inputs, model)
        outcome = await submit(texts, is_ids, client_of(request), request=request, task="embed",
                               prompt_name=body.prompt_name, outputs=outputs)
        return outcome, texts, is_ids

    @app.post("/embed", response_model=list[list[float]], responses=TEI_ERROR_RESPONSES, dependencies=guarded,
              tags=[_TAG], include_in_schema=sentence_vectors)
    async def embed(body: EmbedBody, request: Request) -> Response:
        """A vector per input, as TEI (``normalize`` by default)."""
        if model.per_token:
            raise UnsupportedTaskError(f"this server returns {_serves(model)}: POST /embed_all gives them; for "
                                       "sentence vectors start it with an embedding -pooling_strategy (e.g. "
                                       "REDUCE_MEAN)", param="inputs")
        outcome, _, _ = await run(body, request)
        if outcome.error is not None:
            return error_response(request.url.path, outcome.error)
        return json_response(embed_vectors(outcome.result, body.normalize, body.dimensions))

    @app.post("/embed_all", response_model=list[list[list[float]]], responses=TEI_ERROR_RESPONSES,
              dependencies=guarded, tags=[_TAG], include_in_schema=model.per_token or colbert)
    async def embed_all(body: EmbedAllBody, request: Request) -> Response:
        """Every token's vector, per input, as TEI (needs -pooling_strategy NONE); BGE-M3's ColBERT vectors."""
        if colbert:
            outcome, _, _ = await run(body, request, [COLBERT])
            if outcome.error is not None:
                return error_response(request.url.path, outcome.error)
            return json_response(colbert_json(outcome.colbert))
        if not model.per_token:
            raise UnsupportedTaskError(f"this server returns {_serves(model)} with model {model.name}; /embed_all "
                                       "gives token vectors, which a server started with -pooling_strategy NONE "
                                       "returns, or the ColBERT vectors of a BGE-M3 model", param="inputs")
        outcome, texts, is_ids = await run(body, request)
        if outcome.error is not None:
            return error_response(request.url.path, outcome.error)
        lengths = await run_in_threadpool(_token_counts, model, texts, is_ids, body.prompt_name)  # off the loop
        vectors = outcome.result.astype(np.float32, copy=False)
        return json_response([vectors[i, :n] for i, n in enumerate(lengths)])

    @app.post("/embed_sparse", response_model=list[list[SparseValue]], responses=TEI_ERROR_RESPONSES,
              dependencies=guarded, tags=[_TAG], include_in_schema=SPARSE in model.outputs)
    async def embed_sparse(body: EmbedAllBody, request: Request) -> Response:
        """Sparse vectors, per input its non-zero weights by vocabulary id, as TEI (a SPLADE model, BGE-M3)."""
        if SPARSE not in model.outputs:
            other = "/embed" if sentence_vectors else natural_route(model)
            raise UnsupportedTaskError(f"{model.name} has no sparse vectors (a SPLADE model or BGE-M3 has): this "
                                       f"server returns {_serves(model)}; POST {other} gives them", param="inputs")
        outcome, _, _ = await run(body, request, [SPARSE])
        if outcome.error is not None:
            return error_response(request.url.path, outcome.error)
        return json_response(sparse_json(outcome.sparse))

    return {"/embed": (EmbedBody, embed), "/embed_all": (EmbedAllBody, embed_all),
            "/embed_sparse": (EmbedAllBody, embed_sparse)}


class SparseValue(BaseModel):
    index: int
    value: float


def _token_counts(model: ServedModel, texts: list, is_ids: bool, prompt_name: str | None) -> list[int]:
    """How many tokens of each input the model saw (its result's rows past them are padding)."""
    name = prompt_name if prompt_name is not None else model.default_prompt_name
    prompt = model.prompts.get(name) if name is not None else None
    return model.tokenizer.encode(texts, is_ids, prompt=prompt).lengths.tolist()


def mount_natural_route(app: FastAPI, model: ServedModel, routes: dict[str, Route], guarded: list[Depends],
                        ) -> dict[str, Route]:
    """Add TEI's ``POST /`` (`natural_route`) to ``app``; its `FastLane` route."""
    path = natural_route(model)
    body, endpoint = routes[path]
    app.add_api_route("/", endpoint, methods=["POST"], responses=TEI_ERROR_RESPONSES, dependencies=guarded,
                      tags=[_TAG], name="tei_natural_route", summary=f"TEI's catch-all: {path} on this server",
                      response_model=next(r.response_model for r in app.routes if getattr(r, "path", None) == path))
    return {"/": (body, endpoint)}
