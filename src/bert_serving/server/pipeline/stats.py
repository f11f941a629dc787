"""`Stats`: the one set of counters behind SHOW_STATUS, ``/status/server`` and ``/metrics``.

Every stage reports here (intake: requests and tokens; workers: batches; sink: completions
and errors), and every view reads from here, so all the numbers a user sees agree.

The stages run in several processes: the coordinator keeps the one `Stats`; each edge process
(router, intake, HTTP) counts into a `Stats` of its own and hands what it counted over as a
delta (`take`), which the coordinator adds to its own (`merge`). A view in an edge process reads
a copy of the coordinator's (`dump`, `load`), so it computes the very numbers every other view
does. Times are ``time.perf_counter()`` readings: the system's monotonic clock on Linux, the same
in every process of the machine.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from ...errors import BertServingError

__all__ = ["Histogram", "ModelStats", "Stats"]

_ACTIVE_CLIENT_SECONDS = 180  # the original's definition of an active client
_MAX_CLIENTS = 500  # per-client history kept, least recently seen dropped first (as the original)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass
class Histogram:
    """Cumulative bucket counts (for Prometheus) plus recent values (for percentiles)."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=2048))

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        self.recent.append(value)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break

    def merge(self, other: dict) -> None:
        """Add the observations of ``other`` (`to_json` of a histogram of the same buckets)."""
        self.counts = [a + b for a, b in zip(self.counts, other["counts"])]
        self.total += other["total"]
        self.count += other["count"]
        self.recent.extend(other["recent"])

    def to_json(self) -> dict:
        return {"counts": list(self.counts), "total": self.total, "count": self.count, "recent": list(self.recent)}

    def cumulative(self) -> list[tuple[float, int]]:
        running, out = 0, []
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append((bound, running))
        return out

    def percentile(self, q: float) -> float | None:
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class _Client:
    requests: int = 0
    texts: int = 0
    last_seen: float = 0.0
    channel: str = "zmq"


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started_at = time.time()
        self.num_data_request = 0
        self.num_sys_request = 0
        self.num_total_seq = 0
        self.num_tokens = 0
        self.num_batches = 0
        self.num_batched_rows = 0
        self.num_completed = 0
        self.num_predictions = 0  # texts and pairs a head scored (predict, and the original's encode on a head)
        self.num_reranked_pairs = 0  # (query, document) pairs scored by rerank requests
        self.errors: Counter[str] = Counter()
        self.requests_by_channel: Counter[str] = Counter()
        self.sizes: Counter[int] = Counter()
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._clients_seen = 0
        self._arrivals: deque[float] = deque([time.perf_counter()], maxlen=201)  # the start, then data requests
        self.latency = {phase: Histogram(LATENCY_BUCKETS) for phase in ("tokenize", "queue", "inference", "total")}
        self.batch_size = Histogram(SIZE_BUCKETS)
        self.batch_tokens = Histogram(TOKEN_BUCKETS)
        self.worker_states: dict[int, str] = {}
        self.worker_restarts = 0
        self.queue_rows = lambda: 0  # set by the service: rows waiting in the batcher
        self.models: dict[str, Stats] = {}  # each served model's own counts (`ModelStats`), in the coordinator

    # reports from the stages -------------------------------------------------------------------

    def _client(self, client: str, now: float) -> _Client:
        entry = self._clients.pop(client, None)
        if entry is None:
            entry = _Client(channel=client.split(":", 1)[0])
            self._clients_seen += 1
        entry.last_seen = now
        self._clients[client] = entry
        if len(self._clients) > _MAX_CLIENTS:
            self._clients.popitem(last=False)
        return entry

    def control_request(self, client: str) -> None:
        with self._lock:
            self.num_sys_request += 1
            self._client(client, time.perf_counter())

    def data_request(self, client: str, num_texts: int) -> None:
        now = time.perf_counter()
        with self._lock:
            self.num_data_request += 1
            self.num_total_seq += num_texts
            self.sizes[num_texts] += 1
            entry = self._client(client, now)
            self.requests_by_channel[entry.channel] += 1
            entry.requests += 1
            entry.texts += num_texts
            self._arrivals.append(now)

    def tokenized(self, seconds: float, num_tokens: int) -> None:
        with self._lock:
            self.num_tokens += num_tokens
            self.latency["tokenize"].observe(seconds)

    def batch_done(self, rows: int, tokens: int, seconds: float, queue_waits: list[float]) -> None:
        with self._lock:
            self.num_batches += 1
            self.num_batched_rows += rows
            self.batch_size.observe(rows)
            self.batch_tokens.observe(tokens)
            self.latency["inference"].observe(seconds)
            for wait in queue_waits:
                self.latency["queue"].observe(wait)

    def request_done(self, request, error: BertServingError | None, now: float) -> None:
        with self._lock:
            if error is not None:
                self.errors[error.code] += 1
            else:
                self.num_completed += 1
                self.latency["total"].observe(now - request.received_at)

    def scored(self, task: str | None, count: int) -> None:
        """A head's answer went out: ``count`` reranked pairs (``task`` rerank) or predictions."""
        with self._lock:
            if task == "rerank":
                self.num_reranked_pairs += count
            else:
                self.num_predictions += count

    def error(self, code: str) -> None:
        """An error not tied to an accepted request (a malformed message, an overload refusal)."""
        with self._lock:
            self.errors[code] += 1

    # across processes ---------------------------------------------------------------------------

    _COUNTERS = ("num_data_request", "num_sys_request", "num_total_seq", "num_tokens", "num_batches",
                 "num_batched_rows", "num_completed", "num_predictions", "num_reranked_pairs", "worker_restarts")

    def dump(self) -> dict:
        """Everything counted, as JSON values (`load` makes a `Stats` of it again)."""
        with self._lock:
            return self._state()

    def _state(self) -> dict:
        return {
            **{name: getattr(self, name) for name in self._COUNTERS},
            "started_at": self.started_at,
            "errors": dict(self.errors),
            "requests_by_channel": dict(self.requests_by_channel),
            "sizes": [[k, v] for k, v in self.sizes.items()],
            "clients": [[name, c.requests, c.texts, c.last_seen, c.channel] for name, c in self._clients.items()],
            "clients_seen": self._clients_seen,
            "arrivals": list(self._arrivals),
            "latency": {phase: h.to_json() for phase, h in self.latency.items()},
            "batch_size": self.batch_size.to_json(),
            "batch_tokens": self.batch_tokens.to_json(),
            "worker_states": [[k, v] for k, v in self.worker_states.items()],
            "queue_rows": self.queue_rows(),
            **({"models": {name: model.dump() for name, model in self.models.items()}} if self.models else {}),
        }

    @classmethod
    def load(cls, state: dict) -> Stats:
        """A copy of the `Stats` that `dump`ed ``state`` (a view's, in another process)."""
        stats = cls()
        stats.merge(state)
        stats.started_at = state["started_at"]
        stats._clients_seen = state["clients_seen"]
        stats.worker_states = {int(k): v for k, v in state["worker_states"]}
        queue_rows = state["queue_rows"]
        stats.queue_rows = lambda: queue_rows
        stats._arrivals = deque(state["arrivals"], maxlen=stats._arrivals.maxlen)
        stats.models = {name: cls.load(model) for name, model in state.get("models", {}).items()}
        return stats

    def take(self) -> dict | None:
        """What was counted since the last `take` (None: nothing), for `merge` in the coordinator;
        the counters start again from zero."""
        with self._lock:
            if not (self.num_data_request or self.num_sys_request or self.errors or self.num_tokens
                    or self.num_predictions or self.num_reranked_pairs or self._clients):
                return None
            state = self._state()
            lock, started_at, queue_rows = self._lock, self.started_at, self.queue_rows
            self.__init__()
            self._lock, self.started_at, self.queue_rows = lock, started_at, queue_rows
            self._arrivals.clear()
            return state

    def merge(self, delta: dict) -> None:
        """Add what another process counted (`take`, or `dump` for a copy)."""
        with self._lock:
            for name in self._COUNTERS:
                setattr(self, name, getattr(self, name) + delta[name])
            self.errors.update(delta["errors"])
            self.requests_by_channel.update(delta["requests_by_channel"])
            for size, count in delta["sizes"]:
                self.sizes[size] += count
            for name, requests, texts, last_seen, channel in delta["clients"]:
                entry = self._clients.get(name)
                if entry is None or entry.last_seen < last_seen:
                    entry = self._client(name, last_seen)
                entry.channel, entry.requests, entry.texts = channel, entry.requests + requests, entry.texts + texts
            self._arrivals.extend(delta["arrivals"])
            for phase, histogram in delta["latency"].items():
                self.latency[phase].merge(histogram)
            self.batch_size.merge(delta["batch_size"])
            self.batch_tokens.merge(delta["batch_tokens"])

    # views --------------------------------------------------------------------------------------

    def _active_clients(self, now: float) -> int:
        return sum(1 for c in self._clients.values() if now - c.last_seen < _ACTIVE_CLIENT_SECONDS)

    def snapshot(self) -> dict[str, object]:
        """A consistent copy of the raw counters and histograms (what ``/metrics`` exports)."""
        now = time.perf_counter()
        with self._lock:
            return copy.deepcopy({
                "requests_by_channel": dict(self.requests_by_channel),
                "sentences": self.num_total_seq,
                "tokens": self.num_tokens,
                "control_requests": self.num_sys_request,
                "completed_requests": self.num_completed,
                "predictions": self.num_predictions,
                "reranked_pairs": self.num_reranked_pairs,
                "errors": dict(self.errors),
                "forward_passes": self.num_batches,
                "active_clients": self._active_clients(now),
                "batch_size": self.batch_size,
                "batch_tokens": self.batch_tokens,
                "latency": self.latency,
            }) | self._workers() | {"queue_depth": self.queue_rows(),
                                    "models": {name: model.snapshot() for name, model in self.models.items()}}

    def _workers(self) -> dict[str, object]:
        """The replicas' states (numbered across every model's) and restarts."""
        if not self.models:
            return {"worker_states": dict(self.worker_states), "worker_restarts": self.worker_restarts}
        states: dict[int, str] = {}
        for model in self.models.values():
            for state in list(model.worker_states.values()):
                states[len(states)] = state
        return {"worker_states": states,
                "worker_restarts": self.worker_restarts + sum(m.worker_restarts for m in self.models.values())}

    def clients(self) -> list[dict[str, object]]:
        now = time.perf_counter()
        with self._lock:
            return [
                {"client": name, "channel": c.channel, "requests": c.requests, "texts": c.texts,
                 "idle_seconds": round(now - c.last_seen, 3)}
                for name, c in reversed(self._clients.items())
            ]

    def statistic(self) -> dict[str, object]:
        """SHOW_STATUS's ``statistic``: the original's keys, then ours."""
        now = time.perf_counter()
        with self._lock:
            requests = [c.requests for c in self._clients.values() if c.requests]
            out: dict[str, object] = {
                "num_data_request": self.num_data_request,
                "num_total_seq": self.num_total_seq,
                "num_sys_request": self.num_sys_request,
                "num_total_request": self.num_data_request + self.num_sys_request,
                "num_total_client": self._clients_seen,
                "num_active_client": self._active_clients(now),
            }
            out.update(_min_max_avg("request_per_client", requests))
            if self.sizes:
                avg = sum(k * v for k, v in self.sizes.items()) / sum(self.sizes.values())
                out.update(_min_max_avg("size_per_request", list(self.sizes), avg))
            arrivals = sorted(self._arrivals)
            intervals = [b - a for a, b in zip(arrivals, arrivals[1:])]
            out.update(_min_max_avg("last_two_interval", intervals))
            out.update(_min_max_avg("request_per_second", [1.0 / v for v in intervals if v > 0]))
            out.update({
                "num_completed_request": self.num_completed,
                "num_failed_request": sum(self.errors.values()),
                "errors": dict(self.errors),
                "num_total_tokens": self.num_tokens,
                "num_predictions": self.num_predictions,
                "num_reranked_pairs": self.num_reranked_pairs,
                "num_forward_passes": self.num_batches,
                "num_batched_seq": self.num_batched_rows,
                "avg_batch_size": self.num_batched_rows / self.num_batches if self.num_batches else 0.0,
                "num_queued_seq": self.queue_rows(),
                "uptime_seconds": round(time.time() - self.started_at, 3),
                "latency_ms": {
                    phase: {"p50": _ms(h.percentile(0.5)), "p99": _ms(h.percentile(0.99)), "count": h.count}
                    for phase, h in self.latency.items()
                },
            })
        workers = self._workers()
        out.update({"workers": workers["worker_states"], "worker_restarts": workers["worker_restarts"]})
        if self.models:
            out["models"] = {name: model.model_statistic() for name, model in self.models.items()}
        return out

    def model_statistic(self) -> dict[str, object]:
        """One model's part of SHOW_STATUS (``statistic.models``): what its replicas did."""
        with self._lock:
            return {
                "num_completed_request": self.num_completed,
                "num_failed_request": sum(self.errors.values()),
                "errors": dict(self.errors),
                "num_forward_passes": self.num_batches,
                "num_batched_seq": self.num_batched_rows,
                "avg_batch_size": self.num_batched_rows / self.num_batches if self.num_batches else 0.0,
                "num_queued_seq": self.queue_rows(),
                "latency_ms": {phase: {"p50": _ms(h.percentile(0.5)), "p99": _ms(h.percentile(0.99)), "count": h.count}
                               for phase, h in self.latency.items() if phase != "tokenize"},
                "workers": dict(self.worker_states),
                "worker_restarts": self.worker_restarts,
            }


