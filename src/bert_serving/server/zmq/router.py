"""`Router`: the public ZeroMQ ports, in a process of their own (``bert-serving: router``), in
front of the intake processes.

Requests come in on a PULL socket (``-port``) and go, as they are, to the intake with the fewest
unanswered (ties taken in turn): all those of one turn of the router's loop to the same intake,
in one message, so that under many clients each intake gets them in groups (one tokenizer call,
one message on to the coordinator) rather than one at a time. The intakes' answers leave on an
XPUB socket (``-port_out``) whose topic is the client's identity, as in 1.10.0. An intake
connects to the router's Unix socket (in the server's 0700 folder) and says its name, and answers
a turn of its own loop at a time, in one message. No message is
decoded here: the router costs a few microseconds of Python a message, and the intakes, as many
as the cores allow, do the work.

The XPUB side sees each client's subscription arrive, so an answer for a client whose
subscription has not reached the server yet (ZeroMQ's "slow joiner") is held until it does, for
up to ``hold_ms``, instead of being dropped. A client that stops reading its answers may not grow
the server without bound: past ``_ANSWERS_QUEUED_PER_CLIENT`` queued answers a send fails
(XPUB_NODROP) and the answer is dropped, logged and counted as "undelivered".

The router remembers which intake has which request (client identity and request id) until it is
answered. When an intake goes away (its connection closes: the process died), its small requests
go to another intake and its large ones (whose payload the router does not keep) get an error
answer: every request is answered, none hangs. While no intake can take more
(``_QUEUED_PER_INTAKE`` unanswered each), the router stops reading ``-port``: the clients' sends
block (ZeroMQ's high-water marks), nothing is dropped.

Admission before any work, from what the frames say without decoding them: a payload over
``-max_request_bytes`` or a declared text count (the 1.10.0 wire's ``msg_len``) over
``-max_request_texts`` is answered ``payload_too_large``, and one that would take the payloads held
for requests in progress (dispatched or waiting, not yet answered) past the router's share of
``-max_queued_bytes`` is answered ``overloaded``, at once: such a request costs its refusal and
nothing more. Small requests (a few KiB) waiting for room go before big ones, so that a new
client's sentence is not stuck behind a flood of large requests.

Memory: the PULL socket queues at most a few messages per connection (ZeroMQ's receive
high-water mark: two at the default ``-max_request_bytes``, more for smaller limits; the rest waits
in the client), and a frame larger than ``4 x max_request_bytes`` closes its connection (ZeroMQ's
MAXMSGSIZE). So what the router holds is bounded by its share of ``-max_queued_bytes`` plus a few
requests per connection, whatever is offered.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from ... import protocol
from ...errors import BertServingError, ConfigurationError, NotReadyError, OverloadedError, PayloadTooLargeError
from ..pipeline.budget import human_bytes
from ..pipeline.stats import Stats
from ..processes.channel import Channel
from .access import CurveServer

__all__ = ["ANSWERS", "HELLO", "REQUESTS", "Router", "counts", "split"]

logger = logging.getLogger(__name__)

HELLO = b"HELLO"  # an intake's first message: [HELLO, name]
REQUESTS = b"REQUESTS"  # router -> intake: [REQUESTS, b"5,5,...": frames each, (envelope, *client frames) x n]
ANSWERS = b"ANSWERS"  # intake -> router: [ANSWERS, b"4,3,...": frames each, frames...]
_ANSWERS_QUEUED_PER_CLIENT = 10_000
_QUEUED_BYTES_PER_PEER = 64 * 1024 * 1024  # libzmq's queue per connection: at most this many bytes of requests
_SMALL_BYTES = 16 * 1024  # payloads up to this size go before bigger ones waiting for room
_MAX_PENDING = 10_000  # requests waiting for an intake to have room, at most (then: overloaded)
_QUEUED_PER_INTAKE = 1000  # unanswered requests one intake may have
_FRAME_LIMIT_FACTOR = 4  # frames over this many times -max_request_bytes close their connection
_RETRY_BYTES = 64 * 1024  # payloads up to this size are kept until answered, to retry on another intake
_BATCH = 100  # messages read from the public socket in one turn
_WAITING_BYTES = 64 * 1024 * 1024  # sent to an intake and not yet taken by it: past this, it gets no more


def counts(messages: list[list]) -> bytes:
    """How many frames each message has, as REQUESTS and ANSWERS say it."""
    return b",".join(b"%d" % len(frames) for frames in messages)


def split(frames: list, counts: bytes) -> list[list]:
    """The messages of a REQUESTS or ANSWERS message (its frames after the kind and counts)."""
    out, start = [], 0
    for count in counts.split(b","):
        out.append(frames[start : start + int(count)])
        start += int(count)
    return out


@dataclass(eq=False)
class _Intake:
    name: str
    channel: Channel
    outstanding: int = 0
    outbox: list[list] = field(default_factory=list)  # this turn's requests for it
    writing: bool = False  # some of what was sent to it waits for room (polled for POLLOUT)

    @property
    def has_room(self) -> bool:
        return self.outstanding < _QUEUED_PER_INTAKE and self.channel.waiting_bytes < _WAITING_BYTES


@dataclass(eq=False)
class _Request:
    intake: _Intake
    message: list | None  # kept to retry elsewhere (small payloads only)
    nbytes: int = 0  # its payload, held against the budget until answered


class Router:
    def __init__(self, ctx: zmq.Context, *, bind: str, port: int, port_out: int, intakes_socket: str,
                 curve: CurveServer | None = None, max_request_bytes: int = 64 * 1024 * 1024,
                 max_request_texts: int = 100_000, max_held_bytes: int = 1 << 62, hold_ms: int = 3000) -> None:
        """``max_held_bytes``: the payloads of requests in progress this router lets in at most (an
        empty router takes any request within the per-request limits)."""
        self.stats = Stats()  # undelivered answers; handed to the coordinator
        self._bind, self._port, self._port_out = bind, port, port_out
        self._hold_s = hold_ms / 1000
        self._curve = curve
        self.pull = ctx.socket(zmq.PULL)
        self.pub = ctx.socket(zmq.XPUB)
        self._intakes_path = intakes_socket
        self.listener: socket.socket | None = None
        self._max_request_bytes = max_request_bytes
        self._max_request_texts = max_request_texts
        self._max_held_bytes = max_held_bytes
        self.held_bytes = 0  # payloads of requests dispatched or waiting, not yet answered
        self._intakes: dict[int, _Intake] = {}  # by the fd of its channel
        self._newcomers: dict[int, Channel] = {}  # connected, not yet named
        self._turn = 0  # ties are taken in turn
        self._chosen: _Intake | None = None  # the intake of this turn's requests
        self._requests: dict[tuple[bytes, bytes], deque[_Request]] = defaultdict(deque)
        self._pending: deque[tuple] = deque()  # requests no intake had room for yet, in order (small ones first)
        self._subscribed: set[bytes] = set()
        self._held: dict[bytes, list[tuple[float, list]]] = {}
        self.poller = zmq.Poller()

    def bind(self) -> None:
        """Bind every socket; a busy public port is a `ConfigurationError` naming its flag."""
        self.pull.linger = 0
        self.pub.linger = 1000
        self.pub.setsockopt(zmq.SNDHWM, _ANSWERS_QUEUED_PER_CLIENT)
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)
        self.pull.setsockopt(zmq.RCVHWM, max(2, min(100, _QUEUED_BYTES_PER_PEER // self._max_request_bytes)))
        self.pull.setsockopt(zmq.MAXMSGSIZE, _FRAME_LIMIT_FACTOR * self._max_request_bytes)
        for sock in (self.pull, self.pub):
            protocol.keep_alive(sock)
            if self._curve is not None:
                self._curve.secure(sock)
        for sock, port, flag in ((self.pull, self._port, "-port"), (self.pub, self._port_out, "-port_out")):
            address = f"tcp://{'*' if self._bind in ('0.0.0.0', '*') else self._bind}:{port}"
            try:
                sock.bind(address)
            except zmq.ZMQError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigurationError(
                        f"port {port} is already in use (another bert-serving-start?); choose another with {flag}"
                    ) from None
                raise ConfigurationError(f"cannot bind {address} ({flag}): {exc}") from None
        Path(self._intakes_path).unlink(missing_ok=True)  # a restarted router's
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self._intakes_path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        for sock in (self.pull, self.pub, self.listener):
            self.poller.register(sock, zmq.POLLIN)

    def close(self) -> None:
        for intake in self._intakes.values():
            intake.channel.close()
        for channel in self._newcomers.values():
            channel.close()
        for sock in (self.pull, self.pub):
            sock.close()
        if self.listener is not None:
            self.listener.close()

    @property
    def busy(self) -> bool:
        """Requests on their way or answers held."""
        return bool(self._requests or self._held or self._pending)

    @property
    def intakes(self) -> list[str]:
        return sorted(intake.name for intake in self._intakes.values())

    # one turn of the loop -----------------------------------------------------------------------------

    def turn(self, timeout_ms: int, stopping: bool = False) -> None:
        """Wait up to ``timeout_ms`` for something to do, and do it. ``-port`` is read even while no
        intake has room: admission bounds what waits, and small requests go first."""
        if self._pending:
            timeout_ms = min(timeout_ms, 5)  # look again soon for room
        events = dict(self.poller.poll(timeout_ms))
        if self.pub in events:
            self._subscriptions()
        for fd in [fd for fd in events if isinstance(fd, int)]:
            if fd == self.listener.fileno():
                self._accept()
            elif fd in self._intakes:
                intake = self._intakes[fd]
                if events[fd] & zmq.POLLOUT:
                    self._write_intake(intake)
                if events[fd] & zmq.POLLIN and fd in self._intakes:
                    self._read_intake(intake)
            elif fd in self._newcomers:
                self._hello(fd)
        if self._pending:
            self._send_pending()
        if self.pull in events:
            self._read_requests()
        self._flush()
        self._expire_held(force=stopping)

    # intakes ------------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            channel = Channel(sock)
            self._newcomers[channel.fileno()] = channel
            self.poller.register(channel.fileno(), zmq.POLLIN)

    def _hello(self, fd: int) -> None:
        channel = self._newcomers.pop(fd)
        try:
            kind, name = channel.receive()
        except (EOFError, OSError, ValueError):
            self.poller.unregister(fd)
            channel.close()
            return
        if bytes(kind) != HELLO:
            logger.error("an intake said %r before its name; dropped", bytes(kind)[:20])
            self.poller.unregister(fd)
            channel.close()
            return
        self._intakes[fd] = _Intake(bytes(name).decode(), channel)
        logger.debug("%s takes requests", bytes(name).decode())

    def _read_intake(self, intake: _Intake) -> None:
        try:
            frames = intake.channel.receive()
        except (EOFError, OSError):
            self._lost(intake)
            return
        if bytes(frames[0]) != ANSWERS:
            logger.error("%s sent %r; ignored", intake.name, bytes(frames[0])[:20])
            return
        for answer in split(frames[2:], bytes(frames[1])):
            key = (bytes(answer[0]), bytes(answer[-1]))  # [identity, ..., req_id]
            entries = self._requests.get(key)
            if entries:
                done = entries.popleft()
                done.intake.outstanding -= 1
                self.held_bytes -= done.nbytes
                if not entries:
                    del self._requests[key]
            self._publish([bytes(f) for f in answer[:1]] + answer[1:])

    def _lost(self, intake: _Intake) -> None:
        """Its connection closed (the process died): its small requests go to another intake, the
        others are answered with an error."""
        fd = intake.channel.fileno()
        self._intakes.pop(fd, None)
        try:
            self.poller.unregister(fd)
        except KeyError:
            pass
        intake.channel.close()
        retried = failed = 0
        for key, entries in list(self._requests.items()):
            for entry in [e for e in entries if e.intake is intake]:
                entries.remove(entry)
                self.held_bytes -= entry.nbytes
                if entry.message is not None:
                    self._dispatch(entry.message, key, True, entry.nbytes)
                    retried += 1
                else:
                    failed += 1
                    self._publish(protocol.error_frames(key[0], int(key[1]), NotReadyError(
                        "the intake process serving this request died before answering; send it again")))
            if not entries and not self._requests.get(key):
                self._requests.pop(key, None)
        if retried or failed:
            logger.warning("%s is gone: %d of its requests sent to another intake, %d answered with an error",
                           intake.name, retried, failed)

    # requests -----------------------------------------------------------------------------------------

    def _read_requests(self) -> None:
        self._chosen = None  # this turn's requests all go to one intake, while it has room
        for _ in range(_BATCH):
            try:
                frames = self.pull.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) == 4:  # [identity, payload, req_id, msg_len]
                envelope = b""
                if len(frames[1]) < 1024 and frames[1].bytes.startswith(protocol.TERMINATION):
                    envelope = (_peer_address(frames[0]) or "?").encode()
                key = (frames[0].bytes, frames[2].bytes)
                if self._admits(frames, key):
                    self._dispatch([envelope, *frames], key, len(frames[1]) <= _RETRY_BYTES, len(frames[1]))
            else:  # malformed: the intake answers what it can
                self._dispatch([b"", *frames], None, False)

    def _admits(self, frames: list, key: tuple[bytes, bytes]) -> bool:
        """Let a request in, or answer it at once (over a per-request limit, or the backlog full).
        A malformed one goes on: the intake answers it in its words."""
        size, declared = len(frames[1]), frames[3].bytes
        if not (_is_number(declared) and _is_number(key[1]) and 0 < len(key[0]) <= 256):
            return True
        texts = int(declared)
        if size > self._max_request_bytes:
            error: BertServingError = PayloadTooLargeError(
                f"the payload has {size} bytes; this server takes at most {self._max_request_bytes} "
                "(-max_request_bytes): split the list")
        elif texts > self._max_request_texts:
            error = PayloadTooLargeError(f"{texts} texts in one request; this server takes at most "
                                         f"{self._max_request_texts} (-max_request_texts): split the list")
        elif (self.held_bytes and self.held_bytes + size > self._max_held_bytes) or len(self._pending) >= _MAX_PENDING:
            error = OverloadedError(f"the server's backlog (-max_queued_bytes) is full ({human_bytes(self.held_bytes)} "
                                    f"of {human_bytes(self._max_held_bytes)} held for requests in progress); retry later")
        else:
            return True
        self.stats.data_request(f"zmq:{key[0].decode('ascii', 'replace')}", texts)
        self.stats.error(error.code)
        self._publish(protocol.error_frames(key[0], int(key[1]), error))
        return False

    def _dispatch(self, message: list, key: tuple[bytes, bytes] | None, keep: bool, nbytes: int = 0) -> None:
        self.held_bytes += nbytes
        if self._pending or not self._assign(message, key, keep, nbytes):
            if nbytes <= _SMALL_BYTES:  # before the big ones waiting, after the small ones
                small = sum(1 for entry in self._pending if entry[3] <= _SMALL_BYTES)
                self._pending.insert(small, (message, key, keep, nbytes))
            else:
                self._pending.append((message, key, keep, nbytes))

    def _assign(self, message: list, key: tuple[bytes, bytes] | None, keep: bool, nbytes: int = 0) -> bool:
        """Give ``message`` to this turn's intake, or (the turn's first, or that one is full) to
        the one with the fewest unanswered that has room (ties in turn)."""
        best = self._chosen
        if best is None or not best.has_room or best.channel.fileno() not in self._intakes:
            intakes = list(self._intakes.values())
            if not intakes:
                return False
            self._turn = (self._turn + 1) % len(intakes)
            best = min(intakes[self._turn:] + intakes[:self._turn], key=lambda i: i.outstanding)
            if not best.has_room:
                return False
            self._chosen = best
        best.outbox.append(message)
        if key is not None:
            best.outstanding += 1
            self._requests[key].append(_Request(best, message if keep else None, nbytes))
        return True

    def _send_pending(self) -> None:
        self._chosen = None
        while self._pending and self._assign(*self._pending[0]):
            self._pending.popleft()

    def _flush(self) -> None:
        """Each intake gets this turn's requests in one message, sent without waiting (the intake may
        be sending its answers meanwhile: the router reads them)."""
        for intake in list(self._intakes.values()):
            if intake.outbox:
                messages, intake.outbox = intake.outbox, []
                try:
                    intake.channel.post([REQUESTS, counts(messages), *(f for m in messages for f in m)])
                except OSError:
                    self._lost(intake)
                    continue
                self._watch_writes(intake)

    def _write_intake(self, intake: _Intake) -> None:
        try:
            intake.channel.flush()
        except OSError:
            self._lost(intake)
            return
        self._watch_writes(intake)

    def _watch_writes(self, intake: _Intake) -> None:
        """Poll an intake's socket for room only while something waits to be sent to it."""
        waiting = intake.channel.waiting_bytes > 0
        if waiting != intake.writing:
            intake.writing = waiting
            self.poller.modify(intake.channel.fileno(), zmq.POLLIN | (zmq.POLLOUT if waiting else 0))

    # answers ------------------------------------------------------------------------------------------

    def _subscriptions(self) -> None:
        while True:
            try:
                event = self.pub.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if not event:
                continue
            topic = event[1:]
            if event[0] == 1:
                self._subscribed.add(topic)
                for _, frames in self._held.pop(topic, ()):
                    self._send(frames)
            elif event[0] == 0:
                self._subscribed.discard(topic)

    def _publish(self, frames: list) -> None:
        identity = bytes(frames[0])
        if identity in self._subscribed or any(identity.startswith(t) for t in self._subscribed):
            self._send(frames)
        else:
            self._held.setdefault(identity, []).append((time.monotonic() + self._hold_s, frames))

    def _send(self, frames: list) -> None:
        try:
            self.pub.send_multipart(frames, flags=zmq.NOBLOCK, copy=len(frames[2]) < 4096 if len(frames) > 2 else True)
        except zmq.Again:
            logger.warning("client %r has %d unread answers; dropping one", bytes(frames[0]),
                           _ANSWERS_QUEUED_PER_CLIENT)
            self.stats.error("undelivered")

    def _expire_held(self, force: bool = False) -> None:
        if not self._held:
            return
        now = time.monotonic()
        for identity in list(self._held):
            held = self._held[identity]
            due = [frames for deadline, frames in held if force or deadline <= now]
            if due:
                logger.warning("no subscriber for client %r after %.1f s; sending anyway", identity, self._hold_s)
                for frames in due:
                    self._send(frames)
                held = [(d, f) for d, f in held if not (force or d <= now)]
            if held:
                self._held[identity] = held
            else:
                del self._held[identity]


def _is_number(frame: bytes) -> bool:
    """An ASCII decimal as the 1.10.0 wire writes req_id and msg_len (`protocol.parse_request`'s rule)."""
    return frame.isdigit() and len(frame) <= 18


def _peer_address(frame: zmq.Frame) -> str | None:
    """Where a message came from, as the kernel saw it."""
    try:
        return frame.get("Peer-Address")
    except zmq.ZMQError:
        return None
