"""`Frontend`: the ZeroMQ edge. Requests come in on a PULL socket (``-port``); answers leave on
a PUB socket (``-port_out``) whose topic is the client's identity, as in 1.10.0.

One thread owns both sockets. Other threads (the sink, the intake) hand it outgoing frames
through an `Outbox`. Every message gets an answer, malformed ones included, when there is an
identity to answer to.

The PUB side is an XPUB socket: it sees each client's subscription arrive, so an answer for a
client whose subscription has not reached the server yet (ZeroMQ's "slow joiner") is held
until it does, for up to ``hold_ms``, instead of being dropped. That replaces the original's
blind 100 ms sleep before every config answer.

No message can stop the I/O thread: an unexpected exception while handling one is logged,
counted (``server_error``) and answered when the message names a client. Should the thread
die anyway, it tells the server (`Gateway.stage_failed`): ``/ready`` answers 503 ``failed``
and the server drains and exits non-zero, rather than serving HTTP alone.

Memory: the PULL socket queues at most ``_QUEUED_MESSAGES_PER_PEER`` messages per connection
(ZeroMQ's receive high-water mark; past it a sender's PUSH blocks, nothing is dropped), and a
frame larger than ``4 x max_request_bytes`` closes its connection (ZeroMQ's ``MAXMSGSIZE``);
smaller oversized payloads are answered ``payload_too_large``.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import replace
from typing import Callable

import zmq

from ... import protocol
from ...errors import (
    BertServingError,
    ConfigurationError,
    ForbiddenError,
    NotReadyError,
    PayloadTooLargeError,
    ServerError,
)
from ...quantization import quantize
from ..pipeline.gateway import Gateway
from ..pipeline.request import Outcome
from .access import CurveServer, TerminationPolicy

__all__ = ["Frontend", "Outbox"]

logger = logging.getLogger(__name__)

_ANSWERS_QUEUED_PER_CLIENT = 10_000
_QUEUED_MESSAGES_PER_PEER = 100  # the PULL socket's receive high-water mark, per connection
_FRAME_LIMIT_FACTOR = 4  # frames over this many times -max_request_bytes close their connection


class Outbox:
    """Thread-safe hand-off of outgoing frames to the thread that owns the PUB socket: a queue,
    and one wake-up message on an inproc socket per batch of answers (not one per answer), sent
    only while the I/O thread has not been woken already."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self._ctx = ctx
        self._endpoint = endpoint
        self._local = threading.local()
        self._sockets: list[zmq.Socket] = []
        self._lock = threading.Lock()
        self._waiting: deque[list] = deque()
        self._woken = False

    def send(self, frames: list) -> None:
        with self._lock:
            self._waiting.append(frames)
            if self._woken:
                return
            self._woken = True
        self._wake_socket().send(b"")

    def take(self) -> list[list]:
        """Everything handed over so far (the I/O thread, once woken)."""
        with self._lock:
            taken = list(self._waiting)
            self._waiting.clear()
            self._woken = False
        return taken

    def _wake_socket(self) -> zmq.Socket:
        sock = getattr(self._local, "socket", None)
        if sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.linger = 1000
            sock.connect(self._endpoint)
            self._local.socket = sock
            with self._lock:
                self._sockets.append(sock)
        return sock

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


