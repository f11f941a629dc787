"""`Supervisor`: the one place that starts the edge processes of the serving path (the router,
the intakes, the HTTP processes), watches them, and starts a new one in place of one that dies.

How many of each run is the configuration's to say (`ServerConfig.intakes`, `http_processes`);
the replicas have their own supervisor, their pool (`replicas.pool`). A process that dies while
the server serves is replaced: its requests still in the pipeline are abandoned (the router
sends a dead intake's small requests to another intake and answers the others with an error;
an HTTP process's clients see their connection close), and a new process takes its name. One
that cannot be started again (three tries) fails the server loudly: ``/ready`` answers 503
``failed`` and the server exits non-zero.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ...errors import ConfigurationError, NotReadyError
from ..link.frames import CLOSE, STOP
from ..link.hub import Arrival, Hub
from .child import Child, set_thread_title, spawn

__all__ = ["EdgeSpec", "Supervisor"]

logger = logging.getLogger(__name__)

_READY_S = 120.0  # a new edge process has this long to say READY
_WATCH_S = 0.1
_TRIES = 3  # restarts in a row that may fail before the server gives up
_STOP_S = 15.0  # after STOP, how long a process may take to go before it is killed
# An edge process tokenizes on its own thread: the tokenizer's thread pool (Rayon) would wake a
# thread per core for each small request, and its threads spin between requests (6,000
# sched_yield calls in 3 s in one of 8 intakes under 32 clients); the edge processes are the
# parallelism. Unless the user says otherwise.
_EDGE_ENV = {} if "TOKENIZERS_PARALLELISM" in os.environ else {"TOKENIZERS_PARALLELISM": "false"}


@dataclass
class EdgeSpec:
    """One edge process: its name (``router``, ``intake-0``, ``http-1``), entry point and orders."""

    name: str
    entry: str  # "module:function"
    orders: dict
    pass_fds: tuple[int, ...] = ()
    child: Child | None = field(default=None, repr=False)
    arrival: Arrival | None = field(default=None, repr=False)
    state: str = "starting"
    restarts: int = 0

    @property
    def role(self) -> str:
        return self.name.split("-", 1)[0]


class Supervisor:
    def __init__(self, hub: Hub, edges: list[EdgeSpec], *, on_failure: Callable[[str, BaseException], None],
                 log_level: int = 0) -> None:
        self._hub = hub
        self.edges = {edge.name: edge for edge in edges}
        self._on_failure = on_failure
        self._log_level = log_level
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        """Start every edge process and wait until each says READY; `ConfigurationError` (the
        router's busy port) or `NotReadyError` when one cannot start."""
        for edge in self.edges.values():  # all at once: they start in parallel
            self._spawn(edge)
        for edge in self.edges.values():
            self._await(edge)
        self._thread.start()

    def states(self) -> dict[str, str]:
        return {name: edge.state for name, edge in self.edges.items()}

    def pids(self) -> dict[str, int | None]:
        return {name: edge.child.pid if edge.child else None for name, edge in self.edges.items()}

    def close_intakes(self) -> None:
        """Tell the intakes and HTTP processes to take no new requests (the server drains)."""
        for edge in self.edges.values():
            if edge.role != "router":
                self._hub.send(edge.name, [CLOSE])

    def stop(self) -> None:
        """Stop every edge process: the intakes and HTTP processes first, then the router (so that
        their last answers still go out), each given `_STOP_S` to go before it is killed."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)
        edges = [e for e in self.edges.values() if e.role != "router"]
        self._stop_all(edges)
        self._stop_all([e for e in self.edges.values() if e.role == "router"])

    def _stop_all(self, edges: list[EdgeSpec]) -> None:
        for edge in edges:
            self._hub.send(edge.name, [STOP])
        deadline = time.monotonic() + _STOP_S
        for edge in edges:
            if edge.child is None:
                continue
            try:
                edge.child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it", edge.name, _STOP_S)
                edge.child.process.kill()
                edge.child.process.wait(10)
            edge.child.channel.close()
            self._hub.detach(edge.name)
            if edge.state != "failed":
                edge.state = "stopped"

    # starting and watching -------------------------------------------------------------------------------

    def _spawn(self, edge: EdgeSpec) -> None:
        edge.state = "starting"
        edge.child = spawn(edge.entry, {**edge.orders, "log_level": self._log_level}, pass_fds=edge.pass_fds,
                           send_timeout_s=30.0, env=_EDGE_ENV)
        edge.arrival = self._hub.attach(edge.name, edge.child.channel)

    def _await(self, edge: EdgeSpec) -> None:
        deadline = time.monotonic() + _READY_S
        while not edge.arrival.wait(0.1):
            if edge.child.exited():
                raise NotReadyError(f"the {edge.name} process exited with code {edge.child.process.returncode} "
                                    "before it was ready")
            if time.monotonic() > deadline:
                raise NotReadyError(f"the {edge.name} process was not ready within {_READY_S:.0f} s")
        if edge.arrival.error:
            raise ConfigurationError(edge.arrival.error)
        edge.state = "up"
        logger.debug("%s ready (pid %d)", edge.name, edge.child.pid)

    def _watch(self) -> None:
        set_thread_title("supervisor")
        while not self._stopping.wait(_WATCH_S):
            for edge in self.edges.values():
                if edge.state != "failed" and edge.child is not None and edge.child.exited() \
                        and not self._stopping.is_set():
                    self._replace(edge)

    def _replace(self, edge: EdgeSpec) -> None:
        code = edge.child.process.returncode
        abandoned = self._hub.detach(edge.name)
        edge.child.channel.close()
        logger.error("the %s process (pid %d) died with exit code %s; %d of its requests were in the pipeline; "
                     "starting another", edge.name, edge.child.pid, code, abandoned)
        edge.state, edge.restarts = "restarting", edge.restarts + 1
        last: BaseException = NotReadyError(f"the {edge.name} process could not be restarted")
        for _ in range(_TRIES):
            if self._stopping.is_set():
                return
            try:
                self._spawn(edge)
                self._await(edge)
                logger.info("%s restarted (pid %d)", edge.name, edge.child.pid)
                return
            except Exception as exc:
                logger.error("the %s process could not be restarted (%s)", edge.name, exc)
                if edge.child is not None and not edge.child.exited():
                    edge.child.process.kill()
                    edge.child.process.wait(10)
                self._hub.detach(edge.name)
                last = exc
                self._stopping.wait(1.0)
        edge.state = "failed"
        self._on_failure(f"the {edge.name} process", last)

    def kill(self, name: str) -> None:
        """Kill edge ``name`` (taken for hung); the watch replaces it."""
        edge = self.edges.get(name)
        if edge is not None and edge.child is not None and not edge.child.exited():
            logger.error("killing the %s process (pid %d): it stopped reading", name, edge.child.pid)
            edge.child.process.kill()
