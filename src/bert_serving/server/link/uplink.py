"""`Uplink`: the pipeline as an edge process (an intake, an HTTP process) sees it: its `Gateway`.

Requests are admitted and tokenized here (`pipeline.intake.Intake`, with this edge's share of the
server's backlog), then sent to the coordinator's batcher over the edge's channel: the requests
of one `together` block (one read of the router's message, one turn of the HTTP event loop) in
one message per model. A server with several models gives each its own lane here (its intake,
its tokenizer, its share of the backlog): a request's ``model`` picks the lane, so a flood on one
model fills only its own backlog. Their answers come back on the same channel. The uplink has no thread of its own:
the process's loop calls `pump` when the channel is readable (the intake's poll loop, the HTTP
process's event loop), which calls each answered request's reply there, and `tick` now and
then, which hands what this edge counts (`stats`) to the coordinator's `Stats` (at least every
few tenths of a second, and at once when a view is asked for); views (`observe`) are answered by
the coordinator. `Uplink.run_in_thread` gives one a thread of its own (a gateway in the
coordinator's process).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from itertools import count
from typing import Iterator, Mapping, Sequence

from ...errors import BertServingError, ModelNotFoundError, NotReadyError, OverloadedError, error_from_code
from ..pipeline.budget import MemoryBudget
from ..pipeline.gateway import Observation, ServedModel, unknown_model
from ..pipeline.intake import Intake
from ..pipeline.request import Outcome, ReplyFn, Request, Ticket
from ..pipeline.stats import Stats
from ..pipeline.tasks import check_task, densified_reply, scored_reply, wanted_outputs
from ..processes.channel import Channel
from ..processes.child import set_thread_title
from .frames import (
    ABANDON,
    ANSWERS,
    CALL,
    CLOSE,
    READY,
    RETURN,
    STATS,
    STOP,
    SYNC,
    SYNCED,
    dumps,
    read_answers,
    submission_frames,
)
from .orders import EdgeLimits, ModelOrders

__all__ = ["Uplink"]

logger = logging.getLogger(__name__)

_FLUSH_S = 0.2  # what this edge counted reaches the coordinator at least this often


class Uplink:
    def __init__(self, channel: Channel, models: ModelOrders | Sequence[ModelOrders],
                 limits: EdgeLimits | Sequence[EdgeLimits], *, name: str) -> None:
        """``models``: the served models, the default first; ``limits``: this edge's share of each
        one's limits (one for all, or one each)."""
        models = [models] if isinstance(models, ModelOrders) else list(models)
        limits = [limits] * len(models) if isinstance(limits, EdgeLimits) else list(limits)
        self.name = name
        self.model: ServedModel = models[0].served  # the default model
        self.stats = Stats()  # what this edge counts, handed over as deltas
        self.stopped = threading.Event()  # the coordinator said STOP, or went away
        self.failure: str | None = None  # a serving loop of this process died
        self._channel = channel
        self._lanes = [_Lane(index, orders, share, self) for index, (orders, share) in enumerate(zip(models, limits))]
        self._by_name = {lane.model.name: lane for lane in self._lanes}
        self.models: Mapping[str, ServedModel] = {name: lane.model for name, lane in self._by_name.items()}
        self._waiting: dict[int, tuple[Request, _Lane]] = {}  # sent to the coordinator, not answered yet
        self._local = threading.local()  # .group: requests of this thread's open `together`, by lane
        self._calls: dict[int, Future[Observation]] = {}
        self._call_ids = count(1)
        self._next_flush = time.monotonic() + _FLUSH_S

    def fileno(self) -> int:
        return self._channel.fileno()

    def start(self) -> None:
        """Tell the coordinator this edge serves (its loop calls `pump` and `tick` from now on)."""
        self._send([READY, dumps({"pid": os.getpid()})])

    def run_in_thread(self) -> threading.Thread:
        """Pump the channel on a thread of its own, until STOP or the coordinator goes."""
        thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        thread.start()
        return thread

    # the Gateway --------------------------------------------------------------------------------------

    def submit(self, texts: object, is_tokenized: bool, reply: ReplyFn, client: str, *, model: str | None = None,
               task: str | None = None, raw_scores: bool = False, prompt_name: object = None, prompt: object = None,
               outputs: Sequence[str] | None = None) -> Ticket:
        try:
            lane = self.lane(model)
            served = lane.model
            check_task(served, task)
            kinds, densify = wanted_outputs(served, task, outputs)
        except BertServingError as exc:
            self.stats.data_request(client, len(texts) if isinstance(texts, list) else 0)
            self.stats.error(exc.code)
            reply(Outcome(error=exc))
            return Ticket()
        if served.task != "embed":  # a head: logits become scores, counted
            reply = scored_reply(reply, served, task, raw_scores, self.stats)
        elif densify:
            reply = densified_reply(reply, served.sparse_dim)
        return lane.intake.submit(texts, is_tokenized, reply, client, pairs=task in ("predict", "rerank"),
                                  prompt_name=prompt_name, prompt=prompt, outputs=kinds)

    def lane(self, model: str | None) -> _Lane:
        """The lane of the served model named ``model`` (None: the default model's)."""
        if model is None:
            return self._lanes[0]
        lane = self._by_name.get(model)
        if lane is None:
            raise ModelNotFoundError(unknown_model(model, list(self._by_name)), param="model")
        return lane

    def together(self) -> AbstractContextManager[None]:
        return self._together()

    @contextmanager
    def _together(self) -> Iterator[None]:
        if getattr(self._local, "group", None) is not None:  # already inside one
            yield
            return
        groups: dict[int, list[Request]] = {}
        self._local.group = groups
        try:
            with ExitStack() as intakes:  # each tokenizes its requests together as it ends, and accepts each
                for lane in self._lanes:
                    intakes.enter_context(lane.intake.together())
                yield
        finally:
            self._local.group = None
            for index, group in groups.items():
                self._submit(group, index)

    def observe(self, *, stats: bool = False, status: bool = False, with_statistic: bool = False, client: str = "",
                readiness: bool = False) -> Future[Observation]:
        """The coordinator's view: its `Stats` (every edge's counts in), SHOW_CONFIG's status (with
        SHOW_STATUS's statistic), readiness; whichever are asked for."""
        future: Future[Observation] = Future()
        if self.stopped.is_set():
            future.set_exception(NotReadyError("the server is shutting down"))
            return future
        call = next(self._call_ids)
        self._calls[call] = future
        if stats or with_statistic:
            self._flush()
        self._send([CALL, dumps({"call": call, "what": "observe", "stats": stats, "status": status,
                                 "with_statistic": with_statistic, "client": client, "readiness": readiness})])
        return future

    def request_stop(self) -> None:
        self._send([CALL, dumps({"call": next(self._call_ids), "what": "stop"})])

    def stage_failed(self, stage: str, error: BaseException) -> None:
        if self.failure is None:
            self.failure = f"{stage} stopped: {type(error).__name__}: {error}"
            logger.critical("%s: %s; this process exits (the server starts another)", self.name, self.failure)
        self.stopped.set()

    # the Intakes' downstream (each lane's) -------------------------------------------------------------

    def _accept(self, lane: _Lane, request: Request, ticket: Ticket) -> bool:
        if not ticket.attach(request, self._abandon):
            lane.budget.release(request.reserved_bytes)
            self.stats.error("abandoned")
            return False
        self._waiting[request.id] = (request, lane)
        groups = getattr(self._local, "group", None)
        if groups is not None:
            groups.setdefault(lane.index, []).append(request)
        else:
            self._submit([request], lane.index)
        return True

    def _submit(self, requests: list[Request], model: int) -> None:
        self._send(submission_frames([(r.id, r.features, r.received_at, r.tokenized_at, r.outputs) for r in requests],
                                     model))

    def _abandon(self, request: Request) -> None:
        if self._settle(request.id) is not None:
            self._send([ABANDON, dumps({"ids": [request.id]})])

    def _settle(self, rid: int) -> Request | None:
        """The waiting request ``rid``, no longer waiting: what it held given back."""
        held = self._waiting.pop(rid, None)
        if held is None:
            return None
        request, lane = held
        lane.budget.release(request.reserved_bytes)
        lane.backlog.release(len(request))
        return request

    def _send(self, frames: list) -> None:
        try:
            self._channel.send(frames)
        except OSError:  # the coordinator is gone
            self._gone()

    # reading the channel ------------------------------------------------------------------------------

    def pump(self) -> bool:
        """Read and act on every message waiting on the channel; False once the coordinator is gone
        or said STOP (the process then goes)."""
        try:
            while not self.stopped.is_set() and self._channel.poll(0):
                self._read(self._channel.receive())
        except (EOFError, OSError):
            self._gone()
        return not self.stopped.is_set()

    def tick(self) -> float:
        """Hand over what this edge counted, when due; seconds until the next is due."""
        now = time.monotonic()
        if now >= self._next_flush:
            self._flush()
            self._next_flush = now + _FLUSH_S
        return max(0.0, self._next_flush - now)

    def _run(self) -> None:
        set_thread_title("uplink")
        try:
            while not self.stopped.is_set():
                if self._channel.poll(self.tick()):
                    self.pump()
        except BaseException as exc:
            logger.exception("%s: the link thread failed", self.name)
            self.stage_failed("the link to the coordinator", exc)
        self._gone()

    def _read(self, frames: list) -> None:
        kind = bytes(frames[0])
        if kind == ANSWERS:
            for rid, result, error, ragged in read_answers(frames):
                request = self._settle(rid)
                if request is None:  # abandoned meanwhile
                    continue
                tokens = None
                if error is None and request.features.tokens is not None:
                    tokens = [list(t) for t in request.features.tokens]
                try:
                    request.reply(Outcome(result, tokens, error, request.features.num_tokens, **(ragged or {})))
                except Exception:
                    logger.exception("replying to request %d failed", rid)
        elif kind == RETURN:
            message = json.loads(bytes(frames[1]))
            future = self._calls.pop(message["call"], None)
            value = message["value"]
            if future is None:
                return
            if "error" in value:
                future.set_exception(error_from_code(value["error"]["code"], value["error"]["message"]))
            else:
                stats = value.get("stats")
                future.set_result(Observation(stats=None if stats is None else Stats.load(stats),
                                              status=value.get("status"), readiness=value.get("readiness")))
        elif kind == SYNC:
            self._flush()
            self._send([SYNCED, frames[1]])
        elif kind == CLOSE:
            for lane in self._lanes:
                lane.intake.close()
        elif kind == STOP:
            self.stopped.set()
        else:
            logger.error("%s: unknown message %r from the coordinator; ignored", self.name, kind[:20])

    def _flush(self) -> None:
        delta = self.stats.take()
        if delta is not None:
            self._send([STATS, dumps(delta)])

    def _gone(self) -> None:
        """The coordinator is gone (or said STOP): nothing waiting will be answered by it."""
        self.stopped.set()
        error = NotReadyError("the server stopped before this request could be served")
        for rid in list(self._waiting):
            request = self._settle(rid)
            if request is not None:
                try:
                    request.reply(Outcome(error=error))
                except Exception:
                    pass
        for call in list(self._calls):
            future = self._calls.pop(call, None)
            if future is not None and not future.done():
                future.set_exception(error)


