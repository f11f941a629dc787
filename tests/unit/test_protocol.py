"""Frames of the 1.10.0 protocol and our error reply."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bert_serving import protocol
from bert_serving.errors import InvalidRequestError, OverloadedError


def test_request_frames_round_trip() -> None:
    frames = protocol.request_frames(b"abc", b'["x"]', 7, 1)
    assert frames == [b"abc", b'["x"]', b"7", b"1"]
    message = protocol.parse_request(frames)
    assert (message.identity, message.req_id, message.msg_len, message.command) == (b"abc", 7, 1, None)
    assert protocol.parse_request([b"abc", b"SHOW_CONFIG", b"1", b"0"]).command == protocol.SHOW_CONFIG


@pytest.mark.parametrize("frames, identity, req_id, message", [
    ([b"abc", b"x", b"9"], b"abc", 9, "expected 4 frames"),
    ([b"abc", b"x", b"nine", b"0"], b"abc", 0, "ASCII decimal"),
    ([b"", b"x", b"1", b"0"], None, 0, "identity frame"),
    ([], None, 0, "got 0"),
])
def test_malformed_frames_say_whom_to_answer(frames, identity, req_id, message) -> None:
    with pytest.raises(protocol.MalformedRequest, match=message) as info:
        protocol.parse_request(frames)
    assert (info.value.identity, info.value.req_id) == (identity, req_id)


def test_texts_are_decoded_and_tokenized_input_detected() -> None:
    assert protocol.decode_texts(b'["a", "b"]') == (["a", "b"], False)
    assert protocol.decode_texts(b'[["a"], ["b", "c"]]') == ([["a"], ["b", "c"]], True)
    assert protocol.decode_texts('["\\u4f60\\u597d"]'.encode()) == (["你好"], False)
    for payload in (b"{", b'{"a": 1}', b"\xff"):
        with pytest.raises(InvalidRequestError):
            protocol.decode_texts(payload)


def test_result_frames_are_what_the_stock_client_decodes() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    identity, header, data, req_id = protocol.result_frames(b"id", 4, array, [["a"], ["b"]])
    meta = json.loads(header)
    assert meta == {"dtype": "float32", "shape": [2, 3], "tokens": [["a"], ["b"]]}
    np.testing.assert_array_equal(np.frombuffer(memoryview(data), dtype=meta["dtype"]).reshape(meta["shape"]), array)
    reply = protocol.parse_reply([identity, header, bytes(memoryview(data)), req_id])
    assert reply.req_id == 4 and reply.tokens == [["a"], ["b"]]


def test_error_reply_raises_in_the_stock_client_and_carries_the_kind_for_ours() -> None:
    frames = protocol.error_frames(b"id", 5, OverloadedError("backlog is full"))
    meta = json.loads(frames[1])
    with pytest.raises((TypeError, ValueError), match="backlog is full"):  # what 1.10.0 does with it
        np.frombuffer(frames[2], dtype=str(meta["dtype"])).reshape(meta["shape"])
    reply = protocol.parse_reply(frames)
    assert isinstance(reply.error, OverloadedError) and reply.error.message == "backlog is full"
    assert reply.req_id == 5


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=5000, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_decoding_any_frames_either_works_or_raises_invalid_request(frames) -> None:
    try:
        message = protocol.parse_request(frames)
    except protocol.MalformedRequest as exc:
        assert exc.identity is None or exc.identity == frames[0]
        return
    try:
        texts, is_tokenized = protocol.decode_texts(message.payload)
    except InvalidRequestError:
        return
    assert isinstance(texts, list)


def test_a_prompt_travels_in_an_object_the_stock_client_never_sends() -> None:
    assert protocol.texts_payload(["a"]) == b'["a"]'  # no prompt: the 1.10.0 list, for any server
    payload = protocol.texts_payload(["a", "b"], prompt_name="query")
    assert json.loads(payload) == {"texts": ["a", "b"], "prompt_name": "query"}
    assert protocol.decode_data(payload) == protocol.DataRequest(["a", "b"], False, "query", None)
    assert protocol.decode_data(protocol.texts_payload([["a"]], prompt="q: ")) == \
        protocol.DataRequest([["a"]], True, None, "q: ")
    assert protocol.decode_data(b'["a"]') == protocol.DataRequest(["a"], False)


def test_a_precision_travels_in_the_same_object() -> None:
    payload = protocol.texts_payload(["a"], precision="ubinary")
    assert json.loads(payload) == {"texts": ["a"], "precision": "ubinary"}
    assert protocol.decode_data(payload) == protocol.DataRequest(["a"], False, precision="ubinary")
    both = protocol.decode_data(protocol.texts_payload(["a"], prompt_name="query", precision="int8"))
    assert (both.prompt_name, both.precision) == ("query", "int8")


@pytest.mark.parametrize("payload, message", [
    (b'{"texts": ["a"], "precision": "int4"}', "precision must be one of float, int8, uint8, binary, ubinary"),
    (b'{"texts": ["a"], "precision": 8}', "precision must be one of"),
    (b'{"prompt_name": "query"}', "must be a JSON list of texts, or an object"),
    (b'{"texts": ["a"], "prompt_nam": "query"}', "got an object with texts, prompt_nam"),
    (b'{"texts": "a"}', "texts must be a JSON list"),
    (b'"a"', "must be a JSON list of texts"),
])
def test_a_malformed_request_object_is_a_clear_error(payload, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        protocol.decode_data(payload)


def test_task_objects_take_no_prompt_and_prompt_objects_no_task() -> None:
    with pytest.raises(InvalidRequestError, match="prompts are for embeddings; the rerank task takes none"):
        protocol.decode_data(json.dumps({"task": "rerank", "query": "q", "documents": ["d"],
                                         "prompt_name": "query"}).encode())
    request = protocol.decode_data(protocol.texts_payload(["a"], prompt_name="query"))
    assert (request.task, request.prompt_name, request.raw_scores) == (None, "query", False)
