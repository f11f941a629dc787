"""``/metrics``: the `Stats` counters in Prometheus' text format.

A collector reads `Stats` at scrape time, so ``/metrics``, SHOW_STATUS and the dashboard all
show the same numbers; no second set of counters exists.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

from ..pipeline.gateway import ServedModel
from ..pipeline.stats import Histogram, Stats

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "bert_serving"


def _histogram(name: str, doc: str, histogram: Histogram, labels: dict[str, str] | None = None,
               family: HistogramMetricFamily | None = None) -> HistogramMetricFamily:
    family = family or HistogramMetricFamily(f"{_PREFIX}_{name}", doc, labels=list(labels or {}))
    buckets = [(str(bound), count) for bound, count in histogram.cumulative()] + [("+Inf", histogram.count)]
    family.add_metric(list((labels or {}).values()), buckets, histogram.total)
    return family


class _StatsCollector:
    def __init__(self, stats: Stats, ready: Callable[[], bool], model: ServedModel | None) -> None:
        self._stats = stats
        self._ready = ready
        self._model = model

    def collect(self):
        s = self._stats.snapshot()
        if self._model is not None:
            yield InfoMetricFamily(f"{_PREFIX}_model", "The served model and its task (embed, classify, rerank)",
                                   value={"name": self._model.name, "task": self._model.task})
        requests = CounterMetricFamily(f"{_PREFIX}_requests", "Encode requests received", labels=["channel"])
        for channel in ("zmq", "http"):
            requests.add_metric([channel], s["requests_by_channel"].get(channel, 0))
        yield requests
        yield CounterMetricFamily(f"{_PREFIX}_sentences", "Texts received in encode requests", value=s["sentences"])
        yield CounterMetricFamily(f"{_PREFIX}_tokens", "Tokens fed to the model, [CLS]/[SEP] included",
                                  value=s["tokens"])
        yield CounterMetricFamily(f"{_PREFIX}_control_requests", "SHOW_CONFIG/SHOW_STATUS/TERMINATION requests",
                                  value=s["control_requests"])
        yield CounterMetricFamily(f"{_PREFIX}_completed_requests", "Requests answered with vectors",
                                  value=s["completed_requests"])
        yield CounterMetricFamily(f"{_PREFIX}_predictions", "Texts and pairs a classifier head scored",
                                  value=s["predictions"])
        yield CounterMetricFamily(f"{_PREFIX}_reranked_pairs", "(query, document) pairs scored by rerank requests",
                                  value=s["reranked_pairs"])
        errors = CounterMetricFamily(f"{_PREFIX}_errors", "Requests answered with an error, by kind", labels=["code"])
        for code, count in sorted(s["errors"].items()):
            errors.add_metric([code], count)
        yield errors
        yield CounterMetricFamily(f"{_PREFIX}_forward_passes", "Batches run through the model",
                                  value=s["forward_passes"])
        yield GaugeMetricFamily(f"{_PREFIX}_queue_depth", "Texts waiting for the model", value=s["queue_depth"])
        yield GaugeMetricFamily(f"{_PREFIX}_active_clients", "Clients seen in the last 180 s",
                                value=s["active_clients"])
        yield _histogram("batch_size", "Texts per forward pass", s["batch_size"])
        yield _histogram("batch_tokens", "Tokens per forward pass (unpadded)", s["batch_tokens"])
        latency = HistogramMetricFamily(f"{_PREFIX}_latency_seconds", "Time per request phase", labels=["phase"])
        for phase, histogram in s["latency"].items():
            _histogram("latency_seconds", "", histogram, {"phase": phase}, latency)
        yield latency
        workers = GaugeMetricFamily(f"{_PREFIX}_workers", "Model replicas by state", labels=["state"])
        states: dict[str, int] = {}
        for state in s["worker_states"].values():
            states[state] = states.get(state, 0) + 1
        for state, count in sorted(states.items()):
            workers.add_metric([state], count)
        yield workers
        yield CounterMetricFamily(f"{_PREFIX}_worker_restarts", "Replicas restarted after dying",
                                  value=s["worker_restarts"])
        yield GaugeMetricFamily(f"{_PREFIX}_ready", "1 when loaded, warmed up and serving", value=int(self._ready()))


def render_metrics(stats: Stats, ready: Callable[[], bool], model: ServedModel | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats, ready, model))
    return generate_latest(registry)
