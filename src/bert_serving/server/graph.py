"""Where 1.10.0 code imports the pooling strategies from:
``from bert_serving.server.graph import PoolingStrategy``."""

from ..model.strategies import PoolingStrategy

__all__ = ["PoolingStrategy"]
