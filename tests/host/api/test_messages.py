"""Anthropic's Messages API through the host, with the official `anthropic` SDK.

Against a real daemon, real llama-server and SmolLM2 (the demo config): create, stream,
count_tokens, the Claude family mapping, `thinking` → architect, discovery and errors in
Anthropic's shape. Against the scripted fake llama-server (the demo model's chat
template has no tools): a tool-use round trip, the headers sent upstream, and a model
that dies mid-stream. The guard's `x-api-key` on the guard itself, as test_guard does.
Every wait is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from host.api.app import RequestGuard
from tests.conftest import (
    Daemon,
    model_status,
    running_demo,
    start_daemon,
    stop_checked,
    wait_for,
)
from tests.host.api.test_guard import Inner, client_of
from tests.host.fake_llama_server import config_head, fake_args, model_entry

HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
BOUND_S = 60.0


def client_of_daemon(daemon: Daemon, **options: Any) -> anthropic.Anthropic:
    # Claude Code's ANTHROPIC_BASE_URL is the host without /v1: the SDK adds it.
    return anthropic.Anthropic(
        base_url=daemon.url, api_key="unused", timeout=BOUND_S, max_retries=0, **options
    )


# -- the demo daemon: real llama-server, SmolLM2 -----------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_demo(tmp_path_factory.mktemp("messages")) as daemon:
        yield daemon


@pytest.mark.real
def test_create_answers_a_message_with_the_tierhost_headers(demo: Daemon) -> None:
    raw = client_of_daemon(demo).messages.with_raw_response.create(
        model="claude-tierhost-operator", max_tokens=8, messages=HELLO
    )
    assert raw.headers["x-tierhost-model"] == "operator-demo"
    assert raw.headers["x-tierhost-tier"] == "operator"
    assert float(raw.headers["x-tierhost-wait-ms"]) >= 0
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("max_tokens", "end_turn")
    assert message.usage.output_tokens > 0


@pytest.mark.real
def test_stream_gives_the_events_the_sdk_puts_together(demo: Daemon) -> None:
    with client_of_daemon(demo).messages.stream(
        model="claude-haiku-4-5", max_tokens=8, messages=HELLO, system="Be brief."
    ) as stream:
        assert stream.response.headers["x-tierhost-model"] == "operator-demo"
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text


@pytest.mark.real
def test_count_tokens_is_the_models_own_count(demo: Daemon) -> None:
    client = client_of_daemon(demo)
    short = client.messages.count_tokens(model="claude-haiku-4-5", messages=HELLO)
    longer = client.messages.count_tokens(
        model="claude-haiku-4-5",
        messages=[{"role": "user", "content": "Say hello, and then say goodbye to everyone."}],
    )
    assert 0 < short.input_tokens < longer.input_tokens


@pytest.mark.real
def test_claude_families_land_on_their_tiers_and_thinking_on_the_architect(demo: Daemon) -> None:
    client = client_of_daemon(demo)

    def served(model: str, **extra: Any) -> str:
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=8, messages=HELLO, **extra
        )
        assert raw.parse().type == "message"
        return str(raw.headers["x-tierhost-model"])

    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    # haiku first, on the CPU: opus and sonnet then share gpu0, one swap each
    assert served("claude-3-5-haiku-20241022") == "operator-demo"
    assert served("claude-opus-4-1") == "architect-demo"
    assert served("claude-sonnet-4-5") == "builder-demo"
    assert served("claude-sonnet-4-5", **thinking) == "architect-demo"
    assert served("claude-tierhost-operator", **thinking) == "operator-demo"


@pytest.mark.real
def test_a_stream_that_waits_for_a_swap_begins_with_a_comment_the_sdk_skips(
    demo: Daemon,
) -> None:
    client = client_of_daemon(demo)
    client.messages.create(model="claude-opus-4-1", max_tokens=1, messages=HELLO)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 4, "stream": True, "messages": HELLO}
    with (
        httpx.Client(base_url=demo.url, timeout=BOUND_S) as http,
        http.stream("POST", "/v1/messages", json=body) as response,
    ):
        first = next(response.iter_lines())
    assert first.startswith(": tierhost: waiting"), first
    client.messages.create(model="claude-opus-4-1", max_tokens=1, messages=HELLO)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=4, messages=HELLO) as stream:
        assert "x-tierhost-wait-ms" not in stream.response.headers  # said in the comment
        assert stream.get_final_message().content[0].type == "text"


def slot_status(daemon: Daemon, model: str) -> dict[str, Any]:
    status: dict[str, Any] = model_status(daemon, model)["kv_slots"]
    return status


@pytest.mark.real
def test_a_conversation_is_not_pinned_to_a_slot_it_would_not_use(demo: Daemon) -> None:
    """llama-server's /v1/messages drops `id_slot`, so no slot is claimed (and none saved
    at a swap for a conversation it does not hold); the prompt is still reused while the
    model stays resident, by llama-server's own choice of slot."""
    client = client_of_daemon(demo)
    history = " ".join(f"Fact {i}: boat {i} is at pier {i % 7}." for i in range(30))
    opening: list[Any] = [{"role": "user", "content": f"Remember these facts. {history}"}]
    options: Any = {"max_tokens": 4, "system": "You keep a harbour's books."}
    before = slot_status(demo, "operator-demo")
    first = client.messages.create(model="claude-haiku-4-5", messages=opening, **options)
    text = first.content[0].text if first.content and first.content[0].type == "text" else ""
    follow_up = [
        *opening,
        {"role": "assistant", "content": text or "Noted."},
        {"role": "user", "content": "Which pier has boat 12?"},
    ]
    second = client.messages.create(model="claude-haiku-4-5", messages=follow_up, **options)
    assert (second.usage.cache_read_input_tokens or 0) > first.usage.input_tokens / 2
    assert slot_status(demo, "operator-demo") == before


