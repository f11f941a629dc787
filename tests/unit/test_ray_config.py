"""The Ray flags: parsed in both spellings, validated with messages that say what to change,
and Ray never imported unless asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bert_serving.errors import ConfigurationError
from bert_serving.server import ServerConfig, get_args_parser

from ..conftest import TINY_BERT


def config(*argv: str) -> ServerConfig:
    return ServerConfig.from_namespace(get_args_parser().parse_args(list(argv)))


def test_ray_flags_parse_in_both_spellings() -> None:
    single = config("-ray_address", "10.0.0.1:6379", "-num_replicas", "3", "-ray_num_cpus", "2", "-ray_num_gpus", "0.5")
    double = config("--ray_address=10.0.0.1:6379", "--num_replicas=3", "--ray_num_cpus=2", "--ray_num_gpus=0.5")
    assert single == double
    assert (single.ray_address, single.replicas) == ("10.0.0.1:6379", 3)
    assert (single.ray_num_cpus, single.ray_num_gpus) == (2.0, 0.5)
    assert single.devices() == ["cuda"] * 3  # each replica's own GPU share, as Ray assigns it


def test_replicas_default_to_num_worker_and_run_on_cpu_without_gpus() -> None:
    for address in ("auto", "local", "head.example.org:6379"):
        chosen = config("-ray_address", address, "-num_worker", "2")
        assert chosen.replicas == 2 and chosen.devices() == ["cpu", "cpu"]
    assert config("-num_worker", "2").replicas == 2
    assert config().ray_address is None


@pytest.mark.parametrize("argv, message", [
    (["-num_replicas", "2"], "-num_replicas places replicas on a Ray cluster: it needs -ray_address"),
    (["-ray_num_gpus", "1"], "-ray_num_gpus places replicas on a Ray cluster: it needs -ray_address"),
    (["-ray_address", "head"], "-ray_address 'head' is none of: auto"),
    (["-ray_address", "head:99999"], "is none of: auto"),
    (["-ray_address", "auto", "-num_replicas", "0"], "-num_replicas must be at least 1, got 0"),
    (["-ray_address", "auto", "-ray_num_cpus", "0"], "-ray_num_cpus must be > 0"),
    (["-ray_address", "auto", "-ray_num_gpus", "-1"], "-ray_num_gpus must be >= 0"),
])
def test_bad_ray_flags_say_what_to_change(argv, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config(*argv)


def test_without_ray_installed_the_flag_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an interpreter without Ray finds
    with pytest.raises(ConfigurationError, match=r"pip install 'bert-serving\[ray\]'"):
        config("-ray_address", "auto")


def test_nothing_imports_ray_without_the_flag() -> None:
    script = (
        "import sys\n"
        "from bert_serving.server import BertServer, get_args_parser\n"
        "import bert_serving.server.replicas.pool, bert_serving.server.cli\n"
        f"BertServer(get_args_parser().parse_args(['-model_dir', {str(TINY_BERT / 'google')!r}]))\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.') or m.endswith('ray_replicas')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
