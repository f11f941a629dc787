"""`Intake`: the one door into the pipeline for both edges (ZeroMQ and HTTP).

It runs in each edge process (an intake process, an HTTP process), so that tokenizing, the
heaviest work per text outside the model, spreads over as many cores as there are edge
processes. It tokenizes big requests on its own threads, so neither the edge's I/O nor the
workers wait for them, and small ones (a few short texts, most requests) on the caller's thread,
where that costs less than handing them over; then it hands the request on (`Downstream`: to
the coordinator's batcher, `link.uplink`; or, in one process, `LocalDownstream`). Small
requests submitted inside `together` (the ZeroMQ edge's messages of one read) are tokenized in
one call when it ends: the tokenizer's per-call cost is paid once, and its work spreads over the
cores.
Whatever goes wrong on the way (malformed texts, a full backlog, a result too large to hold, a
bug) is answered through the request's own reply callback: every request accepted here gets
exactly one answer, unless its edge abandons its `Ticket` first (the client went away).

Admission, before any work is spent: the count of texts (``-max_request_texts``), the backlog
in texts (`Downstream.admit`) and in bytes (`MemoryBudget`: the texts until tokenized, then the
result until answered), and the result's size (``-max_result_bytes``), checked again once the
lengths are known. The result is what the request asks for (`OutputLayout.nbytes_of`): dense
vectors, and at most a weight per vocabulary id of a SPLADE text, one per token of a BGE-M3 text,
a ColBERT vector per token.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import contextmanager
from itertools import accumulate
from typing import Callable, Iterator, NamedTuple, Protocol

from ...errors import BertServingError, InvalidRequestError, NotReadyError, PayloadTooLargeError, ServerError
from ...model.features import Features
from ...model.outputs import OutputLayout
from ...model.prompts import Prompts
from ...model.tokenization import Tokenizer
from ...outputs import kind_names
from .batcher import Batcher
from .budget import MemoryBudget, human_bytes, size_of_texts
from .request import Outcome, ReplyFn, Request, Ticket
from .sink import Sink
from .stats import Stats

__all__ = ["Downstream", "Intake", "LocalDownstream"]

logger = logging.getLogger(__name__)

_INLINE_CHARS = 2048  # requests up to this many characters are tokenized on the caller's thread


class Downstream(Protocol):
    """Where admitted, tokenized requests go: the batcher, wherever it runs."""

    def admit(self, rows: int) -> None:
        """Reserve room for ``rows`` texts before tokenizing them; `OverloadedError` when full."""

    def release(self, rows: int) -> None:
        """Give back an admission whose request will not be handed on."""

    def accept(self, request: Request, ticket: Ticket) -> bool:
        """Hand on an admitted request (its admission with it): from now on it gets exactly one
        answer, unless ``ticket`` is abandoned. False when the ticket was abandoned already:
        nothing was handed on, the request gave back the bytes it held (``reserved_bytes``) and
        was counted as abandoned; its admission is still the caller's to release."""


class LocalDownstream:
    """The batcher and sink of this very process (tests, tools)."""

    def __init__(self, batcher: Batcher, sink: Sink) -> None:
        self._batcher, self._sink = batcher, sink
        self.admit, self.release = batcher.admit, batcher.release

    def accept(self, request: Request, ticket: Ticket) -> bool:
        self._sink.track(request)
        if not ticket.attach(request, self._sink.abandon):
            self._sink.abandon(request)
            return False
        self._batcher.submit(request)
        return True


