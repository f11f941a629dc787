"""Command lines: ``bert-serving-start``, ``bert-serving-terminate``, ``bert-serving-benchmark``.

Every flag of bert-as-service 1.10.0 is accepted, in its spelling (``-model_dir=/x``,
``-num_worker 4``) and with two dashes (``--model_dir /x``). This is the only module that
reads argv or configures logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from .. import __version__, protocol
from ..errors import BertServingError, ConfigurationError
from ..model.settings import AUTO, parse_max_seq_len
from ..model.strategies import PoolingStrategy

API_KEY_ENV = "BERT_SERVING_API_KEY"
TERMINATE_TOKEN_ENV = "BERT_SERVING_TERMINATE_TOKEN"

__all__ = ["benchmark", "get_args_parser", "get_benchmark_parser", "get_shutdown_parser", "main", "terminate"]


def _flag(group, name: str, *aliases: str, **kwargs) -> None:
    names = [name, *aliases]
    group.add_argument(*(f"-{n}" for n in names), *(f"--{n}" for n in names), **kwargs)


def max_seq_len(value: str) -> int | str | None:
    """An int > 3; NONE (any case) for a length chosen per request; auto for the model's default."""
    try:
        number = parse_max_seq_len(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither an integer nor NONE") from None
    if not isinstance(number, int):
        return number
    if number <= 3:
        raise argparse.ArgumentTypeError(f"{number} is too small: it must be > 3 (room for [CLS], [SEP], [SEP])")
    return number


def pooling_strategy(value: str) -> PoolingStrategy:
    try:
        return PoolingStrategy.from_string(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bert-serving-start",
        description="Start a BERT sentence-encoding server (ZeroMQ, optionally HTTP).",
    )
    paths = parser.add_argument_group("File Paths", "the model to serve")
    _flag(paths, "model_dir", help="a Google BERT folder (bert_config.json, vocab.txt, bert_model.ckpt), a Hugging "
          "Face or sentence-transformers folder; default: the installed all-MiniLM-L6-v2")
    _flag(paths, "extra_model", dest="extra_models", action="append", default=None, metavar="NAME=DIR[,key=value...]",
          help="serve another model beside -model_dir's (repeatable), with its own replicas, picked by a request's "
               "model field; keys: max_seq_len, dtype, pooling_strategy, pooling_layer, normalize, "
               "default_prompt_name, num_labels, num_worker, device_map (0:1), max_batch_tokens, max_queued_texts, "
               "max_queued_bytes (docs/configuration.md)")
    _flag(paths, "tuned_model_dir", help="folder of a fine-tuned checkpoint whose weights override -model_dir's")
    _flag(paths, "ckpt_name", default="bert_model.ckpt", help="checkpoint prefix, e.g. model.ckpt-343")
    _flag(paths, "config_name", default="bert_config.json", help="BERT config file name in -model_dir")
    _flag(paths, "graph_tmp_dir", help="accepted for compatibility; unused (no TensorFlow graph)")
    _flag(paths, "trust_remote_code", action="store_true", default=False,
          help="run the model's own Python code when its config.json asks for it (auto_map); off by default")

    bert = parser.add_argument_group("BERT Parameters", "tokenization and pooling")
    _flag(bert, "max_seq_len", type=max_seq_len, default=AUTO,
          help="tokens per sequence incl. [CLS]/[SEP], longer ones are cut on the right; NONE: as long as the "
               "longest in the request. Default: 25, or the sentence-transformers model's max_seq_length")
    _flag(bert, "cased_tokenization", dest="do_lower_case", action="store_false", default=None,
          help="do not lower-case or strip accents (cased and multilingual-cased models)")
    _flag(bert, "pooling_layer", type=int, nargs="+", default=None,
          help="layer(s) to pool, -1 the last; several are concatenated in the order given. Default: -2, or -1 "
               "for sentence-transformers models")
    _flag(bert, "pooling_strategy", type=pooling_strategy, default=None,
          metavar="{" + ",".join(PoolingStrategy.__members__) + "}",
          help="default: REDUCE_MEAN, or the sentence-transformers model's pooling; a fine-tuned classifier or "
               "cross-encoder folder answers its head's scores. CLASSIFICATION: softmax over a run_classifier.py "
               "head (-num_labels outputs); REGRESSION: sigmoid of its one output; SPLADE: sparse vectors from a "
               "masked-LM head (a SparseEncoder folder chooses it itself)")
    _flag(bert, "num_labels", type=int, default=None,
          help="outputs of the CLASSIFICATION head (default 2); a Hugging Face classifier's come from its config")
    _flag(bert, "mask_cls_sep", action="store_true", default=False, help="leave [CLS] and [SEP] out of pooling")
    _flag(bert, "no_special_token", action="store_true", default=False,
          help="pre-tokenized single sequences go in without [CLS]/[SEP]")
    _flag(bert, "show_tokens_to_client", action="store_true", default=False, help="send the word pieces back too")
    _flag(bert, "no_position_embeddings", action="store_true", default=False, help="do not add position embeddings")
    _flag(bert, "fixed_embed_length", action="store_true", default=False,
          help="with -max_seq_len NONE and NONE pooling, pad T to max_position_embeddings")
    normalize = bert.add_mutually_exclusive_group()
    _flag(normalize, "normalize", dest="normalize", action="store_const", const=True, default=None,
          help="L2-normalize sentence vectors (default: as the model says; sentence-transformers' Normalize)")
    _flag(normalize, "no_normalize", dest="normalize", action="store_const", const=False, help="do not L2-normalize")
    _flag(bert, "default_prompt_name", default=None,
          help="the model's prompt put before texts whose request names none (config_sentence_transformers.json "
               "prompts; default: the model's default_prompt_name)")

    serving = parser.add_argument_group("Serving Configs", "sockets, workers, devices, batching")
    _flag(serving, "bind", default="0.0.0.0", help="interface the ports listen on (127.0.0.1: this host only)")
    _flag(serving, "port", "port_in", "port_data", dest="port", type=int, default=5555, help="port requests come in on")
    _flag(serving, "port_out", "port_result", dest="port_out", type=int, default=5556, help="port results go out on")
    _flag(serving, "http_port", type=int, default=None, help="also serve HTTP on this port")
    _flag(serving, "http_max_connect", type=int, default=1024,
          help="most open HTTP connections; beyond it a request is answered 503 at once and its connection closed")
    _flag(serving, "http_token_ids", action="store_true", default=False,
          help="the OpenAI route also takes token ids (ids of the served model's own vocabulary); without it, "
               "token arrays get a 400 (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))")
    _flag(serving, "cors", default="*", help="Access-Control-Allow-Origin for HTTP")
    _flag(serving, "api_key", default=None,
          help="require 'Authorization: Bearer KEY' on the HTTP inference routes (or set BERT_SERVING_API_KEY)")
    _flag(serving, "terminate_token", default=None,
          help="accept TERMINATION from other hosts when it carries this token (or BERT_SERVING_TERMINATE_TOKEN)")
    _flag(serving, "zmq_secret_key", default=None,
          help="CurveZMQ: encrypt and authenticate the ZeroMQ ports with this secret certificate file")
    _flag(serving, "zmq_authorized_keys", default=None,
          help="CurveZMQ: only clients whose public certificates are in this folder may connect")
    _flag(serving, "max_request_texts", type=int, default=100_000, help="most texts in one request")
    _flag(serving, "max_request_bytes", type=int, default=64 * 1024 * 1024, help="largest request body / payload")
    _flag(serving, "max_queued_texts", type=int, default=200_000,
          help="backlog of texts beyond which new requests are refused as overloaded (HTTP 429)")
    _flag(serving, "max_queued_bytes", type=int, default=2 * 1024**3,
          help="bytes of texts and results held for accepted requests beyond which new requests are refused as "
               "overloaded (HTTP 429); also bounds the HTTP request bodies being read")
    _flag(serving, "max_result_bytes", type=int, default=512 * 1024**2,
          help="largest answer one request may get (e.g. N x T x D floats with NONE pooling); larger: "
               "payload_too_large (HTTP 413)")
    _flag(serving, "drain_timeout", type=float, default=30.0,
          help="seconds a shutdown waits for accepted requests before answering them with an error")
    _flag(serving, "num_worker", type=int, default=1, help="model replicas, each in its own process")
    _flag(serving, "num_intake", type=int, default=None,
          help="intake processes behind the ZeroMQ ports: each parses, admits, tokenizes and answers requests; "
               "default: half the cores (1 to 8)")
    _flag(serving, "num_http", type=int, default=None,
          help="HTTP processes sharing -http_port; default: half the cores (1 to 8)")
    _flag(serving, "worker_threads", type=int, default=0,
          help="torch threads per CPU worker; default: the cores divided among the workers")
    _flag(serving, "max_batch_size", type=int, default=256, help="most sequences in one forward pass")
    _flag(serving, "max_batch_tokens", type=int, default=0,
          help="most tokens in one forward pass; 0: 16384 on GPU; on CPU 1024 per worker thread for MiniLM-sized "
               "and larger models (4096 with bfloat16), more for narrower ones")
    _flag(serving, "priority_batch_size", type=int, default=16,
          help="requests of at most this many texts skip ahead of bulk work")
    _flag(serving, "cpu", action="store_true", default=False, help="run on CPU even if a GPU is present")
    _flag(serving, "xla", action="store_true", default=False, help="accepted for compatibility; no effect")
    _flag(serving, "fp16", action="store_true", default=False, help="half precision on GPU; float16 vectors")
    _flag(serving, "dtype", choices=["float32", "bfloat16", "float16"], default="float32",
          help="what the model computes in; bfloat16 is ~3x faster on CPUs with AMX, vectors within cosine "
               "0.9998 of float32 (default: float32, exact)")
    _flag(serving, "gpu_memory_fraction", type=float, default=0.5, help="share of GPU memory per worker")
    _flag(serving, "device_map", type=int, nargs="+", default=[], help="GPU ids for the workers, cycled")
    _flag(serving, "prefetch_size", type=int, default=2,
          help="batches in flight per worker: while the model runs one, the next waits at the worker (1: none "
               "waits; the original's default was 10)")
    _flag(serving, "idle_spin_ms", type=float, default=2.0,
          help="after a batch, a local worker stays awake this long for the next one before it sleeps: a "
               "sequential client's round trip is ~0.5 ms shorter; costs up to this much CPU per batch that no "
               "other follows (0: sleep at once)")
    _flag(serving, "batch_timeout_s", type=float, default=60.0,
          help="seconds a worker may take for one batch before it is taken for hung, killed and restarted, and "
               "its batch retried")

    ray = parser.add_argument_group("Ray Cluster", "model replicas as Ray actors over a cluster's nodes (docs/ray.md; "
                                    "needs pip install 'bert-serving[ray]')")
    _flag(ray, "ray_address", default=None, metavar="{auto,HOST:PORT,local}",
          help="run the replicas on this Ray cluster: auto (the one this machine joined with `ray start`), the "
               "head node's HOST:PORT, or local (start Ray in this process)")
    _flag(ray, "num_replicas", type=int, default=None, help="model replicas on the cluster; default: -num_worker")
    _flag(ray, "ray_num_cpus", type=float, default=1.0, help="CPUs reserved per replica (also its torch threads)")
    _flag(ray, "ray_num_gpus", type=float, default=0.0, help="GPUs per replica, fractions allowed")

    _flag(parser, "verbose", action="store_true", default=False, help="debug logging")
    _flag(parser, "version", action="version",
          version=f"%(prog)s {__version__} (bert-as-service protocol {protocol.PROTOCOL_VERSION})")
    return parser


def get_shutdown_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert-serving-terminate", description="Shut down a running server.")
    _flag(parser, "ip", default="localhost", help="host of the server")
    _flag(parser, "port", "port_in", "port_data", dest="port", type=int, required=True, help="its -port")
    _flag(parser, "port_out", "port_result", dest="port_out", type=int, default=None,
          help="its -port_out: then a refusal is reported at once, and the wait fits the server's -drain_timeout")
    _flag(parser, "timeout", type=int, default=None,
          help="milliseconds to wait for the server to finish its accepted requests and exit; default: as long "
               "as its drain can last (-drain_timeout, 30 s unless -port_out tells, plus 15 s)")
    _flag(parser, "token", default=None, help="the server's -terminate_token, to stop it from another host "
                                             "(or BERT_SERVING_TERMINATE_TOKEN)")
    return parser


def get_benchmark_parser() -> argparse.ArgumentParser:
    from .benchmark import add_benchmark_arguments

    parser = get_args_parser()
    parser.prog = "bert-serving-benchmark"
    parser.description = "Benchmark a BERT server locally, as bert-as-service 1.10.0 did."
    add_benchmark_arguments(parser)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> None:
    """``bert-serving-start``"""
    from .processes.child import set_title
    from .replicas.runtime import freeze_heap
    from .service import BertServer

    args = get_args_parser().parse_args(argv)
    if args.api_key is None:
        args.api_key = os.environ.get(API_KEY_ENV) or None
    if args.terminate_token is None:
        args.terminate_token = os.environ.get(TERMINATE_TOKEN_ENV) or None
    _setup_logging(args.verbose)
    set_title("coordinator")
    try:
        server = BertServer(args)
        server.start()
    except ConfigurationError as exc:
        print(f"bert-serving-start: error: {exc}", file=sys.stderr)
        sys.exit(2)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop())
    frozen = False
    while not server.join(0.5):  # a timed wait, so the signal handlers get to run
        if not frozen and server.is_ready.is_set():  # loaded and started: what lives now lives as long as we do
            freeze_heap()
            frozen = True
    sys.exit(1 if server.startup_error or server.failure else 0)


def terminate(argv: list[str] | None = None) -> None:
    """``bert-serving-terminate -port N``"""
    from ..client import terminate_server

    args = get_shutdown_parser().parse_args(argv)
    token = args.token or os.environ.get(TERMINATE_TOKEN_ENV) or None
    try:
        terminate_server(args.ip, args.port, timeout=args.timeout, token=token, port_out=args.port_out)
    except BertServingError as exc:
        print(f"bert-serving-terminate: error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"shutdown signal sent to {args.ip}:{args.port}")


def benchmark(argv: list[str] | None = None) -> None:
    """``bert-serving-benchmark``"""
    from .benchmark import run_benchmark

    args = get_benchmark_parser().parse_args(argv)
    _setup_logging(args.verbose)
    run_benchmark(args)
