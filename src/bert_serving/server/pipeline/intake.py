"""`Intake`: the one door into the pipeline for both edges (ZeroMQ and HTTP).

It tokenizes big requests on its own threads, so neither the sockets' I/O thread nor the workers
wait for them, and small ones (a few short texts, most requests) at once on the caller's thread,
where that costs less than handing them over; then it queues the request in the batcher. Whatever goes wrong on the way (malformed texts, a
full backlog) is answered through the request's own reply callback: every request accepted
here gets exactly one answer.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from ...errors import BertServingError, NotReadyError, PayloadTooLargeError, ServerError
from ...model.prompts import Prompts
from ...model.tokenization import Tokenizer
from .batcher import Batcher
from .request import Outcome, ReplyFn, Request
from .sink import Sink
from .stats import Stats

__all__ = ["Intake"]

logger = logging.getLogger(__name__)

_INLINE_CHARS = 2048  # requests up to this many characters are tokenized on the caller's thread


class Intake:
    def __init__(
        self,
        tokenizer: Tokenizer,
        batcher: Batcher,
        sink: Sink,
        stats: Stats,
        *,
        keep_tokens: bool = False,
        max_request_texts: int = 1_000_000,
        threads: int = 2,
        prompts: Prompts = Prompts(),
    ) -> None:
        self._tokenizer = tokenizer
        self._prompts = prompts
        self._batcher = batcher
        self._sink = sink
        self._stats = stats
        self._keep_tokens = keep_tokens
        self.max_request_texts = max_request_texts
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize")
        self._closed = False

    def submit(self, texts: object, is_tokenized: bool, reply: ReplyFn, client: str, *, prompt_name: object = None,
               prompt: object = None) -> None:
        """Tokenize (after the prompt asked for, see `Prompts.choose`) and queue ``texts`` in the
        background; its `Outcome` goes to ``reply``."""
        count = len(texts) if isinstance(texts, list) else 0
        self._stats.data_request(client, count)
        if self._closed:
            self._refuse(reply, NotReadyError("the server is shutting down and accepts no new requests"))
            return
        if count > self.max_request_texts:
            self._refuse(reply, PayloadTooLargeError(
                f"{count} texts in one request; this server takes at most {self.max_request_texts} "
                "(-max_request_texts): split the list"
            ))
            return
        try:
            self._batcher.admit(count)  # a full backlog refuses here, before any work is spent
        except BertServingError as exc:
            self._refuse(reply, exc)
            return
        received = time.perf_counter()
        prompts = (prompt_name, prompt)
        if _is_small(texts):
            self._tokenize(texts, is_tokenized, reply, client, received, count, prompts)
        else:
            self._pool.submit(self._tokenize, texts, is_tokenized, reply, client, received, count, prompts)

    def _tokenize(self, texts, is_tokenized: bool, reply: ReplyFn, client: str, received: float, count: int,
                  prompt: tuple[object, object]) -> None:
        try:
            features = self._tokenizer.encode(texts, is_tokenized, keep_tokens=self._keep_tokens,
                                              prompt=self._prompts.choose(*prompt))
        except Exception as exc:
            self._batcher.release(count)
            if not isinstance(exc, BertServingError):  # a tokenizer bug must still answer the client
                logger.exception("tokenization failed")
                exc = ServerError(f"tokenization failed: {exc}")
            self._refuse(reply, exc)
            return
        request = Request(features, reply, client, received_at=received, tokenized_at=time.perf_counter())
        self._stats.tokenized(request.tokenized_at - received, features.num_tokens)
        self._sink.track(request)
        self._batcher.submit(request)

    def _refuse(self, reply: ReplyFn, error: BertServingError) -> None:
        self._stats.error(error.code)
        try:
            reply(Outcome(error=error))
        except Exception:
            logger.exception("replying with an error failed")

    def close(self) -> None:
        """Stop taking requests; those already handed over are still tokenized and queued."""
        self._closed = True
        self._pool.shutdown(wait=True)


def _is_small(texts: object) -> bool:
    """Few, short texts (or token lists): quicker to tokenize than to hand to another thread."""
    if not isinstance(texts, list) or len(texts) > 16:
        return False
    size = 0
    for text in texts:
        size += len(text) if isinstance(text, (str, list)) else 1
        if size > _INLINE_CHARS:
            return False
    return True

