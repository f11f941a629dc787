"""Tiny random models of every family the server runs, made at test time (nothing downloaded),
each with a tokenizer of the kind that family really uses, trained here with `tokenizers` on
the benchmark corpus, and saved as a sentence-transformers folder with its pooling and prompts.

Half of them are written as sentence-transformers before 6.0 wrote folders (``pooling_mode_*``
booleans, ``sentence_transformers.models.*`` types, ``max_seq_length`` in
``sentence_bert_config.json``), half as 6.x writes them (``"pooling_mode": "mean"``,
``embedding_dimension``, ``sentence_transformers.base.modules.*``, the length in the
tokenizer's ``model_max_length``), by hand, so that the installed version's own format does not
decide what is covered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "benchmarks" / "corpus.txt"
MAX_SEQ_LEN = 24  # what each folder asks for; the models' positions reach further


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer: str  # wordpiece, bpe (byte-level), unigram
    pooling: str  # sentence-transformers' pooling_mode
    layout: str  # "5.x" or "6.x" sentence-transformers folder
    normalize: bool = False
    prompts: dict = field(default_factory=dict)
    default_prompt_name: str | None = None
    include_prompt: bool = True
    path: str = "packed"  # which path the server takes


FAMILIES = {f.name: f for f in [
    Family("bert", "wordpiece", "mean", "5.x", normalize=True,
           prompts={"query": "query: ", "passage": "passage: "}),
    Family("roberta", "bpe", "cls", "6.x", prompts={"query": "Represent this question: "}),
    Family("xlm-roberta", "unigram", "mean", "6.x", normalize=True,
           prompts={"query": "query: ", "passage": "passage: "}, default_prompt_name="passage"),
    Family("distilbert", "wordpiece", "max", "5.x", prompts={"query": "search query: "}),
    Family("electra", "wordpiece", "mean", "5.x", prompts={"query": "Represent the question for retrieval: "},
           include_prompt=False),
    Family("mpnet", "wordpiece", "mean", "5.x", normalize=True, prompts={"query": "query: "}),
    Family("modernbert", "bpe", "cls", "6.x", prompts={"query": "search_query: ", "document": "search_document: "},
           path="generic"),
    Family("deberta-v2", "unigram", "weightedmean", "6.x", prompts={"query": "query: "}, path="generic"),
    Family("qwen3", "bpe", "lasttoken", "6.x", normalize=True,
           prompts={"query": "Instruct: Given a question, find the passages that answer it\nQuery:"},
           path="generic"),
]}

_SPECIALS = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "mpnet": ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"],
    "deberta": ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}
_SPECIALS_OF = {"bert": "bert", "distilbert": "bert", "electra": "bert", "modernbert": "bert", "roberta": "roberta",
                "xlm-roberta": "roberta", "mpnet": "mpnet", "deberta-v2": "deberta", "qwen3": "qwen"}


def sample_texts() -> list[str]:
    """Sentences the tokenizers were not trained on, some far longer than ``MAX_SEQ_LEN``, some odd."""
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    texts = lines[4000:4040]
    texts += [" ".join(lines[4100:4110]), "  leading and trailing spaces  ", "Café naïve 東京 🙂 3.14",
              "x", "UPPER case Words", "tabs\tand\nnewlines"]
    return texts


def pairs() -> list[tuple[str, str]]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [(lines[4200 + i], lines[4300 + i]) for i in range(8)] + [(" ".join(lines[4400:4406]), "short"),
                                                                     ("short", " ".join(lines[4500:4506]))]


def build(family: Family, folder: Path) -> Path:
    """Write ``family``'s tiny sentence-transformers folder into ``folder``; returns it."""
    import torch

    torch.manual_seed(sum(map(ord, family.name)))
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(family)
    model = _model(family, tokenizer)
    model.save_pretrained(folder)
    tokenizer.model_max_length = MAX_SEQ_LEN
    tokenizer.save_pretrained(folder)
    _sentence_transformers_files(family, folder, model.config.get_text_config().hidden_size)
    return folder


# --- tokenizers -----------------------------------------------------------------------------------


def _train(family: Family):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = _SPECIALS[_SPECIALS_OF[family.name]]
    corpus = CORPUS.read_text(encoding="utf-8").splitlines()[:3000] + ["Café naïve 東京 🙂"]
    if family.tokenizer == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=specials[1] if family.name != "mpnet" else "[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials)
    elif family.tokenizer == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        unk = "<unk>" if "<unk>" in specials else "[UNK]"
        trainer = trainers.UnigramTrainer(vocab_size=800, special_tokens=specials, unk_token=unk)
    tok.train_from_iterator(corpus, trainer)
    return json.loads(tok.to_str())["model"]


def _tokenizer(family: Family):
    """The family's own transformers tokenizer class, over a vocabulary trained here."""
    import transformers
    from tokenizers import processors

    trained = _train(family)
    vocab = trained["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained.get("merges") or []]
    if family.name in ("bert", "electra"):
        return transformers.BertTokenizer(vocab=vocab)
    if family.name == "distilbert":
        return transformers.DistilBertTokenizer(vocab=vocab)
    if family.name == "mpnet":
        return transformers.MPNetTokenizer(vocab=vocab)
    if family.name == "roberta":
        return transformers.RobertaTokenizer(vocab=vocab, merges=merges)
    if family.name == "xlm-roberta":
        return transformers.XLMRobertaTokenizer(vocab=[tuple(v) for v in vocab])
    if family.name == "deberta-v2":
        return transformers.DebertaV2Tokenizer(vocab=[tuple(v) for v in vocab], unk_id=3)
    if family.name == "modernbert":  # ModernBERT ships a plain fast tokenizer: byte-level BPE, [CLS] A [SEP] B [SEP]
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]",
                                                    pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")
    # qwen3: Qwen's byte-level BPE; Qwen3-Embedding's tokenizer ends every text with <|endoftext|>
    tok = transformers.Qwen2Tokenizer(vocab=vocab, merges=merges)
    eos = vocab["<|endoftext|>"]
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0", pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eos)])
    tok.padding_side = "left"
    return tok


