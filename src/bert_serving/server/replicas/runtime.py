"""What every kind of replica (a local worker process, a Ray actor) runs at its start."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...model.encoder import Encoder, ModelSpec

__all__ = ["load_encoder"]


def load_encoder(spec: ModelSpec, device: str, *, threads: int, gpu_memory_fraction: float) -> Encoder:
    """A replica's model: torch limited to ``threads`` (and its share of GPU memory), loaded on
    ``device`` and warmed up by one pass. What every kind of replica runs at its start."""
    import torch

    from ...model.encoder import Encoder

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_per_process_memory_fraction(gpu_memory_fraction, torch.device(device))
    encoder = Encoder(spec, device=device)
    encoder.embed(encoder.tokenizer.encode(["warm up the model"] * 2))
    return encoder
