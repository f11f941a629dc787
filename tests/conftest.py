"""Shared test fixtures: where the shared model fixtures live."""

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
