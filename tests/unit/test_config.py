"""The settings the server derives from its flags when the user leaves them to it, and the values it
refuses before it loads anything."""

from __future__ import annotations

import pytest

from bert_serving.errors import ConfigurationError
from bert_serving.model import EncoderSettings
from bert_serving.server.config import ServerConfig


def test_the_cpu_token_budget_grows_with_each_worker_s_threads_and_for_narrower_models() -> None:
    one_thread, two_threads = ServerConfig(worker_threads=1), ServerConfig(worker_threads=2)
    assert one_thread.batch_tokens("cpu", 384) == 1024  # two one-thread workers run best at 1024 each
    assert two_threads.batch_tokens("cpu", 384) == 2048  # one two-thread worker at 2048
    assert two_threads.batch_tokens("cpu", 768) == 2048  # wider models: no smaller than that
    assert one_thread.batch_tokens("cpu", 192) == 4096  # half as wide: a quarter of the work per token
    assert one_thread.batch_tokens("cpu", 32) == 16384  # the most there is
    assert ServerConfig(worker_threads=1, encoder=EncoderSettings(dtype="bfloat16")).batch_tokens("cpu") == 4096
    assert two_threads.batch_tokens("cuda:0", 384) == 16384
    assert ServerConfig(worker_threads=2, max_batch_tokens=512).batch_tokens("cpu") == 512  # the user's word
    assert ServerConfig(ray_address="local", ray_num_cpus=4).batch_tokens("cpu") == 4096  # a Ray actor's CPUs


@pytest.mark.parametrize(("flags", "says"), [
    (dict(http_port=70000), "-http_port 70000 is not a TCP port (1-65535)"),
    (dict(http_port=0), "-http_port 0 is not a TCP port"),
    (dict(worker_threads=-1), "-worker_threads must be at least 1"),
    (dict(drain_timeout=-3), "-drain_timeout must be >= 0"),
    (dict(port=70000), "-port 70000 is not a TCP port"),
])
def test_out_of_range_values_are_refused_naming_the_flag(flags, says) -> None:
    with pytest.raises(ConfigurationError) as refused:
        ServerConfig(**flags)
    assert says in str(refused.value)



def test_normalize_and_no_normalize_together_are_refused(capsys) -> None:
    from bert_serving.server import get_args_parser

    parser = get_args_parser()
    assert [parser.parse_args(f).normalize for f in ([], ["-normalize"], ["-no_normalize"])] == [None, True, False]
    with pytest.raises(SystemExit):
        parser.parse_args(["-normalize", "-no_normalize"])
    assert "-no_normalize/--no_normalize: not allowed with argument -normalize" in capsys.readouterr().err
