"""The models one server serves, as the coordinator holds them: the default model (``-model_dir``)
and each ``-extra_model``, each with its own stages (`Stages`: batcher, sink, replicas, counters),
so that rows of two models never share a batch and a flood on one waits in its own queue.

`resolve_models` checks every model before anything starts: a folder that cannot be loaded is a
`ConfigurationError` naming the model; `Stages` are built when the server starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigurationError
from ..model.encoder import resolve
from ..model.outputs import OutputLayout
from .config import ServerConfig
from .pipeline.gateway import ServedModel

if TYPE_CHECKING:
    from ..model.spec import ModelSpec
    from ..model.tokenization import Tokenizer
    from .pipeline.batcher import Batcher
    from .pipeline.sink import Sink
    from .pipeline.stats import ModelStats
    from .replicas.pool import WorkerPool

__all__ = ["Model", "resolve_models", "row_bytes"]


@dataclass(eq=False)
class Model:
    """One served model in the coordinator: its settings, its spec, what the edges are told of it
    (`served`) and, once the server starts, its stages."""

    name: str
    config: ServerConfig  # the server's flags with this model's own settings in place
    spec: ModelSpec
    devices: list[str]
    tokenizer: Tokenizer
    served: ServedModel
    extra: bool  # an -extra_model (its replicas' names and titles say which)
    batcher: Batcher | None = None
    sink: Sink | None = None
    workers: WorkerPool | None = None
    stats: ModelStats | None = None
    replicas: list = field(default_factory=list)

    def describe(self) -> dict[str, object]:
        """What SHOW_CONFIG and ``/status/server`` show of it (``models``)."""
        return {
            **self.spec.describe(self.devices[0]),
            "model_dir": str(self.spec.source.config_path.parent),
            "task": self.served.task,
            "dim": self.served.dim,
            "labels": list(self.served.labels),
            "outputs": list(self.served.outputs),
            "num_worker": len(self.devices),
            "device_map": self.devices,
            "max_batch_tokens": self.served.max_batch_tokens,
            "max_queued_texts": self.config.max_queued_texts,
            "max_queued_bytes": self.config.max_queued_bytes,
            "replicas": self.workers.describe() if self.workers is not None else [],
        }


def row_bytes(outputs: OutputLayout):
    """What one row's outputs take at the replica (the batcher's byte budget per batch)."""
    return lambda length, kinds: outputs.nbytes_of(kinds, 1, np.array([length]))


def resolve_models(config: ServerConfig) -> list[Model]:
    """Every served model, the default first, checked and described; `ConfigurationError` naming
    the model whose folder or settings are wrong."""
    models: list[Model] = []
    entries = [None, *config.extra_models]
    for own, entry in zip(config.models(), entries):
        try:
            spec = resolve(own.encoder)
        except ConfigurationError as exc:
            if entry is None:
                raise
            raise ConfigurationError(f"-extra_model {entry.name} ({entry.encoder.model_dir}): {exc}") from None
        name = entry.name if entry is not None else spec.source.name
        if any(m.name == name for m in models):
            raise ConfigurationError(f"-extra_model {name}: the name is the default model's; give it another")
        devices = own.devices()
        tokenizer = spec.tokenizer()
        head = spec.head
        served = ServedModel(
            name=name, dim=spec.dim, vocab_size=tokenizer.vocab_size,
            settings={**own.as_status(), **spec.describe(devices[0]), "device_map": devices},
            prompts=spec.prompts.as_dict(), default_prompt_name=spec.prompts.default_name,
            task=spec.task, labels=head.labels if head else (), activation=head.activation if head else None,
            per_token=spec.pooling_strategy.per_token, max_input_length=spec.max_length,
            max_batch_tokens=own.batch_tokens(devices[0], getattr(spec.config, "hidden_size", 384)),
            outputs=spec.output_kinds, sparse_dim=spec.outputs.sparse_dim,
            colbert_dim=spec.colbert_dim, tokenizer=tokenizer,
        )
        models.append(Model(name, own, spec, devices, tokenizer, served, extra=entry is not None))
    return models
