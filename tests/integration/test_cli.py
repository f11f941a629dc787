"""The commands: bert-serving-start with the original's flags, bert-serving-terminate, busy ports."""

from __future__ import annotations

import subprocess

import pytest

from bert_serving.client import BertClient
from bert_serving.errors import ConfigurationError
from bert_serving.model import PoolingStrategy
from bert_serving.server import BertServer, ServerConfig, get_args_parser

from ..conftest import TINY_BERT
from .conftest import free_ports, running_server
from .processes import BIN, start_cli, stop, terminate_and_wait, wait_for_line


def test_every_original_flag_parses_in_both_spellings() -> None:
    original = ("-model_dir=/m -tuned_model_dir=/t -ckpt_name=model.ckpt-343 -config_name=c.json -graph_tmp_dir=/g "
                "-max_seq_len=NONE -cased_tokenization -pooling_layer -4 -3 -pooling_strategy=CLS_TOKEN -mask_cls_sep "
                "-no_special_token -show_tokens_to_client -no_position_embeddings -port=6000 -port_out=6001 "
                "-http_port=6002 -http_max_connect=20 -cors=http://x -num_worker=4 -max_batch_size=64 "
                "-priority_batch_size=8 -cpu -xla -fp16 -gpu_memory_fraction=0.3 -device_map 0 1 -prefetch_size=5 "
                "-fixed_embed_length -verbose").split()
    args = get_args_parser().parse_args(original)
    doubled = get_args_parser().parse_args([("-" + a if a.startswith("-") and not a[1:2].isdigit() else a)
                                            for a in original])
    assert vars(args) == vars(doubled)
    config = ServerConfig.from_namespace(args)
    assert config.encoder.max_seq_len is None and config.encoder.do_lower_case is False
    assert config.encoder.pooling_layer == (-4, -3)
    assert config.encoder.pooling_strategy is PoolingStrategy.FIRST_TOKEN
    assert config.encoder.show_tokens and config.encoder.fp16 and config.encoder.mask_cls_sep
    assert (config.port, config.port_out, config.http_port, config.num_worker) == (6000, 6001, 6002, 4)
    assert config.device_map == (0, 1) and config.cpu and config.gpu_memory_fraction == 0.3
    aliases = get_args_parser().parse_args(["-port_in", "7000", "-port_result", "7001"])
    assert (aliases.port, aliases.port_out) == (7000, 7001)
    assert get_args_parser().parse_args(["-port_data", "7002"]).port == 7002


@pytest.mark.parametrize("flags, message", [
    (["-max_seq_len", "3"], "must be > 3"),
    (["-max_seq_len", "abc"], "neither an integer nor NONE"),
    (["-pooling_strategy", "AVG"], "unknown pooling strategy"),
])
def test_bad_flag_values_are_rejected_by_the_parser(flags, message, capsys) -> None:
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(flags)
    assert message in capsys.readouterr().err


def test_start_logs_configuration_then_ready_and_terminate_stops_it() -> None:
    port, port_out = free_ports(2)
    proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-port={port}", f"-port_out={port_out}",
                     "-max_seq_len=16", "-num_worker=1", "-bind=127.0.0.1")
    try:
        lines = wait_for_line(proc, "ready to serve")
        text = "".join(lines)
        assert "effective configuration" in text and "pooling_strategy_name = REDUCE_MEAN" in text
        assert text.index("effective configuration") < text.index("worker 0 (cpu) ready") < text.index("ready to serve")
        with BertClient(port=port, port_out=port_out) as bc:
            assert bc.encode(["the cat"]).shape == (1, 32)
        terminate_and_wait(proc, port)
    finally:
        stop(proc)


def test_terminate_says_so_at_once_when_no_server_listens() -> None:
    done = subprocess.run([str(BIN / "bert-serving-terminate"), "-ip=127.0.0.1", f"-port={free_ports(1)[0]}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "nothing is listening at 127.0.0.1:" in done.stderr, done.stderr
    assert "shutdown signal sent" not in done.stdout


def test_busy_ports_fail_with_a_clear_message() -> None:
    with running_server("-max_seq_len", "16") as server:
        taken = server.config.port
        args = get_args_parser().parse_args(["-model_dir", str(TINY_BERT / "google"), "-port", str(taken),
                                             "-port_out", str(free_ports(1)[0])])
        with pytest.raises(ConfigurationError, match=f"port {taken} is already in use .* -port"):
            BertServer(args).start()
        proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-port={free_ports(1)[0]}",
                         f"-port_out={server.config.port_out}")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2
        assert f"port {server.config.port_out} is already in use" in out and "-port_out" in out


def test_wrong_model_dir_is_one_clear_line() -> None:
    proc = start_cli("-model_dir=/nonexistent/bert", f"-port={free_ports(1)[0]}")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "error: -model_dir /nonexistent/bert is not a directory" in out
    assert "Traceback" not in out and "NoneType" not in out


def test_benchmark_runs_the_original_experiments_and_prints_tables(tmp_path) -> None:
    port, port_out = free_ports(2)
    done = subprocess.run(
        [str(BIN / "bert-serving-benchmark"), f"-model_dir={TINY_BERT / 'google'}", f"-port={port}",
         f"-port_out={port_out}", "-max_seq_len=16", "-num_repeat=3", "-test_client_batch_size", "1", "8",
         "-test_max_batch_size", "-test_max_seq_len", "-test_num_client", "2", "-test_pooling_layer", "-1", "-4"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "|`client_batch_size`\t|samples/s|" in out and "|`num_client`\t|samples/s|" in out
    assert "|`pooling_layer`\t|samples/s|" in out and "|-4\t|error|" in out  # tiny-bert has 3 layers
    assert "pooling_layer=-4: -pooling_layer -4 is out of range" in out
    rows = [line for line in out.splitlines() if line.startswith("|1\t|") or line.startswith("|8\t|")]
    assert len(rows) == 2 and all(int(r.split("|")[2]) > 0 for r in rows)
    assert (tmp_path / "benchmark-1.result").read_text().count("samples/s") == 3
