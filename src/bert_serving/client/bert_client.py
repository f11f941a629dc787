"""`BertClient`: one connection to a server (a PUSH socket for requests, a SUB socket for the
answers addressed to this client's identity)."""

from __future__ import annotations

import functools
import threading
import time
import uuid
import warnings
from collections import namedtuple
from contextlib import contextmanager
from functools import wraps

import numpy as np
import zmq

from .. import protocol
from ..errors import ServerTimeoutError
from ..outputs import COLBERT, DENSE, KINDS, SPARSE, Embeddings, Ragged, SparseVectors, colbert_rows
from ..quantization import check_precision
from .curve import secure
from .inputs import check_pairs, check_texts, check_token_lists, within_length

__all__ = ["BertClient", "RerankResult", "Response", "__version__"]

__version__ = protocol.PROTOCOL_VERSION  # the protocol this client speaks, as 1.10.0 reported it
_CONNECT_TIMEOUT_MS = 10_000  # how long the constructor waits for a server by default, without a timeout
_MIN_CONNECT_TIMEOUT_MS = 1_000  # ... and at least, with one

Response = namedtuple("Response", ["id", "embedding", "tokens"])
# one document of `BertClient.rerank`'s answer; ``document`` is None unless asked for (Cohere's names)
RerankResult = namedtuple("RerankResult", ["index", "relevance_score", "document"])


def _timeout(method):
    """Apply ``self.timeout`` to the receives inside ``method``; turn silence into an error."""

    @wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except zmq.Again:
            raise ServerTimeoutError(
                f"no response from the server within timeout={self.timeout} ms: is it still running at "
                f"{self.ip}:{self.port}/{self.port_out}? Is the network up? Or is the job too big for that timeout?"
            ) from None

    return wrapper


