"""The in-process encoder: texts -> vectors, with no server. The server's workers run it too.

    from bert_serving.model import Encoder
    encoder = Encoder.load("/models/uncased_L-12_H-768_A-12")   # or Encoder.load() for MiniLM
    vectors = encoder.encode(["First do it", "then do it right"])

`EncoderSettings` holds what a user chooses (``None``/``"auto"``: the model decides);
`resolve` (`spec`) turns it into a `ModelSpec`, every choice fixed and checked, without loading weights,
and picks the network from the model's ``model_type`` (`architectures`: packed for BERT and its
kin, generic transformers for the rest); `Encoder` loads the weights and runs `embed` on `Features`.

A model with a fine-tuned head (`heads`: the original's CLASSIFICATION / REGRESSION, a Hugging
Face sequence classifier, a CrossEncoder) answers scores instead of vectors: `embed` gives its
logits, `encode` / `predict` / `rerank` its scores (`scores.activate`).

Sparse and multi-vector models (`lexical`): a SPLADE model's `encode_sparse` gives its sparse
vectors (`encode`: the same as dense ``[N, vocabulary]`` arrays); BGE-M3's `encode` its dense
vectors, `encode_sparse` its lexical weights, `encode_colbert` its ColBERT vectors, and
`encode_outputs` any of them from one forward pass (`embed_outputs` per batch).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigurationError, InvalidRequestError
from ..outputs import COLBERT, DENSE, SPARSE, Embeddings, Ragged, SparseVectors, colbert_rows, kind_bits
from .architectures.bert import BertModel
from .features import Features, plan_batches
from .heads import ClassifierHead
from .lexical import M3Heads, MaskedLMHead, colbert_vectors, lexical_weights, splade
from .loading import load_weights
from .outputs import BatchOutput
from .packing import Packing
from .pooling import pool
from .scores import activate
from .spec import AUTO, DTYPES, EncoderSettings, ModelSpec, resolve

__all__ = ["AUTO", "DTYPES", "Encoder", "EncoderSettings", "ModelSpec", "resolve"]

logger = logging.getLogger(__name__)


def _compute_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    name = spec.compute_dtype(device.type)
    if name != spec.dtype:
        logger.warning("half precision computes on GPUs only; on %s the model computes in float32 (-fp16 still "
                       "makes the vectors float16)", device)
    if name == "bfloat16" and device.type == "cpu" and not _cpu_has_bf16():
        logger.warning("this CPU has no bfloat16 instructions (AMX or AVX512-BF16): -dtype bfloat16 will be "
                       "slower than float32 here")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class Encoder:
    """A loaded model: `embed` for batches of `Features`, `encode` for lists of texts."""

    def __init__(self, spec: ModelSpec, *, device: str | None = None) -> None:
        self.spec = spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigurationError(f"device {device} requested but CUDA is not available; use -cpu")
        self.compute_dtype = _compute_dtype(spec, self.device)
        self.tokenizer = spec.tokenizer()
        self.model = self._build_model()

    @classmethod
    def load(cls, model_dir: str | None = None, *, device: str | None = None, **settings) -> Encoder:
        """Resolve and load a model in one call; ``settings`` are `EncoderSettings` fields (also
        as the flags are written: ``pooling_strategy="CLASSIFICATION"``, ``max_seq_len="NONE"``)."""
        return cls(resolve(EncoderSettings(model_dir=model_dir, **settings)), device=device)

    def _build_model(self) -> torch.nn.Module:
        spec = self.spec
        override = " (override by fine-tuned model)" if spec.source.fine_tuned else ""
        logger.info("checkpoint%s: %s", override, spec.source.weights_path)
        self.head = None
        if spec.config.path == "generic":
            from .architectures.generic import GenericModel

            model = GenericModel(spec.config, dtype=self.compute_dtype, with_pooler=spec.with_pooler,
                                 classifier=spec.head is not None)
            logger.info("loaded %s (%s, %s through transformers, %s attention%s) on %s", spec.source.name,
                        spec.source.layout, spec.config.model_type, model.attention,
                        f", its {spec.head.origin} head: {spec.task}" if spec.head else "", self.device)
            return model.to(self.device)
        weights = load_weights(spec.source)
        model = BertModel(
            spec.config,
            num_layers=spec.num_layers_needed,
            with_pooler=spec.with_pooler,
            use_position_embeddings=not spec.no_position_embeddings,
        )
        model.load_hf_state_dict(weights, str(spec.source.weights_path))
        model.eval().requires_grad_(False)
        if self.compute_dtype != torch.float32:
            model.to(self.compute_dtype)
        self.mlm = self.m3 = None
        if spec.splade is not None:  # its matmul is most of SPLADE's cost: in the backbone's precision
            self.mlm = MaskedLMHead(spec.config)
            self.mlm.load(weights, str(spec.source.weights_path))
            self.mlm.eval().requires_grad_(False).to(self.device, self.compute_dtype)
        if spec.m3:  # small: kept in float32, as FlagEmbedding runs them on a CPU
            self.m3 = M3Heads.load(spec.source.m3_heads, spec.config.hidden_size).to(self.device)
            template = self.tokenizer.template.single
            dropped = {*template.prefix, *template.suffix, self.tokenizer.unk_id, self.tokenizer.pad_id} - {None}
            self._m3_dropped = torch.tensor(sorted(dropped), dtype=torch.long, device=self.device)
        if spec.head is not None:  # kept in float32 whatever the backbone computes in
            self.head = ClassifierHead(spec.config.hidden_size, spec.head)
            self.head.load(weights, str(spec.source.weights_path))
            self.head.eval().requires_grad_(False).to(self.device)
        logger.info("loaded %s (%s, %s on the packed path, %d of %d layers%s) on %s", spec.source.name,
                    spec.source.layout, spec.config.model_type, spec.num_layers_needed, spec.config.num_hidden_layers,
                    f", {spec.head.origin} head: {spec.task}, {spec.head.num_labels} outputs" if spec.head else
                    f", outputs: {', '.join(spec.output_kinds)}", self.device)
        return model.to(self.device)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def release_memory(self) -> None:
        """Give cached GPU memory back after a failed batch (an out-of-memory one, say)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def embed(self, features: Features) -> np.ndarray:
        """One forward pass: ``[B, D]`` vectors, or ``[B, T, D]`` (T: longest in the batch) for NONE;
        with a head, its logits ``[B, num_labels]``; a SPLADE model's sparse vectors as ``[B, vocabulary]``."""
        if self.spec.output_kinds != (DENSE,):
            out = self.embed_outputs(features, self.spec.outputs.default_kinds)
            if out.dense.shape[1]:
                return out.dense
            return SparseVectors.of(out.ragged[SPARSE], self.spec.dim).to_dense().astype(self.spec.output_dtype)
        device = self.device
        ids = torch.from_numpy(features.input_ids).to(device, torch.long)
        types = torch.from_numpy(features.type_ids).to(device, torch.long)
        pool_mask = torch.from_numpy(features.pool_mask).to(device)
        with torch.inference_mode():
            packing = Packing.from_lengths(features.lengths, device)
            if self.spec.head is not None and self.spec.head.in_model:  # transformers' own head
                out = self.model.classify(ids, types, packing).float()
                return out.to(torch.float16 if self.spec.fp16 else torch.float32).cpu().numpy()
            layers, pooled = self.model(ids, types, packing, self.spec.output_layers)
            if self.head is not None:
                first = pooled if self.spec.head.on_pooler else layers[-1][packing.offsets[:-1]]
                out = self.head(first.float())
                return out.to(torch.float16 if self.spec.fp16 else torch.float32).cpu().numpy()
            if self.compute_dtype != torch.float32:  # pool and normalise in fp32
                layers, pooled = [h.float() for h in layers], None if pooled is None else pooled.float()
            out = pool(layers, pool_mask, packing, self.spec.pooling_strategy, pooled)
            if self.spec.normalize:
                out = torch.nn.functional.normalize(out.float(), dim=-1)
            return out.to(torch.float16 if self.spec.fp16 else torch.float32).cpu().numpy()

    def embed_outputs(self, features: Features, kinds: int | np.ndarray) -> BatchOutput:
        """One forward pass for the outputs each text asks for (``kinds``: `bert_serving.outputs`
        bits, one for the batch or one per text): dense vectors (``[B, 0]`` if none asks), and
        the sparse and ColBERT rows (ColBERT's empty for the texts that did not ask)."""
        spec, device = self.spec, self.device
        per_row = np.broadcast_to(np.asarray(kinds, dtype=np.uint8), (len(features),))
        union = int(np.bitwise_or.reduce(per_row)) if len(per_row) else 0
        ids = torch.from_numpy(features.input_ids).to(device, torch.long)
        types = torch.from_numpy(features.type_ids).to(device, torch.long)
        pool_mask = torch.from_numpy(features.pool_mask).to(device)
        last = spec.config.num_hidden_layers
        wanted_layers = spec.output_layers if last in spec.output_layers else (*spec.output_layers, last)
        ragged: dict[str, Ragged] = {}
        with torch.inference_mode():
            packing = Packing.from_lengths(features.lengths, device)
            layers, pooled = self.model(ids, types, packing, wanted_layers)
            hidden = layers[wanted_layers.index(last)]
            dense = np.zeros((len(features), 0), dtype=spec.output_dtype)
            if union & kind_bits([DENSE]):
                dense_layers = [layers[wanted_layers.index(n)].float() for n in spec.output_layers]
                out = pool(dense_layers, pool_mask, packing, spec.pooling_strategy,
                           None if pooled is None else pooled.float())
                if spec.normalize:
                    out = torch.nn.functional.normalize(out, dim=-1)
                dense = out.to(torch.float16 if spec.fp16 else torch.float32).cpu().numpy()
            if union & kind_bits([SPARSE]):
                if self.mlm is not None:
                    ragged[SPARSE] = splade(hidden, self.mlm, packing, pool_mask, spec.splade)
                else:
                    ragged[SPARSE] = lexical_weights(hidden.float(), ids, packing, self.m3, self._m3_dropped)
            if union & kind_bits([COLBERT]):
                wanted = torch.from_numpy(per_row & kind_bits([COLBERT]) > 0).to(device)
                ragged[COLBERT] = colbert_vectors(hidden.float(), packing, self.m3, wanted)
        return BatchOutput(dense, ragged)

    def encode_sparse(self, texts: Sequence[str], *, prompt_name: str | None = None,
                      prompt: str | None = None) -> SparseVectors:
        """Sparse vectors of ``texts``, in order: SPLADE's, or BGE-M3's lexical weights
        (`SparseVectors`: ``to_scipy()``, ``to_dicts()``, ``to_dense()``)."""
        return self.encode_outputs(texts, (SPARSE,), prompt_name=prompt_name, prompt=prompt).sparse

    def encode_colbert(self, texts: Sequence[str], *, prompt_name: str | None = None,
                       prompt: str | None = None) -> list[np.ndarray]:
        """BGE-M3's ColBERT vectors of ``texts``: per text ``[tokens - 1, dim]`` (every token but [CLS])."""
        return self.encode_outputs(texts, (COLBERT,), prompt_name=prompt_name, prompt=prompt).colbert

    def encode_outputs(self, texts: Sequence[str], outputs: Sequence[str] = (DENSE, SPARSE, COLBERT), *,
                       prompt_name: str | None = None, prompt: str | None = None, max_batch_tokens: int = 16384,
                       max_batch_size: int = 256) -> Embeddings:
        """Several outputs of ``texts`` (any of ``spec.output_kinds``) from one forward pass per batch."""
        _refuse_one_string(texts)
        missing = [name for name in outputs if name not in self.spec.output_kinds]
        if missing or not outputs:
            raise ConfigurationError(f"{self.spec.source.name} has no {missing[0] if missing else 'output asked for'}: "
                                     f"it gives {', '.join(self.spec.output_kinds)}")
        kinds = kind_bits(outputs)
        chosen = self.spec.prompts.choose(prompt_name, prompt)
        features = self.tokenizer.encode(list(texts), False, prompt=chosen)
        lengths = features.lengths
        dense = np.zeros((len(features), self.spec.dim), dtype=self.spec.output_dtype) if DENSE in outputs else None
        parts: dict[str, list[Ragged]] = {}
        order = []
        for rows in plan_batches(lengths, max_batch_tokens, max_batch_size):
            out = self.embed_outputs(features.take(rows), kinds)
            if dense is not None:
                dense[rows] = out.dense
            for name, ragged in out.ragged.items():
                parts.setdefault(name, []).append(ragged)
            order.append(rows)
        inverse = np.argsort(np.concatenate(order)) if order else np.zeros(0, dtype=np.int64)
        ragged = {name: Ragged.concat(pieces).take(inverse) for name, pieces in parts.items()}
        return Embeddings(
            dense=dense,
            sparse=SparseVectors.of(ragged[SPARSE], self.spec.outputs.sparse_dim) if SPARSE in ragged else None,
            colbert=colbert_rows(ragged[COLBERT]) if COLBERT in ragged else None,
        )

    def encode(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        *,
        is_tokenized: bool | None = None,
        show_tokens: bool = False,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 256,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> np.ndarray | tuple[np.ndarray, list[list[str]]]:
        """Vectors for ``texts`` in order, batched by length; as a 1.10.0 server would answer
        (with a head: its scores, e.g. CLASSIFICATION's probabilities). ``prompt_name`` (one of
        the model's prompts) or ``prompt`` (a text) goes before each text; neither: the model's
        default prompt, if it has one."""
        _refuse_one_string(texts)
        if is_tokenized is None:
            is_tokenized = isinstance(texts, list) and bool(texts) and all(isinstance(t, list) for t in texts)
        chosen = self.spec.prompts.choose(prompt_name, prompt)
        features = self.tokenizer.encode(list(texts), is_tokenized, keep_tokens=show_tokens, prompt=chosen)
        result = self._run(features, max_batch_tokens, max_batch_size)
        if self.spec.head is not None:
            result = activate(result, self.spec.head.activation)
        if show_tokens:
            return result, [list(t) for t in features.tokens]
        return result

    def predict(self, inputs: Sequence[str | Sequence[str]], *, raw_scores: bool = False) -> np.ndarray:
        """A head's scores ``[N, num_labels]`` (label order: ``spec.head.labels``) for texts and
        explicit ``(A, B)`` pairs; ``raw_scores``: the logits, no activation."""
        if self.spec.head is None:
            raise ConfigurationError("this model has no head to predict with; it embeds (use encode)")
        _refuse_one_string(inputs)
        logits = self._run(self.tokenizer.encode_pairs(list(inputs)))
        return logits if raw_scores else activate(logits, self.spec.head.activation)

    def rerank(self, query: str, documents: Sequence[str], *, raw_scores: bool = False) -> np.ndarray:
        """Relevance of each document to ``query`` (``[N]``, in document order), as
        sentence-transformers' ``CrossEncoder.predict`` scores the pairs ``(query, document)``."""
        if self.spec.head is None or self.spec.head.num_labels != 1:
            raise ConfigurationError("reranking needs a one-output head (a cross-encoder); this model "
                                     f"{'embeds' if self.spec.head is None else 'classifies'}")
        return self.predict([[query, d] for d in documents], raw_scores=raw_scores)[:, 0]

    def _run(self, features: Features, max_batch_tokens: int = 16384, max_batch_size: int = 256) -> np.ndarray:
        lengths = features.lengths
        outputs = self.spec.outputs
        result = outputs.buffer(lengths)
        for rows in plan_batches(lengths, max_batch_tokens, max_batch_size):
            outputs.place(result, rows, self.embed(features.take(rows)), lengths[rows])
        return result


def _refuse_one_string(texts: object) -> None:
    """A string is a sequence of characters: taken for a list of texts, each character would be one."""
    if isinstance(texts, str):
        raise InvalidRequestError(f"texts must be a list of texts, got one string ({texts!r:.40}); pass [text]")
