"""`Packing`: a batch of sequences laid end to end, with no padding, plus what is needed to
pad them only where a padded shape is unavoidable (attention, per-token output).

Most of BERT's work (every linear layer, layer norms, activations) is per token, so it runs on
the packed ``[tokens, hidden]`` matrix and never touches padding; only attention needs the
``[batch, time]`` layout. With sequences of mixed lengths in one batch (small requests from
many clients) this removes the padding waste entirely, as TEI does with varlen kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Packing"]


@dataclass(frozen=True)
class Packing:
    lengths: torch.Tensor  # [B] long
    offsets: torch.Tensor  # [B + 1] long
    max_len: int
    index: torch.Tensor | None  # [N] position of each packed token in the [B * T] padded layout; None: no padding
    row: torch.Tensor  # [N] batch row of each packed token
    attn_mask: torch.Tensor | None  # [B, 1, 1, T] bool, True on real keys; None when no row is padded

    @classmethod
    def from_lengths(cls, lengths: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> Packing:
        """The layout of sequences of these lengths. Worked out on the CPU with numpy (a few
        microseconds, where a dozen tiny tensor ops cost far more, and on a GPU each ``int()``
        of a device tensor would wait for the device), then moved to ``device``."""
        if isinstance(lengths, torch.Tensor):
            device = device or lengths.device
            lengths = lengths.cpu().numpy()
        lengths = np.asarray(lengths, dtype=np.int64)
        b = len(lengths)
        t = int(lengths.max()) if b else 0
        offsets = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        row = np.repeat(np.arange(b, dtype=np.int64), lengths)

        on_cpu = device is None or torch.device(device).type == "cpu"

        def to(array: np.ndarray) -> torch.Tensor:
            tensor = torch.from_numpy(array)
            return tensor if on_cpu else tensor.to(device, non_blocking=True)

        if b and bool((lengths == t).all()):
            return cls(to(lengths), to(offsets), t, None, to(row), None)
        position = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        keys = np.arange(t)[None, :] < lengths[:, None]
        return cls(to(lengths), to(offsets), t, to(row * t + position), to(row), to(keys[:, None, None, :]))

    @property
    def num_tokens(self) -> int:
        return int(self.row.numel())

    @property
    def padding_ratio(self) -> float:
        """Padded slots per real token: 1.0 when every sequence has the same length."""
        return self.batch_size * self.max_len / max(self.num_tokens, 1)

    def as_padded(self) -> Packing:
        """This batch in the padded layout: every row ``max_len`` long (pad/unpad become free
        reshapes), the attention mask still hiding the padding."""
        full = torch.full_like(self.lengths, self.max_len)
        offsets = torch.arange(self.batch_size + 1, device=self.lengths.device) * self.max_len
        row = torch.arange(self.batch_size, device=self.lengths.device).repeat_interleave(self.max_len)
        return Packing(full, offsets, self.max_len, None, row, self.attn_mask)

    @property
    def key_mask(self) -> torch.Tensor:
        """``[B, T]`` bool, True on real tokens."""
        if self.attn_mask is None:
            return torch.ones(self.batch_size, self.max_len, dtype=torch.bool, device=self.lengths.device)
        return self.attn_mask[:, 0, 0, :]

    @property
    def batch_size(self) -> int:
        return int(self.lengths.numel())

    @property
    def positions(self) -> torch.Tensor:
        """Each packed token's position within its own sequence."""
        if self.index is None:
            return torch.arange(self.max_len, device=self.lengths.device).repeat(self.batch_size)
        return self.index - self.row * self.max_len

    def pad(self, packed: torch.Tensor, value: float = 0) -> torch.Tensor:
        """``[N, ...]`` -> ``[B, T, ...]``, ``value`` (zeros) in the padding."""
        shape = (self.batch_size, self.max_len, *packed.shape[1:])
        if self.index is None:
            return packed.reshape(shape)
        out = packed.new_full((self.batch_size * self.max_len, *packed.shape[1:]), value)
        out.index_copy_(0, self.index, packed)
        return out.view(shape)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``[B, T, ...]`` -> ``[N, ...]``."""
        flat = padded.reshape(self.batch_size * self.max_len, *padded.shape[2:])
        return flat if self.index is None else flat.index_select(0, self.index)
