"""The upstream chat client, against in-process fake transports for the faults a real
llama-server does not show on demand (the happy path runs against real servers in
tests/host/tasks)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from host.models.chat import ChatFailed, complete_chat, content_of, pieces_of, stream_chat
from host.models.leases import ModelLease


def lease_over(handler: Callable[[httpx.Request], httpx.Response]) -> ModelLease:
    return ModelLease(
        model="m",
        api_base="http://upstream.test/v1",
        http=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        headers={"Authorization": "Bearer t"},
        upstream_model="remote-name",
        log_path=None,
        server_url=None,
        _release=lambda: None,
    )


def sse(*events: object) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def delta(text: str) -> dict[str, object]:
    return {"choices": [{"delta": {"content": text}}]}


@pytest.mark.parametrize(
    ("line", "pieces"),
    [
        ('data: {"choices": [{"delta": {"content": "a"}}]}', ["a"]),
        ('data: {"choices": [{"delta": {}}]}', []),
        ('data: {"choices": [{"delta": {"content": ""}}]}', []),
        ('data: {"choices": "no"}', []),
        ('data: {"choices": [1, {"delta": {"content": 2}}, {"delta": {"content": "b"}}]}', ["b"]),
        ('data:{"choices": [{"delta": {"content": "c"}}]}', ["c"]),
    ],
)
def test_pieces_of_reads_what_a_stream_event_holds(line: str, pieces: list[str]) -> None:
    assert pieces_of("m", line) == pieces


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("data: {oops", "model m sent a stream event that is not JSON (JSONDecodeError)"),
        ("data: [1]", "model m sent a stream event that is not an object"),
        ('data: {"error": {"message": "boom"}}', "model m reported an error mid-answer: boom"),
        ('data: {"error": "plain"}', "model m reported an error mid-answer: plain"),
        ("data: " + "[" * 100_000, "not JSON (RecursionError)"),
    ],
)
def test_pieces_of_refuses_what_no_server_sends(line: str, message: str) -> None:
    with pytest.raises(ChatFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        pieces_of("m", line)


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ({"choices": [{"message": {"content": "PASS"}}]}, "PASS"),
        ({"choices": []}, ""),
        ({"choices": [{"message": None}]}, ""),
        ({"choices": [{"message": {"content": None}}]}, ""),
    ],
)
def test_content_of_a_plain_answer(answer: object, text: str) -> None:
    assert content_of("m", answer) == text


@pytest.mark.parametrize(
    "answer", [[], {"choices": "x"}, {"choices": [{"message": "x"}]}, {"nothing": 1}]
)
def test_content_of_an_answer_of_the_wrong_shape_fails(answer: object) -> None:
    with pytest.raises(ChatFailed, match="model m answered"):
        content_of("m", answer)


async def test_stream_chat_sends_the_upstream_name_and_counts_as_it_goes() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "http://upstream.test/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer t"
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=sse(delta("Hel"), delta("lo"), {"choices": []}))

    counts: list[int] = []

    async def on_tokens(n: int) -> None:
        counts.append(n)

    lease = lease_over(handler)
    text, tokens = await stream_chat(lease, {"messages": [], "stream": False}, on_tokens)
    assert (text, tokens) == ("Hello", 2)
    assert counts == [1, 2, 2]
    assert seen == [{"messages": [], "stream": True, "model": "remote-name"}]


async def test_stream_chat_names_an_error_status_and_where_to_look() -> None:
    lease = lease_over(lambda request: httpx.Response(503, text="x" * 5000))
    with pytest.raises(ChatFailed) as caught:
        await stream_chat(lease, {"messages": []})
    message = str(caught.value)
    assert message.startswith("model m answered HTTP 503 (remote endpoint http://upstream.test/v1)")
    assert len(message) < 400  # the detail is cut, never a whole page


async def test_stream_chat_fails_on_an_error_reported_mid_answer() -> None:
    body = sse(delta("a"), {"error": {"message": "out of slots"}})
    lease = lease_over(lambda request: httpx.Response(200, content=body))
    with pytest.raises(ChatFailed, match="model m reported an error mid-answer: out of slots"):
        await stream_chat(lease, {"messages": []})


async def test_complete_chat_reads_the_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is False
        return httpx.Response(200, json={"choices": [{"message": {"content": "PASS"}}]})

    assert await complete_chat(lease_over(handler), {"messages": []}) == "PASS"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500, text="boom"), "answered HTTP 500"),
        (httpx.Response(200, text="<html>"), "answered something that is not JSON"),
        (httpx.Response(200, json={"choices": "x"}), "answered `choices` that is not a list"),
    ],
)
async def test_complete_chat_fails_clearly(response: httpx.Response, message: str) -> None:
    with pytest.raises(ChatFailed, match=message):
        await complete_chat(lease_over(lambda request: response), {"messages": []})
