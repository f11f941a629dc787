"""`Gateway`: everything an edge (ZeroMQ or HTTP) may ask of the server, and nothing more.

Each edge process gets one (`link.uplink.Uplink`, which sends the requests on to the
coordinator), so the edges depend on this narrow face instead of on the server's internals, and
never on each other.
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

from .request import ReplyFn, Ticket
from .stats import Stats

if TYPE_CHECKING:
    from ...model.tokenization import Tokenizer

__all__ = ["Gateway", "ModelGateway", "Observation", "ServedModel", "unknown_model"]


@dataclass(frozen=True)
class ServedModel:
    """What the edges need to know of the served model, to validate requests and describe it."""

    name: str
    dim: int  # width of one output vector (with a head: its number of outputs)
    vocab_size: int  # token ids a client may send are 0 <= id < vocab_size
    settings: Mapping[str, object] = field(default_factory=dict)  # effective settings, for humans
    prompts: Mapping[str, str] = field(default_factory=dict)  # names a request's prompt_name may take
    default_prompt_name: str | None = None  # the prompt a request that names none gets
    task: str = "embed"  # "embed", "classify" (a classifier head) or "rerank" (a one-output head)
    labels: tuple[str, ...] = ()  # a head's output names, in output order
    activation: str | None = None  # a head's (model.scores): applied unless a request wants raw scores
    per_token: bool = False  # -pooling_strategy NONE: a vector per token ([N, T, D]), not per text
    max_input_length: int = 0  # tokens the model sees of one input at most, special tokens included
    max_batch_tokens: int = 0  # tokens one forward pass takes at most
    outputs: tuple[str, ...] = ("dense",)  # what it gives (`bert_serving.outputs`): dense, sparse, colbert
    sparse_dim: int = 0  # the vocabulary its sparse vectors index
    colbert_dim: int = 0  # the width of its ColBERT vectors
    # the pipeline's own (thread-safe): what an edge tokenizes with it (/tokenize) is what the model sees
    tokenizer: Tokenizer | None = field(default=None, repr=False, compare=False)


def unknown_model(name: object, served: Sequence[str]) -> str:
    """What a request naming a model this server does not serve is told."""
    return f"The model '{name!s:.100}' does not exist: this server serves {', '.join(map(repr, served))}"


@dataclass(frozen=True)
class Observation:
    """The server as a view sees it at one moment; what was not asked for is None."""

    stats: Stats | None = None  # a copy of the server's counters: every process's counts
    status: dict[str, object] | None = None  # SHOW_CONFIG (with SHOW_STATUS's statistic, if asked)
    readiness: dict[str, object] | None = None  # what /ready answers


class Gateway(Protocol):
    """The server as its edges see it."""

    @property
    def stats(self) -> Stats:
        """Where this edge counts what it sees (requests, refusals); `observe` reads the server's."""

    @property
    def model(self) -> ServedModel:
        """The default model (the one a request that names none gets)."""

    @property
    def models(self) -> Mapping[str, ServedModel]:
        """Every served model by name, the default first."""

    def submit(self, texts: object, is_tokenized: bool, reply: ReplyFn, client: str, *, model: str | None = None,
               task: str | None = None, raw_scores: bool = False, prompt_name: object = None, prompt: object = None,
               outputs: Sequence[str] | None = None) -> Ticket:
        """Queue ``texts`` for the served model named ``model`` (None: the default; one it does not
        serve: `ModelNotFoundError`); exactly one `Outcome` goes to ``reply``, on another thread,
        unless the returned `Ticket` is abandoned first (the client went away).

        ``task`` (`tasks.REQUESTS`): None for the original's request (vectors, or a head's scores);
        ``embed``, ``predict`` or ``rerank`` to ask for that and be refused (`UnsupportedTaskError`)
        by a model that does something else. ``predict`` and ``rerank`` take explicit pairs
        (`Tokenizer.encode_pairs`). ``raw_scores``: a head's logits, without its activation.
        ``prompt_name`` (one of the model's prompts) or ``prompt`` (a text) goes before each text
        of an embedding request; neither: the model's default prompt, if it has one."""

    def together(self) -> AbstractContextManager[None]:
        """Small requests this thread submits inside are tokenized together when it ends (an
        edge that reads several messages at once: one tokenizer call for all of them)."""

    def observe(self, *, stats: bool = False, status: bool = False, with_statistic: bool = False, client: str = "",
                readiness: bool = False) -> Future[Observation]:
        """What views show, as of now: the server's `Stats` (behind SHOW_STATUS, ``/metrics``, the
        dashboard), SHOW_CONFIG's status for ``client`` (with SHOW_STATUS's ``statistic``), and
        ``/ready``'s readiness (``{"ready", "status", "workers", ...}``); whichever are asked for."""

    def request_stop(self) -> None:
        """Begin a graceful shutdown; returns at once."""

    def stage_failed(self, stage: str, error: BaseException) -> None:
        """A serving loop (``stage`` names it) of this edge died: the edge's process exits (and
        the server starts another in its place). Returns at once."""


class ModelGateway:
    """A `Gateway` whose requests go to one served model: what an edge built for one model (an
    HTTP app's routes) is given, one per model of a server that serves several."""

    def __init__(self, gateway: Gateway, name: str) -> None:
        self._gateway, self._name = gateway, name
        self.model = gateway.models[name]

    @property
    def stats(self) -> Stats:
        return self._gateway.stats

    @property
    def models(self) -> Mapping[str, ServedModel]:
        return self._gateway.models

    def submit(self, texts: object, is_tokenized: bool, reply: ReplyFn, client: str, **options) -> Ticket:
        return self._gateway.submit(texts, is_tokenized, reply, client, model=self._name, **options)

    def together(self) -> AbstractContextManager[None]:
        return self._gateway.together()

    def observe(self, **what) -> Future[Observation]:
        return self._gateway.observe(**what)

    def request_stop(self) -> None:
        self._gateway.request_stop()

    def stage_failed(self, stage: str, error: BaseException) -> None:
        self._gateway.stage_failed(stage, error)
