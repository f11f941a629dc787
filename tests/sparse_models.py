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
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

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


FLAG_EMBEDDING = Path(sys.prefix) / "flag-embedding"  # `make install` puts FlagEmbedding and transformers 4 there
_REFERENCE = """
import json, sys
import numpy as np
from FlagEmbedding import BGEM3FlagModel
folder, out, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = json.loads(sys.stdin.read())
model = BGEM3FlagModel(folder, use_fp16=False, devices="cpu")
found = model.encode(texts, batch_size=8, max_length=max_length, return_dense=True, return_sparse=True,
                     return_colbert_vecs=True)
np.savez(out, dense=found["dense_vecs"], colbert=np.concatenate(found["colbert_vecs"]),
         colbert_lengths=[len(c) for c in found["colbert_vecs"]])
with open(out + ".json", "w") as f:
    json.dump([{int(k): float(v) for k, v in weights.items()} for weights in found["lexical_weights"]], f)
"""


def m3_reference(folder: Path, texts: list[str], work: Path, max_length: int = MAX_SEQ_LEN) -> dict:
    """``BGEM3FlagModel.encode`` of ``texts`` (dense, sparse, ColBERT), run by FlagEmbedding in a
    subprocess on its own transformers (`FLAG_EMBEDDING`): ``{"dense": [N, D], "sparse": [{id: weight}],
    "colbert": [[tokens, dim], ...]}``."""
    assert (FLAG_EMBEDDING / "FlagEmbedding").is_dir(), f"run `make install`: {FLAG_EMBEDDING} is missing"
    out = str(work / "m3-reference.npz")
    env = {**os.environ, "PYTHONPATH": str(FLAG_EMBEDDING), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _REFERENCE, str(folder), out, str(max_length)], input=json.dumps(texts),
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    arrays = np.load(out)
    ends = np.cumsum(arrays["colbert_lengths"])
    sparse = [{int(k): v for k, v in weights.items()} for weights in json.loads(Path(out + ".json").read_text())]
    return {"dense": arrays["dense"], "sparse": sparse, "colbert": np.split(arrays["colbert"], ends[:-1])}


def assert_same_sparse(got: list[dict[int, float]], want: list[dict[int, float]], atol: float = 1e-4) -> None:
    """Every text has the same non-zero ids, each weight within ``atol``."""
    assert len(got) == len(want)
    for i, (ours, theirs) in enumerate(zip(got, want)):
        assert set(ours) == set(theirs), f"text {i}: ids differ: {sorted(set(ours) ^ set(theirs))[:10]}"
        worst = max((abs(ours[k] - theirs[k]) for k in theirs), default=0.0)
        assert worst <= atol, f"text {i}: a weight differs by {worst}"


def dicts_of(dense) -> list[dict[int, float]]:
    """Rows of a dense ``[N, V]`` array (a SparseEncoder's, densified) as ``{id: weight}``."""
    return [{int(i): float(row[i]) for i in np.flatnonzero(row)} for row in np.asarray(dense)]
