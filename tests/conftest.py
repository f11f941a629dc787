"""Shared test fixtures: where the shared model fixtures live; tiny models of every family."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# beside the checkout; elsewhere (a GPU machine that gets the checkout alone) where this variable says
SHARED = Path(os.environ.get("BERT_SERVING_SHARED") or REPO.parent / "shared")
TINY_BERT = SHARED / "fixtures" / "tiny-bert"
TF_BUNDLES = SHARED / "fixtures" / "tf-bundles"


@pytest.fixture(scope="session")
def tiny_bert() -> Path:
    assert TINY_BERT.is_dir(), f"the shared fixtures are expected at {TINY_BERT}"
    return TINY_BERT


@pytest.fixture(scope="session")
def expected(tiny_bert: Path) -> dict:
    """The fixture's reference outputs: arrays of expected.npz plus expected.json."""
    arrays = dict(np.load(tiny_bert / "expected.npz"))
    return {**json.loads((tiny_bert / "expected.json").read_text()), **arrays}


@pytest.fixture(scope="session")
def family_model(tmp_path_factory):
    """``family_model(name)``: the folder of that family's tiny sentence-transformers model
    (`tests.families`), built once per test session, on first use."""
    from .families import FAMILIES, build

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build(FAMILIES[name], tmp_path_factory.mktemp(name))
        return built[name]

    return get


@pytest.fixture(scope="session")
def splade_model(tmp_path_factory) -> Path:
    """A tiny random SPLADE model as sentence-transformers 6.x saves a SparseEncoder (`tests.sparse_models`)."""
    from .sparse_models import build_splade

    return build_splade(tmp_path_factory.mktemp("splade"))


@pytest.fixture(scope="session")
def m3_model(tmp_path_factory) -> Path:
    """A tiny random BGE-M3-shaped folder: XLM-R, colbert_linear.pt, sparse_linear.pt (`tests.sparse_models`)."""
    from .sparse_models import build_m3

    return build_m3(tmp_path_factory.mktemp("bge-m3"))


@pytest.fixture(scope="session")
def m3_reference(m3_model, tmp_path_factory) -> dict:
    """``BGEM3FlagModel.encode`` of `families.sample_texts` on `m3_model` (FlagEmbedding's own environment)."""
    from .families import sample_texts
    from .sparse_models import m3_reference

    return m3_reference(m3_model, sample_texts(), tmp_path_factory.mktemp("m3-reference"))
