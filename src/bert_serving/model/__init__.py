"""Text -> vectors with BERT, in process: loading every BERT layout, the original server's
tokenization and pooling, and the `Encoder` the server's workers run."""

from .checkpoint import CheckpointError, CheckpointReader
from .encoder import Encoder, EncoderSettings, ModelSpec, resolve
from .features import Features
from .pooling import PoolingStrategy

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
