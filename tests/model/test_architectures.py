"""Which network runs a folder, and the one clear error for a folder no network here can run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_serving.errors import ConfigurationError, InvalidRequestError
from bert_serving.model import Encoder, EncoderSettings, PoolingStrategy, resolve
from bert_serving.model.prompts import Prompts

BIN = Path(sys.executable).parent


def _edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def _bare(tmp_path: Path, name: str, config: dict) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize("config, message", [
    ({"model_type": "t5", "is_encoder_decoder": True, "d_model": 32}, "an encoder-decoder model"),
    ({"model_type": "vit", "image_size": 224, "patch_size": 16, "num_channels": 3}, "a vision model"),
    ({"model_type": "clip", "text_config": {}, "vision_config": {}}, "a vision model"),
    ({"model_type": "wav2vec2", "conv_dim": [512]}, "an audio model"),
    ({"model_type": "bert", "auto_map": {"AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel"}},
     r"needs its own Python code \(jinaai/jina-bert-implementation--modeling_bert\).*-trust_remote_code"),
    ({"model_type": "no-such-architecture", "hidden_size": 8}, "transformers cannot read"),
])
def test_a_folder_of_an_unsupported_kind_is_one_clear_error(tmp_path, config, message) -> None:
    folder = _bare(tmp_path, "model", config)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigurationError, match=message):
        resolve(EncoderSettings(model_dir=str(folder)))


def test_the_command_line_refuses_remote_code_at_start_with_one_message(tmp_path, family_model) -> None:
    folder = _edit_config(shutil.copytree(family_model("bert"), tmp_path / "custom"),
                          auto_map={"AutoModel": "modeling_acme.AcmeModel"})
    done = subprocess.run([str(BIN / "bert-serving-start"), "-model_dir", str(folder), "-port", "1", "-port_out", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "-trust_remote_code" in errors[0], done.stderr


_CONFIGURATION = """from transformers import BertConfig


class AcmeConfig(BertConfig):
    model_type = "acme"
"""
_MODELING = """from transformers import BertModel

from .configuration_acme import AcmeConfig


class AcmeModel(BertModel):
    config_class = AcmeConfig
"""


def test_trust_remote_code_runs_the_folders_own_code_on_the_generic_path(tmp_path, family_model) -> None:
    folder = shutil.copytree(family_model("bert"), tmp_path / "acme")
    (folder / "configuration_acme.py").write_text(_CONFIGURATION)
    (folder / "modeling_acme.py").write_text(_MODELING)
    _edit_config(folder, model_type="acme", architectures=["AcmeModel"],
                 auto_map={"AutoConfig": "configuration_acme.AcmeConfig", "AutoModel": "modeling_acme.AcmeModel"})
    with pytest.raises(ConfigurationError, match="-trust_remote_code"):
        resolve(EncoderSettings(model_dir=str(folder)))
    custom = Encoder.load(str(folder), device="cpu", trust_remote_code=True)
    assert (custom.spec.config.path, custom.spec.config.model_type) == ("generic", "acme")
    texts = ["the cat sat on the mat", "a server maps sentences to vectors"]
    want = Encoder.load(str(family_model("bert")), device="cpu").encode(texts)
    np.testing.assert_allclose(custom.encode(texts), want, atol=1e-5)


def test_a_bert_option_the_packed_network_lacks_takes_the_generic_path(tmp_path, family_model) -> None:
    folder = _edit_config(shutil.copytree(family_model("bert"), tmp_path / "relative"),
                          position_embedding_type="relative_key")
    spec = resolve(EncoderSettings(model_dir=str(folder)))
    assert (spec.config.model_type, spec.config.path) == ("bert", "generic")
    assert spec.describe()["architecture_path"] == "generic"


def test_pooling_flags_override_the_folder_where_they_make_sense(family_model) -> None:
    folder = str(family_model("qwen3"))
    spec = resolve(EncoderSettings(model_dir=folder))
    assert (spec.pooling_strategy, spec.normalize) == (PoolingStrategy.LAST_TOKEN, True)
    mean = Encoder.load(folder, device="cpu", pooling_strategy=PoolingStrategy.REDUCE_MEAN, pooling_layer=(-2,))
    assert mean.spec.pooling_strategy is PoolingStrategy.REDUCE_MEAN
    assert mean.encode(["the cat sat"]).shape == (1, 32)
    with pytest.raises(ConfigurationError, match="CLS_POOLED needs the model's pooler.*CLS_TOKEN"):
        resolve(EncoderSettings(model_dir=folder, pooling_strategy=PoolingStrategy.CLS_POOLED))
    with pytest.raises(ConfigurationError, match="CLS_POOLED needs the model's pooler"):
        resolve(EncoderSettings(model_dir=str(family_model("electra")), pooling_strategy=PoolingStrategy.CLS_POOLED))
    with pytest.raises(ConfigurationError, match="-no_position_embeddings applies to BERT and its kin"):
        resolve(EncoderSettings(model_dir=folder, no_position_embeddings=True))


def test_cls_pooled_on_a_family_with_a_pooler(family_model) -> None:
    from transformers import AutoModel, AutoTokenizer

    folder = str(family_model("roberta"))
    encoder = Encoder.load(folder, device="cpu", pooling_strategy=PoolingStrategy.CLS_POOLED, normalize=False,
                           default_prompt_name=None)
    model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    want = model(**tokenizer(["the cat sat"], return_tensors="pt")).pooler_output.detach().numpy()
    np.testing.assert_allclose(encoder.encode(["the cat sat"]), want, atol=1e-5)


def test_default_prompt_name_flag_must_name_one_of_the_models_prompts(family_model) -> None:
    folder = str(family_model("xlm-roberta"))
    assert resolve(EncoderSettings(model_dir=folder)).prompts.default_name == "passage"
    assert resolve(EncoderSettings(model_dir=folder, default_prompt_name="query")).prompts.default_name == "query"
    with pytest.raises(ConfigurationError, match=r"-default_prompt_name 'question' is not one of .*query"):
        resolve(EncoderSettings(model_dir=folder, default_prompt_name="question"))


def test_a_literal_prompt_wins_over_a_named_one_as_in_sentence_transformers() -> None:
    prompts = Prompts((("query", "query: "), ("passage", "passage: ")), "passage")
    assert prompts.choose("query", "mine: ") == "mine: "
    assert prompts.choose(None, "") is None and prompts.choose() == "passage: " and prompts.choose("query") == "query: "


@pytest.mark.parametrize("name, prompt, message", [
    ("nope", None, r"'nope' is not one of this model's prompts \('query'\)"),
    (7, None, "prompt_name must be a string"),
    (None, ["x"], "prompt must be a string"),
])
def test_a_request_asks_for_one_known_prompt(name, prompt, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Prompts((("query", "query: "),)).choose(name, prompt)
