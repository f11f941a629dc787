"""On a CUDA device: replicas on GPUs, several per GPU, half precision, packed execution, and a
batch too big for the device's memory. Marked ``gpu``; skipped where torch sees no CUDA device
(``benchmarks/gpu_check.sh`` runs them on a machine that has one)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bert_serving.client import BertClient  # noqa: E402
from bert_serving.model import Encoder, PoolingStrategy  # noqa: E402

from ..conftest import TINY_BERT  # noqa: E402
from ..integration.conftest import Concurrently, running_server  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run benchmarks/gpu_check.sh on one"),
]

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def sentences(expected) -> list[str]:
    return list(expected["sentences"])


@pytest.fixture(scope="module")
def reference(sentences) -> np.ndarray:
    return Encoder.load(str(TINY_BERT / "google"), device="cpu").encode(sentences)


@pytest.fixture(scope="module")
def minilm_shaped(tmp_path_factory) -> Path | None:
    """A random model of all-MiniLM-L6-v2's shape (benchmarks/synthetic.py), if its vocabulary is at hand."""
    sys.path.insert(0, str(BENCHMARKS))
    import synthetic

    if not (synthetic.vocab_dir() / "vocab.txt").exists():
        return None
    return synthetic.build("minilm-shaped", tmp_path_factory.mktemp("minilm-shaped"))


def client(server) -> BertClient:
    return BertClient(port=server.config.port, port_out=server.config.port_out, timeout=120_000)


def test_a_cuda_replica_gives_the_cpu_vectors(sentences, reference) -> None:
    with running_server("-device_map", "0") as server, client(server) as bc:
        assert [r["device"] for r in server.workers.describe()] == ["cuda:0"]
        np.testing.assert_allclose(bc.encode(sentences), reference, atol=1e-4, rtol=0)


def test_several_workers_share_one_gpu(sentences, reference) -> None:
    with running_server("-num_worker", "3", "-device_map", "0") as server:
        assert [r["device"] for r in server.workers.describe()] == ["cuda:0"] * 3

        def work(i: int) -> np.ndarray:
            with client(server) as bc:
                return np.concatenate([bc.encode(sentences) for _ in range(20)])

        results = Concurrently(work, 6).start().join(300)
        statistic = server.sync_stats().statistic()
    for result in results.values():
        np.testing.assert_allclose(result, np.tile(reference, (20, 1)), atol=1e-4, rtol=0)
    assert statistic["num_forward_passes"] >= 3 and statistic["worker_restarts"] == 0


@pytest.mark.parametrize("precision", [("-fp16",), ("-dtype", "float16"), ("-dtype", "bfloat16")])
def test_half_precision_vectors_stay_within_cosine_0_999_of_float32(precision, sentences, reference) -> None:
    with running_server("-device_map", "0", *precision) as server, client(server) as bc:
        vectors = bc.encode(sentences)
    assert vectors.dtype == (np.float16 if precision == ("-fp16",) else np.float32)
    assert cosine(vectors, reference).min() >= 0.999


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_a_minilm_sized_model(dtype, minilm_shaped, sentences) -> None:
    if minilm_shaped is None:
        pytest.skip("no vocabulary for the MiniLM-shaped model (set BERT_SERVING_VOCAB_DIR)")
    exact = Encoder.load(str(minilm_shaped), device="cuda").encode(sentences)
    half = Encoder.load(str(minilm_shaped), device="cuda", dtype=dtype).encode(sentences)
    assert cosine(half, exact).min() >= 0.999


def test_packed_and_padded_execution_agree_on_cuda(sentences, monkeypatch) -> None:
    from bert_serving.model.architectures import bert

    for strategy in (PoolingStrategy.NONE, PoolingStrategy.REDUCE_MEAN_MAX, PoolingStrategy.CLS_POOLED):
        encoder = Encoder.load(str(TINY_BERT / "hf"), device="cuda", pooling_strategy=strategy)
        outputs = []
        for limit in (0.0, float("inf")):  # always packed, always padded
            monkeypatch.setattr(bert, "PADDED_UP_TO", limit)
            outputs.append(encoder.encode(sentences))
        np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5, rtol=0)


def test_a_batch_too_big_for_the_gpu_is_split_until_it_fits_and_the_server_keeps_serving() -> None:
    """100,000 texts in one batch on a worker allowed 1% of the GPU's memory: the batch runs out
    of memory, is split in halves until the parts fit, and every text is answered correctly."""
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "hello", "world", "vector", "service", "test"]
    texts = [" ".join(rng.choice(words, size=60)) for _ in range(100_000)]
    with running_server("-device_map", "0", "-gpu_memory_fraction", "0.01", "-max_batch_size", "100000",
                        "-max_batch_tokens", "100000000", "-max_seq_len", "64") as server, client(server) as bc:
        vectors = bc.encode(texts)
        statistic = server.sync_stats().statistic()
        assert bc.encode(["still serving"]).shape == (1, 32)
    assert vectors.shape == (100_000, 32) and np.isfinite(vectors).all()
    sample = rng.choice(len(texts), 50, replace=False)
    expected = Encoder.load(str(TINY_BERT / "google"), device="cpu", max_seq_len=64).encode([texts[i] for i in sample])
    np.testing.assert_allclose(vectors[sample], expected, atol=1e-4, rtol=0)
    assert statistic["num_forward_passes"] > 1  # one batch as queued: more passes mean it was split
    assert statistic["worker_restarts"] == 0 and statistic["errors"] == {}