class _Lane:
    """One served model as this edge serves it: its intake (tokenizer, prompts, outputs) and its
    share of the backlog limits; the `Intake`'s downstream."""

    def __init__(self, index: int, orders: ModelOrders, limits: EdgeLimits, uplink: Uplink) -> None:
        self.index, self.model, self._uplink = index, orders.served, uplink
        self.budget = MemoryBudget(limits.max_queued_bytes, what="the server's backlog (-max_queued_bytes)" if index == 0
                                   else f"the backlog of model {orders.served.name!r}")
        self.backlog = _Backlog(limits.max_queued_texts)
        self.intake = Intake(orders.build_tokenizer(), self, uplink.stats, outputs=orders.outputs, budget=self.budget,
                             keep_tokens=orders.show_tokens, max_request_texts=limits.max_request_texts,
                             max_result_bytes=limits.max_result_bytes, prompts=orders.prompts)

    def admit(self, rows: int) -> None:
        if self._uplink.stopped.is_set():
            raise NotReadyError("the server is shutting down and accepts no new requests")
        self.backlog.admit(rows)

    def release(self, rows: int) -> None:
        self.backlog.release(rows)

    def accept(self, request: Request, ticket: Ticket) -> bool:
        return self._uplink._accept(self, request, ticket)


@dataclass
class _Backlog:
    """Texts this edge admitted and the coordinator has not answered yet, bounded; an empty
    backlog takes a request of any size (`-max_request_texts` bounds that)."""

    limit: int
    used: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def admit(self, rows: int) -> None:
        with self._lock:
            if self.used and self.used + rows > self.limit:
                raise OverloadedError(f"the server's backlog is full ({self.used} texts waiting); retry later")
            self.used += rows

    def release(self, rows: int) -> None:
        with self._lock:
            self.used -= rows
