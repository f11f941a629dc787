"""The original server's tokenization rules on the `tokenizers` library."""

from __future__ import annotations

from pathlib import Path

import pytest

from bert_serving.errors import InvalidRequestError
from bert_serving.model import EncoderSettings, resolve
from bert_serving.model.tokenization import Tokenizer


def tokenizer(tiny_bert: Path, folder: str = "google", **settings) -> Tokenizer:
    settings.setdefault("max_seq_len", 16)
    return resolve(EncoderSettings(model_dir=str(tiny_bert / folder), **settings)).tokenizer()


def tokens(tok: Tokenizer, texts, is_tokenized: bool = False) -> list[list[str]]:
    return [list(t) for t in tok.encode(texts, is_tokenized, keep_tokens=True).tokens]


@pytest.mark.parametrize("folder", ["google", "hf"])
def test_fixture_sentences_tokenize_as_the_original(tiny_bert, expected, folder) -> None:
    # vocab.txt (Google) and tokenizer.json (HF) give the same word pieces
    features = tokenizer(tiny_bert, folder).encode(expected["sentences"], keep_tokens=True)
    assert [list(t) for t in features.tokens] == expected["tokens"]
    real = expected["input_mask"].astype(bool)  # the reference arrays, padding dropped
    assert features.lengths.tolist() == real.sum(1).tolist()
    assert features.input_ids.tolist() == expected["input_ids"][real].tolist()
    assert features.type_ids.tolist() == expected["token_type_ids"][real].tolist()


def test_uncased_strips_accents_and_cased_keeps_them(tiny_bert) -> None:
    assert tokens(tokenizer(tiny_bert), ["Café Hello"]) == [["[CLS]", "caf", "##e", "hello", "[SEP]"]]
    cased = tokenizer(tiny_bert, do_lower_case=False)
    # the tiny vocabulary is lower-case: cased words are unknown
    assert tokens(cased, ["Café hello"]) == [["[CLS]", "[UNK]", "hello", "[SEP]"]]
    assert tokens(tokenizer(tiny_bert, "hf", do_lower_case=False), ["Hello"]) == [["[CLS]", "[UNK]", "[SEP]"]]


def test_cjk_characters_are_single_tokens(tiny_bert) -> None:
    assert tokens(tokenizer(tiny_bert), ["中文test"]) == [["[CLS]", "中", "文", "test", "[SEP]"]]


def test_pairs_split_at_the_last_separator(tiny_bert) -> None:
    features = tokenizer(tiny_bert).encode(["the cat ||| sat ||| the mat"], keep_tokens=True)
    assert list(features.tokens[0]) == ["[CLS]", "the", "cat", "|", "|", "|", "sat", "[SEP]", "the", "mat", "[SEP]"]
    assert features.type_ids.tolist() == [0] * 8 + [1] * 3
    # without the spaces around it, ||| is just text
    assert tokens(tokenizer(tiny_bert), ["cat|||mat"])[0][:2] == ["[CLS]", "cat"]


def test_pretokenized_input_is_looked_up_not_split(tiny_bert) -> None:
    tok = tokenizer(tiny_bert)
    got = tokens(tok, [["first", "do", "it"], ["Hello", "unbelievable", "|||", "the", "cat"]], is_tokenized=True)
    assert got == [
        ["[CLS]", "first", "do", "it", "[SEP]"],
        ["[CLS]", "[UNK]", "[UNK]", "[SEP]", "the", "cat", "[SEP]"],
    ]


def test_pretokenized_input_may_be_vocabulary_ids(tiny_bert) -> None:
    tok = tokenizer(tiny_bert)
    the, cat = tok._vocab["the"], tok._vocab["cat"]
    assert tokens(tok, [[the, "cat"], [the, "|||", cat]], is_tokenized=True) == [
        ["[CLS]", "the", "cat", "[SEP]"], ["[CLS]", "the", "[SEP]", "cat", "[SEP]"]]


def test_single_sequences_keep_their_first_word_pieces(tiny_bert) -> None:
    tok = tokenizer(tiny_bert, max_seq_len=6)
    assert tokens(tok, ["the quick brown fox jumps over"]) == [["[CLS]", "the", "quick", "brown", "fox", "[SEP]"]]


