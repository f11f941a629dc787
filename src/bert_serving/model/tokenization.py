"""Texts -> `Features`, on the `tokenizers` library: the original server's rules for Google
checkpoints and ``vocab.txt``-only folders, the folder's own ``tokenizer.json`` otherwise.

What both share:
- ``"A ||| B"`` is a sentence pair, split at the last ``" ||| "``; in pre-tokenized input the
  token ``"|||"`` splits at its first occurrence; `Tokenizer.encode_pairs` also takes explicit
  ``[A, B]`` pairs (``[A]``: a single text), which are never split (a reranker's documents);
- pre-tokenized input (lists of tokens) is not split or normalised; a token missing from the
  vocabulary becomes the unknown token; a token may also be given as its vocabulary id (an int);
- ``-no_special_token`` sends pre-tokenized single sequences without special tokens, truncated
  to ``max_len``; it does not apply to raw text (the original crashed on it there);
- a prompt (sentence-transformers' ``prompts``) is put before the text (before A in a pair),
  as ``SentenceTransformer.encode`` does; with the Pooling module's ``include_prompt: false``
  its tokens are left out of pooling, counted as sentence-transformers counts them.

The original's rules (bert-as-service ``extract_features.py``, `Template.original`): BERT's
basic tokenizer and WordPiece, uncased with accent stripping unless ``-cased_tokenization``,
CJK characters as single tokens; text stripped; singles keep their first ``max_len - 2`` word
pieces; pairs drop the last word piece of the longer side (of B on a tie).

A ``tokenizer.json`` (`Template.of_tokenizer`) brings its own normaliser, pre-tokenizer and
model (WordPiece, BPE, Unigram), its special tokens and pair template, and Hugging Face's
``longest_first`` truncation: the ids are those of ``tokenizer(a, b, truncation=True)``.

A text far longer than the model can see (a whole document at max_seq_len 25) is cut at a
whitespace first, so its tokenization costs what its kept prefix costs; the result is the same
(if the prefix gives too few word pieces, the whole text is tokenized after all).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from itertools import accumulate, chain
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers

from ..errors import ConfigurationError, InvalidRequestError
from .features import Features
from .templates import Template

__all__ = ["Token", "Tokenizer", "check_pairs", "check_texts"]

_PAIR = re.compile(r"^(.*) \|\|\| (.*)$")
_PAIR_TOKEN = "|||"
_WHITESPACE = re.compile(r"\s")
_CHARS_PER_TOKEN = 64  # a prefix of max_len x this many characters nearly always holds max_len pieces
_CACHED_PROMPT_CHARS = 2048  # prompts up to this long are tokenized once and remembered


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


class Token(NamedTuple):
    """One token of a text as the model sees it (`Tokenizer.tokens`): a special token has no
    span; a word piece spans ``text[start:stop]``, character offsets into the text."""

    id: int
    text: str
    special: bool
    start: int | None = None
    stop: int | None = None


_SPECIAL_WORD_PIECES = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # a vocab.txt's, as BertTokenizer's


class Tokenizer:
    """Turns a request's texts into `Features` under the server's length and mask settings."""

    def __init__(
        self,
        backend: _Backend,
        template: Template,
        *,
        max_length: int,
        unk_id: int | None,
        mask_cls_sep: bool = False,
        no_special_token: bool = False,
        pool_prompt: bool = True,
        strip: bool = False,
    ) -> None:
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self._vocab = backend.get_vocab()
        self.template = template
        self.unk_id = unk_id
        if max_length < 4:
            raise ConfigurationError(f"max_seq_len must be > 3 (room for [CLS] x [SEP] y [SEP]), got {max_length}")
        self.max_length = max_length
        self.mask_cls_sep = mask_cls_sep
        self.no_special_token = no_special_token
        self.pool_prompt = pool_prompt
        self._strip = strip  # the original strips texts; a model's own tokenizer sees them as sent
        added = backend.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, token in added.items() if token.special) or frozenset(
            self._vocab[name] for name in _SPECIAL_WORD_PIECES if name in self._vocab)

    @classmethod
    def from_vocab(cls, vocab_path: Path, *, lowercase: bool, **options) -> Tokenizer:
        """Google's FullTokenizer over ``vocab.txt``, with the original server's rules."""
        try:
            vocab = models.WordPiece.read_file(str(vocab_path))
        except Exception as exc:  # tokenizers raises a bare Exception on I/O errors
            raise ConfigurationError(f"cannot read vocabulary {vocab_path}: {exc}") from None
        backend = _Backend(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        backend.normalizer = _bert_normalizer(lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        missing = [name for name in ("[CLS]", "[SEP]", "[UNK]") if name not in vocab]
        if missing:
            raise ConfigurationError(f"the vocabulary {vocab_path} has no {missing[0]} token; is it a BERT vocabulary?")
        return cls(backend, Template.original(vocab["[CLS]"], vocab["[SEP]"]), unk_id=vocab["[UNK]"], strip=True,
                   **options)

    @classmethod
    def from_file(cls, tokenizer_json: Path, *, force_cased: bool = False, lowercase: bool = False,
                  **options) -> Tokenizer:
        """A Hugging Face ``tokenizer.json``, with its own special tokens and truncation.
        ``force_cased`` turns off a BERT normaliser's lower-casing (``-cased_tokenization``);
        ``lowercase`` lower-cases before its normaliser (sentence-transformers' ``do_lower_case``)."""
        try:
            backend = _Backend.from_file(str(tokenizer_json))
        except Exception as exc:
            raise ConfigurationError(f"cannot read tokenizer {tokenizer_json}: {exc}") from None
        if force_cased and isinstance(backend.normalizer, normalizers.BertNormalizer):
            backend.normalizer = _bert_normalizer(False)
        if lowercase:
            own = [backend.normalizer] if backend.normalizer is not None else []
            backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), *own])
        return cls(backend, Template.of_tokenizer(backend, str(tokenizer_json)), unk_id=_unk_id(backend), **options)

    @classmethod
    def from_recipe(cls, recipe: dict[str, object]) -> Tokenizer:
        """The tokenizer a `ModelSpec.tokenizer_recipe` describes: ``{"file": tokenizer.json, ...}``
        or ``{"vocab": vocab.txt, ...}`` with the options of `from_file` / `from_vocab`."""
        options = dict(recipe)
        if "file" in options:
            return cls.from_file(Path(options.pop("file")), **options)
        return cls.from_vocab(Path(options.pop("vocab")), **options)

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size()

    @property
    def pad_id(self) -> int | None:
        """The id of the padding token (``<pad>``, ``[PAD]``), if the vocabulary has one."""
        return next((self._vocab[name] for name in ("<pad>", "[PAD]") if name in self._vocab), None)

    def encode(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        is_tokenized: bool = False,
        *,
        keep_tokens: bool = False,
        prompt: str | None = None,
    ) -> Features:
        """Features of ``texts`` (with their word pieces if ``keep_tokens``), ``prompt`` put before
        each; raises `InvalidRequestError` on malformed input."""
        check_texts(texts, is_tokenized, self.vocab_size)
        if is_tokenized:
            segments = [self._split_tokens(tokens) for tokens in texts]
            if prompt:
                pieces = self._pieces(prompt)
                segments = [(pieces + a, b) for a, b in segments]
        else:
            segments = self._wordpieces(texts, prompt or "")
        special_tokens = not (is_tokenized and self.no_special_token)
        hidden = self.prompt_length(prompt) if prompt and not self.pool_prompt else 0
        return self._features(segments, special_tokens, keep_tokens, hidden)

    def tokens(self, text: str, *, prompt: str | None = None, special_tokens: bool = True) -> list[Token]:
        """The tokens the model sees for ``text`` (``prompt`` before it), their ids those of
        `encode`: word pieces cut as `encode` cuts them, and the special tokens unless not
        ``special_tokens``. Offsets count characters of ``prompt + text``."""
        line = (prompt or "") + text
        body = line.strip() if self._strip else line
        shift = len(line) - len(line.lstrip()) if self._strip else 0
        match = _PAIR.match(body)
        spans = [(match.start(1), match.group(1)), (match.start(2), match.group(2))] if match else [(0, body)]
        parts = [(shift + start, self._backend.encode(part, add_special_tokens=False)) for start, part in spans]
        if len(parts) == 1:  # as `_features` cuts: a single text's first pieces, a pair longest first
            frame = self.template.single
            kept = [min(len(parts[0][1].ids), max(self.max_length - frame.size, 0))]
            between = [frame.prefix, frame.suffix]
        else:
            frame = self.template.pair
            a, b = self.template.truncate_pair(parts[0][1].ids, parts[1][1].ids, self.max_length - frame.size)
            kept, between = [len(a), len(b)], [frame.prefix, frame.middle, frame.suffix]
        out: list[Token] = []
        for i, specials in enumerate(between):
            if special_tokens:
                out.extend(Token(s, self._backend.id_to_token(s), True) for s in specials)
            if i < len(parts):
                start, encoding = parts[i]
                for id_, (begin, end) in zip(encoding.ids[: kept[i]], encoding.offsets[: kept[i]]):
                    out.append(Token(id_, line[start + begin : start + end], False, start + begin, start + end))
        return out

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """The text of ``ids`` (word pieces joined as the model's decoder joins them)."""
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        return self._backend.decode(list(ids), skip_special_tokens=False)

    def prompt_length(self, prompt: str) -> int:
        """Leading positions sentence-transformers counts as the prompt's: the prompt encoded
        alone with its special tokens, less a trailing special token."""
        framed = self._features([(self._pieces(prompt), None)], True, False, 0)
        return framed.num_tokens - (1 if self.template.single.suffix else 0)

    def _pieces(self, text: str) -> list[int]:
        if len(text) > _CACHED_PROMPT_CHARS:  # a request's own long prompt: not worth keeping
            return self._backend.encode(text, add_special_tokens=False).ids
        return list(_cached_pieces(self._backend, text))

    def _lookup(self, token: str | int) -> int:
        if isinstance(token, int):
            return token
        found = self._vocab.get(token, self.unk_id)
        if found is None:
            raise InvalidRequestError(f"token {token!r:.40} is not in this model's vocabulary, which has no "
                                      "unknown token; send text instead")
        return found

    def encode_pairs(self, items: Sequence[str | Sequence[str]], *, keep_tokens: bool = False) -> Features:
        """Features of texts and explicit pairs: a string as `encode` takes it (``" ||| "`` splits
        it), a list ``[A, B]`` a pair as given, ``[A]`` a single text as given."""
        check_pairs(items)
        return self._features(self._wordpieces(items), True, keep_tokens, 0)

    def _split_tokens(self, tokens: Sequence[str | int]) -> tuple[list[int], list[int] | None]:
        ids = [self._lookup(t) for t in tokens]
        if _PAIR_TOKEN in tokens:
            j = tokens.index(_PAIR_TOKEN)
            return ids[:j], ids[j + 1 :]
        return ids, None

    def _wordpieces(self, texts: Sequence[str | Sequence[str]], prompt: str = "",
                    ) -> list[tuple[list[int], list[int] | None]]:
        pieces: list[str] = []
        is_pair: list[bool] = []
        for text in texts:
            if not isinstance(text, str):  # an explicit [A] or [A, B] (encode_pairs)
                pieces.extend(part.strip() if self._strip else part for part in text)
                is_pair.append(len(text) == 2)
                continue
            line = prompt + text
            match = _PAIR.match(line.strip() if self._strip else line)
            if match:
                pieces.extend(match.groups())
            else:
                pieces.append(line.strip() if self._strip else line)
            is_pair.append(match is not None)
        clipped = [self._clip(piece) for piece in pieces]
        encoded = [e.ids for e in self._backend.encode_batch_fast(clipped, add_special_tokens=False)]
        cut = [short is not piece for piece, short in zip(pieces, clipped)]
        for i, piece in enumerate(pieces):
            if cut[i] and len(encoded[i]) < self.max_length:  # the cut cost tokens: no cut
                encoded[i] = self._backend.encode(piece, add_special_tokens=False).ids
        segments, index = [], 0
        for pair in is_pair:
            if not pair:
                segments.append((encoded[index], None))
                index += 1
                continue
            if self.template.longest_first and cut[index] and cut[index + 1]:
                # which side is longer decides the odd token: only whole texts tell
                for j in (index, index + 1):
                    encoded[j] = self._backend.encode(pieces[j], add_special_tokens=False).ids
            segments.append((encoded[index], encoded[index + 1]))
            index += 2
        return segments

    def _clip(self, text: str) -> str:
        """``text`` cut at the first whitespace past what ``max_length`` word pieces can span."""
        limit = self.max_length * _CHARS_PER_TOKEN
        if len(text) <= limit:
            return text
        space = _WHITESPACE.search(text, limit)
        return text if space is None else text[: space.start()]

    def _features(
        self,
        segments: list[tuple[list[int], list[int] | None]],
        special_tokens: bool,
        keep_tokens: bool,
        hidden_prefix: int,
    ) -> Features:
        template, limit, keep = self.template, self.max_length, not self.mask_cls_sep
        single, pair = template.single, template.pair
        if special_tokens and not keep_tokens and all(b is None for _, b in segments):
            return self._single_features([a for a, _ in segments], hidden_prefix)
        single_marks = ([keep] * len(single.prefix), [keep] * len(single.suffix))
        pair_marks = ([keep] * len(pair.prefix), [keep] * len(pair.middle), [keep] * len(pair.suffix))
        all_ids, all_types, all_masks = [], [], []
        for a, b in segments:
            if b is None and not special_tokens:
                ids = a[:limit]
                types, mask = [0] * len(ids), [True] * len(ids)
            elif b is None:
                a = a[: max(limit - single.size, 0)]
                ids = [*single.prefix, *a, *single.suffix]
                types = [*single.prefix_types, *([single.a_type] * len(a)), *single.suffix_types]
                mask = [*single_marks[0], *([True] * len(a)), *single_marks[1]]
            else:
                a, b = template.truncate_pair(a, b, limit - pair.size)
                ids = [*pair.prefix, *a, *pair.middle, *b, *pair.suffix]
                types = [*pair.prefix_types, *([pair.a_type] * len(a)), *pair.middle_types,
                         *([pair.b_type] * len(b)), *pair.suffix_types]
                mask = [*pair_marks[0], *([True] * len(a)), *pair_marks[1], *([True] * len(b)), *pair_marks[2]]
            if hidden_prefix:
                n = min(hidden_prefix, len(mask))
                mask[:n] = [False] * n
            all_ids.append(ids)
            all_types.append(types)
            all_masks.append(mask)
        tokens = None
        if keep_tokens:
            tokens = [[self._backend.id_to_token(i) for i in ids] for ids in all_ids]
        return Features.from_lists(all_ids, all_types, all_masks, tokens)


    def _single_features(self, pieces: list[list[int]], hidden_prefix: int) -> Features:
        """`_features` of single texts with their special tokens, built as whole arrays (the
        common request: most of its cost per text was Python lists of types and marks)."""
        single = self.template.single
        cap = max(self.max_length - single.size, 0)
        pieces = [a[:cap] for a in pieces]
        before, after = len(single.prefix), len(single.suffix)
        offsets = np.fromiter(accumulate((before + len(a) + after for a in pieces), initial=0), np.int64,
                              count=len(pieces) + 1)
        total = int(offsets[-1])
        ids = np.fromiter(chain.from_iterable(chain(single.prefix, a, single.suffix) for a in pieces), np.int32,
                          count=total)
        types = np.full(total, single.a_type, dtype=np.int8)
        mask = np.ones(total, dtype=np.bool_)
        starts, ends = offsets[:-1], offsets[1:]
        for i, t in enumerate(single.prefix_types):
            types[starts + i] = t
        for i, t in enumerate(single.suffix_types):
            types[ends - after + i] = t
        if self.mask_cls_sep:
            for i in range(before):
                mask[starts + i] = False
            for i in range(after):
                mask[ends - after + i] = False
        for i in range(hidden_prefix):  # a prompt pooling leaves out: its first positions, within each text
            mask[(starts + i)[starts + i < ends]] = False
        return Features(ids, types, mask, offsets)


@lru_cache(maxsize=64)
def _cached_pieces(backend: _Backend, text: str) -> tuple[int, ...]:
    """A prompt's word pieces (prompts repeat: each is tokenized once)."""
    return tuple(backend.encode(text, add_special_tokens=False).ids)


def _unk_id(backend: _Backend) -> int | None:
    """The id of the model's unknown token (WordPiece, BPE: ``unk_token``; Unigram: ``unk_id``)."""
    model = json.loads(backend.to_str()).get("model", {})
    if isinstance(model.get("unk_id"), int):
        return model["unk_id"]
    token = model.get("unk_token")
    return backend.token_to_id(token) if token else None


def _bert_normalizer(lowercase: bool) -> normalizers.Normalizer:
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