class Intake:
    def __init__(
        self,
        tokenizer: Tokenizer,
        downstream: Downstream,
        stats: Stats,
        *,
        outputs: OutputLayout | None = None,
        budget: MemoryBudget | None = None,
        keep_tokens: bool = False,
        max_request_texts: int = 1_000_000,
        max_result_bytes: int = 1 << 62,
        threads: int = 2,
        prompts: Prompts = Prompts(),
    ) -> None:
        self._tokenizer = tokenizer
        self._prompts = prompts
        self._downstream = downstream
        self._stats = stats
        self._outputs = outputs
        self._budget = budget or MemoryBudget(1 << 62)
        self._keep_tokens = keep_tokens
        self.max_request_texts = max_request_texts
        self.max_result_bytes = max_result_bytes
        self._pool = _Threads(threads, "tokenize")
        self._closed = False
        self._local = threading.local()  # .group: the open `together` group of this thread

    def submit(self, texts: object, is_tokenized: bool, reply: ReplyFn, client: str, *,
               pairs: bool = False, prompt_name: object = None, prompt: object = None, outputs: int = 1) -> Ticket:
        """Tokenize and queue ``texts`` in the background; its `Outcome` goes to ``reply``.
        ``pairs``: texts are strings or explicit ``[A, B]`` pairs (`Tokenizer.encode_pairs`);
        otherwise the prompt asked for (`Prompts.choose`) goes before each text. ``outputs``: what
        it asks for (`bert_serving.outputs.kind_bits`; checked by the caller)."""
        ticket = Ticket()
        count = len(texts) if isinstance(texts, list) else 0
        self._stats.data_request(client, count)
        if self._closed:
            self._refuse(reply, NotReadyError("the server is shutting down and accepts no new requests"))
            return ticket
        if count > self.max_request_texts:
            self._refuse(reply, PayloadTooLargeError(
                f"{count} texts in one request; this server takes at most {self.max_request_texts} "
                "(-max_request_texts): split the list"
            ))
            return ticket
        text_bytes = size_of_texts(texts)
        try:
            chosen = self._prompt(pairs, prompt_name, prompt)
            self._check_result_size(outputs, count)  # as far as it is known before tokenization
            self._downstream.admit(count)  # a full backlog refuses here, before any work is spent
            try:
                self._budget.reserve(text_bytes)
            except BertServingError:
                self._downstream.release(count)
                raise
        except BertServingError as exc:
            self._refuse(reply, exc)
            return ticket
        received = time.perf_counter()
        work = _Work(ticket, texts, is_tokenized, reply, client, received, count, text_bytes, pairs, chosen, outputs)
        if not _is_small(texts):
            self._pool.submit(self._tokenize, *work)
        elif (group := getattr(self._local, "group", None)) is not None and not pairs:
            group.append(work)
        else:
            self._tokenize(*work)
        return ticket

    @contextmanager
    def together(self) -> Iterator[None]:
        """Small requests this thread submits inside are tokenized together when it ends."""
        group: list[_Work] = []
        self._local.group = group
        try:
            yield
        finally:
            self._local.group = None
            if group:
                self._tokenize_group(group)

    def _tokenize_group(self, group: list[_Work]) -> None:
        """One tokenizer call for the texts of the requests of each kind (texts or token lists)
        and prompt; then each request is queued, in order of arrival within its kind. Should a
        call fail (a malformed request among them), each request is tokenized alone, to get
        its own answer."""
        kinds: dict[tuple[bool, str | None], list[_Work]] = {}
        for work in group:
            kinds.setdefault((work.is_tokenized, work.prompt), []).append(work)
        for (is_tokenized, prompt), works in kinds.items():
            parts: list[Features | None] = [None] * len(works)
            if len(works) > 1:
                try:
                    texts = [text for work in works for text in work.texts]
                    features = self._tokenizer.encode(texts, is_tokenized, keep_tokens=self._keep_tokens, prompt=prompt)
                    ends = accumulate(work.count for work in works)
                    parts = [features.rows(end - work.count, end) for work, end in zip(works, ends)]
                except Exception:  # each request alone finds (and answers) its own error
                    pass
            for work, features in zip(works, parts):
                self._tokenize(*work, features=features)

    def _prompt(self, pairs: bool, prompt_name: object, prompt: object) -> str | None:
        """The prompt text of an embedding request; pairs (predict, rerank) take none."""
        if not pairs:
            return self._prompts.choose(prompt_name, prompt)
        if prompt_name is not None or prompt is not None:
            raise InvalidRequestError("prompts are for embeddings; scoring pairs takes none",
                                      param="prompt" if prompt is not None else "prompt_name")
        return None

    def _check_result_size(self, outputs: int, count: int, lengths=None) -> int:
        if self._outputs is None:
            return 0
        nbytes = self._outputs.nbytes_of(outputs, count, lengths)
        if nbytes > self.max_result_bytes:
            if outputs == 1:
                longest = 0 if lengths is None else int(lengths.max(initial=0))
                what = f"would be {list(self._outputs.shape(count, longest))} {self._outputs.dtype}"
            else:
                what = f"({', '.join(kind_names(outputs))}) could be"
            per_token = "; or a pooled -pooling_strategy" if self._outputs.per_token else ""
            raise PayloadTooLargeError(
                f"the answer {what} ({human_bytes(nbytes)}); this server answers at "
                f"most {human_bytes(self.max_result_bytes)} per request (-max_result_bytes): send fewer texts per "
                f"request (BertClient's chunk_size){per_token}"
            )
        return nbytes

    def _tokenize(self, ticket: Ticket, texts, is_tokenized: bool, reply: ReplyFn, client: str, received: float,
                  count: int, text_bytes: int, pairs: bool, prompt: str | None, outputs: int = 1, *,
                  features: Features | None = None) -> None:
        """Tokenize (unless ``features`` are given: done together with others) and queue."""
        try:
            error = self._queue(ticket, texts, is_tokenized, reply, client, received, count, text_bytes, pairs,
                                prompt, outputs, features)
        except Exception as exc:  # a bug here must still answer the client
            logger.exception("queueing a request failed")
            error = ServerError(f"the server failed to queue this request ({type(exc).__name__}); it has been logged")
        if error is not None:
            self._refuse(reply, error)

    def _queue(self, ticket: Ticket, texts, is_tokenized: bool, reply: ReplyFn, client: str, received: float,
               count: int, text_bytes: int, pairs: bool, prompt: str | None, outputs: int,
               features: Features | None) -> BertServingError | None:
        """Tokenize and queue; the error to answer with instead (its admission given back)."""
        if ticket.abandoned:  # the client went away while the request waited to be tokenized
            self._budget.release(text_bytes)
            self._downstream.release(count)
            self._stats.error("abandoned")
            return None
        error: BertServingError | None = None
        try:
            if features is None and pairs:
                features = self._tokenizer.encode_pairs(texts, keep_tokens=self._keep_tokens)
            elif features is None:
                features = self._tokenizer.encode(texts, is_tokenized, keep_tokens=self._keep_tokens, prompt=prompt)
            result_bytes = self._check_result_size(outputs, len(features), features.lengths)
        except BertServingError as exc:
            error = exc
        except Exception as exc:  # a tokenizer bug must still answer the client
            logger.exception("tokenization failed")
            error = ServerError(f"tokenization failed: {exc}")
        finally:
            self._budget.release(text_bytes)
        if error is None:
            try:
                self._budget.reserve(result_bytes)
            except BertServingError as exc:
                error = exc
        if error is not None:
            self._downstream.release(count)
            return error
        request = Request(features, reply, client, received_at=received, tokenized_at=time.perf_counter(),
                          reserved_bytes=result_bytes, outputs=outputs)
        self._stats.tokenized(request.tokenized_at - received, features.num_tokens)
        if not self._downstream.accept(request, ticket):
            self._downstream.release(count)
        return None

    def _refuse(self, reply: ReplyFn, error: BertServingError) -> None:
        self._stats.error(error.code)
        try:
            reply(Outcome(error=error))
        except Exception:
            logger.exception("replying with an error failed")

    def close(self) -> None:
        """Stop taking requests; those already handed over are still tokenized and queued."""
        self._closed = True
        self._pool.shutdown()


