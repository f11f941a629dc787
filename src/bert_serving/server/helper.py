"""Where 1.10.0 code imports the parsers from: ``from bert_serving.server.helper import get_args_parser``."""

from .cli import get_args_parser, get_benchmark_parser, get_shutdown_parser

__all__ = ["get_args_parser", "get_benchmark_parser", "get_shutdown_parser"]