@pytest.mark.real
def test_errors_come_in_anthropics_shape(demo: Daemon) -> None:
    client = client_of_daemon(demo)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="gpt-9", max_tokens=4, messages=HELLO)
    body = missing.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "gpt-9" in body["error"]["message"] and "claude-tierhost-builder" in str(body)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-tierhost-wizard", max_tokens=4, messages=HELLO)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude-haiku-4-5", max_tokens=0, messages=HELLO)
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="non-empty list"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=4, messages=[])
    with httpx.Client(base_url=demo.url, timeout=BOUND_S) as http:
        for raw, kind in [
            (b"{", "invalid_request_error"),
            (b'{"model": "claude-haiku-4-5", "messages": []}', "invalid_request_error"),
        ]:
            answer = http.post(
                "/v1/messages", content=raw, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 400
            assert answer.json()["error"]["type"] == kind
        not_json = http.post("/v1/messages", content=b"{}", headers={"content-type": "text/plain"})
        assert not_json.status_code == 415 and not_json.json()["type"] == "error"
        chat = http.post("/v1/chat/completions", json={"model": "gpt-9", "messages": HELLO})
        assert chat.status_code == 404 and "type" not in chat.json()  # OpenAI's shape stays


@pytest.mark.real
def test_discovery_lists_claude_ids_per_tier_and_stays_openai_without_the_header(
    demo: Daemon,
) -> None:
    client = client_of_daemon(demo)
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert ids == [
        "claude-tierhost-architect",
        "claude-tierhost-builder",
        "claude-tierhost-operator",
        "claude-tierhost-validator",
    ]
    assert all(m.type == "model" and m.display_name and m.created_at for m in page.data)
    assert "architect-demo" in page.data[0].display_name
    assert client.models.retrieve("claude-tierhost-builder").id == "claude-tierhost-builder"
    assert "builder" in client.models.retrieve("claude-sonnet-4-5").display_name
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with httpx.Client(base_url=demo.url, timeout=BOUND_S) as http:
        listed = http.get("/v1/models").json()
        assert listed["object"] == "list" and "architect-demo" in {m["id"] for m in listed["data"]}
        one = http.get("/v1/models/builder-demo").json()
        assert one["id"] == "builder-demo" and one["object"] == "model"
        unknown = http.get("/v1/models/gpt-9")
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "model_not_found"


# -- the fake llama-server: tools, headers, a crash ----------------------------------------

WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
CALL = {"tool_use": {"name": "get_weather", "input": {"city": "Paris"}}}
ANSWER = "It is sunny in Paris."


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    """A daemon whose builder is a fake llama-server scripted to call a tool, then answer;
    `crashy` dies mid-stream once. The path is the builder's request log."""
    tmp_path = tmp_path_factory.mktemp("messages-fake")
    head, gguf = config_head(tmp_path, BOUND_S)
    script = tmp_path / "builder-script.json"
    script.write_text(json.dumps([CALL, ANSWER, CALL, ANSWER]))
    requests = tmp_path / "builder-requests.jsonl"
    builder = fake_args("ok", script=script, request_log=requests)
    crashy = fake_args("crash-mid-stream", tmp_path / "crashy.state")
    config = f"""
{head}
[models.planner]
{model_entry(gguf, "cpu", 50, fake_args("ok"))}
[models.coder]
{model_entry(gguf, "cpu", 50, builder)}
[models.helper]
{model_entry(gguf, "cpu", 50, fake_args("ok"))}
[models.crashy]
{model_entry(gguf, "gpu0", 300, crashy)}
[models.stuck]
{model_entry(gguf, "gpu0", 300, fake_args("never-ready"), start_timeout_s=2)}
[tiers.architect]
models = ["planner"]
[tiers.builder]
models = ["coder"]
[tiers.operator]
models = ["helper"]
"""
    daemon = start_daemon(tmp_path, config)
    try:
        yield daemon, requests
    finally:
        stop_checked(daemon)


def asked(requests: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in requests.read_text().splitlines()]


def test_a_tool_use_round_trip_plain_then_streamed(fake: tuple[Daemon, Path]) -> None:
    daemon, requests = fake
    sent_headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-04-04"}
    client = client_of_daemon(daemon, default_headers=sent_headers)
    turn: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    for streamed in (False, True):
        options: Any = {"model": "claude-sonnet-4-5", "max_tokens": 64, "tools": [WEATHER_TOOL]}
        if streamed:
            with client.messages.stream(messages=turn, **options) as stream:
                call = stream.get_final_message()
        else:
            call = client.messages.create(messages=turn, **options)
        assert call.stop_reason == "tool_use"
        use = next(b for b in call.content if b.type == "tool_use")
        assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
        result: Any = {"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 24 C"}
        follow_up = [
            *turn,
            {"role": "assistant", "content": [b.model_dump() for b in call.content]},
            {"role": "user", "content": [result]},
        ]
        if streamed:
            with client.messages.stream(messages=follow_up, **options) as stream:
                final = stream.get_final_message()
        else:
            final = client.messages.create(messages=follow_up, **options)
        assert final.stop_reason == "end_turn"
        assert final.content[0].type == "text" and final.content[0].text == ANSWER
    sent = asked(requests)
    assert len(sent) == 4
    assert all(r["tools"][0]["name"] == "get_weather" for r in sent)
    assert sent[1]["messages"][2]["content"][0]["tool_use_id"] == "toolu_fake1"
    # forwarded as sent; a plain request goes upstream as a stream, put back together here
    assert {r["_anthropic-version"] for r in sent} == {"2023-06-01"}
    assert {r["_anthropic-beta"] for r in sent} == {"tools-2024-04-04"}
    assert all(r["stream"] is True for r in sent)


def test_count_tokens_through_the_fake(fake: tuple[Daemon, Path]) -> None:
    daemon, _ = fake
    counted = client_of_daemon(daemon).messages.count_tokens(
        model="claude-opus-4", messages=[{"role": "user", "content": "one two three"}]
    )
    assert counted.input_tokens == 3


def test_a_mid_stream_crash_is_an_anthropic_error_event_and_the_lease_is_released(
    fake: tuple[Daemon, Path],
) -> None:
    daemon, _ = fake
    client = client_of_daemon(daemon)
    got: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as torn,
        client.messages.stream(model="crashy", max_tokens=50, messages=HELLO) as stream,
    ):
        got.extend(stream.text_stream)
    assert got == ["Hello", " from", " the"]  # what came before the crash
    body = torn.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert "stopped answering mid-stream" in body["error"]["message"]
    wait_for(lambda: model_status(daemon, "crashy")["in_flight"] == 0, "crashy's lease released")
    again = client.messages.create(model="crashy", max_tokens=50, messages=HELLO)
    assert again.content[0].type == "text"
    assert again.content[0].text == "Hello from the fake server."