def test_pairs_drop_from_the_longer_side_and_from_b_on_ties(tiny_bert) -> None:
    tok = tokenizer(tiny_bert, max_seq_len=8)  # room for 5 word pieces
    longer_a = tokens(tok, [["the", "cat", "sat", "on", "the", "|||", "mat", "dog"]], is_tokenized=True)[0]
    assert longer_a == ["[CLS]", "the", "cat", "sat", "[SEP]", "mat", "dog", "[SEP]"]
    tied = tok.encode([["the", "cat", "sat", "|||", "on", "the", "mat"]], True, keep_tokens=True)
    assert list(tied.tokens[0]) == ["[CLS]", "the", "cat", "sat", "[SEP]", "on", "the", "[SEP]"]


def test_no_special_token_applies_to_pretokenized_single_sequences(tiny_bert) -> None:
    tok = tokenizer(tiny_bert, max_seq_len=5, no_special_token=True)
    assert tokens(tok, [["the", "cat", "sat", "on", "the", "mat"]], is_tokenized=True) == [["the", "cat", "sat", "on", "the"]]
    assert tokens(tok, ["the cat sat on"]) == [["[CLS]", "the", "cat", "sat", "[SEP]"]]
    assert tokens(tok, [["the", "|||", "cat"]], is_tokenized=True) == [["[CLS]", "the", "[SEP]", "cat", "[SEP]"]]


def test_mask_cls_sep_clears_special_positions_from_the_pool_mask(tiny_bert) -> None:
    features = tokenizer(tiny_bert, mask_cls_sep=True).encode(["the cat ||| on the mat"])
    assert features.pool_mask.tolist() == [False, True, True, False, True, True, True, False]


def test_dynamic_length_is_capped_by_the_model_positions(tiny_bert) -> None:
    tok = tokenizer(tiny_bert, max_seq_len=None)
    assert tok.encode(["the " * 200]).lengths.tolist() == [64]  # max_position_embeddings


@pytest.mark.parametrize(
    "texts, is_tokenized, message",
    [
        ([], False, "must not be empty"),
        ("a string", False, "must be a list"),
        (["ok", "  "], False, r"texts\[1\] is empty or blank"),
        (["ok", 3], False, r"texts\[1\] must be a string"),
        ([["ok"], []], True, r"texts\[1\] must be a non-empty list"),
        ([["ok", None]], True, r"texts\[0\]\[1\] must be a non-blank string"),
        ([[3, 96]], True, r"texts\[0\]\[1\]: token id 96 is not in the vocabulary \(0..95\)"),
        ([[True]], True, r"must be a non-blank string or a token id"),
    ],
)
def test_malformed_input_is_a_clear_error(tiny_bert, texts, is_tokenized, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        tokenizer(tiny_bert).encode(texts, is_tokenized)


def test_very_long_texts_tokenize_as_if_whole(tiny_bert) -> None:
    tok = tokenizer(tiny_bert, max_seq_len=8)
    document = "the cat sat on the mat " * 20_000  # 460,000 characters
    assert tokens(tok, [document]) == [["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"]]
    # a prefix of giant unknown words holds too few pieces: the whole text is tokenized after all
    giants = ("x" * 300 + " ") * 2 + "the cat sat on the mat"
    assert tokens(tok, [giants]) == [["[CLS]", "[UNK]", "[UNK]", "the", "cat", "sat", "on", "[SEP]"]]
    pair = tokens(tok, [document + " ||| " + "mat " * 50_000])  # both sides cut, tie goes to A
    assert pair == [["[CLS]", "the", "cat", "sat", "[SEP]", "mat", "mat", "[SEP]"]]


def test_the_tokenizer_json_decides_the_special_tokens_as_transformers_reads_it(family_model, tmp_path) -> None:
    import json
    import shutil

    from transformers import AutoTokenizer

    folder = shutil.copytree(family_model("qwen3"), tmp_path / "decoder")
    tokenizer_json = json.loads((folder / "tokenizer.json").read_text())
    tokenizer_json["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    # transformers 5 ignores these beside a tokenizer.json; so do we
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True, "add_eos_token": True,
                                                              "bos_token": "<|im_start|>"}))
    ours = resolve(EncoderSettings(model_dir=str(folder))).tokenizer()
    theirs = AutoTokenizer.from_pretrained(str(folder))
    for text, pair in (("the cat sat", None), ("the cat", "sat on the mat")):
        features = ours.encode([text if pair is None else f"{text} ||| {pair}"], prompt="")
        assert features.input_ids.tolist() == theirs(text, pair, truncation=True, max_length=ours.max_length)["input_ids"]


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "mpnet", "modernbert", "deberta-v2", "qwen3"])
@pytest.mark.parametrize("mask_cls_sep", [False, True])
def test_asking_for_the_word_pieces_changes_no_feature(family_model, family, mask_cls_sep) -> None:
    # texts alone are framed as whole arrays, requests that keep their word pieces row by row:
    # both must give every family's template the same ids, types and pool mask
    tok = resolve(EncoderSettings(model_dir=str(family_model(family)), mask_cls_sep=mask_cls_sep,
                                  max_seq_len=12)).tokenizer()
    texts = ["", "a", "the cat sat on the mat " * 20, "Café 中文 test", "hello world"]
    for hidden in (0, 3):  # a prompt's positions that pooling leaves out
        plain, kept = (tok._features(tok._wordpieces(texts), True, keep, hidden) for keep in (False, True))
        for field in ("input_ids", "type_ids", "pool_mask", "offsets"):
            assert getattr(plain, field).dtype == getattr(kept, field).dtype
            assert getattr(plain, field).tolist() == getattr(kept, field).tolist(), (field, hidden)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "mpnet", "modernbert", "deberta-v2", "qwen3"])