# --- models ---------------------------------------------------------------------------------------


def build_classifier(name: str, folder: Path, *, num_labels: int, cross_encoder: bool = False) -> Path:
    """``name``'s family as a random ``*ForSequenceClassification`` folder (``save_pretrained``),
    or with ``cross_encoder`` a CrossEncoder as sentence-transformers saves one; its tokenizer
    keeps ``MAX_SEQ_LEN`` tokens, which both truncate to."""
    import torch
    import transformers

    family = FAMILIES[name]
    torch.manual_seed(sum(map(ord, family.name)) + num_labels)
    tokenizer = _tokenizer(family)
    config = _config(family, tokenizer)
    config.num_labels = num_labels
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    raw = folder.with_name(folder.name + "-hf") if cross_encoder else folder
    model.save_pretrained(raw)
    tokenizer.model_max_length = MAX_SEQ_LEN
    tokenizer.save_pretrained(raw)
    if cross_encoder:
        from sentence_transformers import CrossEncoder

        CrossEncoder(str(raw), device="cpu").save(str(folder))
    return folder


def _model(family: Family, tokenizer):
    import transformers

    return transformers.AutoModel.from_config(_config(family, tokenizer)).eval()


def _config(family: Family, tokenizer):
    import transformers

    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                initializer_range=0.2)
    vocab = len(tokenizer)
    name = family.name
    if name == "bert":
        config = transformers.BertConfig(vocab_size=vocab, max_position_embeddings=40, **size)
    elif name in ("roberta", "xlm-roberta"):
        cls = transformers.RobertaConfig if name == "roberta" else transformers.XLMRobertaConfig
        config = cls(vocab_size=vocab, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1,
                     bos_token_id=0, eos_token_id=2, **size)
    elif name == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                               max_position_embeddings=40, initializer_range=0.2, pad_token_id=0)
    elif name == "electra":
        config = transformers.ElectraConfig(vocab_size=vocab, embedding_size=16, max_position_embeddings=40, **size)
    elif name == "mpnet":
        config = transformers.MPNetConfig(vocab_size=vocab, max_position_embeddings=42, pad_token_id=1,
                                          relative_attention_num_buckets=32, **size)
    elif name == "modernbert":
        ids = {k: tokenizer.convert_tokens_to_ids(t) for k, t in
               (("pad_token_id", "[PAD]"), ("cls_token_id", "[CLS]"), ("sep_token_id", "[SEP]"))}
        config = transformers.ModernBertConfig(vocab_size=vocab, max_position_embeddings=64, local_attention=8,
                                               global_attn_every_n_layers=2, bos_token_id=ids["cls_token_id"],
                                               eos_token_id=ids["sep_token_id"], **ids, **size)
    elif name == "deberta-v2":
        config = transformers.DebertaV2Config(vocab_size=vocab, max_position_embeddings=40, relative_attention=True,
                                              position_buckets=8, pos_att_type=["p2c", "c2p"],
                                              position_biased_input=False, type_vocab_size=0, pad_token_id=0, **size)
    else:
        eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        config = transformers.Qwen3Config(vocab_size=vocab, max_position_embeddings=64, num_key_value_heads=2,
                                          head_dim=8, pad_token_id=eos, eos_token_id=eos, bos_token_id=eos,
                                          tie_word_embeddings=True, **size)
    return config


# --- sentence-transformers files ------------------------------------------------------------------


_FLAGS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
          "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
          "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


def _sentence_transformers_files(family: Family, folder: Path, dim: int) -> None:
    def write(name: str, value: object) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(value, indent=2), encoding="utf-8")

    new = family.layout == "6.x"
    base = "sentence_transformers.base.modules" if new else "sentence_transformers.models"
    pooling_type = "sentence_transformers.sentence_transformer.modules.pooling.Pooling" if new else \
        "sentence_transformers.models.Pooling"
    modules = [{"idx": 0, "name": "0", "path": "", "type": f"{base}.transformer.Transformer" if new
                else f"{base}.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": pooling_type}]
    if family.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": f"{base}.normalize.Normalize" if new else f"{base}.Normalize"})
        write("2_Normalize/config.json", {})
    write("modules.json", modules)
    if new:
        write("sentence_bert_config.json", {"transformer_task": "feature-extraction", "modality_config": {
            "text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings"})
        pooling = {"embedding_dimension": dim, "pooling_mode": family.pooling, "include_prompt": family.include_prompt}
    else:
        write("sentence_bert_config.json", {"max_seq_length": MAX_SEQ_LEN, "do_lower_case": False})
        pooling = {"word_embedding_dimension": dim, **{flag: mode == family.pooling for mode, flag in _FLAGS.items()},
                   "include_prompt": family.include_prompt}
    write("1_Pooling/config.json", pooling)
    version = "6.2.0" if new else "2.7.0"
    write("config_sentence_transformers.json", {"__version__": {"sentence_transformers": version},
                                                "prompts": family.prompts,
                                                "default_prompt_name": family.default_prompt_name,
                                                "similarity_fn_name": "cosine"})