def test_a_stream_whose_model_fails_to_load_ends_with_an_overloaded_error_event(
    fake: tuple[Daemon, Path],
) -> None:
    daemon, _ = fake
    body = {"model": "stuck", "max_tokens": 8, "stream": True, "messages": HELLO}
    with (
        httpx.Client(base_url=daemon.url, timeout=BOUND_S) as http,
        http.stream("POST", "/v1/messages", json=body) as response,
    ):
        assert response.status_code == 200  # begun at once, while it waits
        lines = list(response.iter_lines())
    assert lines[0].startswith(": tierhost: waiting")
    assert "event: error" in lines
    data = next(line for line in lines if line.startswith("data: "))
    error = json.loads(data[6:])
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert "stuck failed to start" in error["error"]["message"]
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client_of_daemon(daemon).messages.stream(
            model="stuck", max_tokens=8, messages=HELLO
        ) as stream,
    ):
        stream.get_final_message()
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "overloaded_error"


def test_capacity_and_size_errors_have_their_anthropic_types(fake: tuple[Daemon, Path]) -> None:
    daemon, _ = fake
    client = client_of_daemon(daemon)
    with daemon.client() as http:
        assert http.put("/api/mode", json={"mode": "gaming"}).status_code == 200
        try:
            with pytest.raises(anthropic.APIStatusError) as held:
                client.messages.create(model="crashy", max_tokens=8, messages=HELLO)
        finally:
            assert http.put("/api/mode", json={"mode": "auto"}).status_code == 200
        huge = b'{"model": "crashy", "max_tokens": 1, "messages": [], "x": "' + b"x" * 9 * 2**20
        too_big = http.post(
            "/v1/messages", content=huge + b'"}', headers={"content-type": "application/json"}
        )
    assert held.value.status_code == 503
    assert isinstance(held.value.body, dict)
    assert held.value.body["error"]["type"] == "overloaded_error"
    assert "held back" in held.value.body["error"]["message"]
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "request_too_large"


