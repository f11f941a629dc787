"""``POST /v1/embeddings`` (and ``/embeddings``) in OpenAI's request, response and error shapes,
so the ``openai`` SDK, LangChain and LlamaIndex work against the server unchanged.

- ``input``: a string or a list of strings; with ``-http_token_ids`` also a list of token ids
  or a list of token-id lists (word-piece ids of this model's vocabulary; [CLS]/[SEP] are added
  as for text). Without the flag, token ids get a 400 that says why: LangChain's default
  ``OpenAIEmbeddings`` sends OpenAI's tiktoken ids, which would be embedded as meaningless
  word pieces;
- ``encoding_format``: ``float`` or ``base64`` (little-endian float32 bytes);
- ``dimensions``: keep the first N dimensions, then L2-normalise (Matryoshka-style);
- ``model``: optional; the answer names the model actually served; ``user`` is ignored;
- ``prompt_name`` (one of the model's prompts) or ``prompt`` (a text): put before each input
  (sentence-transformers' prompts; the openai SDK sends them with ``extra_body``); the usage
  counts include the prompt's tokens.
Vectors are the server's configured ones (the same as ``/encode`` and ZeroMQ give).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Callable, Literal, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag, create_model
from pydantic_core import PydanticCustomError

from ...errors import BertServingError, InvalidRequestError
from ...model.prompts import unknown_prompt

__all__ = ["PROMPT", "PROMPT_NAME", "TOKEN_IDS_REFUSED", "EmbeddingsRequest", "EmbeddingsResponse", "Integer",
           "OpenAIError", "Text", "embeddings_body", "embeddings_request_model", "integer", "one_of",
           "openai_error_body", "prompt_name_field", "request_texts"]

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}


# Not empty, not blank: a character outside Python's whitespace (what str.strip() removes),
# spelled out because "\S" means different sets in Python, Rust and JSON Schema's ECMA regex.
NOT_BLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
Text = Annotated[str, StringConstraints(pattern=NOT_BLANK)]


def _integer(value: object) -> object:
    """JSON's integers, 7 and 7.0 alike; not true/false, not "7"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def integer(**constraints) -> object:
    """An integer type with constraints (``ge``, ``lt``...), written into the JSON schema."""
    return Annotated[int, Field(**constraints), BeforeValidator(_integer)]


Integer = integer()

PROMPT_NAME = ("One of the model's prompts (GET / lists them) to put before each text; default: the model's "
               "default prompt, if it has one")
PROMPT = "A prompt of your own to put before each text (it wins over prompt_name); \"\" for none"


def prompt_name_field(names: tuple[str, ...]) -> tuple[object, object]:
    """``prompt_name`` as a served model takes it: one of its prompts' names (none: only null);
    another name is refused in the words the ZeroMQ edge uses (`Prompts.choose`)."""

    def known(value: object) -> object:
        if isinstance(value, str) and value not in names:
            raise ValueError(unknown_prompt(value, names))
        return value

    kind = Literal[names] | None if names else None
    return Annotated[kind, BeforeValidator(known)], Field(None, description=PROMPT_NAME)


def one_of(members: dict[str, object], kind: Callable[[Any], str | None], expected: str) -> object:
    """A union validated as the one member ``kind`` picks from the value's shape, so that a bad
    value gets that member's one error (or "must be ``expected``"), not one per member. Tags
    hold a hyphen: `responses.validation_error` leaves them out of error locations."""
    tagged = tuple(Annotated[member, Tag(tag)] for tag, member in members.items())
    return Annotated[Union[tagged], Discriminator(kind, custom_error_type="invalid_type",  # noqa: UP007
                                                  custom_error_message=f"must be {expected}")]


