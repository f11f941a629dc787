"""`ConcurrentBertClient`: a pool of `BertClient` for many threads at once."""

from __future__ import annotations

from contextlib import contextmanager
from queue import Empty, Queue

from .bert_client import BertClient

__all__ = ["ConcurrentBertClient"]


class ConcurrentBertClient:
    """A pool of `BertClient` for many threads at once. A call when every client is busy raises
    `RuntimeError` at once, as 1.10.0 did: size the pool (``max_concurrency``) to the threads."""

    def __init__(self, max_concurrency: int = 10, **kwargs) -> None:
        self.max_concurrency = max_concurrency
        self._clients = [BertClient(**kwargs) for _ in range(max_concurrency)]
        self._free: Queue[BertClient] = Queue()
        for client in self._clients:
            self._free.put(client)

    @contextmanager
    def _borrow(self):
        try:
            client = self._free.get_nowait()
        except Empty:
            raise RuntimeError(f'Too many concurrent connections! Try to increase the value of "max_concurrency", '
                               f"currently = {self.max_concurrency}") from None
        try:
            yield client
        finally:
            self._free.put(client)

    def encode(self, *args, **kwargs):
        with self._borrow() as client:
            return client.encode(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with self._borrow() as client:
            return client.predict(*args, **kwargs)

    def rerank(self, *args, **kwargs):
        with self._borrow() as client:
            return client.rerank(*args, **kwargs)

    def encode_sparse(self, *args, **kwargs):
        with self._borrow() as client:
            return client.encode_sparse(*args, **kwargs)

    def encode_colbert(self, *args, **kwargs):
        with self._borrow() as client:
            return client.encode_colbert(*args, **kwargs)

    def encode_outputs(self, *args, **kwargs):
        with self._borrow() as client:
            return client.encode_outputs(*args, **kwargs)

    @property
    def server_config(self) -> dict:
        with self._borrow() as client:
            return client.server_config

    @property
    def server_status(self) -> dict:
        with self._borrow() as client:
            return client.server_status

    @property
    def status(self) -> dict:
        with self._borrow() as client:
            return client.status

    def fetch(self, *args, **kwargs):
        raise NotImplementedError("ConcurrentBertClient has no async API; use BertClient.encode(blocking=False)")

    fetch_all = encode_async = fetch

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def __enter__(self) -> ConcurrentBertClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
