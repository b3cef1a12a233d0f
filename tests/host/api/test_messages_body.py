"""Anthropic Messages bodies, assembled streams and error shapes: tables, no daemon."""

from __future__ import annotations

import json
from typing import Any

import pytest

from host.api.assembly import as_stream, assembled_body, missing_start
from host.api.messages_body import COUNT_TOKENS_PATH, MESSAGES_PATH
from host.api.openai_body import prepare, prompt_text, strip_tag
from host.errors import DEFAULT_LIMITS, ApiError, anthropic_type, as_anthropic_error

HELLO = [{"role": "user", "content": "Say hello."}]
GOOD: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": HELLO}


def prepared(body: dict[str, Any], path: str = MESSAGES_PATH) -> Any:
    return prepare(json.dumps(body).encode(), DEFAULT_LIMITS, path, ["builder"], set(), False)


def refusal(body: dict[str, Any], path: str = MESSAGES_PATH) -> str:
    with pytest.raises(ApiError) as caught:
        prepared(body, path)
    assert caught.value.status == 400
    return caught.value.message


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"model": None}, "needs a `model`"),
        ({"model": ""}, "needs a `model`"),
        ({"max_tokens": None}, "`max_tokens` must be a whole number"),
        ({"max_tokens": 0}, "`max_tokens` must be a whole number from 1"),
        ({"max_tokens": -5}, "not -5"),
        ({"max_tokens": True}, "not a boolean"),
        ({"max_tokens": "8"}, "not a string"),
        ({"max_tokens": 10**12}, "`max_tokens`"),
        ({"messages": []}, "non-empty list"),
        ({"messages": "hi"}, "not a string"),
        ({"messages": ["hi"]}, "`messages[0]` must be an object"),
        ({"messages": [{"role": "system", "content": "x"}]}, "user or assistant, not 'system'"),
        ({"messages": [{"role": 5, "content": "x"}]}, "not a number"),
        ({"messages": [{"role": "user"}]}, "`messages[0]` needs `content`"),
        ({"messages": [{"role": "user", "content": 3}]}, "`messages[0].content` must be"),
        ({"messages": [{"role": "user", "content": [3]}]}, "`messages[0].content[0]`"),
        ({"messages": [{"role": "user", "content": [{}]}]}, "`messages[0].content[0].type`"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "`messages[0].content[0].text` must be a string",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": 7}],
                    }
                ]
            },
            "`messages[0].content[0].content`",
        ),
        ({"system": 5}, "`system` must be a string or a list"),
        ({"system": [{"type": "text"}]}, "`system[0].text`"),
        ({"stream": "yes"}, "`stream` must be true or false"),
        ({"thinking": "on"}, "`thinking` must be an object"),
        ({"thinking": {"budget_tokens": 5}}, "`thinking` must be an object"),
        ({"tools": {}}, "`tools` must be a list"),
        ({"tools": [{"description": "x"}]}, "`tools[0]` must be an object with a `name`"),
    ],
)
def test_a_bad_messages_body_is_a_400_naming_the_field(changes: dict[str, Any], says: str) -> None:
    body = {k: v for k, v in {**GOOD, **changes}.items() if v is not None or k == "max_tokens"}
    if changes.get("max_tokens", 1) is None:
        body.pop("max_tokens")
        says = "needs `max_tokens`"
    assert says in refusal(body)


def test_max_tokens_is_not_needed_to_count_and_stream_is_refused_there() -> None:
    body = {"model": "claude-haiku-4-5", "messages": HELLO}
    assert prepared(body, COUNT_TOKENS_PATH).body == body
    assert "count_tokens" in refusal({**body, "stream": True}, COUNT_TOKENS_PATH)
    assert "`messages`" in refusal({"model": "x"}, COUNT_TOKENS_PATH)


def test_a_good_body_with_every_block_kind_passes_and_its_text_includes_the_system() -> None:
    body = {
        **GOOD,
        "system": [{"type": "text", "text": "You plan. #force_big"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                    {"type": "image", "source": {"type": "base64", "data": "AA=="}},
                ],
            },
        ],
    }
    result = prepared(body)
    assert result.tagged
    assert result.body["system"] == [{"type": "text", "text": "You plan."}]
    assert prompt_text(result.body).startswith("You plan.\nWeather in Paris?")
    assert result.intent == "Weather in Paris?"  # the tool result is no new request
    assert strip_tag({"system": "x #force_big"}) == ({"system": "x"}, True)


