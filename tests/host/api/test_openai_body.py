"""`/v1` bodies: every shape the proxy reads is checked, and its text found. Pure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from host.api.openai_body import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    MAX_INTENT_FILES,
    check_body,
    intent_files,
    intent_text,
    prepare,
    prompt_text,
    strip_tag,
)
from host.errors import DEFAULT_LIMITS, ApiError


@pytest.mark.parametrize(
    ("body", "path", "named"),
    [
        ({"messages": "hi"}, CHAT_PATH, "`messages` must be a list"),
        ({"messages": [1]}, CHAT_PATH, "`messages[0]` must be an object"),
        ({"messages": [{"role": "user", "content": 5}]}, CHAT_PATH, "`messages[0].content`"),
        ({"messages": [{"content": [7]}]}, CHAT_PATH, "`messages[0].content[0]`"),
        ({"messages": [{"content": [{"text": 1}]}]}, CHAT_PATH, "`messages[0].content[0].text`"),
        ({}, CHAT_PATH, "needs `messages`"),
        ({}, COMPLETIONS_PATH, "needs a `prompt`"),
        ({"prompt": {"a": 1}}, COMPLETIONS_PATH, "`prompt` must be"),
        ({"prompt": ["a", 2]}, COMPLETIONS_PATH, "`prompt[1]` is a number"),
        ({"prompt": "a", "stream": "yes"}, COMPLETIONS_PATH, "`stream` must be true or false"),
    ],
)
def test_a_field_of_the_wrong_shape_is_a_400_naming_it(
    body: dict[str, Any], path: str, named: str
) -> None:
    with pytest.raises(ApiError) as refused:
        check_body(body, path)
    assert refused.value.status == 400
    assert named in refused.value.message


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "assistant", "content": None, "tool_calls": []}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"prompt": [1, 2, 3]},
        {"prompt": [[1, 2], [3]]},
        {"prompt": ["a", "b"], "stream": False},
    ],
)
def test_what_openai_accepts_passes(body: dict[str, Any]) -> None:
    check_body(body, CHAT_PATH if "messages" in body else COMPLETIONS_PATH)


def test_the_text_is_every_string_the_request_carries() -> None:
    body = {
        "prompt": ["one", "two"],
        "messages": [{"content": "three"}, {"content": [{"text": "four"}, {"type": "x"}]}],
    }
    assert prompt_text(body) == "one\ntwo\nthree\nfour"


def test_the_tag_is_stripped_from_strings_and_text_parts() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "#force_big plan it"},
            {"role": "user", "content": [{"type": "text", "text": "now #FORCE_BIG"}]},
        ]
    }
    stripped, tagged = strip_tag(body)
    assert tagged
    assert stripped["messages"][0]["content"] == "plan it"
    assert stripped["messages"][1]["content"][0]["text"] == "now"
    assert body["messages"][0]["content"] == "#force_big plan it"  # the original is kept
    assert strip_tag({"prompt": "#force_bigger"}) == ({"prompt": "#force_bigger"}, False)


def test_the_type_is_read_from_the_newest_user_turn() -> None:
    agent = {
        "messages": [
            {"role": "system", "content": "You are a planning assistant. Plan carefully."},
            {"role": "user", "content": "Plan the release."},
            {"role": "assistant", "content": "Here is the plan."},
            {"role": "tool", "content": "ERROR: nginx failed to reload"},
            {"role": "user", "content": [{"type": "text", "text": "Now add the --dry-run flag"}]},
        ]
    }
    assert intent_text(agent) == "Now add the --dry-run flag"
    assert "Plan carefully" in prompt_text(agent)  # the size still counts everything
    assert intent_text({"prompt": "write a haiku"}) == "write a haiku"
    no_user = {"messages": [{"role": "system", "content": "only a system prompt"}]}
    assert intent_text(no_user) == "only a system prompt"


def file_part(name: object) -> dict[str, object]:
    return {"type": "file", "file": {"filename": name, "file_data": "data:;base64,eA=="}}


def test_the_files_attached_to_the_newest_user_turn_are_read_for_their_kinds() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [file_part("old/Dockerfile"), {"type": "text", "text": "a"}],
            },
            {"role": "assistant", "content": "ok"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what's wrong here?"},
                    file_part("src/app.py"),
                    file_part(7),
                    file_part(""),
                    {"type": "file", "file": "not an object"},
                ],
            },
        ]
    }
    assert intent_files(body) == ("src/app.py",)
    assert intent_text(body) == "what's wrong here?"
    only_a_file = {"messages": [{"role": "user", "content": [file_part("main.rs")]}]}
    assert (intent_text(only_a_file), intent_files(only_a_file)) == ("", ("main.rs",))
    many = {"messages": [{"role": "user", "content": [file_part(f"{i}.py") for i in range(500)]}]}
    assert len(intent_files(many)) == MAX_INTENT_FILES
    assert intent_files({"prompt": "x"}) == ()


def test_a_routed_request_carries_its_turns_files_to_the_router() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "why?"}, file_part("a.tf")]}
        ],
    }
    raw = json.dumps(body).encode()
    prepared = prepare(raw, DEFAULT_LIMITS, CHAT_PATH, ["auto", "m"], {"m"}, typed=False)
    assert (prepared.intent, prepared.intent_files) == ("why?", ("a.tf",))
    named = prepare(
        json.dumps({**body, "model": "m"}).encode(),
        DEFAULT_LIMITS,
        CHAT_PATH,
        ["auto", "m"],
        {"m"},
        typed=False,
    )
    assert named.intent_files == ()  # a named model routes on nothing
