"""`Template`: where the special tokens go around one sequence or a pair, with which token types,
and how an input too long for the model is cut to fit.

Two kinds:

- `Template.original`: the original server's ``[CLS] A [SEP] B [SEP]`` with token types 0/1,
  and Google's ``_truncate_seq_pair`` (pop from the longer side, from B on a tie); for Google
  checkpoints and ``vocab.txt``-only folders;
- `Template.of_tokenizer`: what a ``tokenizer.json``'s own post-processor builds (RoBERTa's
  ``<s> A </s></s> B </s>``, DeBERTa's, a decoder's trailing end-of-text token, ...), read off
  the post-processor itself, with Hugging Face tokenizers' ``longest_first`` truncation, so the
  result is what ``tokenizer(a, b, truncation=True, max_length=n)`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer as _Backend

from ..errors import ConfigurationError

__all__ = ["Frame", "Template"]


@dataclass(frozen=True)
class Frame:
    """Special tokens before, between and after the sequences, with their token types."""

    prefix: tuple[int, ...] = ()
    prefix_types: tuple[int, ...] = ()
    a_type: int = 0
    middle: tuple[int, ...] = ()
    middle_types: tuple[int, ...] = ()
    b_type: int = 1
    suffix: tuple[int, ...] = ()
    suffix_types: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """How many special tokens this frame adds."""
        return len(self.prefix) + len(self.middle) + len(self.suffix)


@dataclass(frozen=True)
class Template:
    single: Frame
    pair: Frame
    longest_first: bool  # tokenizers' truncation; else the original's

    @classmethod
    def original(cls, cls_id: int, sep_id: int) -> Template:
        return cls(
            single=Frame(prefix=(cls_id,), prefix_types=(0,), suffix=(sep_id,), suffix_types=(0,)),
            pair=Frame(prefix=(cls_id,), prefix_types=(0,), middle=(sep_id,), middle_types=(0,), b_type=1,
                       suffix=(sep_id,), suffix_types=(1,)),
            longest_first=False,
        )

    @classmethod
    def of_tokenizer(cls, backend: _Backend, source: str) -> Template:
        """The frames ``backend``'s post-processor builds, found by running it on a probe pair."""
        backend.no_truncation()
        backend.no_padding()
        a = backend.encode("a", add_special_tokens=False)
        b = backend.encode("b", add_special_tokens=False)
        if not len(a.ids) or not len(b.ids):
            raise ConfigurationError(f"{source}: the tokenizer turns 'a' or 'b' into no token at all")
        try:
            return cls(single=_frame(backend.post_process(a), [len(a.ids)], source),
                       pair=_frame(backend.post_process(a, b), [len(a.ids), len(b.ids)], source), longest_first=True)
        except ConfigurationError:
            raise
        except Exception as exc:  # tokenizers raises bare Exceptions
            raise ConfigurationError(f"{source}: its post-processor fails on a probe pair: {exc}") from None

    def truncate_pair(self, a: list[int], b: list[int], room: int) -> tuple[list[int], list[int]]:
        """``a`` and ``b`` cut to at most ``room`` word pieces together."""
        room = max(room, 0)
        if len(a) + len(b) <= room:
            return a, b
        if self.longest_first:
            n, m = _longest_first(len(a), len(b), room)
            return a[:n], b[:m]
        a, b = list(a), list(b)
        while len(a) + len(b) > room:  # Google's _truncate_seq_pair
            if len(a) > len(b):
                a.pop()
            else:
                b.pop()
        return a, b


def _longest_first(n1: int, n2: int, room: int) -> tuple[int, int]:
    """Hugging Face tokenizers' ``LongestFirst`` for a pair: the shorter side is kept whole when
    the longer can take the rest, else each gets half (the odd one to the longer, to B on a tie)."""
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > room else max(n1, room - n1)
    if n1 + n2 > room:
        n1 = room // 2
        n2 = n1 + room % 2
    return (n2, n1) if swap else (n1, n2)


def _frame(encoding, lengths: list[int], source: str) -> Frame:
    """Split a post-processed probe (sequences of ``lengths`` tokens) into the special tokens
    before, between and after its sequences. (Its special-tokens mask tells them apart: the
    sequence ids of a post-processed pair are not reliable.)"""
    parts: list[list[tuple[int, int]]] = [[]]  # runs of special tokens around the sequences
    sequence_types: list[set[int]] = []
    left = 0  # tokens of the current sequence still to come
    for token, type_id, special in zip(encoding.ids, encoding.type_ids, encoding.special_tokens_mask):
        if special:
            if left:
                break  # a special token inside a sequence: not a layout we know
            parts[-1].append((token, type_id))
            continue
        if not left:
            if len(sequence_types) == len(lengths):
                break
            left = lengths[len(sequence_types)]
            sequence_types.append(set())
            parts.append([])
        sequence_types[-1].add(type_id)
        left -= 1
    else:
        if len(sequence_types) == len(lengths) and not left and all(len(t) == 1 for t in sequence_types):
            ids = [tuple(t for t, _ in part) for part in parts]
            kinds = [tuple(k for _, k in part) for part in parts]
            types = [next(iter(t)) for t in sequence_types]
            if len(lengths) == 1:
                return Frame(ids[0], kinds[0], types[0], suffix=ids[1], suffix_types=kinds[1])
            return Frame(ids[0], kinds[0], types[0], ids[1], kinds[1], types[1], ids[2], kinds[2])
    raise ConfigurationError(f"{source}: its post-processor does not build 'specials A specials [B specials]' "
                             "with one token type per sequence; this layout is not supported")