def _is_integer(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _input_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "input-text"
    if not isinstance(value, list):
        return None
    if value and isinstance(value[0], list):
        return "input-many-ids"
    return "input-ids" if value and _is_integer(value[0]) else "input-texts"


TOKEN_IDS_REFUSED = (
    "input holds token ids, which this server takes only when started with -http_token_ids, and then only ids of "
    "the served model's own vocabulary: send the texts instead. LangChain's OpenAIEmbeddings sends OpenAI's "
    "tiktoken ids unless created with check_embedding_ctx_length=False"
)


def _refuse_token_ids(value: object) -> object:
    if _input_kind(value) in ("input-ids", "input-many-ids"):
        raise PydanticCustomError("token_ids", TOKEN_IDS_REFUSED)
    return value


class EmbeddingsRequest(BaseModel):
    """The request; `embeddings_request_model` narrows it to a served model's limits."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"input": "First do it",
                                                                               "model": "all-MiniLM-L6-v2"}]})

    input: Text | list[Text] | list[Integer] | list[list[Integer]] = Field(
        description="Text, texts, token ids, or lists of token ids to embed")
    model: str | None = Field(None, description="Accepted for compatibility; the served model answers")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: integer(ge=1) | None = Field(None, description="Keep this many leading dimensions, re-normalised")
    user: str | None = None
    prompt_name: str | None = Field(None, description=PROMPT_NAME)
    prompt: str | None = Field(None, description=PROMPT)


def embeddings_request_model(vocab_size: int, dim: int, max_texts: int,
                             token_ids: bool = False, prompt_names: tuple[str, ...] = ()) -> type[EmbeddingsRequest]:
    """`EmbeddingsRequest` with this server's limits written into its schema; token ids are
    accepted only with ``token_ids`` (``-http_token_ids``); ``prompt_name`` is one of
    ``prompt_names``."""
    token = integer(ge=0, lt=vocab_size)
    members: dict[str, object] = {"input-text": Text,
                                  "input-texts": Annotated[list[Text], Field(min_length=1, max_length=max_texts)]}
    if token_ids:
        ids = Annotated[list[token], Field(min_length=1)]
        members |= {"input-ids": ids,
                    "input-many-ids": Annotated[list[ids], Field(min_length=1, max_length=max_texts)]}
        input_type = one_of(members, _input_kind, "a string, a list of strings, a list of token ids, or a list "
                                                  "of token-id lists")
        description = "Text, texts, token ids (of this model's vocabulary), or lists of token ids"
    else:
        input_type = Annotated[one_of(members, _input_kind, "a string or a list of strings"),
                               BeforeValidator(_refuse_token_ids)]
        description = "Text or texts (token ids only on a server started with -http_token_ids)"
    return create_model(
        "EmbeddingsRequest",
        __base__=EmbeddingsRequest,
        input=(input_type, Field(description=description)),
        dimensions=(integer(ge=1, le=dim) | None, Field(None, description="Keep this many leading dimensions, "
                                                                            "re-normalised")),
        prompt_name=prompt_name_field(prompt_names),
    )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


def request_texts(body: EmbeddingsRequest) -> tuple[list, bool]:
    """The texts of an embeddings request, and whether they are token ids."""
    data = body.input
    if isinstance(data, str):
        return [data], False
    if not data:
        raise InvalidRequestError("input must not be empty", param="input")
    if isinstance(data[0], int):
        return [data], True
    return list(data), isinstance(data[0], list)


def embeddings_body(body: EmbeddingsRequest, vectors: np.ndarray, num_tokens: int, model: str) -> dict:
    if vectors.ndim != 2:
        raise InvalidRequestError("this server returns token vectors (-pooling_strategy NONE); "
                                  "the embeddings route needs sentence vectors")
    vectors = vectors.astype(np.float32, copy=False)
    if body.dimensions is not None:
        if body.dimensions > vectors.shape[1]:
            raise InvalidRequestError(f"dimensions must be at most {vectors.shape[1]} for this model",
                                      param="dimensions")
        vectors = vectors[:, : body.dimensions]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if body.encoding_format == "base64":
        embeddings = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        embeddings = list(vectors)
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": num_tokens, "total_tokens": num_tokens},
    }


def openai_error_body(error: BertServingError) -> dict:
    return {"error": {
        "message": error.message,
        # OpenAI's own 404 for an unknown model says invalid_request_error
        "type": "invalid_request_error" if error.code == "model_not_found" else _TYPES.get(error.http_status,
                                                                                           "server_error"),
        "param": error.param,
        "code": error.code,
    }}

