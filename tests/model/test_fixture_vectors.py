"""Vectors of every model layout against the fixture's reference outputs (transformers'
BertModel run on the same weights), for every pooling strategy (sentence-transformers' weighted
and root-length means too) and several layer choices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bert_serving.model import Encoder, PoolingStrategy

LAYOUTS = {
    # name: (model_dir, extra settings, reference arrays)
    "google": ("google", {}, "base"),
    "google-finetuned": ("google", {"tuned_model_dir": "google-finetuned", "ckpt_name": "model.ckpt-343"}, "finetuned"),
    "hf": ("hf", {}, "base"),
    "hf-finetuned": ("hf-finetuned", {}, "finetuned"),
}
LAYERS = [(-1,), (-2,), (-3,), (-1, -2), (0, -1)]


def reference(expected: dict, which: str, strategy: PoolingStrategy, layers: tuple[int, ...], mask_cls_sep: bool):
    """The original server's pooling (bert-as-service graph.py), written out on the reference
    hidden states; attention always saw the plain input mask."""
    states = expected[f"{which}_hidden_states"]  # [embeddings, layer 1, layer 2, layer 3]
    n = states.shape[0] - 1
    hidden = np.concatenate([states[i + n + 1 if i < 0 else i + 1] for i in layers], axis=-1)
    real = expected["input_mask"].astype(bool)
    mask = real.copy()
    if mask_cls_sep:
        for row, tokens in enumerate(expected["tokens"]):
            for col, token in enumerate(tokens):
                if token in ("[CLS]", "[SEP]"):
                    mask[row, col] = False
    m = mask[..., None].astype(np.float32)
    mean = (hidden * m).sum(1) / (m.sum(1) + 1e-10)
    maximum = np.where(mask[..., None], hidden, -np.inf).max(1)
    last = hidden[np.arange(len(hidden)), real.sum(1) - 1]
    w = m * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]  # sentence-transformers' weights
    return {
        PoolingStrategy.NONE: hidden * m,
        PoolingStrategy.REDUCE_MEAN: mean,
        PoolingStrategy.REDUCE_MAX: maximum,
        PoolingStrategy.REDUCE_MEAN_MAX: np.concatenate([mean, maximum], axis=1),
        PoolingStrategy.FIRST_TOKEN: hidden[:, 0],
        PoolingStrategy.LAST_TOKEN: last,
        PoolingStrategy.CLS_POOLED: expected[f"{which}_pooled_output"],
        PoolingStrategy.REDUCE_WEIGHTED_MEAN: (hidden * w).sum(1) / w.sum(1),
        PoolingStrategy.REDUCE_MEAN_SQRT_LEN: (hidden * m).sum(1) / np.sqrt(m.sum(1)),
    }[strategy]


def load(tiny_bert: Path, layout: str, **settings) -> Encoder:
    folder, extra, _ = LAYOUTS[layout]
    extra = {k: (str(tiny_bert / v) if k == "tuned_model_dir" else v) for k, v in extra.items()}
    return Encoder.load(str(tiny_bert / folder), device="cpu", max_seq_len=16, **extra, **settings)


# CLS_POOLED ignores -pooling_layer: one layer choice is enough for it
STRATEGY_LAYERS = [
    (strategy, layers)
    for strategy in PoolingStrategy
    # the heads (CLASSIFICATION, REGRESSION) are tested in test_heads.py, SPLADE in test_sparse.py
    if not strategy.is_head and not strategy.is_sparse
    for layers in (LAYERS[:1] if strategy is PoolingStrategy.CLS_POOLED else LAYERS)
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("strategy, layers", STRATEGY_LAYERS, ids=lambda v: str(v).replace(" ", ""))
@pytest.mark.parametrize("mask_cls_sep", [False, True], ids=["", "mask_cls_sep"])
def test_vectors_match_reference(tiny_bert, expected, layout, strategy, layers, mask_cls_sep) -> None:
    encoder = load(tiny_bert, layout, pooling_strategy=strategy, pooling_layer=layers, mask_cls_sep=mask_cls_sep)
    vectors, tokens = encoder.encode(expected["sentences"], show_tokens=True)
    want = reference(expected, LAYOUTS[layout][2], strategy, layers, mask_cls_sep)
    assert vectors.shape == want.shape
    np.testing.assert_allclose(vectors, want, atol=1e-4, rtol=0)
    assert tokens == expected["tokens"]


def test_default_for_raw_bert_is_second_to_last_layer_mean(tiny_bert, expected) -> None:
    encoder = load(tiny_bert, "google")
    assert encoder.spec.pooling_strategy is PoolingStrategy.REDUCE_MEAN
    assert encoder.spec.pooling_layer == (-2,)
    want = reference(expected, "base", PoolingStrategy.REDUCE_MEAN, (-2,), False)
    np.testing.assert_allclose(encoder.encode(expected["sentences"]), want, atol=1e-4, rtol=0)


def test_layers_past_the_deepest_pooled_one_are_not_built(tiny_bert) -> None:
    assert len(load(tiny_bert, "hf", pooling_layer=(-3,)).model.layers) == 1
    assert len(load(tiny_bert, "hf", pooling_layer=(0, -2)).model.layers) == 2
    assert len(load(tiny_bert, "hf", pooling_strategy=PoolingStrategy.CLS_POOLED).model.layers) == 3


def test_dynamic_length_sizes_token_output_to_the_longest_sequence(tiny_bert, expected) -> None:
    encoder = Encoder.load(str(tiny_bert / "hf"), device="cpu", max_seq_len=None, pooling_strategy=PoolingStrategy.NONE)
    short = encoder.encode(["first do it", "then do it"])
    assert short.shape == (2, 5, 32)  # [CLS] then do it [SEP]
    long = encoder.encode([expected["sentences"][8]])
    assert long.shape[1] > 16  # not truncated to 16 any more: capped by max_position_embeddings (64)
    fixed = Encoder.load(str(tiny_bert / "hf"), device="cpu", max_seq_len=None, fixed_embed_length=True,
                         pooling_strategy=PoolingStrategy.NONE).encode(["first do it"])
    assert fixed.shape == (1, 64, 32)


def test_batching_does_not_change_vectors(tiny_bert, expected) -> None:
    encoder = load(tiny_bert, "hf", pooling_strategy=PoolingStrategy.REDUCE_MEAN)
    together = encoder.encode(expected["sentences"])
    alone = np.stack([encoder.encode([s])[0] for s in expected["sentences"]])
    one_by_one = encoder.encode(expected["sentences"], max_batch_size=1)
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5, rtol=0)


def test_packed_and_padded_execution_agree(tiny_bert, expected, monkeypatch) -> None:
    """Mixed-length batches run packed; near-uniform ones padded (bert.PADDED_UP_TO): same vectors."""
    from bert_serving.model.architectures import bert

    for strategy in (PoolingStrategy.NONE, PoolingStrategy.REDUCE_MEAN_MAX, PoolingStrategy.CLS_POOLED):
        encoder = load(tiny_bert, "hf", pooling_strategy=strategy, pooling_layer=(-1,))
        outputs = []
        for limit in (0.0, float("inf")):  # always packed, always padded
            monkeypatch.setattr(bert, "PADDED_UP_TO", limit)
            outputs.append(encoder.encode(expected["sentences"]))
        np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5, rtol=0)


def test_bfloat16_stays_within_cosine_of_float32(tiny_bert, expected) -> None:
    exact = load(tiny_bert, "hf").encode(expected["sentences"])
    fast = load(tiny_bert, "hf", dtype="bfloat16").encode(expected["sentences"])
    assert fast.dtype == np.float32
    cosine = (exact * fast).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(fast, axis=1)
    assert cosine.min() > 0.999


def test_fp16_sends_float16_vectors(tiny_bert, expected) -> None:
    # the original's -fp16: half-precision vectors on the wire (computed in fp32 on a CPU)
    vectors = load(tiny_bert, "hf", fp16=True).encode(expected["sentences"])
    assert vectors.dtype == np.float16
    np.testing.assert_allclose(vectors, load(tiny_bert, "hf").encode(expected["sentences"]), atol=2e-3)
