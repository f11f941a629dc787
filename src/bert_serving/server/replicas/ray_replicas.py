"""Encoder replicas as Ray actors spread over the nodes of a Ray cluster (``-ray_address``).

    WorkerPool feeder ──send(features)──▶ RayReplica ──actor call──▶ _EncoderActor on some node
                      ◀──── receive ─────             ◀── vectors ──   (an Encoder, loaded once)

The ZeroMQ/HTTP frontends, the intake and the batcher stay in the server process; only the
model moves. This is the only module that imports Ray, and the service imports it only when
``-ray_address`` is given: Ray is the optional extra ``bert-serving[ray]``.

Payloads. A batch travels as its four flat token arrays (int32 ids, int8 type ids, bool pool
mask, int64 offsets: about 6 bytes a token, 25 KB for a 4096-token batch) and comes back as
one float array. Ray passes objects under ``max_direct_call_object_size`` (100 KB by default)
inside its task messages, and larger ones through the object stores of the two nodes, which
was measured several times slower across nodes (docs/ray.md). Both directions are kept inline
by raising that limit, through its environment variable, for this process (arguments) and for
the actors (results).

Placement. The pool reserves one bundle of ``-ray_num_cpus``/``-ray_num_gpus`` per replica
in a placement group with the ``SPREAD`` strategy: bundles on distinct nodes as far as the
cluster allows. Each replica's actor lives in its own bundle, so a restarted replica comes
back on the same node, and when a node is lost Ray moves only that node's bundles.

Failures. Ray does not retry for us (actors are created with ``max_restarts=0``): a replica
whose actor or node is lost raises `ReplicaCrashed`, and one that does not finish a batch within
the pool's ``-batch_timeout_s`` is taken for hung; either way the pool retries its batches and
restarts it (`stop`, then `start`: a fresh actor, wherever the cluster has room). A batch the
model raised on comes back as a `Finished` with its error. Calls are pipelined as for local
workers (``-prefetch_size``): an actor runs its calls one at a time, in order.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ...errors import ConfigurationError
from ...model.encoder import ModelSpec
from ...model.features import Features
from ...model.outputs import BatchOutput
from .pool import Finished, ReplicaCrashed, ReplicaStartError, WorkerPool
from .runtime import OPENMP_ENV, CpuThreads, HeapTrimmer, load_encoder

__all__ = ["RayReplica", "ray_worker_pool"]

logger = logging.getLogger(__name__)

# Objects up to this size travel inside Ray's task messages, not through the object stores.
_INLINE_ENV = "RAY_max_direct_call_object_size"
_INLINE_BYTES = 64 << 20
_PROBE_TIMEOUT_S = 5.0


@ray.remote(max_restarts=0, max_task_retries=0)
class _EncoderActor:
    """Runs on a cluster node: one loaded `Encoder`."""

    def load(self, spec: ModelSpec, device: str, threads: int, gpu_memory_fraction: float) -> dict[str, object]:
        self._encoder = load_encoder(spec, device, threads=threads, gpu_memory_fraction=gpu_memory_fraction)
        self._trimmer = HeapTrimmer()
        self._cpu_threads = CpuThreads.for_encoder(self._encoder, device, threads)
        return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "pid": os.getpid()}

    def embed(self, input_ids: np.ndarray, type_ids: np.ndarray, pool_mask: np.ndarray,
              offsets: np.ndarray, kinds: np.ndarray | None = None) -> np.ndarray | BatchOutput:
        self._trimmer.maybe_trim()  # the previous batch's garbage, at most every ten seconds
        if self._cpu_threads is not None:
            self._cpu_threads.for_batch(int(offsets[-1]))
        features = Features(input_ids, type_ids, pool_mask, offsets)
        if kinds is not None:
            return self._encoder.embed_outputs(features, kinds)
        return np.ascontiguousarray(self._encoder.embed(features))


class RayReplica:
    """One `Replica` as a Ray actor in bundle ``index`` of ``group``, which must hold
    ``num_cpus`` and ``num_gpus``; on a CPU its torch runs ``threads`` threads."""

    def __init__(self, spec: ModelSpec, group: PlacementGroup, *, index: int, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, threads: int = 1, gpu_memory_fraction: float = 0.5,
                 start_timeout_s: float = 300.0) -> None:
        self.name = f"ray replica {index}"
        self._spec = spec
        self._where = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)
        self._num_cpus, self._num_gpus = num_cpus, num_gpus
        self._device = "cuda" if num_gpus else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPUs
        self._threads = threads
        self._gpu_memory_fraction = gpu_memory_fraction
        self._start_timeout_s = start_timeout_s
        self._actor = None
        self._calls: deque[tuple[int, ray.ObjectRef]] = deque()
        self._sent = threading.Event()  # a call was sent (by any thread): the feeder's idle wait ends
        self.placement: dict[str, object] = {}

    def start(self) -> None:
        self._actor = _EncoderActor.options(
            num_cpus=self._num_cpus,
            num_gpus=self._num_gpus,
            scheduling_strategy=self._where,
            runtime_env={"env_vars": {_INLINE_ENV: str(_INLINE_BYTES), **OPENMP_ENV}},
        ).remote()
        loading = self._actor.load.remote(self._spec, self._device, self._threads, self._gpu_memory_fraction)
        try:
            self.placement = ray.get(loading, timeout=self._start_timeout_s)
        except GetTimeoutError:
            raise ReplicaStartError(
                f"{self.name} was not loaded within {self._start_timeout_s:.0f} s; does the cluster have "
                f"{self._num_cpus} CPU and {self._num_gpus} GPU free on a node (-ray_num_cpus, -ray_num_gpus)?"
            ) from None
        except RayActorError as exc:
            raise ReplicaStartError(f"{self.name} died while loading the model: {_first_line(exc)}") from None
        except RayTaskError as exc:
            raise ReplicaStartError(f"{self.name} could not load the model: {_cause(exc)}") from None
        logger.info("%s ready on %s, pid %s", self.name, self._node(), self.placement["pid"])

    def send(self, seq: int, features: Features, kinds: np.ndarray | None = None) -> None:
        call = self._actor.embed.remote(features.input_ids, features.type_ids, features.pool_mask, features.offsets,
                                        kinds)
        self._calls.append((seq, call))  # an actor runs its calls one at a time, in order
        self._sent.set()

    def receive(self, timeout_s: float) -> Finished | None:
        if not self._calls:  # nothing in flight: wait for a call to be sent, then for it
            self._sent.clear()
            if not self._calls and not self._sent.wait(timeout_s):
                return None
            if not self._calls:
                return None
        seq, call = self._calls[0]
        ready, _ = ray.wait([call], timeout=timeout_s)
        if not ready:
            return None
        self._calls.popleft()
        try:
            result = ray.get(call)
            if isinstance(result, BatchOutput):
                return Finished(seq, result.dense, ragged=result.ragged)
            return Finished(seq, result)
        except RayActorError as exc:  # the actor, its process or its node is gone
            raise ReplicaCrashed(f"{self.name} on {self._node()} was lost ({_first_line(exc)})") from None
        except RayTaskError as exc:  # the model raised; the actor is fine
            cause = getattr(exc, "cause", None)
            return Finished(seq, error=_cause(exc), out_of_memory=type(cause).__name__ == "OutOfMemoryError")
        except RayError as exc:  # the result or the cluster connection was lost
            raise ReplicaCrashed(f"{self.name} failed ({type(exc).__name__}: {_first_line(exc)})") from None

    def stop(self, graceful: bool = True) -> None:
        self._calls.clear()
        if self._actor is None:
            return
        try:
            ray.kill(self._actor, no_restart=True)
        except Exception as exc:  # already gone with its node or with the connection: nothing left to release
            logger.debug("%s: kill: %s", self.name, exc)
        self._actor = None

    def describe(self) -> dict[str, object]:
        return {**self.placement, "num_cpus": self._num_cpus, "num_gpus": self._num_gpus}

    def _node(self) -> str:
        return f"node {str(self.placement.get('node_id'))[:8]} ({self.placement.get('node_ip')})"


def ray_worker_pool(spec: ModelSpec, *, address: str, num_replicas: int, num_cpus: float, num_gpus: float,
                    threads: int = 1, gpu_memory_fraction: float = 0.5, **stages) -> WorkerPool:
    """Join the cluster at ``address`` (``local``: start one in this process) and build a pool of
    ``num_replicas`` actors; the pool leaves the cluster when it closes. `ConfigurationError` if
    the cluster cannot be reached."""
    leave = _connect(address)
    _warn_if_no_node_fits(num_cpus, num_gpus)
    bundle = {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus else {})}
    group = placement_group([bundle] * num_replicas, strategy="SPREAD")
    replicas = [
        RayReplica(spec, group, index=i, num_cpus=num_cpus, num_gpus=num_gpus, threads=threads,
                   gpu_memory_fraction=gpu_memory_fraction)
        for i in range(num_replicas)
    ]

    def close() -> None:
        remove_placement_group(group)
        leave()

    return WorkerPool(replicas, on_close=close, **stages)


def _connect(address: str):
    """Connect this process to Ray; returns what undoes it (nothing, if it was already connected)."""
    if ray.is_initialized():
        logger.info("using this process's existing Ray connection")
        return lambda: None
    os.environ.setdefault(_INLINE_ENV, str(_INLINE_BYTES))  # read by ray.init: our arguments travel inline
    if address == "local":
        ray.init(address="local", include_dashboard=False, configure_logging=False)  # never one found elsewhere
        logger.info("started a local Ray instance")
        return ray.shutdown
    if address != "auto":
        _probe(address)
    try:
        ray.init(address=address, configure_logging=False)
    except ConnectionError as exc:
        raise ConfigurationError(f"-ray_address {address}: {exc} (see docs/ray.md to start a cluster)") from None
    logger.info("joined the Ray cluster at %s: %d nodes", address, sum(1 for n in ray.nodes() if n["Alive"]))
    return ray.shutdown


def _probe(address: str) -> None:
    """Fail fast on an address nobody listens at (``ray.init`` would retry for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigurationError(
            f"-ray_address {address}: no Ray head node answers there ({exc}); start one with "
            f"`ray start --head --port={port}` (docs/ray.md)"
        ) from None


def _warn_if_no_node_fits(num_cpus: float, num_gpus: float) -> None:
    """Replicas that fit on no node wait (an autoscaler may add one); say so at once."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if not any(r.get("CPU", 0) >= num_cpus and r.get("GPU", 0) >= num_gpus for r in nodes):
        logger.warning("no node of the Ray cluster has %s CPU and %s GPU for a replica (-ray_num_cpus, "
                       "-ray_num_gpus); replicas wait until one does. Nodes: %s", num_cpus, num_gpus,
                       [{k: v for k, v in r.items() if k in ("CPU", "GPU")} for r in nodes])


def _cause(exc: RayTaskError) -> str:
    """What the model raised, as ``Type: message`` (the actor's traceback stays in its log)."""
    cause = getattr(exc, "cause", None)
    return f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
