"""`BertServer`: builds the server from a `ServerConfig`, starts it, drains it, stops it.

    client -> zmq.router -> intake processes (zmq.frontend + pipeline.intake) ┐
    client -> HTTP processes (http.app + pipeline.intake) ────────────────────┴-> link.hub ->
        batcher -> replicas -> sink -> link.hub -> the request's edge process -> client

This process is the coordinator: it holds the batcher, the sink and the replicas' pool of each
served model (`served_models`: the default model and every ``-extra_model``, each its own), the
`Stats`, and supervises the edge processes (`processes.supervisor`), which tokenize and answer
on as many cores as there are of them. It answers their views and control (`link.hub.Control`).

The 1.10.0 API is kept: ``BertServer(get_args_parser().parse_args([...]))`` is a
``threading.Thread`` (``start()``, ``join()``, ``is_alive()``, ``close()``, ``is_ready``), a
context manager, and ``BertServer.shutdown(port=5555)`` / ``BertServer.shutdown(args)``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime

import zmq

from .. import __version__, protocol
from ..errors import NotReadyError
from .config import ServerConfig
from .edges import edge_limits, edge_specs
from .http.server import listen
from .link.frames import STOP
from .link.hub import Hub, Lane
from .link.orders import EdgeLimits, ModelOrders
from .link.uplink import Uplink
from .pipeline.batcher import Batcher
from .pipeline.gateway import ServedModel
from .pipeline.sink import Sink
from .pipeline.stats import ModelStats, Stats
from .processes.channel import Channel
from .processes.child import log_level
from .processes.supervisor import EdgeSpec, Supervisor
from .replicas.local import local_worker_pool
from .replicas.pool import WorkerPool
from .served_models import Model, resolve_models, row_bytes

__all__ = ["BertServer"]

logger = logging.getLogger(__name__)


class BertServer(threading.Thread):
    def __init__(self, args: argparse.Namespace | ServerConfig) -> None:
        """Check the configuration and find the model; raises `ConfigurationError` on any problem,
        before anything is started."""
        # the thread runs the lifecycle (`run`); not a daemon, as 1.10.0's: a script that started a
        # server keeps serving until it is shut down
        super().__init__(name="bert-server")
        self.config = args if isinstance(args, ServerConfig) else ServerConfig.from_namespace(args)
        self.models: list[Model] = resolve_models(self.config)  # the default model first
        default = self.models[0]
        self.spec, self.devices, self.tokenizer, self._served = default.spec, default.devices, default.tokenizer, \
            default.served
        self.is_ready = threading.Event()
        self.stats = Stats()
        self.started_at = datetime.now()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._startup_error: BaseException | None = None
        self._failure: str | None = None  # a serving loop that died (stage_failed)
        self._log_configuration()

    def _log_configuration(self) -> None:
        effective = {**self.config.as_status(), **self.spec.describe(self.devices[0]), "devices": self.devices}
        width = max(map(len, effective))
        lines = "\n".join(f"  {k:>{width}} = {v}" for k, v in sorted(effective.items()))
        logger.info("bert-serving %s, effective configuration:\n%s", __version__, lines)
        for model in self.models:
            logger.info("model %r%s: %s (%s), %d worker(s) on %s", model.name, "" if model.extra else " (default)",
                        model.spec.source.config_path.parent, model.served.task, len(model.devices),
                        ", ".join(model.devices))
        for flag in ("xla", "graph_tmp_dir"):
            if getattr(self.config, flag):
                logger.warning("-%s has no effect without TensorFlow; ignored", flag)

    # lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the replicas' pool and the edge processes (the router binds the ports); returns
        once every edge process is up (`wait_ready` waits for the replicas). A busy port raises
        `ConfigurationError` here."""
        config = self.config
        started: list[Model] = []
        try:
            for model in self.models:  # with -ray_address: joins the cluster, or ConfigurationError
                self._build_stages(model)
                started.append(model)
        except BaseException:
            for model in started:
                model.workers.close(drain=False)
            raise
        default = self.models[0]
        self.batcher, self.sink, self.workers = default.batcher, default.sink, default.workers
        self.stats.queue_rows = lambda: sum(m.batcher.queued_rows for m in self.models)
        self._run_dir = tempfile.mkdtemp(prefix="bert-serving-")  # 0700: the edge processes' private sockets
        self._listener = None
        self.supervisor: Supervisor | None = None
        self.hub = Hub(lanes=[Lane(m.batcher, m.sink) for m in self.models], stats=self.stats, control=self,
                       on_hung=lambda name: self.supervisor and self.supervisor.kill(name), on_failure=self.stage_failed)
        self._gateways: list[Uplink] = []
        try:
            if config.http_port is not None:
                self._listener = listen(config.bind, config.http_port)
            self.supervisor = Supervisor(self.hub, self._edges(), on_failure=self.stage_failed, log_level=log_level())
            self.hub.start()
            self.supervisor.start()
        except BaseException:
            self._stop_edges()
            for model in self.models:
                model.workers.close(drain=False)
            raise
        logger.info("listening: requests on port %d, results on port %d%s (%d intake, %d HTTP processes)",
                    config.port, config.port_out, f", HTTP on port {config.http_port}" if self._listener else "",
                    config.intakes(), config.http_processes() if self._listener else 0)
        for model in self.models:
            model.workers.start()
        super().start()  # `run`: wait for the workers, serve until asked to stop, then drain

    def _build_stages(self, model: Model) -> None:
        """``model``'s own batcher (its token budget and queue), sink, counters and replicas."""
        own, spec = model.config, model.spec
        model.batcher = Batcher(
            max_batch_size=own.max_batch_size,
            max_batch_tokens=model.served.max_batch_tokens,
            priority_batch_size=own.priority_batch_size,
            max_queued_rows=own.max_queued_texts,
            row_bytes=None if spec.output_kinds == ("dense",) else row_bytes(spec.outputs),
        )
        model.stats = self.stats.models[model.name] = ModelStats(self.stats)
        model.stats.queue_rows = lambda: model.batcher.queued_rows
        if not model.extra:  # the server's own view of replicas (stats.worker_states) is the default model's
            model.stats.worker_states = self.stats.worker_states
        model.sink = Sink(spec.outputs, model.stats, gathered=lambda: self.hub.gathered())
        model.workers = self._worker_pool(model)

    def _edges(self) -> list[EdgeSpec]:
        return edge_specs(self.config, self.models, run_dir=self._run_dir, listener=self._listener)

    def gateway(self) -> Uplink:
        """The pipeline as an edge process has it (`Gateway`), in this process: for tests, tools and
        programs that embed a server and want no sockets. Requests submitted to it are batched with
        everyone else's; it stops with the server."""
        name = f"local-{len(self._gateways)}"
        ours, theirs = socket.socketpair()
        arrival = self.hub.attach(name, Channel(ours, send_timeout_s=30.0))
        limits = [EdgeLimits(**edge_limits(self.config, m.config)) for m in self.models]
        uplink = Uplink(Channel(theirs), [ModelOrders.of(m.spec, m.served) for m in self.models], limits, name=name)
        uplink.start()
        uplink.run_in_thread()
        if not arrival.wait(10):
            raise NotReadyError(f"the gateway {name} did not start")
        self._gateways.append(uplink)
        return uplink

    def sync_stats(self, timeout_s: float = 1.0) -> Stats:
        """The server's counters, every edge process's latest counts in (they hand them over every
        0.2 s, and at once when asked, as now)."""
        self.hub.sync(timeout_s)
        return self.stats

    def _stop_edges(self) -> None:
        """Stop the edge processes and the hub; remove their sockets' folder."""
        for gateway in self._gateways:
            self.hub.send(gateway.name, [STOP])
        if self.supervisor is not None:
            self.supervisor.stop()
        self.hub.close()
        if self._listener is not None:
            self._listener.close()
        shutil.rmtree(self._run_dir, ignore_errors=True)

    def _worker_pool(self, model: Model) -> WorkerPool:
        config = model.config
        stages = {"batcher": model.batcher, "sink": model.sink, "stats": model.stats,
                  "prefetch": config.prefetch_size, "batch_timeout_s": config.batch_timeout_s}
        if config.ray_address:
            from .replicas.ray_replicas import ray_worker_pool  # Ray is an optional extra: imported only here

            return ray_worker_pool(model.spec, address=config.ray_address, num_replicas=config.replicas,
                                   num_cpus=config.ray_num_cpus, num_gpus=config.ray_num_gpus,
                                   threads=config.threads_per_worker(),
                                   gpu_memory_fraction=config.gpu_memory_fraction, **stages)
        return local_worker_pool(
            config.encoder, model.devices,
            threads=config.threads_per_worker() if model.devices[0] == "cpu" else 1,
            gpu_memory_fraction=config.gpu_memory_fraction, idle_spin_ms=config.idle_spin_ms,
            model=model.name if model.extra else None, **stages,
        )

    def run(self) -> None:
        """The lifecycle, on this thread: ready once the workers are, then serve until stopped."""
        try:
            try:
                for model in self.models:
                    try:
                        model.workers.wait_ready()
                    except NotReadyError as exc:
                        if len(self.models) == 1:
                            raise
                        raise NotReadyError(f"model {model.name!r}: {exc}") from None
            except NotReadyError as exc:
                logger.error("%s", exc)
                self._startup_error = exc
                self._stop_requested.set()
            else:
                if not self._stop_requested.is_set():
                    self.is_ready.set()
                    logger.info("all set, ready to serve requests!")
            self._stop_requested.wait()
            self._shutdown()
        finally:
            self._stopped.set()  # whatever failed on the way, join() returns

    def _shutdown(self) -> None:
        timeout = self.config.drain_timeout
        logger.info("shutting down: finishing %d accepted requests (at most %.0f s)...", self.hub.outstanding(),
                    timeout)
        self.is_ready.clear()
        drain = self._startup_error is None
        # each step runs even if one before it failed: a shutdown never stops half-way
        steps = [self.supervisor.close_intakes, *(m.batcher.close for m in self.models),
                 *((lambda m=m: m.workers.close(drain=drain, timeout=timeout)) for m in self.models),
                 *(m.batcher.abandon for m in self.models), self._fail_unanswered, self._stop_edges]
        for step in steps:
            try:
                step()
            except Exception:
                logger.exception("a shutdown step failed; going on")
        logger.info("server stopped")

    def _fail_unanswered(self) -> None:
        error = NotReadyError("the server shut down before this request could be served" +
                              ("" if self._startup_error is None else f" (it failed to start: {self._startup_error})"))
        unanswered = sum(m.sink.fail_outstanding(error) for m in self.models)
        if unanswered:
            logger.warning("answered %d requests with an error: not served within the drain timeout", unanswered)

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

    @property
    def failure(self) -> str | None:
        """Which serving loop died, and why, if one did (the server then stops and exits non-zero)."""
        return self._failure

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what TERMINATION, SIGTERM and SIGINT do); returns at once."""
        self._stop_requested.set()

    def stage_failed(self, stage: str, error: BaseException) -> None:
        """A serving loop died: ``/ready`` says ``failed``, and the server drains and stops."""
        if self._failure is None:
            self._failure = f"{stage} stopped: {type(error).__name__}: {error}"
            logger.critical("%s; shutting down (exit code 1)", self._failure)
        self.is_ready.clear()
        self.request_stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the server has stopped; True if it has."""
        if not self._stopped.wait(timeout):
            return False
        if self.ident is not None:
            super().join()  # its last step was to set _stopped: this returns at once
        return True

    def close(self) -> None:
        """Stop gracefully: answer every accepted request, then stop all workers."""
        self.request_stop()
        if self.ident is not None:
            self.join()

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
    def shutdown(args: argparse.Namespace | None = None, *, ip: str = "localhost", port: int = 5555,
                 timeout: int | None = None, port_out: int | None = None) -> None:
        """Stop the server at ``ip:port`` (TERMINATION) and wait for it to finish its accepted
        requests and go, up to ``timeout`` ms (by default as long as its drain can last):
        ``BertServer.shutdown(port=5555)`` as 1.10.0's README writes it, or with a namespace of
        ``get_shutdown_parser`` (``ip``, ``port``, ``timeout``, ``port_out``) as its code took it."""
        from ..client import terminate_server

        if args is not None:
            ip, port = getattr(args, "ip", ip), args.port
            timeout, port_out = getattr(args, "timeout", timeout), getattr(args, "port_out", port_out)
        terminate_server(ip, port, timeout=timeout, port_out=port_out)

    # what the edges ask of the coordinator (link.hub.Control) ------------------------------------------

    @property
    def model(self) -> ServedModel:
        return self._served

    def replica_states(self) -> dict[str, str]:
        """Every replica's state: the default model's by number, the others' as ``name/number``."""
        states: dict[str, str] = {}
        for model in self.models:
            for index, state in model.workers.states().items():
                states[f"{model.name}/{index}" if model.extra else str(index)] = state
        return states

    def readiness(self) -> dict[str, object]:
        """``/ready``: ready only when loaded, warm, every worker up, and not stopping."""
        states = self.replica_states() if len(self.models) > 1 else self.workers.states()
        processes = self.supervisor.states() if self.supervisor is not None else {}
        if self._failure is not None:
            status = "failed"
        elif self._stop_requested.is_set():
            status = "stopping"
        elif not self.is_ready.is_set():
            status = "failed" if self._startup_error else "starting"
        elif any(state not in ("idle", "busy") for state in states.values()) or \
                any(state != "up" for state in processes.values()):
            status = "degraded"
        else:
            status = "ready"
        state: dict[str, object] = {"ready": status == "ready", "status": status, "workers": states,
                                    "processes": processes}
        if status == "failed" and self._failure is not None:
            state["reason"] = self._failure
        return state

    def status(self, with_statistic: bool = False, client: str = "") -> dict[str, object]:
        """SHOW_CONFIG (and with ``with_statistic``, SHOW_STATUS) as the stock client reads it."""
        if with_statistic and not self.hub.on_own_thread():  # a caller in this process: every edge's counts in
            self.hub.sync()
        import torch

        status: dict[str, object] = {
            **self.config.as_status(),
            **self.spec.describe(self.devices[0]),
            "model_dir": str(self.spec.source.config_path.parent),
            "client": client,
            "num_process": 1 + sum(len(m.devices) for m in self.models) + len(self.supervisor.edges),
            "num_worker": len(self.devices),
            "num_intake": self.config.intakes(),
            "num_http": self.config.http_processes() if self.config.http_port is not None else 0,
            "device_map": self.devices,
            "replicas": self.workers.describe(),
            "processes": self.supervisor.pids(),
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
        status["default_model"] = self._served.name
        status["models"] = {m.name: m.describe() for m in self.models}
        if with_statistic:
            status["statistic"] = self.stats.statistic()
        return status

