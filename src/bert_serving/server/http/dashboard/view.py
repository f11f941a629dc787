"""`dashboard_view`: the JSON the dashboard polls, read from `Stats` and nothing else.

Counters come from `Stats.snapshot()` of the server's counters (`Gateway.observe`), the very
copy ``/metrics`` exports; latency percentiles are computed from its histograms as SHOW_STATUS
computes them; clients come from `Stats.clients()`, readiness from the same observation. Rates are not computed here: the page
derives requests/s, sentences/s and batch means from two successive views, as Prometheus' ``rate()``
would from two scrapes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping

from .... import __version__
from ...pipeline.stats import Histogram

if TYPE_CHECKING:
    from ...pipeline.gateway import Observation, ServedModel

__all__ = ["dashboard_view"]


def dashboard_view(observed: Observation, model: ServedModel, *, api_key_required: bool = False,
                   models: Mapping[str, ServedModel] | None = None) -> dict[str, object]:
    """What the dashboard shows, as of ``observed`` (its stats and readiness); ``models``: every
    served model, for its line in the models table."""
    stats = observed.stats
    snapshot = stats.snapshot()
    return {
        "time": time.time(),
        "version": __version__,
        "uptime_seconds": round(time.time() - stats.started_at, 3),
        "readiness": observed.readiness,
        "model": {**model_settings(model), "api_key_required": api_key_required},
        "requests": snapshot["requests_by_channel"],
        "sentences": snapshot["sentences"],
        "tokens": snapshot["tokens"],
        "completed_requests": snapshot["completed_requests"],
        "predictions": snapshot["predictions"],
        "reranked_pairs": snapshot["reranked_pairs"],
        "control_requests": snapshot["control_requests"],
        "errors": snapshot["errors"],
        "forward_passes": snapshot["forward_passes"],
        "queue_depth": snapshot["queue_depth"],
        "active_clients": snapshot["active_clients"],
        "batch_size": _sum_count(snapshot["batch_size"]),
        "batch_tokens": _sum_count(snapshot["batch_tokens"]),
        "latency_ms": {phase: _percentiles(h) for phase, h in snapshot["latency"].items()},
        "clients": stats.clients(),
        "models": [_model_row(name, snapshot["models"][name], served) for name, served in (models or {}).items()
                   if name in snapshot["models"]],
    }


def _model_row(name: str, snapshot: dict, served: ServedModel) -> dict[str, object]:
    """One served model's line of the dashboard's models table."""
    states: dict[str, int] = {}
    for state in snapshot["worker_states"].values():
        states[state] = states.get(state, 0) + 1
    return {"name": name, "task": served.task, "completed_requests": snapshot["completed_requests"],
            "failed_requests": sum(snapshot["errors"].values()), "forward_passes": snapshot["forward_passes"],
            "queue_depth": snapshot["queue_depth"], "p50_ms": _percentiles(snapshot["latency"]["total"])["p50"],
            "workers": ", ".join(f"{count} {state}" for state, count in sorted(states.items()))}


def model_settings(model: ServedModel) -> dict[str, object]:
    """The served model and the settings that shape its vectors and its speed."""
    described = model.settings
    return {
        "name": described["model_name"],
        "task": model.task,
        "labels": list(model.labels),
        "activation": model.activation,
        "format": described["model_layout"],
        "pooling": described["pooling_strategy_name"],
        "layers": described["pooling_layer"],
        "max_seq_len": described["max_seq_len"],
        "dim": described["output_dim"],
        "normalize": described["normalize"],
        "dtype": described["dtype"],
        "devices": list(described["device_map"]),
        "workers": len(described["device_map"]),
        "max_batch_size": described["max_batch_size"],
    }


def _sum_count(histogram: Histogram) -> dict[str, float]:
    return {"sum": histogram.total, "count": histogram.count}


def _percentiles(histogram: Histogram) -> dict[str, float | int | None]:
    def ms(q: float) -> float | None:
        seconds = histogram.percentile(q)
        return None if seconds is None else round(seconds * 1000, 3)

    return {"p50": ms(0.5), "p99": ms(0.99), "count": histogram.count}
