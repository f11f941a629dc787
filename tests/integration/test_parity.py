"""The rest of 1.10.0's Python API: its README's server snippet run unchanged (``BertServer`` as
a thread, ``BertServer.shutdown(port=...)``), ``bert_serving.server.__version__`` and the
``helper`` names its users imported; and the routes an embedder refuses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import httpx
import numpy as np
import zmq

from bert_serving.client import BertClient
from bert_serving.errors import UnsupportedTaskError

from ..conftest import TINY_BERT
from .conftest import free_ports, running_server


def test_the_readme_snippet_runs_unchanged() -> None:
    """1.10.0's README, "Using bert-as-service to serve HTTP requests"/"start the server in Python":
    a script that starts a server keeps serving until ``BertServer.shutdown(port=...)``."""
    port, port_out = free_ports(2)
    script = textwrap.dedent(f"""
        from bert_serving.server.helper import get_args_parser
        from bert_serving.server import BertServer
        args = get_args_parser().parse_args(['-model_dir', {str(TINY_BERT / 'google')!r},
                                             '-port', '{port}',
                                             '-port_out', '{port_out}',
                                             '-max_seq_len', 'NONE',
                                             '-mask_cls_sep',
                                             '-cpu', '-bind', '127.0.0.1'])
        server = BertServer(args)
        server.start()
        print("started", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        # by now the script's main thread has returned: the server keeps serving, as 1.10.0's did
        with BertClient(port=port, port_out=port_out, connect_timeout=60_000, check_length=False) as bc:
            assert bc.encode(["First do it"]).shape == (1, 32)
        from bert_serving.server import BertServer

        BertServer.shutdown(port=port)  # as the README writes it
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_bert_server_is_the_originals_thread_object() -> None:
    from bert_serving.server import BertServer, get_shutdown_parser

    with running_server("-max_seq_len", "16") as server:
        assert isinstance(server, threading.Thread) and isinstance(server, BertServer)
        assert server.is_alive() and server.is_ready.is_set()
        assert server.join(0.1) is False  # still serving
        args = get_shutdown_parser().parse_args(["-port", str(server.config.port), "-timeout", "30000"])
        BertServer.shutdown(args)  # 1.10.0's own signature
        assert server.join(30)
        assert not server.is_alive()


def test_version_and_helper_names() -> None:
    import bert_serving
    import bert_serving.server
    from bert_serving import protocol
    from bert_serving.server import helper

    assert bert_serving.server.__version__ == protocol.PROTOCOL_VERSION == "1.10.0"
    assert bert_serving.__version__ != "1.10.0"  # this release's own
    for name in ("get_args_parser", "get_run_args", "get_benchmark_parser", "get_shutdown_parser", "set_logger",
                 "send_ndarray", "check_max_seq_len", "auto_bind", "TimeContext"):
        assert name in helper.__all__ and callable(getattr(helper, name)), name
    assert helper.check_max_seq_len("NONE") is None and helper.check_max_seq_len("32") == 32
    logger = helper.set_logger("TEST")
    assert logger.name == "TEST" and len(logger.handlers) == 1
    with zmq.Context() as ctx, ctx.socket(zmq.PULL) as pull, ctx.socket(zmq.PUSH) as push:
        endpoint = helper.auto_bind(pull)
        push.connect(endpoint)
        helper.send_ndarray(push, b"client", np.arange(3, dtype=np.float32), b"7")
        dest, meta, data, req_id = pull.recv_multipart()
        assert (dest, json.loads(meta), req_id) == (b"client", {"dtype": "float32", "shape": [3]}, b"7")
        assert np.frombuffer(data, np.float32).tolist() == [0, 1, 2]
    done = subprocess.run([sys.executable, "-c", "from bert_serving.server.helper import get_run_args; "
                           "print(get_run_args().num_worker)", "-model_dir", "/m", "-num_worker", "3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "3"
    assert "num_worker = 3" in done.stdout


def test_an_embedder_refuses_predict_and_rerank_saying_how_to_start_one() -> None:
    port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(port)) as server:
        base = f"http://127.0.0.1:{port}"
        for path, body, message in (("/predict", {"inputs": "x"}, lambda b: b["error"]),
                                    ("/rerank", {"query": "q", "texts": ["d"]}, lambda b: b["error"]),
                                    ("/v1/rerank", {"query": "q", "documents": ["d"]}, lambda b: b["message"])):
            answer = httpx.post(base + path, json=body)
            assert answer.status_code == 404
            assert "this server embeds" in message(answer.json()) and "bert-serving-start" in message(answer.json())
        with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
            assert bc.labels is None and bc.server_config["task"] == "embed"
            for call in (lambda: bc.predict(["x"]), lambda: bc.rerank("q", ["d"])):
                try:
                    call()
                except UnsupportedTaskError as exc:
                    assert "embeds" in str(exc)
                else:
                    raise AssertionError("an embedder answered a head's request")
            assert bc.encode(["still serving"]).shape == (1, 32)
