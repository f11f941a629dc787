"""`Frontend`: the ZeroMQ edge of one intake process. The router (`router`) hands it requests over
a Unix socket, a turn of its loop at a time; its answers go back the same way, and the router
publishes them on ``-port_out``.

The intake's loop (`intake_main`) calls `pump` when requests are waiting: each message is
parsed, control words are answered (SHOW_CONFIG and SHOW_STATUS through the coordinator's view,
TERMINATION by its policy) and data requests go to the `Gateway`, all of one read together (one
tokenizer call, one message to the coordinator). Answers made on the loop's thread (refusals,
results the uplink delivers) go back to the router in one message per turn (`flush`); one made
on another thread (a big request's tokenizer thread refusing it) goes at once. Every message
gets an answer, malformed ones included, when there is an identity to answer to.

A big payload (over `_INLINE_BYTES`) is decoded on a thread of its own, never on the loop: a flood
of large requests does not keep a small one waiting behind their JSON.

No message can stop the loop: an unexpected exception while handling one is logged, counted
(``server_error``) and answered when the message names a client. Should the router go away (it
died; the server starts another), the frontend connects to the new one, and answers meanwhile
wait for it.
"""

from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from ... import protocol
from ...errors import BertServingError, ForbiddenError, NotReadyError, PayloadTooLargeError, ServerError
from ...quantization import quantize
from ..pipeline.gateway import Gateway, Observation
from ..pipeline.request import Outcome
from ..processes.channel import Channel
from .access import TerminationPolicy
from .router import ANSWERS, HELLO, REQUESTS, counts, split

__all__ = ["Frontend"]

logger = logging.getLogger(__name__)

_MAX_HELD_ANSWERS = 100_000  # answers kept while no router is connected
_INLINE_BYTES = 64 * 1024  # payloads up to this size are decoded on the loop's thread


