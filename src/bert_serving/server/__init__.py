"""The bert-serving server: ``BertServer`` and the 1.10.0 parser, ``get_args_parser``."""

from .cli import get_args_parser, get_benchmark_parser, get_shutdown_parser
from .config import ServerConfig
from .service import BertServer

__all__ = ["BertServer", "ServerConfig", "get_args_parser", "get_benchmark_parser", "get_shutdown_parser"]
