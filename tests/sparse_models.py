"""Tiny random sparse and multi-vector models, made at test time (nothing downloaded):

- `build_splade`: a SPLADE model, a random BERT masked-LM with the bert family's tokenizer
  (`families`), saved as a ``SparseEncoder`` folder: as sentence-transformers 6.x saves it (a
  fill-mask ``Transformer`` and ``SpladePooling``, ``layout="6.x"``), as 5.x wrote it (an
  ``MLMTransformer``, ``"5.x"``), or a bare ``BertForMaskedLM`` folder (``"hf"``);
- `build_m3`: a BGE-M3-shaped folder, a random XLM-RoBERTa with the xlm-roberta family's
  tokenizer, saved as BGE-M3 ships: a sentence-transformers folder (CLS pooling, Normalize) with
  ``colbert_linear.pt`` and ``sparse_linear.pt`` (``torch.nn.Linear`` state dicts) beside the weights.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .families import FAMILIES, MAX_SEQ_LEN, _config, _sentence_transformers_files, _tokenizer

SPLADE_LAYOUTS = ("6.x", "5.x", "hf")


def _write(folder: Path, name: str, value: object) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(value, indent=2), encoding="utf-8")


def build_splade(folder: Path, layout: str = "6.x", *, pooling: str = "max", activation: str = "relu") -> Path:
    import torch
    import transformers

    torch.manual_seed(25)
    tokenizer = _tokenizer(FAMILIES["bert"])
    model = transformers.BertForMaskedLM(_config(FAMILIES["bert"], tokenizer)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.model_max_length = MAX_SEQ_LEN
    tokenizer.save_pretrained(folder)
    if layout == "hf":
        return folder
    splade = {"pooling_strategy": pooling, "activation_function": activation}
    if layout == "6.x":
        modules = ["sentence_transformers.base.modules.transformer.Transformer",
                   "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"]
        _write(folder, "sentence_bert_config.json", {"transformer_task": "fill-mask", "modality_config": {
            "text": {"method": "forward", "method_output_name": "logits"}}, "module_output_name": "token_embeddings"})
        _write(folder, "1_SpladePooling/config.json", {**splade, "embedding_dimension": None})
    else:
        modules = ["sentence_transformers.sparse_encoder.models.MLMTransformer",
                   "sentence_transformers.sparse_encoder.models.SpladePooling"]
        _write(folder, "sentence_bert_config.json", {"max_seq_length": MAX_SEQ_LEN, "do_lower_case": False})
        _write(folder, "1_SpladePooling/config.json", {**splade, "word_embedding_dimension": len(tokenizer)})
    _write(folder, "modules.json", [{"idx": 0, "name": "0", "path": "", "type": modules[0]},
                                    {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": modules[1]}])
    _write(folder, "config_sentence_transformers.json", {"model_type": "SparseEncoder", "prompts": {
        "query": "", "document": ""}, "default_prompt_name": None, "similarity_fn_name": "dot"})
    return folder


def build_m3(folder: Path, *, colbert_dim: int | None = None) -> Path:
    import torch
    import transformers

    torch.manual_seed(3)
    family = replace(FAMILIES["xlm-roberta"], pooling="cls", normalize=True, prompts={}, default_prompt_name=None)
    tokenizer = _tokenizer(family)
    config = _config(family, tokenizer)
    model = transformers.AutoModel.from_config(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.model_max_length = MAX_SEQ_LEN
    tokenizer.save_pretrained(folder)
    _sentence_transformers_files(family, folder, config.hidden_size)
    hidden = config.hidden_size
    colbert = torch.nn.Linear(hidden, colbert_dim or hidden)
    sparse = torch.nn.Linear(hidden, 1)
    with torch.no_grad():  # weights large enough that many tokens weigh > 0, some not
        colbert.weight.normal_(0, 0.3)
        sparse.weight.normal_(0, 0.5)
    torch.save(colbert.state_dict(), folder / "colbert_linear.pt")
    torch.save(sparse.state_dict(), folder / "sparse_linear.pt")
    return folder
