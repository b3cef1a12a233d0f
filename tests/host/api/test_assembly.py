"""A plain answer rebuilt from the stream of the same answer: pure, event by event.

(That the rebuilt answer is what llama-server itself answers without `stream` is shown
against the real server in test_proxy.py.)"""

from __future__ import annotations

import json

import pytest

from host.api.assembly import Assembly, as_stream, assembled_body


def events(*payloads: object) -> list[bytes]:
    return [f"data: {json.dumps(p)}".encode() for p in payloads]


def test_an_assembly_joins_text_reasoning_and_tool_calls() -> None:
    assembly = Assembly("/v1/chat/completions")
    for event in [
        b"data: null",
        *events(
            {
                "id": "c1",
                "created": 5,
                "model": "m",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}],
            },
            {"choices": [{"index": 0, "delta": {"reasoning_content": "Think"}}]},
            {"choices": [{"index": 0, "delta": {"reasoning_content": "ing.", "content": "Hel"}}]},
            {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "t1",
                                    "type": "function",
                                    "function": {"name": "ls", "arguments": '{"pa'},
                                }
                            ]
                        },
                    }
                ]
            },
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": 'th": "."}'}}]
                        },
                    }
                ]
            },
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 1,
                                    "id": "t2",
                                    "function": {"name": "pwd", "arguments": "{}"},
                                }
                            ]
                        },
                    }
                ]
            },
            {
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                "timings": {"predicted_n": 9},
            },
            {"choices": [], "usage": {"completion_tokens": 9}},
        ),
        b'data: {"torn',
        b"data: [DONE]",
    ]:
        assembly.feed_event(event)
    status, answer = assembly.result()
    assert status == 200
    assert answer["id"] == "c1" and answer["object"] == "chat.completion"
    assert answer["usage"] == {"completion_tokens": 9} and answer["timings"]["predicted_n"] == 9
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Hello" and message["reasoning_content"] == "Thinking."
    assert message["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "ls", "arguments": '{"path": "."}'}},
        {"id": "t2", "type": "function", "function": {"name": "pwd", "arguments": "{}"}},
    ]


def test_an_assembly_of_a_stream_that_failed_is_its_error() -> None:
    assembly = Assembly("/v1/completions")
    for event in events(
        {"choices": [{"index": 1, "text": "b"}]},
        {"choices": [{"index": 0, "text": "a"}]},
        {"error": {"code": 503, "message": "loading", "type": "unavailable_error"}},
    ):
        assembly.feed_event(event)
    assert assembly.result() == (
        503,
        {"error": {"code": 503, "message": "loading", "type": "unavailable_error"}},
    )
    fine = Assembly("/v1/completions")
    for event in events(
        {"choices": [{"index": 1, "text": "b"}]},
        {"choices": [{"index": 0, "text": "a", "finish_reason": "stop"}]},
    ):
        fine.feed_event(event)
    status, answer = fine.result()
    assert status == 200 and answer["object"] == "text_completion"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in answer["choices"]] == [
        (0, "a", "stop"),
        (1, "b", None),
    ]


STREAM = [
    {"id": "c2", "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
    {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "timings": {"cache_n": 3}},
    {"choices": [], "usage": {"completion_tokens": 1}},
]


def test_a_whole_stream_is_assembled_as_its_events_are() -> None:
    payload = b"\n\n".join([*events(*STREAM), b"data: [DONE]", b""])
    one_by_one = Assembly("/v1/chat/completions")
    for event in events(*STREAM):
        one_by_one.feed_event(event)
    assert assembled_body(payload, "/v1/chat/completions") == one_by_one.result()
    status, answer = one_by_one.result()
    assert status == 200 and answer["choices"][0]["message"]["content"] == "Hi"
    assert answer["timings"] == {"cache_n": 3}


@pytest.mark.parametrize(
    "odd",
    [b'data: {"torn', b"data: 1, 2", b'data: {"a": 1}, {"error": {"message": "x"}}'],
)
def test_a_line_that_is_not_one_value_is_skipped_as_it_would_be_alone(odd: bytes) -> None:
    lines = [*events(*STREAM[:2]), odd, *events(*STREAM[2:]), b"data: [DONE]"]
    one_by_one = Assembly("/v1/chat/completions")
    for line in lines:
        one_by_one.feed_event(line)
    assert assembled_body(b"\n\n".join(lines), "/v1/chat/completions") == one_by_one.result()
    assert one_by_one.result()[0] == 200


def test_a_plain_request_becomes_a_stream_that_reports_usage() -> None:
    assert as_stream({"stream_options": {"x": 1}}, "/v1/chat/completions") == {
        "stream": True,
        "stream_options": {"x": 1, "include_usage": True},
    }
    assert as_stream({}, "/v1/completions") == {"stream": True}
