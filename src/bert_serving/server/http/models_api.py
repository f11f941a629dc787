"""``GET /v1/models`` and ``GET /v1/models/{id}`` (and the same without ``/v1``) in OpenAI's shapes,
so ``client.models.list()`` of the ``openai`` SDK, and the UIs that call it first (Open WebUI),
find the served model: ``{"object": "list", "data": [{"id", "object": "model", "created",
"owned_by"}]}``. Another id is a 404 in OpenAI's error shape (``model_not_found``).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types.

import time
from typing import Literal

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel

from ..pipeline.gateway import ServedModel
from .openai_api import OpenAIError
from .responses import json_response

__all__ = ["ModelCard", "ModelList", "mount_models"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def mount_models(app: FastAPI, model: ServedModel, guarded: list[Depends]) -> None:
    """Add the model routes to ``app``; ``created`` is when this app was made (the server started)."""
    card = {"id": model.name, "object": "model", "created": int(time.time()), "owned_by": "bert-serving"}

    for prefix in ("/v1", ""):
        @app.get(f"{prefix}/models", response_model=ModelList, dependencies=guarded, tags=["OpenAI"],
                 name=f"models{prefix.replace('/', '_')}")
        async def models() -> Response:
            """The served model, as OpenAI lists models."""
            return json_response({"object": "list", "data": [card]})

        @app.get(prefix + "/models/{model_id:path}", response_model=ModelCard, dependencies=guarded,
                 tags=["OpenAI"], name=f"model{prefix.replace('/', '_')}",
                 responses={404: {"model": OpenAIError, "description": "Not the served model"}})
        async def model_card(model_id: str) -> Response:
            """The served model, by its id."""
            if model_id == model.name:
                return json_response(card)
            return json_response({"error": {
                "message": f"The model '{model_id:.100}' does not exist: this server serves '{model.name}'",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}, 404)