class BertClient:
    def __init__(
        self,
        ip: str = "localhost",
        port: int = 5555,
        port_out: int = 5556,
        output_fmt: str = "ndarray",
        show_server_config: bool = False,
        identity: bytes | str | None = None,
        check_version: bool = True,
        check_length: bool = True,
        check_token_info: bool = True,
        ignore_all_checks: bool = False,
        timeout: int = -1,
        *,
        connect_timeout: int | None = None,
        chunk_size: int = 1024,
        max_in_flight: int = 16,
        curve_server_key: bytes | str | None = None,
        curve_client_cert: str | None = None,
        model: str | None = None,
    ) -> None:
        """Connect to a server. Unless ``ignore_all_checks``, ask for its configuration first, and
        raise `ServerTimeoutError` if no server answers within ``connect_timeout`` ms (by default
        ``timeout`` when one is set, as 1.10.0 waited, though at least a second; else 10 s, where
        1.10.0 waited forever).

        ``timeout`` (ms, -1 = none) bounds each wait for an answer. ``chunk_size`` is the most
        texts sent in one request by a blocking `encode`; ``max_in_flight`` the most requests
        it keeps outstanding.

        CurveZMQ, for a server started with ``-zmq_secret_key``: ``curve_server_key`` is the
        server's public key (z85 bytes, or its ``.key`` certificate file); ``curve_client_cert``
        this client's secret certificate file (needed when the server authorizes clients; else
        a throw-away key pair is made).

        ``model``: which model of a server that serves several (``-extra_model``) this client's
        requests go to (each call may name another); None: the server's default model."""
        if output_fmt == "ndarray":
            self.formatter = lambda x: x
        elif output_fmt == "list":
            self.formatter = lambda x: x.tolist()
        else:
            raise ValueError('output_fmt must be "ndarray" or "list"')
        if isinstance(identity, str):
            identity = identity.encode("ascii")
        self.identity = identity or str(uuid.uuid4()).encode("ascii")
        self.ip, self.port, self.port_out = ip, port, port_out
        self.output_fmt = output_fmt
        self.model = model
        self.timeout = timeout
        self.chunk_size = max(1, chunk_size)
        self.max_in_flight = max(1, max_in_flight)
        self.context = zmq.Context()
        self.sender = self.context.socket(zmq.PUSH)
        self.receiver = self.context.socket(zmq.SUB)
        for sock in (self.sender, self.receiver):
            sock.linger = 0
            protocol.keep_alive(sock)
            if curve_server_key is not None:
                secure(sock, curve_server_key, curve_client_cert)
        self.sender.connect(f"tcp://{ip}:{port}")
        self.receiver.setsockopt(zmq.SUBSCRIBE, self.identity)
        self.receiver.connect(f"tcp://{ip}:{port_out}")
        self.request_id = 0
        self.pending_request: set[int] = set()
        self.pending_response: dict[int, protocol.Reply] = {}
        self._abandoned: set[int] = set()
        self._send_lock = threading.RLock()
        self._recv_lock = threading.RLock()
        self.length_limit: int | None = 0
        self.token_info_available = False
        self.server_info: dict = {}

        if not ignore_all_checks and (check_version or show_server_config or check_length or check_token_info):
            if connect_timeout is None:  # as long as a request may wait, though not under a second
                connect_timeout = max(timeout, _MIN_CONNECT_TIMEOUT_MS) if timeout > 0 else _CONNECT_TIMEOUT_MS
            config = self._first_contact(connect_timeout)
            self.server_info = config
            if check_version and config.get("server_version") != __version__:
                raise AttributeError(
                    f"version mismatch! the server speaks protocol {config.get('server_version')}, this client "
                    f"{__version__}; disable the check with BertClient(check_version=False)"
                )
            if check_length:
                limit = config.get("max_seq_len")
                self.length_limit = int(limit) if limit is not None else None
            if check_token_info:
                self.token_info_available = bool(config.get("show_tokens_to_client"))
            if show_server_config:
                self._print_dict(config, "server config:")

    def _first_contact(self, connect_timeout: int) -> dict:
        wait = connect_timeout
        try:
            with self._receiving(wait):
                return self._request_json(protocol.SHOW_CONFIG)
        except zmq.Again:
            self.close()
            raise ServerTimeoutError(
                f"no bert-serving server answered at {self.ip}:{self.port} (results on {self.port_out}) within "
                f"{wait} ms. Is bert-serving-start running, and are ip, port and port_out right?"
            ) from None

    # plumbing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close both sockets; the client is unusable afterwards."""
        if not self.context.closed:
            self.sender.close()
            self.receiver.close()
            self.context.term()

    def __enter__(self) -> BertClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _send(self, payload: bytes, msg_len: int = 0) -> int:
        with self._send_lock:
            self.request_id += 1
            req_id = self.request_id
            self.pending_request.add(req_id)
            self.sender.send_multipart(protocol.request_frames(self.identity, payload, req_id, msg_len))
            return req_id

    @contextmanager
    def _receiving(self, timeout: int):
        with self._recv_lock:
            self.receiver.setsockopt(zmq.RCVTIMEO, timeout)
            try:
                yield
            finally:
                self.receiver.setsockopt(zmq.RCVTIMEO, -1)

    def _recv(self, wait_for: int | None = None) -> protocol.Reply:
        """The reply to ``wait_for`` (or the next reply of any pending request); raises
        `zmq.Again` on timeout, after which ``wait_for``'s late reply is discarded."""
        try:
            while True:
                if wait_for in self.pending_response:
                    return self.pending_response.pop(wait_for)
                if wait_for is None and self.pending_response:  # parked while another call waited
                    return self.pending_response.pop(min(self.pending_response))
                reply = protocol.parse_reply(self.receiver.recv_multipart())
                if reply.req_id in self._abandoned:
                    self._abandoned.discard(reply.req_id)
                    continue
                if wait_for is None or reply.req_id == wait_for:
                    return reply
                self.pending_response[reply.req_id] = reply
        except zmq.Again:
            if wait_for is not None:
                self._abandoned.add(wait_for)
            raise
        finally:
            if wait_for is not None:
                self.pending_request.discard(wait_for)

    def _request_json(self, command: bytes) -> dict:
        reply = self._recv(self._send(command))
        if reply.error is not None:
            raise reply.error
        return reply.config

    def _response(self, reply: protocol.Reply) -> Response:
        self.pending_request.discard(reply.req_id)
        if reply.error is not None:
            raise reply.error
        return Response(reply.req_id, self.formatter(reply.embedding), reply.tokens)

    # the 1.10.0 API ----------------------------------------------------------------------------

    @property
    def status(self) -> dict:
        """This client's own state (no request is sent)."""
        return {
            "identity": self.identity,
            "num_request": self.request_id,
            "num_pending_request": len(self.pending_request),
            "pending_request": self.pending_request,
            "output_fmt": self.output_fmt,
            "port": self.port,
            "port_out": self.port_out,
            "server_ip": self.ip,
            "client_version": __version__,
            "timeout": self.timeout,
        }

    @property
    @_timeout
    def server_config(self) -> dict:
        """The server's configuration (SHOW_CONFIG)."""
        with self._receiving(self.timeout):
            return self._request_json(protocol.SHOW_CONFIG)

    @property
    @_timeout
    def server_status(self) -> dict:
        """The server's configuration plus its ``statistic`` (SHOW_STATUS)."""
        with self._receiving(self.timeout):
            return self._request_json(protocol.SHOW_STATUS)

    @_timeout
    def encode(self, texts, blocking: bool = True, is_tokenized: bool = False, show_tokens: bool = False,
               show_progress: bool = False, *, prompt_name: str | None = None, prompt: str | None = None,
               precision: str | None = None, model: str | None = None):
        """Vectors for ``texts`` (a list of strings, or of token lists with ``is_tokenized``).

        Blocking calls return an ndarray (or list), or ``(vectors, tokens)`` with ``show_tokens``
        on a ``-show_tokens_to_client`` server. ``blocking=False`` sends one request and returns
        None: collect it with `fetch` / `fetch_all`.

        ``prompt_name`` puts one of the model's prompts before each text (e5's ``"query"``, an
        instruction), ``prompt`` a text of your own (``""``: none); without either, the model's
        default prompt applies, if it has one.

        ``precision`` asks the server for quantized vectors (`bert_serving.quantization`), 4 to 32
        times smaller on the wire and in a vector database: ``"int8"`` / ``"uint8"`` ``[N, D]``,
        ``"binary"`` (int8) / ``"ubinary"`` (uint8) packed sign bits ``[N, ceil(D / 8)]``;
        ``"float"`` or None: the vectors as the server makes them.

        ``model``: another served model than the client's (`BertClient`'s ``model``)."""
        if precision is not None:
            check_precision(precision)
        payload = functools.partial(protocol.texts_payload, prompt_name=prompt_name, prompt=prompt,
                                    precision=None if precision == "float" else precision, model=model or self.model)
        if is_tokenized:
            self._check_input_lst_lst_str(texts)
        else:
            self._check_input_lst_str(texts)
        self._warn_length(texts, is_tokenized)
        if not blocking:
            self._send(payload(texts), len(texts))
            return None
        vectors, tokens = self._encode_chunks(texts, show_progress, payload)
        if show_tokens:
            if self.token_info_available:
                return vectors, tokens
            warnings.warn('"show_tokens=True", but the server does not send tokens: start it with '
                          '"bert-serving-start -show_tokens_to_client"', stacklevel=3)  # the user's call
        return vectors

    def _encode_chunks(self, texts: list, show_progress: bool, payload=protocol.texts_payload):
        replies = self._ask(texts, show_progress, payload)
        arrays = [r.embedding for r in replies]
        if len(arrays) == 1:
            array = arrays[0]
        elif arrays[0].ndim == 3:  # per-token output: chunks may differ in T; pad to the widest
            width = max(a.shape[1] for a in arrays)
            array = np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0))) for a in arrays])
        else:
            array = np.concatenate(arrays)
        tokens = [t for r in replies for t in (r.tokens or [])] or ""
        return self.formatter(array), tokens

    def _ask(self, texts: list, show_progress: bool, payload) -> list[protocol.Reply]:
        """Each chunk of ``texts`` as a request (``payload(chunk)``), up to ``max_in_flight`` at
        once; their replies in order, or the first error raised."""
        chunks = [texts[i : i + self.chunk_size] for i in range(0, len(texts), self.chunk_size)]
        progress = _progress_bar(len(texts)) if show_progress else None
        results: dict[int, protocol.Reply] = {}
        order: list[int] = []
        try:
            with self._receiving(self.timeout):
                for chunk in chunks:
                    while len(order) - len(results) >= self.max_in_flight:
                        self._collect(order, results, progress)
                    order.append(self._send(payload(chunk), len(chunk)))
                while len(results) < len(order):
                    self._collect(order, results, progress)
        except BaseException:  # a timeout (or an interrupt): no chunk's late answer may linger
            self._abandon(i for i in order if i not in results)
            raise
        finally:
            if progress is not None:
                progress.close()
        replies = [results[i] for i in order]
        for reply in replies:
            if reply.error is not None:
                raise reply.error
        return replies

    # sparse and multi-vector outputs (SPLADE, BGE-M3) -----------------------------------------

    @_timeout
    def encode_sparse(self, texts: list[str], *, prompt_name: str | None = None, prompt: str | None = None,
                      show_progress: bool = False, model: str | None = None) -> SparseVectors:
        """Sparse vectors of ``texts`` from a server that has them (a SPLADE model, BGE-M3):
        `SparseVectors`, per text its vocabulary ids and weights (``to_scipy()`` for a
        ``scipy.sparse.csr_matrix``, ``to_dicts()``). Else raises `UnsupportedTaskError`."""
        return self.encode_outputs(texts, (SPARSE,), prompt_name=prompt_name, prompt=prompt,
                                   show_progress=show_progress, model=model).sparse

    @_timeout
    def encode_colbert(self, texts: list[str], *, prompt_name: str | None = None, prompt: str | None = None,
                       show_progress: bool = False, model: str | None = None) -> list[np.ndarray]:
        """ColBERT multi-vectors of ``texts`` from a server that has them (BGE-M3): per text a
        ``[tokens, dim]`` array, a unit vector per token but [CLS]. Else raises `UnsupportedTaskError`."""
        return self.encode_outputs(texts, (COLBERT,), prompt_name=prompt_name, prompt=prompt,
                                   show_progress=show_progress, model=model).colbert

    @_timeout
    def encode_outputs(self, texts: list[str], outputs=(DENSE, SPARSE, COLBERT), *, prompt_name: str | None = None,
                       prompt: str | None = None, show_progress: bool = False,
                       model: str | None = None) -> Embeddings:
        """Several outputs of ``texts`` (``dense``, ``sparse``, ``colbert``: those the served model
        has), all from one forward pass on the server: `Embeddings` with each asked for."""
        outputs = list(outputs)
        if not outputs or any(o not in KINDS for o in outputs):
            raise ValueError(f"outputs must name one or more of {', '.join(KINDS)}, got {outputs!r}")
        self._check_input_lst_str(texts)
        self._warn_length(texts, False)
        replies = self._ask(texts, show_progress, functools.partial(
            protocol.texts_payload, prompt_name=prompt_name, prompt=prompt, outputs=outputs, model=model or self.model))
        ragged = {kind: Ragged.concat([r.ragged[kind] for r in replies]) for kind in (SPARSE, COLBERT)
                  if kind in outputs}
        return Embeddings(
            dense=np.concatenate([r.embedding for r in replies]) if DENSE in outputs else None,
            sparse=SparseVectors.of(ragged[SPARSE], replies[0].sparse_dim) if SPARSE in ragged else None,
            colbert=colbert_rows(ragged[COLBERT]) if COLBERT in ragged else None,
        )

    # a served head: classifier, regressor, reranker -----------------------------------------

    @property
    def labels(self) -> list[str] | None:
        """The names of a served classifier's outputs, the columns of `predict` (None: it embeds)."""
        if "labels" not in self.server_info:
            self.server_info = self.server_config
        if self.model is not None and self.model != self.server_info.get("default_model"):
            labels = self.server_info.get("models", {}).get(self.model, {}).get("labels")
            return labels or None
        return self.server_info.get("labels")

    @_timeout
    def predict(self, texts: list, *, raw_scores: bool = False, show_progress: bool = False,
                model: str | None = None):
        """A served classifier's scores for ``texts``: ``[N, num_labels]``, columns named by
        `labels` (probabilities, or for a regressor/reranker its score). A text is a string
        (``"A ||| B"`` a pair, as for `encode`) or an explicit pair ``[A, B]``. ``raw_scores``:
        the logits, before the model's activation. A server that embeds raises
        `UnsupportedTaskError`."""
        check_pairs(texts)
        scores, _ = self._encode_chunks([list(t) if isinstance(t, tuple) else t for t in texts], show_progress,
                                        payload=lambda chunk: protocol.predict_payload(chunk, raw_scores,
                                                                                       model or self.model))
        return scores

    @_timeout
    def rerank(self, query: str, documents: list[str], top_n: int | None = None, *, return_documents: bool = False,
               raw_scores: bool = False, model: str | None = None) -> list[RerankResult]:
        """``documents`` by relevance to ``query``, most relevant first (the first ``top_n``), as
        `RerankResult` (``index`` into ``documents``, ``relevance_score``, ``document`` if
        ``return_documents``). Needs a server that reranks (a cross-encoder), else raises
        `UnsupportedTaskError`."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-blank string")
        self._check_input_lst_str(documents)
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise ValueError(f"top_n must be a positive integer or None, got {top_n!r}")
        scores, _ = self._encode_chunks(list(documents), False,
                                        payload=lambda chunk: protocol.rerank_payload(query, chunk, raw_scores,
                                                                                      model or self.model))
        scores = np.asarray(scores, dtype=np.float64).reshape(len(documents))
        order = np.argsort(-scores, kind="stable")[:top_n]
        return [RerankResult(int(i), float(scores[i]), documents[i] if return_documents else None) for i in order]

    def _abandon(self, req_ids) -> None:
        """Forget these requests: their answers, now or later, are dropped."""
        with self._recv_lock:
            for req_id in req_ids:
                self.pending_request.discard(req_id)
                if self.pending_response.pop(req_id, None) is None:
                    self._abandoned.add(req_id)

    def _collect(self, order: list[int], results: dict, progress) -> None:
        outstanding = [i for i in order if i not in results]
        reply = self._recv(outstanding[0])
        results[reply.req_id] = reply
        for req_id in outstanding[1:]:  # replies that arrived meanwhile
            if req_id in self.pending_response:
                results[req_id] = self.pending_response.pop(req_id)
                self.pending_request.discard(req_id)
        if progress is not None:
            progress.n = sum(_rows(r) for r in results.values())
            progress.refresh()

    def fetch(self, delay: float = 0.0):
        """Yield `Response` (id, embedding, tokens) for each pending request, in arrival order."""
        time.sleep(delay)
        while self.pending_request:
            with self._receiving(self.timeout):
                reply = self._recv()
            yield self._response(reply)

    def fetch_all(self, sort: bool = True, concat: bool = False):
        """Collect every pending request's result, sorted by request id; None if none pending."""
        if not self.pending_request:
            return None
        responses = list(self.fetch())
        if sort:
            responses.sort(key=lambda r: r.id)
        embeddings = [r.embedding for r in responses]
        if concat:
            if self.output_fmt == "ndarray":
                return np.concatenate(embeddings, axis=0)
            return [row for e in embeddings for row in e]
        return embeddings

    def encode_async(self, batch_generator, max_num_batch: int | None = None, delay: float = 0.1, **kwargs):
        """Send every batch of ``batch_generator`` without waiting; yield results as `fetch` does."""

        def run() -> None:
            for count, texts in enumerate(batch_generator, start=1):
                self.encode(texts, blocking=False, **kwargs)
                if max_num_batch and count == max_num_batch:
                    break

        threading.Thread(target=run, daemon=True).start()
        return self.fetch(delay)

    # checks (1.10.0's static methods, kept under their names) -------------------------------------

    _check_length = staticmethod(within_length)
    _check_input_lst_str = staticmethod(check_texts)
    _check_input_lst_lst_str = staticmethod(check_token_lists)

    def _warn_length(self, texts, is_tokenized: bool) -> None:
        if self.length_limit is None:
            warnings.warn('the server has no "max_seq_len": it sizes each request by its longest text', stacklevel=4)
        elif self.length_limit and not self._check_length(texts, self.length_limit, is_tokenized):
            warnings.warn(
                f'some texts have more tokens than the server\'s "max_seq_len={self.length_limit}" and will be '
                "truncated; disable this check with BertClient(check_length=False), or start the server with a "
                "larger -max_seq_len",
                stacklevel=4,
            )

    @staticmethod
    def _print_dict(values: dict, title: str | None = None) -> None:
        if title:
            print(title)
        for key, value in values.items():
            print(f"{key:>30}\t=\t{value!s:<30}")


def _rows(reply: protocol.Reply) -> int:
    if reply.ragged:
        return len(next(iter(reply.ragged.values())))
    return len(reply.embedding) if reply.embedding is not None else 0


def _progress_bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        raise ImportError("show_progress=True needs tqdm: pip install tqdm") from None
    return tqdm(total=total, unit="text", desc="encoding")


