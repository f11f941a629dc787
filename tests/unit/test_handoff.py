"""The HTTP edge's handoff to the pipeline: the requests of one turn of the event loop are
submitted together (one tokenizer call, one batch), each handler gets its own answer back
from the pipeline's thread, and a failure or a cancelled handler stays with its request."""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager

import pytest

from bert_serving.errors import OverloadedError
from bert_serving.server.http.handoff import Handoff
from bert_serving.server.pipeline.request import Outcome, Ticket


class Pipeline:
    """A gateway that records which submissions came inside one `together` block and answers
    each with its own texts, from a thread of its own once told to."""

    def __init__(self, refuse: str | None = None, fail: str | None = None) -> None:
        self.groups: list[list[list]] = []
        self.tickets: list[Ticket] = []
        self.waiting: list[tuple[list, object]] = []
        self._open: list[list] | None = None
        self._refuse, self._fail = refuse, fail

    @contextmanager
    def together(self):
        self._open = []
        try:
            yield
        finally:
            self.groups.append(self._open)
            self._open = None

    def submit(self, texts, is_tokenized, reply, client, **task) -> Ticket:
        if texts == [self._fail]:
            raise RuntimeError("a bug in the pipeline")
        assert self._open is not None, "submitted outside a together block"
        self._open.append(texts)
        ticket = Ticket()
        self.tickets.append(ticket)
        if texts == [self._refuse]:
            reply(Outcome(error=OverloadedError("full")))  # refusals come back at once, on this thread
        else:
            self.waiting.append((texts, reply))
        return ticket

    def answer_all(self) -> None:
        def run():
            for texts, reply in self.waiting:
                reply(Outcome(result=texts))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()


async def _ask(handoff: Handoff, pipeline: Pipeline, texts: list[list[str]]) -> list:
    tasks = [asyncio.ensure_future(handoff.outcome(t, False, "client")) for t in texts]
    while len(pipeline.waiting) + sum(t.done() for t in tasks) < len(texts):
        await asyncio.sleep(0)
    pipeline.answer_all()
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_the_requests_of_one_turn_are_submitted_together_and_each_gets_its_own_answer():
    pipeline = Pipeline()

    async def main():
        outcomes = await _ask(Handoff(pipeline, asyncio.get_running_loop()), pipeline, [["a"], ["b"], ["c"]])
        return [o.result for o in outcomes]

    assert asyncio.run(main()) == [["a"], ["b"], ["c"]]
    assert pipeline.groups == [[["a"], ["b"], ["c"]]]


def test_requests_of_later_turns_form_their_own_group():
    pipeline = Pipeline()

    async def main():
        handoff = Handoff(pipeline, asyncio.get_running_loop())
        first = await _ask(handoff, pipeline, [["a"], ["b"]])
        pipeline.waiting.clear()
        second = await _ask(handoff, pipeline, [["c"]])
        return [o.result for o in first + second]

    assert asyncio.run(main()) == [["a"], ["b"], ["c"]]
    assert pipeline.groups == [[["a"], ["b"]], [["c"]]]


def test_a_refusal_and_a_failing_submission_stay_with_their_own_request():
    pipeline = Pipeline(refuse="full", fail="bug")

    async def main():
        return await _ask(Handoff(pipeline, asyncio.get_running_loop()), pipeline, [["a"], ["full"], ["bug"], ["b"]])

    a, refused, failed, b = asyncio.run(main())
    assert (a.result, b.result) == (["a"], ["b"])
    assert isinstance(refused.error, OverloadedError)
    assert isinstance(failed, RuntimeError)  # the handler raises it, as if it had submitted itself
    assert pipeline.groups == [[["a"], ["full"], ["b"]]]


@pytest.mark.parametrize("when", ["before it is submitted", "after"])
def test_a_cancelled_handler_abandons_its_request(when: str):
    pipeline = Pipeline()

    async def main():
        handoff = Handoff(pipeline, asyncio.get_running_loop())
        task = asyncio.ensure_future(handoff.outcome(["a"], False, "client"))
        await asyncio.sleep(0)  # the handler has queued it; it is submitted at the end of the next turn
        if when == "after":
            await asyncio.sleep(0)
            assert len(pipeline.tickets) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return pipeline.tickets

    tickets = asyncio.run(main())
    if when == "after":
        assert tickets[0].abandoned
    else:
        assert tickets == []  # never submitted