def test_hostile_bodies_are_400s_not_500s() -> None:
    deep = b'{"model": "m", "max_tokens": 1, "messages": ' + b"[" * 100 + b"]" * 100 + b"}"
    with pytest.raises(ApiError) as caught:
        prepare(deep, DEFAULT_LIMITS, MESSAGES_PATH, [], set(), False)
    assert caught.value.status == 400
    with pytest.raises(ApiError):
        prepare(b"[1]", DEFAULT_LIMITS, MESSAGES_PATH, [], set(), False)
    long_role = {**GOOD, "messages": [{"role": "x" * 10_000, "content": "hi"}]}
    assert len(refusal(long_role)) < 200


def sse(*events: dict[str, Any]) -> bytes:
    return (
        b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
        + b": a comment\n\n"
    )


def test_a_streamed_message_is_assembled_into_the_plain_answer() -> None:
    assert as_stream(GOOD, MESSAGES_PATH) == {"stream": True}
    start = {"id": "m1", "type": "message", "role": "assistant", "model": "x", "content": []}
    status, message = assembled_body(
        sse(
            {"type": "message_start", "message": {**start, "usage": {"input_tokens": 9}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "thinking_delta", "thinking": "Let me"}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "thinking_delta", "thinking": " see."}},
            {"type": "content_block_stop", "index": 0},
            {"type": "content_block_start", "index": 1,
             "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 1,
             "delta": {"type": "text_delta", "text": "Calling"}},
            {"type": "content_block_stop", "index": 1},
            {"type": "content_block_start", "index": 2,
             "content_block": {"type": "tool_use", "id": "t", "name": "w", "input": {}}},
            {"type": "content_block_delta", "index": 2,
             "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
            {"type": "content_block_delta", "index": 2,
             "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
            {"type": "content_block_stop", "index": 2},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
             "usage": {"output_tokens": 12}},
            {"type": "message_stop"},
        ),
        MESSAGES_PATH,
    )  # fmt: skip
    assert status == 200
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 9, "output_tokens": 12}
    assert message["content"] == [
        {"type": "thinking", "thinking": "Let me see."},
        {"type": "text", "text": "Calling"},
        {"type": "tool_use", "id": "t", "name": "w", "input": {"city": "Paris"}},
    ]


def test_an_error_in_a_message_stream_is_the_answer() -> None:
    error = {"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}}
    status, body = assembled_body(f"data: {json.dumps(error)}\n\n".encode(), MESSAGES_PATH)
    assert (status, body) == (400, error)
    torn = b'event: message_start\ndata: {"type": "message_start", "message": {"id": "m"}}\n\n'
    status, body = assembled_body(torn + b'event: content_block_delta\ndata: {"ty', MESSAGES_PATH)
    assert status == 200 and body["id"] == "m" and body["content"] == []


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (415, "invalid_request_error"),
        (421, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_each_status_has_its_anthropic_type(status: int, kind: str) -> None:
    assert anthropic_type(status) == kind
    converted = as_anthropic_error(status, b'{"error": {"type": "x", "message": "why"}}')
    assert converted is not None
    assert json.loads(converted) == {"type": "error", "error": {"type": kind, "message": "why"}}


def test_only_openai_shaped_errors_are_converted() -> None:
    assert as_anthropic_error(400, b"not json") is None
    assert as_anthropic_error(400, b"[1]") is None
    assert as_anthropic_error(400, b'{"type": "error", "error": {"type": "x"}}') is None
    context = b'{"error": {"code": "context_length_exceeded", "message": "too long"}}'
    converted = json.loads(as_anthropic_error(400, context) or b"")
    assert converted["error"]["message"] == "prompt is too long: too long"


def events_of(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_a_stream_that_lost_its_start_upstream_gets_one() -> None:
    """llama-server now and then drops a short answer's first events; Anthropic's SDKs
    refuse a stream that does not begin with message_start."""
    whole = sse({"type": "message_start", "message": {"id": "m"}})
    assert missing_start(whole, "builder-demo") == b""
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "!"},
    }
    made = events_of(missing_start(sse(delta), "builder-demo"))
    assert [e["type"] for e in made] == ["message_start", "content_block_start"]
    assert made[0]["message"]["model"] == "builder-demo"
    assert made[0]["message"]["id"].startswith("msg_tierhost_")
    assert made[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    end = {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}}
    assert [e["type"] for e in events_of(missing_start(sse(end), "m"))] == ["message_start"]
    status, message = assembled_body(sse(end, {"type": "message_stop"}), MESSAGES_PATH)
    assert status == 200 and message["id"].startswith("msg_tierhost_")
    assert message["content"] == [] and message["stop_reason"] == "max_tokens"
