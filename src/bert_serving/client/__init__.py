"""The client: `BertClient` and `ConcurrentBertClient`, the 1.10.0 API with its pains fixed.

    from bert_serving.client import BertClient
    vectors = BertClient().encode(["First do it", "then do it right"])

Needs only numpy and pyzmq. Beyond 1.10.0:
- the constructor gives up with `ServerTimeoutError` after ``connect_timeout`` ms instead of
  waiting forever for a server that is not there;
- a request the server cannot serve raises the server's error (`bert_serving.errors`);
- big lists are sent as several requests of ``chunk_size`` texts, pipelined, results in
  order; ``show_progress=True`` draws a progress bar (needs tqdm);
- one client may be shared between threads (calls are serialised); `ConcurrentBertClient`
  runs them in parallel;
- a server that serves a fine-tuned head answers `BertClient.predict` (scores per label) and,
  for a cross-encoder, `BertClient.rerank` (documents by relevance, as `RerankResult`).
"""

from .bert_client import BertClient, RerankResult, Response, __version__
from .concurrent import ConcurrentBertClient
from .terminate import terminate_server

__all__ = ["BertClient", "ConcurrentBertClient", "RerankResult", "Response", "__version__", "terminate_server"]
