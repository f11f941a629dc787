"""Fine-tuned-looking models made at test time by transformers and sentence-transformers (random
weights, no downloads): Hugging Face sequence classifiers and CrossEncoder rerankers, on the
tiny-bert vocabulary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .conftest import TINY_BERT

# max length 64, the tokenizer's model_max_length: what transformers and sentence-transformers truncate to
SIZE = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)


def _tokenizer_files(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(TINY_BERT / "hf" / name, folder / name)


def hf_classifier(folder: Path, *, num_labels: int, problem_type: str | None = None,
                  labels: list[str] | None = None, seed: int = 0) -> Path:
    """A ``BertForSequenceClassification`` folder, as ``save_pretrained`` writes it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    extra = {"id2label": dict(enumerate(labels))} if labels else {}
    # weights spread wide enough that scores differ clearly (sorting is then unambiguous)
    config = BertConfig(**SIZE, num_labels=num_labels, problem_type=problem_type, initializer_range=0.5, **extra)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    _tokenizer_files(folder)
    return folder


def cross_encoder(folder: Path, *, activation: str | None = None, modern: bool = True, seed: int = 0) -> Path:
    """A CrossEncoder reranker: ``modern`` as sentence-transformers saves it today (modules.json,
    config_sentence_transformers.json), else a plain HF folder naming its activation in
    ``config.json`` (``sentence_transformers.activation_fn``), as older releases did."""
    from sentence_transformers import CrossEncoder

    raw = hf_classifier(folder.with_name(folder.name + "-hf"), num_labels=1, seed=seed)
    if not modern:
        shutil.copytree(raw, folder)
        if activation is not None:
            config = json.loads((folder / "config.json").read_text())
            config["sentence_transformers"] = {"activation_fn": activation}
            (folder / "config.json").write_text(json.dumps(config))
        return folder
    model = CrossEncoder(str(raw), device="cpu")
    if activation is not None:
        from sentence_transformers.util import import_from_string

        model.activation_fn = import_from_string(activation)()
    model.save(str(folder))
    return folder