# -- the guard: x-api-key beyond loopback ------------------------------------------------

TOKEN = "t0ken-" + "y" * 40


async def test_off_loopback_the_token_may_come_as_x_api_key() -> None:
    inner = Inner()
    app = RequestGuard(inner.app, "0.0.0.0", TOKEN, port=8788)
    async with client_of(app) as http:
        assert (await http.get("/api/tasks", headers={"x-api-key": TOKEN})).status_code == 200
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/api/tasks", headers=bearer)).status_code == 200
        both_wrong = {"authorization": "Bearer nope", "x-api-key": "nope"}
        refused = await http.get("/api/tasks", headers=both_wrong)
        assert refused.status_code == 401 and "x-api-key" in refused.json()["error"]["message"]
        wrong = await http.post(
            "/v1/messages", json={"model": "x"}, headers={"x-api-key": TOKEN + "z"}
        )
        assert wrong.status_code == 401
        assert wrong.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": wrong.json()["error"]["message"]},
        }
        assert wrong.headers["content-length"] == str(len(wrong.content))
        models = await http.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
        assert models.status_code == 401 and models.json()["type"] == "error"
        assert "type" not in (await http.get("/v1/models")).json()  # OpenAI's shape
    assert [r[1] for r in inner.reached] == ["/api/tasks", "/api/tasks"]


async def test_the_sdk_authenticates_with_x_api_key_and_raises_its_own_error() -> None:
    import httpx2

    inner = Inner()
    app = RequestGuard(inner.app, "0.0.0.0", TOKEN, port=8788)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport) as http:
        client = anthropic.AsyncAnthropic(
            base_url="http://127.0.0.1:8788", api_key="wrong", http_client=http, max_retries=0
        )
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await client.messages.create(model="claude-opus-4", max_tokens=4, messages=HELLO)
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["error"]["type"] == "authentication_error"
    assert inner.reached == []
