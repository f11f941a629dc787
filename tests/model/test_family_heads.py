"""The heads of the other families in process: RoBERTa-style heads (dense + tanh on ``<s>``),
ELECTRA's (dense + gelu), DistilBERT's (pre_classifier + relu), MPNet's, and transformers' own
on the generic path, against transformers' ``*ForSequenceClassification`` and a RoBERTa and a
DeBERTa-v2 cross-encoder against ``CrossEncoder.predict``; a head that is not there is a startup
error, never random numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bert_serving.errors import ConfigurationError
from bert_serving.model import Encoder, PoolingStrategy

from ..families import build_classifier, pairs

# family -> (labels, as a CrossEncoder, the head we expect to run)
HEADS = {
    "roberta": (1, True, ("tanh", False, False)),
    "xlm-roberta": (3, False, ("tanh", False, False)),
    "distilbert": (3, False, ("relu", False, False)),
    "electra": (2, False, ("gelu", False, False)),
    "mpnet": (1, True, ("tanh", False, False)),
    "deberta-v2": (1, True, (None, False, True)),
    "modernbert": (3, False, (None, False, True)),
}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            labels, cross_encoder, _ = HEADS[name]
            built[name] = build_classifier(name, tmp_path_factory.mktemp(name) / name, num_labels=labels,
                                           cross_encoder=cross_encoder)
        return built[name]

    return get


def _transformers_logits(folder: Path, items: list[tuple[str, str]]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    batch = tokenizer([a for a, _ in items], [b for _, b in items], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy()


@pytest.mark.parametrize("name", HEADS)
def test_each_familys_head_gives_the_logits_transformers_gives(name, classifier) -> None:
    labels, cross_encoder, (dense, on_pooler, in_model) = HEADS[name]
    folder = classifier(name)
    encoder = Encoder.load(str(folder), device="cpu")
    head = encoder.spec.head
    assert (head.dense, head.on_pooler, head.in_model, head.num_labels) == (dense, on_pooler, in_model, labels)
    items = pairs()  # long ones among them: both cut to the tokenizer's model_max_length, longest side first
    raw = folder.with_name(folder.name + "-hf") if cross_encoder else folder
    np.testing.assert_allclose(encoder.predict([list(p) for p in items], raw_scores=True),
                               _transformers_logits(raw, items), atol=1e-5)


@pytest.mark.parametrize("name", ["roberta", "deberta-v2"])
def test_a_cross_encoder_of_the_family_reranks_as_sentence_transformers(name, classifier) -> None:
    from sentence_transformers import CrossEncoder

    folder = classifier(name)
    encoder = Encoder.load(str(folder), device="cpu")
    assert encoder.spec.task == "rerank" and encoder.spec.head.origin == "cross-encoder"
    query, documents = pairs()[0][0], [b for _, b in pairs()] + ["x", " ".join(a for a, _ in pairs())]
    want = CrossEncoder(str(folder), device="cpu").predict([(query, d) for d in documents])
    np.testing.assert_allclose(encoder.rerank(query, documents), want, atol=1e-5)


def test_a_roberta_head_without_its_dense_layer_is_a_startup_error(classifier, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "headless"
    folder.mkdir()
    source = classifier("xlm-roberta")
    for item in source.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    weights = {k: v for k, v in load_file(str(source / "model.safetensors")).items() if "classifier.dense" not in k}
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ConfigurationError, match=r"'classifier.dense.weight' \[32, 32\] is missing"):
        Encoder.load(str(folder), device="cpu")


def test_the_generic_path_refuses_a_head_its_folder_does_not_declare_or_hold(classifier, tmp_path: Path) -> None:
    source = classifier("modernbert")
    with pytest.raises(ConfigurationError, match="-num_labels 2 disagrees with the model's 3 labels"):
        Encoder.load(str(source), device="cpu", pooling_strategy=PoolingStrategy.CLASSIFICATION, num_labels=2)
    folder = tmp_path / "plain"
    folder.mkdir()
    for item in source.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["ModernBertModel"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigurationError, match="needs a folder that declares its head"):
        Encoder.load(str(folder), device="cpu", pooling_strategy=PoolingStrategy.CLASSIFICATION)
    from safetensors.torch import load_file, save_file

    config["architectures"] = ["ModernBertForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(config))
    weights = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if not k.startswith("classifier")}
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ConfigurationError, match="lacks weight 'classifier"):
        Encoder.load(str(folder), device="cpu")
