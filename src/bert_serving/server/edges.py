"""The edge processes' orders: the router, the intakes and the HTTP processes the coordinator
starts (`processes.supervisor.EdgeSpec`), and each one's share of every model's limits.

An edge process gets every served model (`link.orders.ModelOrders`, the default first) with its
share of that model's backlog (`edge_limits`: the model's -max_queued_texts / -max_queued_bytes
over the number of edge processes), so that what all of them hold together stays within the
flags; the router lets in at most what the intakes may hold together.
"""

from __future__ import annotations

import dataclasses
import socket

from .config import ServerConfig
from .http.app import HttpSettings
from .link.orders import EdgeLimits, ModelOrders
from .processes.supervisor import EdgeSpec
from .served_models import Model

__all__ = ["edge_limits", "edge_specs"]


def edge_specs(config: ServerConfig, models: list[Model], *, run_dir: str,
               listener: socket.socket | None) -> list[EdgeSpec]:
    """The router, the intakes and the HTTP processes (when ``listener``: the HTTP port), with
    their orders."""
    intakes = [f"intake-{i}" for i in range(config.intakes())]
    https = [f"http-{i}" for i in range(config.http_processes())] if listener is not None else []
    router_socket = f"{run_dir}/intakes"
    limits = [edge_limits(config, m.config) for m in models]
    orders = [ModelOrders.of(m.spec, m.served).to_json() for m in models]
    edges = [EdgeSpec("router", "bert_serving.server.zmq.router_main:main", {
        "bind": config.bind, "port": config.port, "port_out": config.port_out,
        "zmq_secret_key": config.zmq_secret_key, "zmq_authorized_keys": config.zmq_authorized_keys,
        "max_request_bytes": config.max_request_bytes, "max_request_texts": config.max_request_texts,
        # the intakes' shares of -max_queued_bytes together: what the router lets in at most
        "max_held_bytes": EdgeLimits(**edge_limits(config, config)).max_queued_bytes * len(intakes),
        "intakes_socket": router_socket})]
    for index, name in enumerate(intakes):
        edges.append(EdgeSpec(name, "bert_serving.server.zmq.intake_main:main", {
            "index": index, "models": orders, "limits": limits, "router_socket": router_socket,
            "terminate_token": config.terminate_token}))
    if https:
        http = HttpSettings(max_request_texts=config.max_request_texts, max_request_bytes=config.max_request_bytes,
                            cors=config.cors, api_key=config.api_key,
                            max_buffered_bytes=max(1024, config.max_queued_bytes // len(https)),
                            token_ids=config.http_token_ids)
        per_process = -(-config.http_max_connect // len(https))  # shared out, rounded up
        for index, name in enumerate(https):
            edges.append(EdgeSpec(name, "bert_serving.server.http.worker_main:main", {
                "index": index, "models": orders, "limits": limits, "http": dataclasses.asdict(http),
                "max_connections": per_process, "listen_fd": listener.fileno()},
                pass_fds=(listener.fileno(),)))
    return edges


def edge_limits(config: ServerConfig, own: ServerConfig) -> dict:
    """One edge process's share of a model's limits (``own``: that model's configuration; an
    empty backlog takes any request)."""
    share = config.intakes() + (config.http_processes() if config.http_port is not None else 0)
    return dataclasses.asdict(EdgeLimits(
        max_request_texts=config.max_request_texts, max_request_bytes=config.max_request_bytes,
        max_result_bytes=config.max_result_bytes, max_queued_texts=max(1, own.max_queued_texts // share),
        max_queued_bytes=max(1024, own.max_queued_bytes // share)))