class _Work(NamedTuple):
    """An admitted request on its way to the batcher."""

    ticket: Ticket
    texts: list
    is_tokenized: bool
    reply: ReplyFn
    client: str
    received: float
    count: int
    text_bytes: int
    pairs: bool
    prompt: str | None
    outputs: int


class _Threads:
    """A few daemon threads running the calls handed to them, in order. Unlike a
    ``ThreadPoolExecutor``, which refuses work once the interpreter begins to exit, they keep
    working after the main thread has returned: a script that starts a server and ends (as
    1.10.0's README does) leaves it serving."""

    def __init__(self, count: int, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable, tuple] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable, *args) -> None:
        self._calls.put((fn, args))

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, args = call
            try:
                fn(*args)
            except Exception:  # the calls answer their own errors; this is a last resort
                logger.exception("%s failed", getattr(fn, "__name__", fn))

    def shutdown(self) -> None:
        """Run what was handed over, then stop the threads."""
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join()


def _is_small(texts: object) -> bool:
    """Few, short texts (or token lists): quicker to tokenize than to hand to another thread."""
    if not isinstance(texts, list) or len(texts) > 16:
        return False
    size = 0
    for text in texts:
        parts = text if isinstance(text, list) else (text,)  # token lists, or (query, document) pairs
        size += sum(len(part) if isinstance(part, str) else 1 for part in parts)
        if size > _INLINE_CHARS:
            return False
    return True
