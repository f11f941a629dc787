"""The documentation keeps up with the code: every flag of ``bert-serving-start`` is in
docs/configuration.md, and every page the README links to exists."""

from __future__ import annotations

import re

from bert_serving.server import get_args_parser

from ..conftest import REPO


def test_every_flag_is_documented() -> None:
    documented = set(re.findall(r"`-([a-z0-9_]+)`", (REPO / "docs" / "configuration.md").read_text()))
    flags = {option.lstrip("-") for action in get_args_parser()._actions for option in action.option_strings
             if option.startswith("-") and not option.startswith("--") and option != "-h"}
    assert flags - documented == set(), "flags missing from docs/configuration.md"


def test_the_readmes_links_lead_somewhere() -> None:
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)", readme):
        assert (REPO / target).exists(), target
