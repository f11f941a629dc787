"""`Hub`: the coordinator's side of every edge process's channel (the router, the intakes, the
HTTP processes).

One thread reads them all. A SUBMIT's requests go into their model's batcher (a `Lane` each:
the server may serve several models, each with its own batcher, sink and replicas) as they are
(admitted and tokenized by their edge); each is answered on its edge's channel, from whichever thread finishes
it (a replica's feeder, the shutdown): the answers of one batch (`gathered`) in one message per
edge. An edge that goes away (its process died: `detach`)
abandons its requests, whose rows not yet run are dropped. Views are answered from the
coordinator's `Stats`, after every edge has handed over what it counted (SYNC): any edge's view
shows every edge's counts.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import select
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Protocol, Sequence

from ...errors import BertServingError, ServerError
from ..pipeline.batcher import Batcher
from ..pipeline.request import Outcome, Request
from ..pipeline.sink import Sink
from ..pipeline.stats import Stats
from ..processes.channel import Channel, ChannelTimeout
from ..processes.child import set_thread_title
from .frames import (
    ABANDON,
    CALL,
    READY,
    RETURN,
    STATS,
    SUBMIT,
    SYNC,
    SYNCED,
    answer_frames,
    dumps,
    read_submission,
    submission_header,
)

__all__ = ["Arrival", "Control", "Hub", "Lane"]

logger = logging.getLogger(__name__)

_SYNC_WAIT_S = 0.5  # a view waits at most this long for the other edges' counts


class Lane(NamedTuple):
    """One served model's stages in the coordinator: a SUBMIT that names its index comes here."""

    batcher: Batcher
    sink: Sink


class Control(Protocol):
    """What the edges may ask of the coordinator besides serving requests."""

    def status(self, with_statistic: bool = False, client: str = "") -> dict[str, object]: ...

    def readiness(self) -> dict[str, object]: ...

    def request_stop(self) -> None: ...


@dataclass(eq=False)
class _Edge:
    name: str
    channel: Channel
    ready: threading.Event = field(default_factory=threading.Event)  # it said READY
    error: str | None = None  # what it said instead of READY: why it cannot serve
    requests: dict[int, tuple[Request, Sink]] = field(default_factory=dict)  # answered ones leave
    gone: bool = False


class Arrival:
    """An edge process on its way: `wait` until it says READY."""

    def __init__(self, edge: _Edge) -> None:
        self._edge = edge

    def wait(self, timeout_s: float) -> bool:
        """True once it said READY (or why it cannot serve: `error`)."""
        return self._edge.ready.wait(timeout_s)

    @property
    def error(self) -> str | None:
        return self._edge.error


@dataclass(eq=False)
class _View:
    """A view an edge asked for (or this process, `sync`), waiting for the other edges' counts."""

    edge: _Edge | None
    call: dict | None
    waiting: set[str]
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)