def test_tokens_are_the_ids_the_model_sees_with_the_tokenizers_offsets(family_model, family) -> None:
    # what /tokenize answers: the ids `encode` gives (so: transformers' for a text alone), each
    # word piece with its span of the text, and the text back from the ids
    from transformers import AutoTokenizer

    folder = family_model(family)
    ours = resolve(EncoderSettings(model_dir=str(folder), max_seq_len=12)).tokenizer()
    theirs = AutoTokenizer.from_pretrained(str(folder))
    for text in ("Hello, World!", "Café 中文 test", "the cat sat on the mat " * 20, " two  spaces "):
        for prompt in (None, "query: "):
            got = ours.tokens(text, prompt=prompt)
            want = ours.encode([text], prompt=prompt).input_ids.tolist()
            assert [t.id for t in got] == want
            line = (prompt or "") + text
            assert all(t.text == line[t.start : t.stop] for t in got if not t.special)
            assert [t.id for t in ours.tokens(text, prompt=prompt, special_tokens=False)] == \
                [t.id for t in got if not t.special]
        mapping = theirs(text, truncation=True, max_length=12, return_offsets_mapping=True,
                         return_special_tokens_mask=True)
        assert [t.id for t in ours.tokens(text)] == mapping["input_ids"]
        assert [t.special for t in ours.tokens(text)] == [bool(s) for s in mapping["special_tokens_mask"]]
        assert [(t.start, t.stop) for t in ours.tokens(text) if not t.special] == \
            [span for span, special in zip(mapping["offset_mapping"], mapping["special_tokens_mask"]) if not special]
        ids = mapping["input_ids"]
        decode = theirs.backend_tokenizer.decode
        assert ours.decode(ids, skip_special_tokens=False) == decode(ids, skip_special_tokens=False)
        assert ours.decode(ids) == decode(ids, skip_special_tokens=True)


def test_tokens_of_the_originals_rules_span_the_text_as_sent(tiny_bert) -> None:
    tok = tokenizer(tiny_bert)
    text = "  The cat sat ||| on the Mat  "  # stripped, split at " ||| ", lower-cased: spans keep the original
    got = tok.tokens(text)
    assert [t.id for t in got] == tok.encode([text]).input_ids.tolist()
    assert [t.text for t in got] == ["[CLS]", "The", "cat", "sat", "[SEP]", "on", "the", "Mat", "[SEP]"]
    assert [(t.start, t.stop) for t in got][1:3] == [(2, 5), (6, 9)] and got[0].start is None
    assert tok.decode([t.id for t in got]) == "the cat sat on the mat"
    assert tok.decode([t.id for t in got], skip_special_tokens=False) == "[CLS] the cat sat [SEP] on the mat [SEP]"
    assert tok.decode(tok.encode(["Café"]).input_ids.tolist()) == "cafe"  # caf ##e: word pieces joined
