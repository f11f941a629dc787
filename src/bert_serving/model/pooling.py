"""The original server's pooling strategies (bert-as-service ``graph.py``), minus its bugs,
plus sentence-transformers' two other modes (weighted mean, mean over the root of the length).

Differences from 1.10.0, all deliberate:
- ``-mask_cls_sep`` removes [CLS]/[SEP] from pooling only. The original also hid them from
  attention, feeding the model a mask it was never trained with.
- ``LAST_TOKEN`` is the last real token ([SEP]) whatever the mask; the original landed on the
  second-to-last word piece under ``-mask_cls_sep``.
- ``REDUCE_MAX`` over a sequence with nothing left to pool gives zeros, not -1e30.
"""

from __future__ import annotations

import torch

from .packing import Packing
from .strategies import PoolingStrategy

__all__ = ["PoolingStrategy", "pool"]


def pool(
    layers: list[torch.Tensor],
    pool_mask: torch.Tensor,
    packing: Packing,
    strategy: PoolingStrategy,
    pooled_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool packed hidden states ``[tokens, H]`` of one or more layers (concatenated on H, in
    the order given) into ``[B, D]``, or ``[B, T, D]`` for NONE.

    ``pool_mask`` is bool ``[tokens]``: the positions mean/max pooling and NONE keep.
    """
    if strategy.is_head:
        raise ValueError(f"{strategy} is a head's output, not a pooling (see bert_serving.model.heads)")
    if strategy is PoolingStrategy.CLS_POOLED:
        if pooled_output is None:
            raise ValueError("CLS_POOLED needs the pooler output")
        return pooled_output
    hidden = layers[0] if len(layers) == 1 else torch.cat(layers, dim=-1)
    if strategy is PoolingStrategy.FIRST_TOKEN:
        return hidden[packing.offsets[:-1]]
    if strategy is PoolingStrategy.LAST_TOKEN:
        return hidden[packing.offsets[1:] - 1]
    mask = pool_mask.unsqueeze(-1)
    if strategy is PoolingStrategy.NONE:
        return packing.pad(hidden * mask)
    b, width = packing.batch_size, hidden.shape[-1]
    weights = mask.to(hidden.dtype)
    if strategy is PoolingStrategy.REDUCE_WEIGHTED_MEAN:
        weights = weights * (packing.positions + 1).unsqueeze(-1).to(hidden.dtype)
    if packing.index is None:  # rows of one length: sums over a [B, T] view
        t = packing.max_len
        counts = weights.view(b, t, 1).sum(1)
        total = (hidden * weights).view(b, t, width).sum(1)
    else:
        counts = torch.zeros(b, 1, dtype=hidden.dtype, device=hidden.device).index_add_(0, packing.row, weights)
        total = torch.zeros(b, width, dtype=hidden.dtype, device=hidden.device).index_add_(
            0, packing.row, hidden * weights)
    if strategy is PoolingStrategy.REDUCE_MEAN_SQRT_LEN:
        return total / counts.clamp(min=1e-9).sqrt()
    mean = total / (counts + 1e-10)
    if strategy in (PoolingStrategy.REDUCE_MEAN, PoolingStrategy.REDUCE_WEIGHTED_MEAN):
        return mean
    maximum = torch.full((b, width), float("-inf"), dtype=hidden.dtype, device=hidden.device).scatter_reduce_(
        0, packing.row[:, None].expand_as(hidden), hidden.masked_fill(~mask, float("-inf")), reduce="amax")
    maximum = torch.where(counts > 0, maximum, torch.zeros_like(maximum))
    if strategy is PoolingStrategy.REDUCE_MAX:
        return maximum
    return torch.cat([mean, maximum], dim=-1)  # REDUCE_MEAN_MAX