class Hub:
    def __init__(self, *, lanes: Sequence[Lane], stats: Stats, control: Control,
                 on_hung: Callable[[str], None] = lambda name: None,
                 on_failure: Callable[[str, BaseException], None] = lambda stage, error: None) -> None:
        self._lanes, self._stats, self._control = list(lanes), stats, control
        self._on_hung, self._on_failure = on_hung, on_failure
        self._edges: dict[str, _Edge] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # .answers: the edges' answers of the batch being delivered
        self._views: dict[int, _View] = {}
        self._syncs = itertools.count(1)
        self._pending_syncs: queue.SimpleQueue[_View] = queue.SimpleQueue()  # `sync`s, for the hub's thread
        self._changed = threading.Event()  # the edges came or went since the loop looked
        self._posted: set[_Edge] = set()  # edges the hub posted to, with bytes left waiting
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub", daemon=True)

    # the supervisor's side -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def attach(self, name: str, channel: Channel) -> Arrival:
        """Read ``name``'s channel from now on."""
        edge = _Edge(name, channel)
        with self._lock:
            self._edges[name] = edge
        self._changed.set()
        self._wake()
        return Arrival(edge)

    def detach(self, name: str) -> int:
        """``name``'s process is gone: its requests are abandoned (how many)."""
        with self._lock:
            edge = self._edges.pop(name, None)
        if edge is None:
            return 0
        edge.gone = True
        self._changed.set()
        self._wake()
        lost = list(edge.requests.values())
        edge.requests.clear()
        for request, sink in lost:
            sink.abandon(request)
        return len(lost)

    def send(self, name: str, frames: list) -> bool:
        """Send ``frames`` to edge ``name``; False if it is not there (or not reading)."""
        edge = self._edges.get(name)
        return edge is not None and self._send(edge, frames)

    def names(self) -> list[str]:
        return list(self._edges)

    def on_own_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def sync(self, timeout_s: float = _SYNC_WAIT_S) -> None:
        """Wait until every edge has handed over what it counted (a view in this process)."""
        if self.on_own_thread():
            raise RuntimeError("Hub.sync would wait for its own thread")
        self._pending_syncs.put(view := _View(None, None, set(), time.monotonic() + timeout_s))
        self._wake()
        view.done.wait(timeout_s + 1.0)

    def outstanding(self) -> int:
        """Requests handed over by edges and not answered yet."""
        return sum(len(edge.requests) for edge in list(self._edges.values()))

    def close(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _post(self, edge: _Edge, frames: list) -> None:
        """Send from the hub's own thread, which must never wait on a send (the edge may be
        waiting for the hub to read what it sends): what does not fit waits for POLLOUT."""
        if edge.gone:
            return
        try:
            edge.channel.post(frames)
        except OSError:
            edge.gone = True
            return
        if edge.channel.waiting_bytes:
            self._posted.add(edge)

    def _send(self, edge: _Edge, frames: list) -> bool:
        if edge.gone:
            return False
        try:
            edge.channel.send(frames)
            return True
        except ChannelTimeout:
            logger.error("%s read nothing of what it was sent for a while; taken for hung", edge.name)
            edge.gone = True
            self._on_hung(edge.name)
        except OSError:  # gone: the supervisor sees its exit and detaches it
            edge.gone = True
        return False

    # the reading thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        set_thread_title("hub")
        try:
            self._serve()
        except BaseException as exc:  # whatever it was, the server must know: requests would hang
            if not self._stopping.is_set():
                logger.critical("the hub's thread died: %r", exc, exc_info=exc)
                self._on_failure("the link to the edge processes", exc)

    def _flush_edge(self, edge: _Edge) -> bool:
        """Send more of what waits for ``edge``; True when nothing is left."""
        try:
            return edge.channel.flush()
        except OSError:
            edge.gone = True
            self._changed.set()
            return True

    def _serve(self) -> None:
        poller, registered, writing = select.poll(), {}, set()
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            if self._changed.is_set():  # an edge came or went: poll the channels there are now
                self._changed.clear()
                with self._lock:
                    edges = {edge.channel.fileno(): edge for edge in self._edges.values() if not edge.gone}
                for fd in registered:
                    poller.unregister(fd)
                for fd in edges:
                    poller.register(fd, select.POLLIN)
                registered, writing = edges, set()
            while self._posted:  # room wanted only while something the hub posted waits to be sent
                edge = self._posted.pop()
                fd = edge.channel.fileno() if not edge.gone else -1
                if fd in registered and fd not in writing and edge.channel.waiting_bytes:
                    writing.add(fd)
                    poller.modify(fd, select.POLLIN | select.POLLOUT)
            timeout_ms = 100 if not self._views else 10
            for fd, event in poller.poll(timeout_ms):
                if event & select.POLLOUT and fd in registered:
                    if self._flush_edge(registered[fd]):
                        writing.discard(fd)
                        poller.modify(fd, select.POLLIN)
                if not event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    continue
                if fd == self._wake_r.fileno():
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                edge = registered.get(fd)
                if edge is not None and not edge.gone:
                    self._read(edge)
                elif edge is not None:
                    self._changed.set()
            while not self._pending_syncs.empty():
                self._start_view(self._pending_syncs.get())
            self._answer_views(time.monotonic())

    def _read(self, edge: _Edge) -> None:
        try:
            frames = edge.channel.receive()
        except (EOFError, OSError):
            edge.gone = True  # the supervisor sees the process's exit and detaches it
            self._changed.set()
            return
        kind = bytes(frames[0])
        try:
            if kind == SUBMIT:
                self._submit(edge, frames)
            elif kind == ABANDON:
                for rid in json.loads(bytes(frames[1]))["ids"]:
                    held = edge.requests.pop(rid, None)
                    if held is not None:
                        held[1].abandon(held[0])
            elif kind == STATS:
                self._stats.merge(json.loads(bytes(frames[1])))
            elif kind == CALL:
                self._call(edge, json.loads(bytes(frames[1])))
            elif kind == SYNCED:
                view = self._views.get(json.loads(bytes(frames[1]))["sync"])
                if view is not None:
                    view.waiting.discard(edge.name)
            elif kind == READY:
                edge.error = json.loads(bytes(frames[1])).get("error")
                edge.ready.set()
            else:
                logger.error("%s sent an unknown message %r; ignored", edge.name, kind[:20])
        except Exception:  # a bug must not stop the hub: the edge's requests keep their answers
            logger.exception("handling a %r message of %s failed", kind[:20], edge.name)

    def _submit(self, edge: _Edge, frames: list) -> None:
        header = submission_header(frames)
        index = header.get("m", 0)
        if not 0 <= index < len(self._lanes):  # a bug of the edge's: its requests must not hang
            logger.error("%s sent requests for model %r; there are %d", edge.name, index, len(self._lanes))
            error = ServerError(f"no model {index} in this server")
            self._post(edge, answer_frames([(rid, None, error, None) for rid, *_ in read_submission(frames, header)]))
            return
        batcher, sink = self._lanes[index]
        with batcher.submitting():  # all of them offered to the replicas together
            for rid, features, received, tokenized, outputs in read_submission(frames, header):
                request = Request(features, self._replier(edge, rid), edge.name, received_at=received,
                                  tokenized_at=tokenized, outputs=outputs)
                edge.requests[rid] = (request, sink)
                sink.track(request)
                batcher.submit(request, admitted=False)

    def _replier(self, edge: _Edge, rid: int) -> Callable[[Outcome], None]:
        def reply(outcome: Outcome) -> None:
            if edge.requests.pop(rid, None) is None:
                return
            gathering = getattr(self._local, "answers", None)
            if gathering is None:
                self._send(edge, answer_frames([(rid, outcome.result, outcome.error, outcome.ragged)]))
            else:
                gathering.setdefault(edge, []).append((rid, outcome.result, outcome.error, outcome.ragged))

        return reply

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Answers given inside (on this thread) go out together, one message per edge, at its end."""
        if getattr(self._local, "answers", None) is not None:
            yield
            return
        self._local.answers = answers = {}
        try:
            yield
        finally:
            self._local.answers = None
            for edge, answered in answers.items():
                self._send(edge, answer_frames(answered))

    # views and control -----------------------------------------------------------------------------

    def _call(self, edge: _Edge, call: dict) -> None:
        if call["what"] == "stop":
            self._control.request_stop()
            return
        if not (call.get("stats") or call.get("with_statistic")):
            self._return(edge, call)
            return
        self._start_view(_View(edge, call, set(), time.monotonic() + _SYNC_WAIT_S))

    def _start_view(self, view: _View) -> None:
        """Ask every other edge for its counts (SYNC); the view is answered once all have said."""
        view.waiting = {e.name for e in self._edges.values() if e is not view.edge and not e.gone}
        sync = next(self._syncs)
        self._views[sync] = view
        for name in view.waiting:
            self._post(self._edges[name], [SYNC, dumps({"sync": sync})])
        self._answer_views(time.monotonic())

    def _answer_views(self, now: float) -> None:
        for sync, view in list(self._views.items()):
            live = {name for name in view.waiting if name in self._edges and not self._edges[name].gone}
            if not live or now > view.deadline:
                del self._views[sync]
                if view.edge is not None:
                    self._return(view.edge, view.call)
                view.done.set()

    def _return(self, edge: _Edge, call: dict) -> None:
        value: dict[str, object] = {}
        try:
            if call.get("readiness"):
                value["readiness"] = self._control.readiness()
            if call.get("status"):
                value["status"] = self._control.status(call.get("with_statistic", False), call.get("client", ""))
            if call.get("stats"):
                value["stats"] = self._stats.dump()
        except BertServingError as exc:
            value = {"error": exc.to_dict()}
        except Exception as exc:
            logger.exception("answering a view failed")
            value = {"error": ServerError(f"the server failed to answer ({type(exc).__name__})").to_dict()}
        self._post(edge, [RETURN, dumps({"call": call["call"], "value": value})])
