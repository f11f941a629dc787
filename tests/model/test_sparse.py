"""SPLADE and BGE-M3 in process, against their references: sentence-transformers'
``SparseEncoder.encode`` (every non-zero id, weights within 1e-4) and FlagEmbedding's
``BGEM3FlagModel.encode`` (dense, sparse and ColBERT outputs), on tiny random models (`tests.sparse_models`)."""

from __future__ import annotations

import numpy as np
import pytest

from bert_serving.errors import ConfigurationError
from bert_serving.model import Encoder

from ..families import sample_texts
from ..sparse_models import assert_same_sparse, build_splade, dicts_of

TEXTS = sample_texts()


def sparse_encoder(folder):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(str(folder), device="cpu")


def test_a_sparse_encoder_folder_serves_what_sparse_encoder_encode_gives(splade_model) -> None:
    want = sparse_encoder(splade_model).encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    encoder = Encoder.load(str(splade_model), device="cpu")
    assert encoder.spec.output_kinds == ("sparse",) and encoder.spec.max_seq_len == 24
    assert encoder.spec.describe()["pooling_strategy_name"] == "SPLADE"
    got = encoder.encode_sparse(TEXTS)
    assert_same_sparse(got.to_dicts(), dicts_of(want))
    assert got.shape == want.shape and np.array_equal(got.to_scipy().toarray(), got.to_dense())
    np.testing.assert_allclose(encoder.encode(TEXTS), want, atol=1e-4)  # as dense vectors: [N, vocabulary]


@pytest.mark.parametrize(("layout", "pooling", "activation"), [("5.x", "max", "relu"), ("6.x", "sum", "log1p_relu")])
def test_other_layouts_and_splade_options(tmp_path, layout, pooling, activation) -> None:
    folder = build_splade(tmp_path / layout, layout, pooling=pooling, activation=activation)
    want = sparse_encoder(folder).encode(TEXTS[:12], convert_to_tensor=True).to_dense().numpy()
    encoder = Encoder.load(str(folder), device="cpu")
    assert encoder.spec.splade.pooling == pooling and encoder.spec.splade.activation == activation
    assert_same_sparse(encoder.encode_sparse(TEXTS[:12]).to_dicts(), dicts_of(want))


def test_a_masked_lm_folder_with_pooling_strategy_splade(tmp_path) -> None:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    folder = build_splade(tmp_path / "mlm", "hf")
    reference = SparseEncoder(modules=[Transformer(str(folder), transformer_task="fill-mask", max_seq_length=24),
                                       SpladePooling("max")], device="cpu")
    want = reference.encode(TEXTS[:12], convert_to_tensor=True).to_dense().numpy()
    encoder = Encoder.load(str(folder), device="cpu", pooling_strategy="SPLADE", max_seq_len=24)
    assert_same_sparse(encoder.encode_sparse(TEXTS[:12]).to_dicts(), dicts_of(want))
    with pytest.raises(ConfigurationError, match="sparse vectors are not normalised"):
        Encoder.load(str(folder), device="cpu", pooling_strategy="SPLADE", normalize=True)


def test_splade_needs_a_masked_lm_head(family_model) -> None:
    with pytest.raises(ConfigurationError, match="needs a masked-LM head"):
        Encoder.load(str(family_model("bert")), device="cpu", pooling_strategy="SPLADE")


def test_chunks_of_logits_give_the_same_weights(splade_model) -> None:
    """However few tokens' logits are computed at once, each text's weights are the same."""
    import torch

    from bert_serving.model import lexical
    from bert_serving.model.packing import Packing

    encoder = Encoder.load(str(splade_model), device="cpu")
    features = encoder.tokenizer.encode(TEXTS[:8])
    packing = Packing.from_lengths(features.lengths)
    with torch.inference_mode():
        (hidden,), _ = encoder.model(torch.from_numpy(features.input_ids).long(),
                                     torch.from_numpy(features.type_ids).long(), packing, encoder.spec.output_layers)
        mask = torch.from_numpy(features.pool_mask)
        whole = lexical.splade(hidden, encoder.mlm, packing, mask, encoder.spec.splade, chunk_bytes=1 << 40)
        small = lexical.splade(hidden, encoder.mlm, packing, mask, encoder.spec.splade, chunk_bytes=1)  # a token each
    assert np.array_equal(whole.offsets, small.offsets)
    assert np.array_equal(whole.columns["indices"], small.columns["indices"])
    np.testing.assert_allclose(whole.columns["values"], small.columns["values"], atol=1e-6)


def test_bge_m3_gives_what_bgem3flagmodel_encode_gives(m3_model, m3_reference) -> None:
    encoder = Encoder.load(str(m3_model), device="cpu")
    assert encoder.spec.output_kinds == ("dense", "sparse", "colbert") and encoder.spec.colbert_dim == 32
    both = encoder.encode_outputs(TEXTS)  # all three from one forward pass per batch
    np.testing.assert_allclose(both.dense, m3_reference["dense"], atol=1e-5)
    np.testing.assert_allclose(encoder.encode(TEXTS), m3_reference["dense"], atol=1e-5)
    assert_same_sparse(both.sparse.to_dicts(), m3_reference["sparse"])
    assert [len(c) for c in both.colbert] == [len(c) for c in m3_reference["colbert"]]
    for ours, theirs in zip(both.colbert, m3_reference["colbert"]):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert_same_sparse(encoder.encode_sparse(TEXTS[:5]).to_dicts(), m3_reference["sparse"][:5])
    for ours, theirs in zip(encoder.encode_colbert(TEXTS[:5]), m3_reference["colbert"][:5]):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    with pytest.raises(ConfigurationError, match="no tokens"):
        encoder.encode_outputs(TEXTS, ("tokens",))
