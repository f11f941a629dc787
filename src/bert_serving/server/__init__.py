"""The bert-serving server: ``BertServer`` and the 1.10.0 parser, ``get_args_parser``.

The names below are imported on first use, so that importing one stage (e.g.
``bert_serving.server.pipeline``) does not start the whole composition, torch and sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .cli import get_args_parser, get_benchmark_parser, get_shutdown_parser
    from .config import ServerConfig
    from .service import BertServer

__all__ = ["BertServer", "ServerConfig", "__version__", "get_args_parser", "get_benchmark_parser",
           "get_shutdown_parser"]

# As 1.10.0's ``bert_serving.server.__version__`` (and ``bert_serving.client.__version__``): the
# protocol the server speaks, which SHOW_CONFIG reports as ``server_version``. This release's own
# version is ``bert_serving.__version__``. (Written out: importing `protocol` would load zmq.)
__version__ = "1.10.0"

_HOMES = {"BertServer": "service", "ServerConfig": "config", "get_args_parser": "cli",
          "get_benchmark_parser": "cli", "get_shutdown_parser": "cli"}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
