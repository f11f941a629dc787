"""`dashboard_view`: the JSON the dashboard polls, read from `Stats` and nothing else.

Counters come from `Stats.snapshot()`, the very copy ``/metrics`` exports; latency percentiles
are computed from its histograms as SHOW_STATUS computes them; clients come from
`Stats.clients()`, readiness from `BertServer.readiness()`. Rates are not computed here: the page
derives requests/s, sentences/s and batch means from two successive views, as Prometheus' ``rate()``
would from two scrapes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ... import __version__
from ..stats import Histogram

if TYPE_CHECKING:
    from ..service import BertServer

__all__ = ["dashboard_view"]


def dashboard_view(server: BertServer) -> dict[str, object]:
    """What the dashboard shows, as of now."""
    snapshot = server.stats.snapshot()
    return {
        "time": time.time(),
        "version": __version__,
        "uptime_seconds": round(time.time() - server.stats.started_at, 3),
        "readiness": server.readiness(),
        "model": model_settings(server),
        "requests": snapshot["requests_by_channel"],
        "sentences": snapshot["sentences"],
        "tokens": snapshot["tokens"],
        "completed_requests": snapshot["completed_requests"],
        "control_requests": snapshot["control_requests"],
        "errors": snapshot["errors"],
        "forward_passes": snapshot["forward_passes"],
        "queue_depth": snapshot["queue_depth"],
        "active_clients": snapshot["active_clients"],
        "batch_size": _sum_count(snapshot["batch_size"]),
        "batch_tokens": _sum_count(snapshot["batch_tokens"]),
        "latency_ms": {phase: _percentiles(h) for phase, h in snapshot["latency"].items()},
        "clients": server.stats.clients(),
    }


def model_settings(server: BertServer) -> dict[str, object]:
    """The served model and the settings that shape its vectors and its speed."""
    described = server.spec.describe()
    return {
        "name": described["model_name"],
        "format": described["model_layout"],
        "pooling": described["pooling_strategy_name"],
        "layers": described["pooling_layer"],
        "max_seq_len": described["max_seq_len"],
        "dim": described["output_dim"],
        "normalize": described["normalize"],
        "dtype": described["dtype"],
        "devices": list(server.devices),
        "workers": len(server.devices),
        "max_batch_size": server.config.max_batch_size,
        "api_key_required": server.config.api_key is not None,
    }


def _sum_count(histogram: Histogram) -> dict[str, float]:
    return {"sum": histogram.total, "count": histogram.count}


def _percentiles(histogram: Histogram) -> dict[str, float | int | None]:
    def ms(q: float) -> float | None:
        seconds = histogram.percentile(q)
        return None if seconds is None else round(seconds * 1000, 3)

    return {"p50": ms(0.5), "p99": ms(0.99), "count": histogram.count}
