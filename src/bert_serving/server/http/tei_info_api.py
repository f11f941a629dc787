"""``GET /info``, ``POST /tokenize`` and ``POST /decode`` in text-embeddings-inference's shapes.

- ``/info``: the served model and the server's limits (``model_id``, ``model_dtype``, ``model_type``
  with its pooling or labels, ``max_input_length`` = the tokens the model sees, special tokens
  included (``-max_seq_len``), ``max_batch_tokens``, ``max_batch_requests``,
  ``max_client_batch_size`` = ``-max_request_texts``, ``max_concurrent_requests`` =
  ``-http_max_connect``, ``version``...);
- ``/tokenize``: ``{"inputs": "text" | ["text", ...], "add_special_tokens": true, "prompt_name"}``
  -> per input, the tokens the model sees: ``[{"id", "text", "special", "start", "stop"}, ...]``,
  ``start``/``stop`` character offsets into the input (the prompt before it, when one applies),
  none for special tokens; cut at ``-max_seq_len`` as the model's input is;
- ``/decode``: ``{"ids": [id, ...] | [[id, ...], ...], "skip_special_tokens": true}`` -> a text per
  list of ids.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types (built per server).

from typing import Annotated

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model

from ... import __version__
from ..pipeline.gateway import ServedModel
from .openai_api import Text, integer, one_of, prompt_name_field
from .responses import TEI_ERROR_RESPONSES, json_response

__all__ = ["mount_tei_info"]

_TAG = "text-embeddings-inference"
# TEI's names for the poolings it shares with us (the rest: ours, lower-cased)
_POOLING = {"REDUCE_MEAN": "mean", "FIRST_TOKEN": "cls", "LAST_TOKEN": "last_token", "NONE": "none"}


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"inputs": "test"}]})

    inputs: Text | list[Text] = Field(description="A text, or a list of texts")
    add_special_tokens: StrictBool = Field(True, description="Include the special tokens the model sees")
    prompt_name: str | None = None


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = None
    stop: int | None = None


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"ids": [101, 3231, 102]}]})

    ids: list[int] | list[list[int]] = Field(description="Token ids, or lists of token ids")
    skip_special_tokens: StrictBool = Field(True, description="Leave the special tokens out")


def _texts_kind(value: object) -> str | None:
    return "inputs-text" if isinstance(value, str) else "inputs-texts" if isinstance(value, list) else None


def _ids_kind(value: object) -> str | None:
    if not isinstance(value, list):
        return None
    return "ids-many" if value and isinstance(value[0], list) else "ids-one"


def model_type(model: ServedModel) -> dict:
    """TEI's ``model_type``: an embedding model's pooling, a classifier's or reranker's labels."""
    if model.task == "embed":
        strategy = str(model.settings.get("pooling_strategy_name", "?"))
        return {"embedding": {"pooling": _POOLING.get(strategy, strategy.lower())}}
    labels = {"id2label": {str(i): label for i, label in enumerate(model.labels)},
              "label2id": {label: i for i, label in enumerate(model.labels)}}
    return {"classifier" if model.task == "classify" else "reranker": labels}


def mount_tei_info(app: FastAPI, model: ServedModel, guarded: list[Depends], max_texts: int) -> None:
    """Add ``/info``, ``/tokenize`` and ``/decode`` to ``app``."""
    texts = one_of({"inputs-text": Text, "inputs-texts": Annotated[list[Text], Field(min_length=1,
                                                                                    max_length=max_texts)]},
                   _texts_kind, "a string or a list of strings")
    TokenizeBody = create_model("TokenizeRequest", __base__=TokenizeRequest,  # noqa: N806
                                inputs=(texts, Field(description="A text, or a list of texts")),
                                prompt_name=prompt_name_field(tuple(model.prompts)))
    one = Annotated[list[integer(ge=0, lt=model.vocab_size)], Field(min_length=1)]
    ids = one_of({"ids-one": one, "ids-many": Annotated[list[one], Field(min_length=1, max_length=max_texts)]},
                 _ids_kind, "a list of token ids, or a list of token-id lists")
    DecodeBody = create_model("DecodeRequest", __base__=DecodeRequest,  # noqa: N806
                              ids=(ids, Field(description="Token ids, or lists of token ids")))
    tokenizer = model.tokenizer
    settings = model.settings

    @app.get("/info", dependencies=guarded, tags=[_TAG])
    async def info() -> Response:
        """The served model and the server's limits, as TEI describes its own."""
        return json_response({
            "model_id": model.name, "model_sha": None, "model_dtype": settings.get("dtype"),
            "model_type": model_type(model), "max_concurrent_requests": settings.get("http_max_connect"),
            "max_input_length": model.max_input_length, "max_batch_tokens": model.max_batch_tokens,
            "max_batch_requests": settings.get("max_batch_size"), "max_client_batch_size": max_texts,
            "auto_truncate": True, "tokenization_workers": 1, "version": __version__, "sha": None,
            "docker_label": None, "served_model_name": model.name,
        })

    @app.post("/tokenize", response_model=list[list[SimpleToken]], responses=TEI_ERROR_RESPONSES,
              dependencies=guarded, tags=[_TAG])
    def tokenize(body: TokenizeBody) -> Response:  # a plain def: FastAPI runs it on a thread, off the event loop
        """The tokens the model sees for each input: ids, texts, special flags, character offsets."""
        name = body.prompt_name if body.prompt_name is not None else model.default_prompt_name
        prompt = model.prompts.get(name) if name is not None else None
        inputs = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        return json_response([[token._asdict() for token in tokenizer.tokens(
            text, prompt=prompt, special_tokens=body.add_special_tokens)] for text in inputs])

    @app.post("/decode", response_model=list[str], responses=TEI_ERROR_RESPONSES, dependencies=guarded,
              tags=[_TAG])
    def decode(body: DecodeBody) -> Response:  # likewise
        """The text of each list of token ids."""
        lists = body.ids if isinstance(body.ids[0], list) else [body.ids]
        return json_response([tokenizer.decode(ids, skip_special_tokens=body.skip_special_tokens) for ids in lists])
