"""`/v1` bodies of the wrong shape: a 400 naming the field, never a 500, for tiers and
models alike; well-formed bodies of every shape OpenAI allows still reach the model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.real

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

# (path, body without `model`, a fragment the message must contain)
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    (CHAT, {"messages": "hello"}, "`messages` must be a list of messages, not a string"),
    (CHAT, {"messages": 5}, "`messages` must be a list of messages, not a number"),
    (CHAT, {"messages": {"role": "user"}}, "`messages` must be a list of messages, not an object"),
    (CHAT, {"messages": None}, "`messages` must be a list of messages, not null"),
    (CHAT, {}, "the request needs `messages`"),
    (CHAT, {"messages": ["hello"]}, "`messages[0]` must be an object"),
    (CHAT, {"messages": [{"role": "user", "content": "a"}, 7]}, "`messages[1]` must be an object"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, "`messages[0].content` must be"),
    (
        CHAT,
        {"messages": [{"role": "user", "content": {"text": "a"}}]},
        "`messages[0].content` must be a string or a list of content parts, not an object",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": ["hello"]}]},
        "`messages[0].content[0]` must be a content part object",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "`messages[0].content[0].text` must be a string, not a number",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "text", "text": ["a", "b"]}]}]},
        "`messages[0].content[0].text` must be a string, not an array",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
        "`stream` must be true or false, not a string",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": "hi"}], "stream": 1},
        "`stream` must be true or false, not a number",
    ),
    (COMPLETIONS, {}, "the request needs a `prompt`"),
    (COMPLETIONS, {"prompt": 5}, "`prompt` must be a string, a list of strings or a list of"),
    (COMPLETIONS, {"prompt": {"text": "a"}}, "not an object"),
    (COMPLETIONS, {"prompt": ["a", 5]}, "`prompt[1]` is a number"),
    (COMPLETIONS, {"prompt": [[1, 2], "a"]}, "`prompt[0]` is an array"),
    (COMPLETIONS, {"prompt": [True, False]}, "`prompt[0]` is a boolean"),
    (COMPLETIONS, {"prompt": "a", "messages": 3}, "`messages` must be a list"),
]


def test_malformed_bodies_get_a_400_naming_the_field(demo_daemon: Daemon) -> None:
    failures = []
    with demo_daemon.client(timeout=30) as http:
        for model in ("architect", "auto", "big", "operator-demo"):
            for path, body, fragment in MALFORMED:
                response = http.post(path, json={"model": model, **body})
                error = response.json().get("error", {})
                if response.status_code != 400 or fragment not in error.get("message", ""):
                    failures.append((model, path, body, response.status_code, error))
                elif error.get("type") != "invalid_request":
                    failures.append((model, path, body, "type", error))
    assert not failures, "\n".join(map(str, failures))
    # Nothing reached a model: no load was started for any of them.
    states = {m["name"]: m["state"] for m in demo_daemon.status()["models"]}
    assert states["architect-demo"] == states["builder-demo"] == "stopped"


@pytest.mark.parametrize("model", [["architect"], 5, None, {"name": "architect"}, ""], ids=repr)
def test_a_model_that_is_not_a_string_is_a_400(demo_daemon: Daemon, model: object) -> None:
    with demo_daemon.client(timeout=30) as http:
        response = http.post(CHAT, json={"model": model, "messages": [{"role": "user"}]})
    assert response.status_code == 400
    assert "`model` (a string)" in response.json()["error"]["message"]


def test_every_shape_openai_allows_still_reaches_the_model(demo_daemon: Daemon) -> None:
    bodies: list[tuple[str, dict[str, Any]]] = [
        (
            CHAT,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Say"},
                            {"type": "text", "text": " hi."},
                        ],
                    }
                ]
            },
        ),
        (CHAT, {"messages": [{"role": "user", "content": "Say hi."}], "stream": False}),
        (COMPLETIONS, {"prompt": ["The sky is", "Grass is"]}),
        (COMPLETIONS, {"prompt": [504, 3157, 314]}),
    ]
    with demo_daemon.client(timeout=60) as http:
        for path, body in bodies:
            response = http.post(path, json={"model": "operator", "max_tokens": 3, **body})
            assert response.status_code == 200, (body, response.text)
            assert response.headers["x-tierhost-model"] == "operator-demo"
            assert response.json()["choices"], body


def test_the_force_big_tag_in_a_content_part_is_stripped(demo_daemon: Daemon) -> None:
    body = {
        "model": "operator-demo",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "#force_big hi"}]}],
        "stream": True,
    }
    with demo_daemon.client(timeout=60) as http, http.stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: {")]
    # llama-server reports the prompt it was given in the last event's timings: the
    # template plus "hi", not the tag's tokens. Compare with the same prompt untagged.
    plain = {**body, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    with demo_daemon.client(timeout=60) as http, http.stream("POST", CHAT, json=plain) as response:
        plain_events = [line for line in response.iter_lines() if line.startswith("data: {")]

    def prompt_tokens(lines: list[str]) -> int:
        for line in reversed(lines):
            timings = json.loads(line[6:]).get("timings")
            if timings:
                return int(timings["prompt_n"]) + int(timings.get("cache_n", 0))
        raise AssertionError(f"no timings in {lines[-2:]}")

    assert prompt_tokens(events) == prompt_tokens(plain_events)


PADDING = {"user": "x" * (1024 * 1024 + 1)}
"""A field the proxy never reads, making a body big enough to be prepared and routed in
the offload worker (host.offload) instead of inline."""


def test_big_bodies_get_the_same_answers_from_the_offload_worker(demo_daemon: Daemon) -> None:
    failures = []
    with demo_daemon.client(timeout=60) as http:
        for model in ("auto", "operator-demo"):
            for path, body, fragment in MALFORMED:
                response = http.post(path, json={"model": model, **body, **PADDING})
                error = response.json().get("error", {})
                if response.status_code != 400 or fragment not in error.get("message", ""):
                    failures.append((model, path, body, response.status_code, error))
        unnamed = http.post(CHAT, json={"messages": [], **PADDING})
        assert unnamed.status_code == 400
        assert "`model` (a string)" in unnamed.json()["error"]["message"]
        answered = http.post(
            COMPLETIONS,
            json={"model": "operator", "prompt": "The sky is", "max_tokens": 2, **PADDING},
        )
    assert not failures, "\n".join(map(str, failures))
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-tierhost-model"] == "operator-demo"
    assert answered.json()["choices"]
