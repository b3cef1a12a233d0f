"""`/v1` bodies: every shape the proxy reads is checked, and its text found. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from host.api.openai_body import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    check_body,
    intent_text,
    prompt_text,
    strip_tag,
)
from host.errors import ApiError


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
