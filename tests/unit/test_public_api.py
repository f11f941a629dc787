"""The public names users import, and an honest ``__all__`` in every public module."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "bert_serving.client": {"BertClient", "ConcurrentBertClient", "RerankResult", "terminate_server"},
    "bert_serving.server": {"BertServer", "__version__", "get_args_parser", "get_benchmark_parser",
                            "get_shutdown_parser"},
    # where 1.10.0 code imports them from
    "bert_serving.server.helper": {"get_args_parser", "get_run_args", "get_shutdown_parser", "set_logger",
                                   "send_ndarray", "TimeContext"},
    "bert_serving.server.graph": {"PoolingStrategy"},  # likewise
    "bert_serving.model": {"Encoder", "EncoderSettings", "PoolingStrategy", "CheckpointReader", "resolve"},
    "bert_serving.errors": {"BertServingError", "InvalidRequestError", "OverloadedError", "ServerTimeoutError",
                            "UnsupportedTaskError"},
    "bert_serving.protocol": {"parse_request", "parse_reply", "error_frames", "result_frames", "decode_data",
                              "predict_payload", "rerank_payload"},
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_are_exported_and_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert PUBLIC[module_name] <= set(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which does not exist"


def test_1_10_0_import_paths_name_the_same_objects() -> None:
    from bert_serving.model import Encoder, PoolingStrategy
    from bert_serving.model.encoder import Encoder as encoder_home
    from bert_serving.model.pooling import PoolingStrategy as pooling_home
    from bert_serving.server import BertServer, get_args_parser
    from bert_serving.server.graph import PoolingStrategy as graph_strategy
    from bert_serving.server.helper import get_args_parser as helper_parser
    from bert_serving.server.service import BertServer as service_home

    assert Encoder is encoder_home and BertServer is service_home
    assert PoolingStrategy is pooling_home is graph_strategy and graph_strategy.REDUCE_MEAN.value == 2
    assert helper_parser is get_args_parser
    assert get_args_parser().parse_args(["-model_dir", "/m", "-num_worker", "2"]).num_worker == 2


def test_every_error_kind_has_one_code_and_status() -> None:
    from bert_serving import errors

    kinds = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    codes = [k.code for k in kinds]
    assert len(codes) == len(set(codes))
    for kind in kinds:
        rebuilt = errors.error_from_code(kind.code, "message")
        assert type(rebuilt) is kind and 400 <= rebuilt.http_status < 600
    assert issubclass(errors.ServerTimeoutError, TimeoutError)  # as 1.10.0 raised
