"""What an edge process is told of the served model and of its limits, as JSON values: enough to
validate, tokenize and answer requests without loading the model (no torch in an edge process)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...model.outputs import OutputLayout
from ...model.prompts import Prompts
from ...model.tokenization import Tokenizer
from ..pipeline.gateway import ServedModel

if TYPE_CHECKING:
    from ...model.spec import ModelSpec

__all__ = ["EdgeLimits", "ModelOrders", "shared_tokenizer"]

_tokenizers: dict[str, Tokenizer] = {}
_tokenizers_lock = threading.Lock()


def shared_tokenizer(recipe: dict) -> Tokenizer:
    """The tokenizer ``recipe`` describes, one object per distinct tokenizer in this process: two
    served models whose tokenizer files hold the same bytes, with the same options, share one
    (a `Tokenizer` is thread-safe and holds no state of a request's)."""
    options = {k: v for k, v in recipe.items() if k not in ("file", "vocab")}
    path = recipe.get("file") or recipe.get("vocab")
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:  # from_recipe says what is wrong with it
        return Tokenizer.from_recipe(recipe)
    key = json.dumps([digest, "file" in recipe, options], sort_keys=True, default=str)
    with _tokenizers_lock:
        tokenizer = _tokenizers.get(key)
        if tokenizer is None:
            tokenizer = _tokenizers[key] = Tokenizer.from_recipe(recipe)
    return tokenizer


@dataclass(frozen=True)
class EdgeLimits:
    """One edge process's share of the server's limits."""

    max_request_texts: int
    max_request_bytes: int
    max_result_bytes: int
    max_queued_texts: int  # this edge's share of -max_queued_texts
    max_queued_bytes: int  # this edge's share of -max_queued_bytes


@dataclass(frozen=True)
class ModelOrders:
    """The served model as an edge needs it."""

    served: ServedModel
    tokenizer: dict  # `ModelSpec.tokenizer_recipe`
    outputs: OutputLayout
    prompts: Prompts
    show_tokens: bool

    @classmethod
    def of(cls, spec: ModelSpec, served: ServedModel) -> ModelOrders:
        return cls(served, spec.tokenizer_recipe(), spec.outputs, spec.prompts, spec.show_tokens)

    def to_json(self) -> dict:
        outputs = dataclasses.asdict(self.outputs)
        outputs["dtype"] = np.dtype(self.outputs.dtype).str
        served = {f.name: getattr(self.served, f.name) for f in dataclasses.fields(self.served) if f.name != "tokenizer"}
        served["settings"] = dict(self.served.settings)
        served["prompts"] = dict(self.served.prompts)
        return {"served": served, "tokenizer": self.tokenizer, "outputs": outputs,
                "prompts": {"named": [list(p) for p in self.prompts.named], "default_name": self.prompts.default_name},
                "show_tokens": self.show_tokens}

    @classmethod
    def from_json(cls, value: dict) -> ModelOrders:
        """The orders, with the served model's tokenizer built here (the edge's own)."""
        served = dict(value["served"])
        served["labels"] = tuple(served["labels"])
        served["outputs"] = tuple(served["outputs"])
        outputs = dict(value["outputs"])
        outputs["dtype"] = np.dtype(outputs["dtype"])
        prompts = Prompts(tuple(tuple(p) for p in value["prompts"]["named"]), value["prompts"]["default_name"])
        served["tokenizer"] = shared_tokenizer(value["tokenizer"])
        return cls(ServedModel(**served), value["tokenizer"], OutputLayout(**outputs), prompts, value["show_tokens"])

    @classmethod
    def many_from_json(cls, values: list[dict]) -> list[ModelOrders]:
        """Every served model's orders (`from_json`), the same tokenizer built once (`shared_tokenizer`)."""
        return [cls.from_json(value) for value in values]

    def build_tokenizer(self) -> Tokenizer:
        """The edge's tokenizer: the served model's, when it has one already."""
        return self.served.tokenizer or shared_tokenizer(self.tokenizer)
