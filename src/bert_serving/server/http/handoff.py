"""`Handoff`: how the HTTP edge's event loop hands requests to the pipeline and gets their
outcomes back, a turn of the loop at a time.

Under many clients one turn of the event loop parses several requests. Submitted one by one,
each was tokenized alone and a batch held 2.5 requests on average (32 one-sentence clients);
submitted together at the end of the turn (`Gateway.together`), they are tokenized in one call
and reach the batcher together, as the requests of one ZeroMQ read do. Outcomes come back on
the loop itself (the HTTP process reads its link to the coordinator there), or from another
thread with one wake-up of the loop per burst (a batch's answers arrive together), not one
each. A client that closes its connection first abandons its request.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from starlette.requests import Request

from ...errors import RequestError
from ..pipeline.gateway import Gateway
from ..pipeline.request import Outcome, ReplyFn, Ticket

__all__ = ["Handoff"]

# the outcome for a client that has gone (nobody reads the answer)
CLIENT_GONE = RequestError("the client closed the connection before its answer")


class _Call:
    """One request between its handler and the pipeline; its future done before it is
    submitted (answered, cancelled): it is not submitted at all."""

    __slots__ = ("future", "ticket")

    def __init__(self, future: asyncio.Future[Outcome]) -> None:
        self.future = future
        self.ticket: Ticket | None = None  # once submitted

    def abandon(self) -> None:
        if self.ticket is not None:
            self.ticket.abandon()


class Handoff:
    """The pipeline as the handlers running in one event loop see it."""

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop) -> None:
        self._gateway = gateway
        self.loop = loop
        self._pending: list[tuple[_Call, list, bool, str, dict]] = []
        self._answers: deque[tuple[asyncio.Future[Outcome], Outcome]] = deque()
        self._woken = False
        self._loop_thread: int | None = None  # set on the first request, which runs on the loop

    async def outcome(self, texts: list, is_tokenized: bool, client: str, request: Request | None = None,
                      **task) -> Outcome:
        """The pipeline's answer to ``texts`` (``task``: `Gateway.submit`'s keywords). Given the
        HTTP ``request``, a client that disconnects first abandons it: its texts not yet run are
        dropped, and the outcome returned goes nowhere."""
        self._loop_thread = threading.get_ident()
        call = _Call(self.loop.create_future())
        self._pending.append((call, texts, is_tokenized, client, task))
        if len(self._pending) == 1:  # the first of this turn: submit them all once the turn is over
            self.loop.call_soon(self._submit_pending)
        watch = None if request is None else self.loop.create_task(self._abandon_when_gone(request, call))
        try:
            return await call.future
        except asyncio.CancelledError:  # the handler itself is cancelled (the server stopping)
            call.abandon()
            raise
        finally:
            if watch is not None:
                watch.cancel()

    def _submit_pending(self) -> None:
        pending, self._pending = self._pending, []
        with self._gateway.together():
            for call, texts, is_tokenized, client, task in pending:
                if call.future.done():  # its client went away, or its handler was cancelled
                    continue
                try:
                    call.ticket = self._gateway.submit(texts, is_tokenized, self._reply_to(call.future), client,
                                                       **task)
                except Exception as exc:  # a bug: its handler raises it, as if it had submitted itself
                    call.future.set_exception(exc)

    def _reply_to(self, future: asyncio.Future[Outcome]) -> ReplyFn:
        def reply(outcome: Outcome) -> None:  # on the loop, or on another thread
            if threading.get_ident() == self._loop_thread:
                if not future.done():
                    future.set_result(outcome)
                return
            self._answers.append((future, outcome))
            if not self._woken:
                self._woken = True
                self.loop.call_soon_threadsafe(self._deliver)

        return reply

    def _deliver(self) -> None:
        self._woken = False  # before emptying: an answer added from now on wakes the loop again
        while self._answers:
            future, outcome = self._answers.popleft()
            if not future.done():
                future.set_result(outcome)

    @staticmethod
    async def _abandon_when_gone(request: Request, call: _Call) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        if not call.future.done():
            call.abandon()
            call.future.set_result(Outcome(error=CLIENT_GONE))