class Frontend:
    def __init__(
        self,
        ctx: zmq.Context,
        *,
        bind: str,
        port: int,
        port_out: int,
        gateway: Gateway,
        termination: TerminationPolicy | None = None,
        curve: CurveServer | None = None,
        max_request_bytes: int = 64 * 1024 * 1024,
        hold_ms: int = 3000,
    ) -> None:
        self._ctx = ctx
        self._bind, self.port, self.port_out = bind, port, port_out
        self._gateway = gateway
        self._stats = gateway.stats
        self._termination = termination or TerminationPolicy()
        self._curve = curve
        self._max_request_bytes = max_request_bytes
        self._hold_s = hold_ms / 1000
        self._subscribed: set[bytes] = set()
        self._held: dict[bytes, list[tuple[float, list]]] = defaultdict(list)
        self._accepting = True
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frontend", daemon=True)
        self.pull = ctx.socket(zmq.PULL)
        self.pub = ctx.socket(zmq.XPUB)
        self._inbox = ctx.socket(zmq.PULL)
        self._inbox_endpoint = f"inproc://bert-serving-outbox-{id(self)}"
        self.outbox = Outbox(ctx, self._inbox_endpoint)

    def bind(self) -> None:
        """Bind both ports; a busy port is a `ConfigurationError` that says which flag to change."""
        self.pull.linger = 0
        self.pub.linger = 1000
        # A client that stops reading its results may not grow the server without bound: past
        # SNDHWM queued answers, a send fails (XPUB_NODROP) and the answer is dropped, logged
        # and counted as "undelivered", instead of vanishing silently as plain PUB would.
        self.pub.setsockopt(zmq.SNDHWM, _ANSWERS_QUEUED_PER_CLIENT)
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)
        self.pull.setsockopt(zmq.RCVHWM, _QUEUED_MESSAGES_PER_PEER)
        self.pull.setsockopt(zmq.MAXMSGSIZE, _FRAME_LIMIT_FACTOR * self._max_request_bytes)
        for sock in (self.pull, self.pub):
            protocol.keep_alive(sock)
            if self._curve is not None:
                self._curve.secure(sock)
        for sock, port, flag in ((self.pull, self.port, "-port"), (self.pub, self.port_out, "-port_out")):
            address = f"tcp://{'*' if self._bind in ('0.0.0.0', '*') else self._bind}:{port}"
            try:
                sock.bind(address)
            except zmq.ZMQError as exc:
                self.close()
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigurationError(
                        f"port {port} is already in use (another bert-serving-start?); choose another with {flag}"
                    ) from None
                raise ConfigurationError(f"cannot bind {address} ({flag}): {exc}") from None
        self._inbox.bind(self._inbox_endpoint)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The I/O thread runs (or has not been started yet)."""
        return self._thread.is_alive() or self._thread.ident is None

    def stop_accepting(self) -> None:
        """Answer new data requests with an error from now on (shutdown has begun)."""
        self._accepting = False

    def close(self, timeout: float = 5.0) -> None:
        """Stop the I/O thread after it has sent everything handed to it."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.outbox.close()
        for sock in (self.pull, self.pub, self._inbox):
            sock.close()

    # the I/O thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # whatever it was, the server must know
            if not self._stopping.is_set():
                logger.critical("the ZeroMQ I/O thread died: %r", exc, exc_info=exc)
                self._gateway.stage_failed("the ZeroMQ frontend", exc)

    def _loop(self) -> None:
        poller = zmq.Poller()
        for sock in (self.pull, self.pub, self._inbox):
            poller.register(sock, zmq.POLLIN)
        while True:
            stopping = self._stopping.is_set()
            events = dict(poller.poll(10 if stopping else 100))
            if self.pub in events:
                self._subscriptions()
            if self._inbox in events:
                _drain(self._inbox, _ignore, 1000)  # wake-up calls: the answers wait in the outbox
                for frames in self.outbox.take():
                    self._publish_safely(frames)
            if self.pull in events:
                with self._gateway.together():  # one tokenizer call for the small requests of this read
                    _drain(self.pull, self._handle_safely, 100)
            self._expire_held(force=stopping)
            if stopping and not events:
                return

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
                for _, frames in self._held.pop(topic, []):
                    self._send(frames)
            elif event[0] == 0:
                self._subscribed.discard(topic)

    def _send(self, frames: list) -> None:
        try:
            self.pub.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            logger.warning("client %r has %d unread answers; dropping one", bytes(frames[0]),
                           _ANSWERS_QUEUED_PER_CLIENT)
            self._stats.error("undelivered")

    def _is_subscribed(self, identity: bytes) -> bool:
        return identity in self._subscribed or any(identity.startswith(t) for t in self._subscribed)

    def _publish(self, frames: list) -> None:
        identity = bytes(frames[0])
        if self._is_subscribed(identity):
            self._send(frames)
        else:
            self._held[identity].append((time.monotonic() + self._hold_s, frames))

    def _expire_held(self, force: bool = False) -> None:
        if not self._held:
            return
        now = time.monotonic()
        for identity in list(self._held):
            waiting = self._held[identity]
            due = [frames for deadline, frames in waiting if force or deadline <= now]
            if due:
                logger.warning("no subscriber for client %r after %.1f s; sending anyway", identity, self._hold_s)
                for frames in due:
                    self._send(frames)
                self._held[identity] = [(d, f) for d, f in waiting if not (force or d <= now)]
            if not self._held[identity]:
                del self._held[identity]

    def _publish_safely(self, frames: list) -> None:
        try:
            self._publish(frames)
        except Exception:
            logger.exception("could not send an answer; dropped")
            self._stats.error("undelivered")

    def _handle_safely(self, frames: list) -> None:
        """`_handle`, and whatever it raises is logged and answered: the loop goes on."""
        try:
            self._handle(frames)
        except Exception as exc:
            logger.exception("handling a message failed")
            self._stats.error(ServerError.code)
            try:
                message = protocol.parse_request([f.bytes for f in frames])
                self._publish(protocol.error_frames(message.identity, message.req_id, ServerError(
                    f"the server failed on this message ({type(exc).__name__}); it has been logged")))
            except Exception:
                pass  # nobody to answer

    def _handle(self, frames: list) -> None:
        try:
            message = protocol.parse_request([f.bytes for f in frames])
        except protocol.MalformedRequest as exc:
            logger.warning("malformed request from %r: %s", exc.identity, exc.message)
            self._stats.error(exc.code)
            if exc.identity is not None:
                self._publish(protocol.error_frames(exc.identity, exc.req_id, exc))
            return
        client = f"zmq:{message.identity.decode('ascii', 'replace')}"
        command = message.command
        if command == protocol.TERMINATION:
            peer = _peer_address(frames[0])
            self._stats.control_request(client)
            if self._termination.allows(peer, message.token):
                logger.info("TERMINATION received from %s", peer or "a local peer")
                self._gateway.request_stop()
            else:
                logger.warning("refused TERMINATION from %s", peer)
                self._publish(protocol.error_frames(message.identity, message.req_id, ForbiddenError(
                    "TERMINATION is accepted from the server's own host, or with its -terminate_token")))
            return
        if command in (protocol.SHOW_CONFIG, protocol.SHOW_STATUS):
            self._stats.control_request(client)
            status = self._gateway.status(command == protocol.SHOW_STATUS, message.identity.decode("ascii", "replace"))
            self._publish(protocol.config_frames(message.identity, message.req_id, status))
            return
        reply = _zmq_reply(self.outbox, message.identity, message.req_id)
        if not self._accepting:
            self._stats.error(NotReadyError.code)
            reply(Outcome(error=NotReadyError("the server is shutting down and accepts no new requests")))
            return
        try:
            if len(message.payload) > self._max_request_bytes:
                raise PayloadTooLargeError(f"the payload has {len(message.payload)} bytes; this server takes at "
                                           f"most {self._max_request_bytes} (-max_request_bytes): split the list")
            request = protocol.decode_data(message.payload)  # the original's list, or one of our objects
        except BertServingError as exc:
            self._stats.data_request(client, 0)
            self._stats.error(exc.code)
            reply(Outcome(error=exc))
            return
        task = request.task
        if request.precision is not None:  # quantized vectors: embeddings only (a head is refused)
            reply, task = _quantized(reply, request.precision), "embed"
        self._gateway.submit(request.texts, request.is_tokenized, reply, client, task=task,
                             raw_scores=request.raw_scores, prompt_name=request.prompt_name, prompt=request.prompt)


def _peer_address(frame: zmq.Frame) -> str | None:
    """Where a message came from, as the kernel saw it; None for in-process peers."""
    try:
        return frame.get("Peer-Address")
    except zmq.ZMQError:
        return None


def _drain(sock: zmq.Socket, handle: Callable[[list], None], limit: int) -> None:
    """Hand up to ``limit`` waiting messages to ``handle`` (bounded, so no socket starves the others)."""
    for _ in range(limit):
        try:
            frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        handle(frames)


def _ignore(frames: list) -> None:
    pass


def _quantized(reply, precision: str):
    def answer(outcome: Outcome) -> None:
        if outcome.result is not None:
            outcome = replace(outcome, result=quantize(outcome.result, precision))
        reply(outcome)

    return answer


def _zmq_reply(outbox: Outbox, identity: bytes, req_id: int):
    def reply(outcome: Outcome) -> None:
        if outcome.error is not None:
            outbox.send(protocol.error_frames(identity, req_id, outcome.error))
        else:
            outbox.send(protocol.result_frames(identity, req_id, outcome.result, outcome.tokens))

    return reply
