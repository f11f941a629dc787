"""Text -> vectors with BERT, in process: loading every BERT layout, the original server's
tokenization and pooling, and the `Encoder` the server's workers run.

The names below are imported on first use, so that the numpy-only modules here (`features`,
`outputs`) can be imported by the server's pipeline without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, CheckpointReader
    from .encoder import Encoder
    from .features import Features
    from .settings import EncoderSettings
    from .spec import ModelSpec, resolve
    from .strategies import PoolingStrategy

__all__ = [
    "CheckpointError",
    "CheckpointReader",
    "Encoder",
    "EncoderSettings",
    "Features",
    "ModelSpec",
    "PoolingStrategy",
    "resolve",
]

_HOMES = {
    "CheckpointError": "checkpoint",
    "CheckpointReader": "checkpoint",
    "Encoder": "encoder",
    "EncoderSettings": "settings",
    "ModelSpec": "spec",
    "resolve": "spec",
    "Features": "features",
    "PoolingStrategy": "strategies",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
