"""What `BertClient` checks before sending: lists of non-blank strings, token lists, ``[A, B]``
pairs, and whether texts fit the server's ``max_seq_len`` (by words, as 1.10.0 estimated it)."""

from __future__ import annotations

__all__ = ["check_pairs", "check_texts", "check_token_lists", "within_length"]


def check_texts(texts) -> None:
    """A non-empty list of non-blank strings, or `TypeError`/`ValueError` naming the first bad one."""
    _non_empty_list(texts, "strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"all texts must be strings, but texts[{i}] is {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"all texts must be non-blank, but texts[{i}] is {text!r}")


def check_token_lists(texts) -> None:
    """A non-empty list of token lists (``is_tokenized=True``), each as `check_texts` wants it."""
    _non_empty_list(texts, "token lists")
    for tokens in texts:
        check_texts(tokens)


def check_pairs(texts) -> None:
    """Strings or ``[A, B]`` pairs of strings (`BertClient.predict`)."""
    _non_empty_list(texts, "strings or [A, B] pairs")
    for i, text in enumerate(texts):
        parts = [text] if isinstance(text, str) else text
        if not isinstance(parts, (list, tuple)) or not 1 <= len(parts) <= 2 or not all(isinstance(p, str) for p in parts):
            raise TypeError(f"texts[{i}] must be a string or a pair [A, B] of strings, got {text!r:.80}")
        if not all(p.strip() for p in parts):
            raise ValueError(f"all texts must be non-blank, but texts[{i}] is {text!r}")


def within_length(texts, len_limit: int, tokenized: bool) -> bool:
    """Every text within ``len_limit`` tokens (token lists) or words (strings)."""
    if tokenized:
        return all(len(t) <= len_limit for t in texts)
    return all(len(t.split()) <= len_limit for t in texts)


def _non_empty_list(texts, of: str) -> None:
    if not isinstance(texts, list):
        raise TypeError(f"texts must be a list of {of}, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts must be a non-empty list")
