"""Texts -> `Features`, exactly as the original server tokenized, on the `tokenizers` library.

The rules (bert-as-service ``extract_features.py``):
- raw text goes through BERT's basic tokenizer and WordPiece; uncased with accent stripping
  unless ``-cased_tokenization``; CJK characters become single tokens;
- ``"A ||| B"`` is a sentence pair, split at the last ``" ||| "``; in pre-tokenized input the
  token ``"|||"`` splits at its first occurrence; `Tokenizer.encode_pairs` also takes explicit
  ``[A, B]`` pairs (``[A]``: a single text), which are never split (a reranker's documents);
- pre-tokenized input (lists of tokens) is not split or lower-cased; a token missing from the
  vocabulary becomes ``[UNK]``; a token may also be given as its vocabulary id (an int);
- single sequences keep their first ``max_len - 2`` word pieces; pairs drop the last word piece
  of the longer side (of B on a tie) until ``len(A) + len(B) <= max_len - 3``;
- ``-no_special_token`` sends pre-tokenized single sequences without [CLS]/[SEP], truncated to
  ``max_len``; it does not apply to raw text (the original crashed on it there).

A text far longer than the model can see (a whole document at max_seq_len 25) is cut at a
whitespace first, so its tokenization costs what its kept prefix costs; the result is the same
(if the prefix gives too few word pieces, the whole text is tokenized after all).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as _Backend
from tokenizers import models, normalizers, pre_tokenizers

from ..errors import ConfigurationError, InvalidRequestError
from .features import Features

__all__ = ["Tokenizer", "check_pairs", "check_texts"]

_PAIR = re.compile(r"^(.*) \|\|\| (.*)$")
_PAIR_TOKEN = "|||"
_WHITESPACE = re.compile(r"\s")
_CHARS_PER_TOKEN = 64  # a prefix of max_len x this many characters nearly always holds max_len pieces


def check_texts(texts: object, is_tokenized: bool, vocab_size: int | None = None) -> None:
    """Raise `InvalidRequestError` unless ``texts`` is a non-empty list of non-blank strings
    (``is_tokenized``: of non-empty lists of non-blank strings or vocabulary ids)."""
    if not isinstance(texts, list):
        raise InvalidRequestError(f"texts must be a list, got {type(texts).__name__}")
    if not texts:
        raise InvalidRequestError("texts must not be empty")
    for i, text in enumerate(texts):
        if is_tokenized:
            if not isinstance(text, list) or not text:
                raise InvalidRequestError(f"texts[{i}] must be a non-empty list of tokens, got {text!r:.80}")
            for j, token in enumerate(text):
                if isinstance(token, int) and not isinstance(token, bool):
                    if vocab_size is not None and not 0 <= token < vocab_size:
                        raise InvalidRequestError(f"texts[{i}][{j}]: token id {token} is not in the vocabulary "
                                                  f"(0..{vocab_size - 1})")
                elif not isinstance(token, str) or not token.strip():
                    raise InvalidRequestError(f"texts[{i}][{j}] must be a non-blank string or a token id, "
                                              f"got {token!r:.80}")
        elif not isinstance(text, str):
            raise InvalidRequestError(f"texts[{i}] must be a string, got {type(text).__name__}")
        elif not text.strip():
            raise InvalidRequestError(f"texts[{i}] is empty or blank; every text needs at least one character")


def check_pairs(items: object) -> None:
    """Raise `InvalidRequestError` unless ``items`` is a non-empty list whose items are non-blank
    strings or lists of one or two non-blank strings (a text, or a pair of texts)."""
    if not isinstance(items, list):
        raise InvalidRequestError(f"texts must be a list, got {type(items).__name__}")
    if not items:
        raise InvalidRequestError("texts must not be empty")
    for i, item in enumerate(items):
        if isinstance(item, str):
            parts = [item]
        elif isinstance(item, (list, tuple)) and 1 <= len(item) <= 2:
            parts = item
        else:
            raise InvalidRequestError(f"texts[{i}] must be a text or a pair [text, text], got {item!r:.80}")
        for part in parts:
            if not isinstance(part, str):
                raise InvalidRequestError(f"texts[{i}] must hold strings, got {type(part).__name__}")
            if not part.strip():
                raise InvalidRequestError(f"texts[{i}] is empty or blank; every text needs at least one character")


class Tokenizer:
    """Turns a request's texts into `Features` under the server's length and mask settings."""

    def __init__(
        self,
        backend: _Backend,
        *,
        max_length: int,
        mask_cls_sep: bool = False,
        no_special_token: bool = False,
    ) -> None:
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self._vocab = backend.get_vocab()
        ids = {}
        for name in ("[CLS]", "[SEP]", "[UNK]"):
            if name not in self._vocab:
                raise ConfigurationError(f"the vocabulary has no {name} token; is this a BERT vocabulary?")
            ids[name] = self._vocab[name]
        self.cls_id, self.sep_id, self.unk_id = ids["[CLS]"], ids["[SEP]"], ids["[UNK]"]
        if max_length < 4:
            raise ConfigurationError(f"max_seq_len must be > 3 (room for [CLS] x [SEP] y [SEP]), got {max_length}")
        self.max_length = max_length
        self.mask_cls_sep = mask_cls_sep
        self.no_special_token = no_special_token

    @classmethod
    def from_vocab(cls, vocab_path: Path, *, lowercase: bool, **options) -> Tokenizer:
        """Google's FullTokenizer over ``vocab.txt``."""
        try:
            vocab = models.WordPiece.read_file(str(vocab_path))
        except Exception as exc:  # tokenizers raises a bare Exception on I/O errors
            raise ConfigurationError(f"cannot read vocabulary {vocab_path}: {exc}") from None
        backend = _Backend(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        backend.normalizer = _bert_normalizer(lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return cls(backend, **options)

    @classmethod
    def from_file(cls, tokenizer_json: Path, *, force_cased: bool = False, **options) -> Tokenizer:
        """A Hugging Face ``tokenizer.json``; ``force_cased`` turns off its lower-casing."""
        try:
            backend = _Backend.from_file(str(tokenizer_json))
        except Exception as exc:
            raise ConfigurationError(f"cannot read tokenizer {tokenizer_json}: {exc}") from None
        if force_cased:
            backend.normalizer = _bert_normalizer(False)
        return cls(backend, **options)

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size()

    def encode(
        self, texts: Sequence[str] | Sequence[Sequence[str]], is_tokenized: bool = False, *, keep_tokens: bool = False
    ) -> Features:
        """Features of ``texts`` (with their word pieces if ``keep_tokens``); raises
        `InvalidRequestError` on malformed input."""
        check_texts(texts, is_tokenized, self.vocab_size)
        if is_tokenized:
            segments = [self._split_tokens(tokens) for tokens in texts]
        else:
            segments = self._wordpieces(texts)
        special_tokens = not (is_tokenized and self.no_special_token)
        return self._features(segments, special_tokens, keep_tokens)

    def encode_pairs(self, items: Sequence[str | Sequence[str]], *, keep_tokens: bool = False) -> Features:
        """Features of texts and explicit pairs: a string as `encode` takes it (``" ||| "`` splits
        it), a list ``[A, B]`` a pair as given, ``[A]`` a single text as given."""
        check_pairs(items)
        return self._features(self._wordpieces(items), True, keep_tokens)

    def _split_tokens(self, tokens: Sequence[str | int]) -> tuple[list[int], list[int] | None]:
        ids = [t if isinstance(t, int) else self._vocab.get(t, self.unk_id) for t in tokens]
        if _PAIR_TOKEN in tokens:
            j = tokens.index(_PAIR_TOKEN)
            return ids[:j], ids[j + 1 :]
        return ids, None

    def _wordpieces(self, texts: Sequence[str | Sequence[str]]) -> list[tuple[list[int], list[int] | None]]:
        pieces: list[str] = []
        is_pair: list[bool] = []
        for text in texts:
            if not isinstance(text, str):  # an explicit [A] or [A, B] (encode_pairs)
                pieces.extend(part.strip() for part in text)
                is_pair.append(len(text) == 2)
                continue
            line = text.strip()
            match = _PAIR.match(line)
            if match:
                pieces.extend(match.groups())
            else:
                pieces.append(line)
            is_pair.append(match is not None)
        clipped = [self._clip(piece) for piece in pieces]
        encoded = [e.ids for e in self._backend.encode_batch_fast(clipped, add_special_tokens=False)]
        for i, (piece, short) in enumerate(zip(pieces, clipped)):
            if short is not piece and len(encoded[i]) < self.max_length:  # the cut cost tokens: no cut
                encoded[i] = self._backend.encode(piece, add_special_tokens=False).ids
        segments = iter(encoded)
        return [(next(segments), next(segments) if pair else None) for pair in is_pair]

    def _clip(self, text: str) -> str:
        """``text`` cut at the first whitespace past what ``max_length`` word pieces can span."""
        limit = self.max_length * _CHARS_PER_TOKEN
        if len(text) <= limit:
            return text
        space = _WHITESPACE.search(text, limit)
        return text if space is None else text[: space.start()]

    def _features(
        self, segments: list[tuple[list[int], list[int] | None]], special_tokens: bool, keep_tokens: bool
    ) -> Features:
        cls_, sep, limit, keep = self.cls_id, self.sep_id, self.max_length, not self.mask_cls_sep
        all_ids, all_types, all_masks = [], [], []
        for a, b in segments:
            if b is None and not special_tokens:
                ids = a[:limit]
                types, mask = [0] * len(ids), [True] * len(ids)
            elif b is None:
                a = a[: limit - 2]
                ids = [cls_, *a, sep]
                types = [0] * len(ids)
                mask = [keep, *([True] * len(a)), keep]
            else:
                a, b = _truncate_pair(a, b, limit - 3)
                ids = [cls_, *a, sep, *b, sep]
                types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                mask = [keep, *([True] * len(a)), keep, *([True] * len(b)), keep]
            all_ids.append(ids)
            all_types.append(types)
            all_masks.append(mask)
        tokens = None
        if keep_tokens:
            tokens = [[self._backend.id_to_token(i) for i in ids] for ids in all_ids]
        return Features.from_lists(all_ids, all_types, all_masks, tokens)


def _truncate_pair(a: list[int], b: list[int], max_total: int) -> tuple[list[int], list[int]]:
    """Google's ``_truncate_seq_pair``: pop from the longer side (B on a tie)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_total:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return a, b


def _bert_normalizer(lowercase: bool) -> normalizers.Normalizer:
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
