"""``GET /v1/models`` and ``GET /v1/models/{id}`` (and the same without ``/v1``) in OpenAI's shapes,
so ``client.models.list()`` of the ``openai`` SDK, and the UIs that call it first (Open WebUI),
find the served model: ``{"object": "list", "data": [{"id", "object": "model", "created",
"owned_by"}]}`` (every served model, the default first, in a server that serves several). Another
id is a 404 in OpenAI's error shape (``model_not_found``), naming the served ones.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types.

import time
from typing import Literal

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel

from ..pipeline.gateway import ServedModel, unknown_model
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


def mount_models(app: FastAPI, models: ServedModel | list[ServedModel], guarded: list[Depends]) -> None:
    """Add the model routes to ``app``; ``created`` is when this app was made (the server started)."""
    models = [models] if isinstance(models, ServedModel) else models
    created = int(time.time())
    cards = {m.name: {"id": m.name, "object": "model", "created": created, "owned_by": "bert-serving"}
             for m in models}

    for prefix in ("/v1", ""):
        @app.get(f"{prefix}/models", response_model=ModelList, dependencies=guarded, tags=["OpenAI"],
                 name=f"models{prefix.replace('/', '_')}")
        async def models() -> Response:
            """The served models, as OpenAI lists models."""
            return json_response({"object": "list", "data": list(cards.values())})

        @app.get(prefix + "/models/{model_id:path}", response_model=ModelCard, dependencies=guarded,
                 tags=["OpenAI"], name=f"model{prefix.replace('/', '_')}",
                 responses={404: {"model": OpenAIError, "description": "Not the served model"}})
        async def model_card(model_id: str) -> Response:
            """A served model, by its id."""
            if model_id in cards:
                return json_response(cards[model_id])
            return json_response({"error": {
                "message": unknown_model(model_id, list(cards)),
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}, 404)
