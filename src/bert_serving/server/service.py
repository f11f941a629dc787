"""`BertServer`: builds the pipeline from a `ServerConfig`, starts it, drains it, stops it.

    client -> zmq.frontend / http.app -> pipeline (intake -> batcher) -> replicas -> pipeline.sink -> reply

It is the edges' `Gateway`: they submit work and read status through it, and import nothing
of this module.

The 1.10.0 API is kept: ``BertServer(get_args_parser().parse_args([...]))``, ``start()``,
``join()``, ``close()``, ``is_ready``, use as a context manager, ``BertServer.shutdown(args)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from datetime import datetime

import zmq

from .. import __version__, protocol
from ..errors import NotReadyError
from ..model.encoder import resolve
from .config import ServerConfig
from .pipeline.batcher import Batcher
from .pipeline.gateway import ServedModel
from .pipeline.intake import Intake
from .pipeline.request import ReplyFn
from .pipeline.sink import Sink
from .pipeline.stats import Stats
from .replicas.local import local_worker_pool
from .replicas.pool import WorkerPool
from .zmq.access import CurveServer, TerminationPolicy
from .zmq.frontend import Frontend

__all__ = ["BertServer"]

logger = logging.getLogger(__name__)


class BertServer:
    def __init__(self, args: argparse.Namespace | ServerConfig) -> None:
        """Check the configuration and find the model; raises `ConfigurationError` on any problem,
        before anything is started."""
        self.config = args if isinstance(args, ServerConfig) else ServerConfig.from_namespace(args)
        self.spec = resolve(self.config.encoder)
        self.devices = self.config.devices()
        self.is_ready = threading.Event()
        self.stats = Stats()
        self.started_at = datetime.now()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._startup_error: BaseException | None = None
        self._lifecycle: threading.Thread | None = None
        self.tokenizer = self.spec.tokenizer()
        self._served = ServedModel(
            name=self.spec.source.name, dim=self.spec.dim, vocab_size=self.tokenizer.vocab_size,
            settings={**self.config.as_status(), **self.spec.describe(), "device_map": self.devices},
            prompts=self.spec.prompts.as_dict(), default_prompt_name=self.spec.prompts.default_name,
        )
        self._log_configuration()

    def _log_configuration(self) -> None:
        effective = {**self.config.as_status(), **self.spec.describe(), "devices": self.devices}
        width = max(map(len, effective))
        lines = "\n".join(f"  {k:>{width}} = {v}" for k, v in sorted(effective.items()))
        logger.info("bert-serving %s, effective configuration:\n%s", __version__, lines)
        for flag in ("xla", "graph_tmp_dir"):
            if getattr(self.config, flag):
                logger.warning("-%s has no effect without TensorFlow; ignored", flag)

    # lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the ports and start the pipeline; returns at once (`wait_ready` to wait).
        A busy port raises `ConfigurationError` here."""
        config, spec = self.config, self.spec
        self._ctx = zmq.Context()
        self.curve = (CurveServer(self._ctx, config.zmq_secret_key, config.zmq_authorized_keys)
                      if config.zmq_secret_key else None)
        self.batcher = Batcher(
            max_batch_size=config.max_batch_size,
            max_batch_tokens=config.batch_tokens(self.devices[0], getattr(spec.config, "hidden_size", 384)),
            priority_batch_size=config.priority_batch_size,
            max_queued_rows=config.max_queued_texts,
        )
        self.stats.queue_rows = lambda: self.batcher.queued_rows
        self.sink = Sink(spec.outputs, self.stats, show_tokens=spec.show_tokens)
        self.intake = Intake(self.tokenizer, self.batcher, self.sink, self.stats, keep_tokens=spec.show_tokens,
                             max_request_texts=config.max_request_texts, prompts=spec.prompts)
        try:
            self.workers = self._worker_pool()  # with -ray_address: joins the cluster, or ConfigurationError
        except Exception:
            self._ctx.destroy(linger=0)
            raise
        self.frontend = Frontend(
            self._ctx, bind=config.bind, port=config.port, port_out=config.port_out, gateway=self,
            termination=TerminationPolicy(config.terminate_token), curve=self.curve,
            max_request_bytes=config.max_request_bytes,
        )
        self.http = None
        try:
            if self.curve is not None:
                self.curve.start()
            self.frontend.bind()
            if config.http_port is not None:
                from .http.app import HttpSettings, create_app  # fastapi is imported only when HTTP is served
                from .http.server import HttpServer

                settings = HttpSettings(max_request_texts=config.max_request_texts,
                                        max_request_bytes=config.max_request_bytes, cors=config.cors,
                                        api_key=config.api_key)
                self.http = HttpServer(create_app(self, settings), config.bind, config.http_port)
                self.http.bind()
        except Exception:
            self.frontend.close()
            if self.curve is not None:
                self.curve.stop()
            self.workers.close(drain=False)
            self._ctx.destroy(linger=0)
            raise
        logger.info("listening: requests on port %d, results on port %d%s", config.port, config.port_out,
                    f", HTTP on port {config.http_port}" if self.http else "")
        self.frontend.start()
        if self.http is not None:
            self.http.start()
        self.workers.start()
        self._lifecycle = threading.Thread(target=self._run, name="lifecycle", daemon=True)
        self._lifecycle.start()

    def _worker_pool(self) -> WorkerPool:
        config = self.config
        stages = {"batcher": self.batcher, "sink": self.sink, "stats": self.stats, "prefetch": config.prefetch_size,
                  "batch_timeout_s": config.batch_timeout_s}
        if config.ray_address:
            from .replicas.ray_replicas import ray_worker_pool  # Ray is an optional extra: imported only here

            return ray_worker_pool(self.spec, address=config.ray_address, num_replicas=config.replicas,
                                   num_cpus=config.ray_num_cpus, num_gpus=config.ray_num_gpus,
                                   gpu_memory_fraction=config.gpu_memory_fraction, **stages)
        return local_worker_pool(
            config.encoder, self.devices, ctx=self._ctx,
            threads=config.threads_per_worker() if self.devices[0] == "cpu" else 1,
            gpu_memory_fraction=config.gpu_memory_fraction, **stages,
        )

    def _run(self) -> None:
        try:
            self.workers.wait_ready()
        except NotReadyError as exc:
            logger.error("%s", exc)
            self._startup_error = exc
            self._stop_requested.set()
        else:
            self.is_ready.set()
            logger.info("all set, ready to serve requests!")
        self._stop_requested.wait()
        self._shutdown()

    def _shutdown(self) -> None:
        timeout = self.config.drain_timeout
        logger.info("shutting down: finishing %d accepted requests (at most %.0f s)...", self.sink.outstanding, timeout)
        self.is_ready.clear()
        self.frontend.stop_accepting()
        self.batcher.close()
        self.intake.close()
        self.workers.close(drain=self._startup_error is None, timeout=timeout)
        self.batcher.abandon()
        unanswered = self.sink.fail_outstanding(NotReadyError(
            "the server shut down before this request could be served" +
            ("" if self._startup_error is None else f" (it failed to start: {self._startup_error})")))
        if unanswered:
            logger.warning("answered %d requests with an error: not served within the drain timeout", unanswered)
        if self.http is not None:
            self.http.close()
        self.frontend.close()
        if self.curve is not None:
            self.curve.stop()
        self._ctx.destroy(linger=1000)
        logger.info("server stopped")
        self._stopped.set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the workers are loaded and warm; raise `NotReadyError` if they failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_ready.is_set():
            if self._startup_error is not None:
                raise self._startup_error
            if self._stopped.is_set():
                raise NotReadyError("the server stopped before it was ready")
            if deadline is not None and time.monotonic() > deadline:
                raise NotReadyError(f"the server was not ready within {timeout} s")
            self.is_ready.wait(0.05)

    @property
    def startup_error(self) -> BaseException | None:
        """Why the workers could not start, if they could not."""
        return self._startup_error

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what TERMINATION, SIGTERM and SIGINT do); returns at once."""
        self._stop_requested.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the server has stopped; True if it has."""
        return self._stopped.wait(timeout)

    def close(self) -> None:
        """Stop gracefully: answer every accepted request, then stop all workers."""
        self.request_stop()
        if self._lifecycle is not None:
            self._lifecycle.join()

    def __enter__(self) -> BertServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @staticmethod
    def shutdown(args: argparse.Namespace) -> None:
        """Send TERMINATION to a server (``args``: ``ip``, ``port``, ``timeout`` in ms)."""
        from ..client import terminate_server

        terminate_server(args.ip, args.port, timeout=args.timeout)

    # the edges' Gateway -----------------------------------------------------------------------------

    @property
    def model(self) -> ServedModel:
        return self._served

    def submit(self, texts: object, is_tokenized: bool, reply: ReplyFn, client: str, *, prompt_name: object = None,
               prompt: object = None) -> None:
        self.intake.submit(texts, is_tokenized, reply, client, prompt_name=prompt_name, prompt=prompt)

    def serving(self) -> bool:
        return self.is_ready.is_set()

    def readiness(self) -> dict[str, object]:
        """``/ready``: ready only when loaded, warm, every worker up, and not stopping."""
        states = self.workers.states()
        if self._stop_requested.is_set():
            status = "stopping"
        elif not self.is_ready.is_set():
            status = "failed" if self._startup_error else "starting"
        elif any(state not in ("idle", "busy") for state in states.values()):
            status = "degraded"
        else:
            status = "ready"
        return {"ready": status == "ready", "status": status, "workers": states}

    def status(self, with_statistic: bool = False, client: str = "") -> dict[str, object]:
        """SHOW_CONFIG (and with ``with_statistic``, SHOW_STATUS) as the stock client reads it."""
        import torch

        status: dict[str, object] = {
            **self.config.as_status(),
            **self.spec.describe(),
            "model_dir": str(self.spec.source.config_path.parent),
            "client": client,
            "num_process": 1 + len(self.devices),
            "num_worker": len(self.devices),
            "device_map": self.devices,
            "replicas": self.workers.describe(),
            "server_current_time": str(datetime.now()),
            "ready": self.is_ready.is_set(),
            # static: server_version is the wire protocol's, the stock client insists on it
            "server_version": protocol.PROTOCOL_VERSION,
            "bert_serving_version": __version__,
            "python_version": sys.version,
            "pyzmq_version": zmq.pyzmq_version(),
            "zmq_version": zmq.zmq_version(),
            "torch_version": torch.__version__,
            "tensorflow_version": None,
            "server_start_time": str(self.started_at),
        }
        if with_statistic:
            status["statistic"] = self.stats.statistic()
        return status