class ModelStats(Stats):
    """One served model's counters: what its batcher, replicas and sink count goes here and into
    the server's `Stats` too (whose views add ``models``: each one's, by name)."""

    def __init__(self, server: Stats) -> None:
        super().__init__()
        self._server = server

    def batch_done(self, rows: int, tokens: int, seconds: float, queue_waits: list[float]) -> None:
        super().batch_done(rows, tokens, seconds, queue_waits)
        self._server.batch_done(rows, tokens, seconds, queue_waits)

    def request_done(self, request, error: BertServingError | None, now: float) -> None:
        super().request_done(request, error, now)
        self._server.request_done(request, error, now)

    def scored(self, task: str | None, count: int) -> None:
        super().scored(task, count)
        self._server.scored(task, count)

    def error(self, code: str) -> None:
        super().error(code)
        self._server.error(code)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _min_max_avg(name: str, values: list, avg: float | None = None) -> dict[str, object]:
    if not values:
        return {}
    lo, hi = min(values), max(values)
    return {
        f"avg_{name}": sum(values) / len(values) if avg is None else avg,
        f"min_{name}": lo,
        f"max_{name}": hi,
        f"num_min_{name}": sum(1 for v in values if v == lo),
        f"num_max_{name}": sum(1 for v in values if v == hi),
    }