class Frontend:
    def __init__(self, name: str, router_socket: str, *, gateway: Gateway, termination: TerminationPolicy | None = None,
                 max_request_bytes: int = 64 * 1024 * 1024) -> None:
        self.name = name
        self._path = router_socket
        self._gateway = gateway
        self._stats = gateway.stats
        self._termination = termination or TerminationPolicy()
        self._max_request_bytes = max_request_bytes
        self._loop_thread = threading.get_ident()  # the thread that pumps (set again by `connect`)
        self._outbox: list[list] = []  # answers of this turn (the loop's own)
        self._lock = threading.Lock()
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")  # big payloads, off the loop
        self.router: Channel | None = None

    def connect(self) -> bool:
        """Connect to the router and say who this is; False while it is not there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            return False
        self._loop_thread = threading.get_ident()
        router = Channel(sock)
        router.send([HELLO, self.name.encode()])
        with self._lock:
            self.router = router
        self.flush()  # what waited for it
        return True

    def pump(self) -> None:
        """Serve every message the router has sent (the loop saw its socket readable)."""
        try:
            while self.router is not None and self.router.poll(0):
                frames = self.router.receive()
                if bytes(frames[0]) != REQUESTS:
                    logger.error("the router sent %r; ignored", bytes(frames[0])[:20])
                    continue
                with self._gateway.together():  # one tokenizer call for the small requests of this read
                    for message in split(frames[2:], bytes(frames[1])):
                        self._handle_safely(message)
        except (EOFError, OSError):
            self._router_gone()

    def send(self, frames: list) -> None:
        """An answer to the router: with this turn's (on the loop's thread), else at once."""
        if threading.get_ident() == self._loop_thread:
            self._outbox.append(frames)
            if len(self._outbox) > _MAX_HELD_ANSWERS:
                logger.error("no router for %d answers; dropping the oldest", len(self._outbox))
                self._outbox.pop(0)
            return
        with self._lock:
            router = self.router
        if router is None:
            logger.error("no router to send an answer to; dropped")
            return
        try:
            router.send([ANSWERS, counts([frames]), *frames])
        except OSError:
            logger.error("the router went away before an answer; dropped")

    def flush(self) -> None:
        """Send this turn's answers, in one message."""
        if not self._outbox or self.router is None:
            return
        answers, self._outbox = self._outbox, []
        try:
            self.router.send([ANSWERS, counts(answers), *(f for a in answers for f in a)])
        except OSError as exc:
            logger.warning("%s: answering the router failed (%s)", self.name, exc)
            self._outbox = answers + self._outbox
            self._router_gone()

    def close(self) -> None:
        self._decoder.shutdown(wait=True)
        self.flush()
        if self.router is not None:
            self.router.close()
            self.router = None

    def _router_gone(self) -> None:
        logger.warning("%s: the router went away; waiting for the next one", self.name)
        with self._lock:
            router, self.router = self.router, None
        if router is not None:
            router.close()

    # one message --------------------------------------------------------------------------------------

    def _handle_safely(self, frames: list) -> None:
        """`_handle`, and whatever it raises is logged and answered: the loop goes on."""
        try:
            self._handle(frames)
        except Exception as exc:
            logger.exception("handling a message failed")
            self._stats.error(ServerError.code)
            try:
                message = protocol.parse_request([bytes(f) for f in frames[1:]])
                self.send(protocol.error_frames(message.identity, message.req_id, ServerError(
                    f"the server failed on this message ({type(exc).__name__}); it has been logged")))
            except Exception:
                pass  # nobody to answer

    def _handle(self, frames: list) -> None:
        envelope, frames = bytes(frames[0]), frames[1:]
        try:
            message = protocol.parse_request([bytes(f) for f in frames])
        except protocol.MalformedRequest as exc:
            logger.warning("malformed request from %r: %s", exc.identity, exc.message)
            self._stats.error(exc.code)
            if exc.identity is not None:
                self.send(protocol.error_frames(exc.identity, exc.req_id, exc))
            return
        client = f"zmq:{message.identity.decode('ascii', 'replace')}"
        command = message.command
        if command == protocol.TERMINATION:
            peer = envelope.decode("ascii", "replace") or "?"  # the router's reading of the peer's address
            self._stats.control_request(client)
            if self._termination.allows(peer, message.token):
                logger.info("TERMINATION received from %s", peer)
                self._gateway.request_stop()
            else:
                logger.warning("refused TERMINATION from %s", peer)
                self.send(protocol.error_frames(message.identity, message.req_id, ForbiddenError(
                    "TERMINATION is accepted from the server's own host, or with its -terminate_token")))
            return
        if command in (protocol.SHOW_CONFIG, protocol.SHOW_STATUS):
            self._stats.control_request(client)
            identity, req_id = message.identity, message.req_id
            observed = self._gateway.observe(status=True, with_statistic=command == protocol.SHOW_STATUS,
                                             client=identity.decode("ascii", "replace"))
            observed.add_done_callback(lambda done: self._answer_status(identity, req_id, done))
            return
        reply = _zmq_reply(self, message.identity, message.req_id)
        if len(message.payload) > _INLINE_BYTES:
            self._decoder.submit(self._decode_safely, message, client, reply)
            return
        self._decode(message, client, reply)

    def _decode_safely(self, message: protocol.ClientMessage, client: str, reply) -> None:
        try:
            self._decode(message, client, reply)
        except Exception as exc:
            logger.exception("handling a message failed")
            self._stats.error(ServerError.code)
            reply(Outcome(error=ServerError(f"the server failed on this message ({type(exc).__name__}); "
                                            "it has been logged")))

    def _decode(self, message: protocol.ClientMessage, client: str, reply) -> None:
        """Decode a data request and submit it (its refusal answered here)."""
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
        if request.outputs is not None:  # answered with the parts of each output
            served = self._gateway.models.get(request.model, self._gateway.model)  # an unknown one: refused below
            reply = _zmq_reply(self, message.identity, message.req_id, served.sparse_dim)
        if request.precision is not None:  # quantized vectors: embeddings only (a head is refused)
            reply, task = _quantized(reply, request.precision), "embed"
        self._gateway.submit(request.texts, request.is_tokenized, reply, client, model=request.model, task=task,
                             raw_scores=request.raw_scores, prompt_name=request.prompt_name, prompt=request.prompt,
                             outputs=request.outputs)

    def _answer_status(self, identity: bytes, req_id: int, done: Future[Observation]) -> None:
        try:
            frames = protocol.config_frames(identity, req_id, done.result().status)
        except BertServingError as exc:
            frames = protocol.error_frames(identity, req_id, exc)
        except Exception as exc:
            frames = protocol.error_frames(identity, req_id, NotReadyError(f"no status from the server ({exc})"))
        self.send(frames)


def _quantized(reply, precision: str):
    def answer(outcome: Outcome) -> None:
        if outcome.result is not None:
            outcome = replace(outcome, result=quantize(outcome.result, precision))
        reply(outcome)

    return answer


def _zmq_reply(frontend: Frontend, identity: bytes, req_id: int, sparse_dim: int | None = None):
    """``sparse_dim``: a request that named its outputs, answered with their parts (`protocol`)."""

    def reply(outcome: Outcome) -> None:
        if outcome.error is not None:
            frontend.send(protocol.error_frames(identity, req_id, outcome.error))
        elif sparse_dim is not None:
            dense = outcome.result if outcome.result is not None else _no_dense(outcome)
            frontend.send(protocol.result_frames(identity, req_id, dense, outcome.tokens, outcome.ragged or {},
                                                 sparse_dim))
        else:
            frontend.send(protocol.result_frames(identity, req_id, outcome.result, outcome.tokens))

    return reply


def _no_dense(outcome: Outcome) -> np.ndarray:
    """The dense array of an answer without dense vectors: ``[N, 0]``."""
    ragged = outcome.ragged or {}
    rows = len(next(iter(ragged.values()))) if ragged else 0
    return np.zeros((rows, 0), dtype=np.float32)
