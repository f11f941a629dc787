"""`Prompts`: a model's named prompts (sentence-transformers' ``prompts``, e.g. e5's
``{"query": "query: ", "passage": "passage: "}``) and the one that applies when a request
names none (``default_prompt_name``, or ``-default_prompt_name``).

A request may name a prompt (``prompt_name``) or bring its own text (``prompt``, which wins
when both are given, as in ``SentenceTransformer.encode``); ``prompt: ""`` asks for no prompt
at all, even where the model has a default. The chosen prompt is put before the text, as
sentence-transformers does. Pure Python: the pipeline resolves requests' prompts with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import InvalidRequestError

__all__ = ["Prompts", "unknown_prompt"]


@dataclass(frozen=True)
class Prompts:
    named: tuple[tuple[str, str], ...] = ()
    default_name: str | None = None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.named]

    def as_dict(self) -> dict[str, str]:
        return dict(self.named)

    def choose(self, prompt_name: object = None, prompt: object = None) -> str | None:
        """The prompt text a request asks for (None: no prompt); raises `InvalidRequestError`."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InvalidRequestError(f"prompt must be a string, got {type(prompt).__name__}", param="prompt")
            return prompt or None
        if prompt_name is not None:
            if not isinstance(prompt_name, str):
                raise InvalidRequestError(f"prompt_name must be a string, got {type(prompt_name).__name__}",
                                          param="prompt_name")
            found = self.as_dict().get(prompt_name)
            if found is None:
                raise InvalidRequestError(f"prompt_name {unknown_prompt(prompt_name, self.names)}",
                                          param="prompt_name")
            return found or None
        if self.default_name is not None:
            return self.as_dict()[self.default_name] or None
        return None


def unknown_prompt(name: str, names: Sequence[str]) -> str:
    """What is wrong with asking for prompt ``name`` of a model whose prompts are ``names``."""
    known = ", ".join(repr(n) for n in names) or "none: it has no prompts"
    return f"{name!r:.60} is not one of this model's prompts ({known})"
