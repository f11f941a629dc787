"""``/metrics``: the `Stats` counters in Prometheus' text format.

A collector reads `Stats` at scrape time, so ``/metrics``, SHOW_STATUS and the dashboard all
show the same numbers; no second set of counters exists. The server-wide series have no
``model`` label (as with one model); each served model's share of what its replicas did comes as
``bert_serving_model_*{model="..."}`` series (every model, the default included).
"""

from __future__ import annotations

from typing import Callable, Mapping

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
    def __init__(self, stats: Stats, ready: Callable[[], bool], model: ServedModel | None,
                 models: Mapping[str, ServedModel] | None = None) -> None:
        self._stats = stats
        self._ready = ready
        self._model = model
        self._models = models or {}

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
        yield from self._per_model(s["models"])

    def _per_model(self, models: dict[str, dict]):
        """Each served model's own counters, labelled with its name."""
        if not models:
            return
        name = f"{_PREFIX}_model_"
        info = InfoMetricFamily(f"{name}served", "Each served model and its task", labels=["model"])
        completed = CounterMetricFamily(f"{name}completed_requests", "Requests answered", labels=["model"])
        errors = CounterMetricFamily(f"{name}errors", "Requests answered with an error", labels=["model", "code"])
        passes = CounterMetricFamily(f"{name}forward_passes", "Batches run through the model", labels=["model"])
        rows = CounterMetricFamily(f"{name}batched_texts", "Texts run through the model", labels=["model"])
        queue = GaugeMetricFamily(f"{name}queue_depth", "Texts waiting for the model", labels=["model"])
        workers = GaugeMetricFamily(f"{name}workers", "The model's replicas by state", labels=["model", "state"])
        restarts = CounterMetricFamily(f"{name}worker_restarts", "Its replicas restarted", labels=["model"])
        latency = HistogramMetricFamily(f"{name}latency_seconds", "Time per request phase",
                                        labels=["model", "phase"])
        for model, s in models.items():
            served = self._models.get(model)
            info.add_metric([model], {"task": served.task if served else ""})
            completed.add_metric([model], s["completed_requests"])
            for code, count in sorted(s["errors"].items()):
                errors.add_metric([model, code], count)
            passes.add_metric([model], s["forward_passes"])
            rows.add_metric([model], s["batch_size"].total)
            queue.add_metric([model], s["queue_depth"])
            states: dict[str, int] = {}
            for state in s["worker_states"].values():
                states[state] = states.get(state, 0) + 1
            for state, count in sorted(states.items()):
                workers.add_metric([model, state], count)
            restarts.add_metric([model], s["worker_restarts"])
            for phase in ("queue", "inference", "total"):
                _histogram("", "", s["latency"][phase], {"model": model, "phase": phase}, latency)
        yield from (info, completed, errors, passes, rows, queue, workers, restarts, latency)


def render_metrics(stats: Stats, ready: Callable[[], bool], model: ServedModel | None = None,
                   models: Mapping[str, ServedModel] | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats, ready, model, models))
    return generate_latest(registry)
