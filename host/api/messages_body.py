"""Anthropic Messages request bodies (`/v1/messages`, `/v1/messages/count_tokens`). Pure.

The proxy reads `model`, `stream`, `thinking`, `system` and `messages` of a Messages body
to route it, size it and strip `#force_big` from it, and Anthropic's clients rely on the
400 `invalid_request_error` that names a wrong field (Anthropic's own API answers so);
so those fields, and `max_tokens`, which Anthropic requires, are checked here before any
of that code reads them. What the proxy does not read is llama-server's to judge.
"""

from __future__ import annotations

from typing import Any

from host.errors import ApiError
from host.json_text import json_kind

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MESSAGES_PATHS = frozenset({MESSAGES_PATH, COUNT_TOKENS_PATH})

ROLES = ("user", "assistant")

MAX_TOKENS_LIMIT = 10_000_000
"""Far above any context window; a larger `max_tokens` is a mistake, not a request."""


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _check_text_blocks(blocks: object, where: str) -> None:
    """`system`, or a tool result's content: a string or a list of content blocks."""
    if isinstance(blocks, str):
        return
    if not isinstance(blocks, list):
        raise _invalid(
            f"`{where}` must be a string or a list of content blocks, not {json_kind(blocks)}"
        )
    for i, block in enumerate(blocks):
        _check_block(block, f"{where}[{i}]")


def _check_block(block: object, where: str) -> None:
    if not isinstance(block, dict):
        raise _invalid(
            f'`{where}` must be a content block object (e.g. {{"type": "text", "text": "..."}}), '
            f"not {json_kind(block)}"
        )
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        raise _invalid(f"`{where}.type` must be a string such as text, not {json_kind(kind)}")
    if kind == "text" and not isinstance(block.get("text"), str):
        raise _invalid(f"`{where}.text` must be a string, not {json_kind(block.get('text'))}")
    if kind == "tool_result" and "content" in block:
        _check_text_blocks(block["content"], f"{where}.content")


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if messages == [] else json_kind(messages)
        raise _invalid(
            f'`messages` must be a non-empty list of {{"role", "content"}} objects, not {got}'
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(
                f"`messages[{i}]` must be an object with `role` and `content`, "
                f"not {json_kind(message)}"
            )
        role = message.get("role")
        if role not in ROLES:
            shown = repr(role) if isinstance(role, str) and len(role) <= 40 else json_kind(role)
            raise _invalid(f"`messages[{i}].role` must be user or assistant, not {shown}")
        if "content" not in message:
            raise _invalid(f"`messages[{i}]` needs `content`: a string or a list of blocks")
        _check_text_blocks(message["content"], f"messages[{i}].content")


def check_messages_body(body: dict[str, Any], path: str) -> None:
    """A 400 naming the first field whose shape Anthropic's API would refuse."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid(f"`stream` must be true or false, not {json_kind(stream)}")
    if path == COUNT_TOKENS_PATH and stream:
        raise _invalid("`stream` is not accepted by count_tokens")
    max_tokens = body.get("max_tokens")
    if path == COUNT_TOKENS_PATH:
        pass  # counting needs no budget; one sent along is not judged
    elif "max_tokens" not in body:
        raise _invalid("the request needs `max_tokens`: the most tokens to generate (>= 1)")
    elif (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        plain_int = isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
        shown = max_tokens if plain_int else json_kind(max_tokens)
        raise _invalid(
            f"`max_tokens` must be a whole number from 1 to {MAX_TOKENS_LIMIT}, not {shown}"
        )
    if "messages" not in body:
        raise _invalid('the request needs `messages`: a list of {"role", "content"} objects')
    _check_messages(body["messages"])
    if "system" in body:
        _check_text_blocks(body["system"], "system")
    thinking = body.get("thinking")
    if thinking is not None and (
        not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str)
    ):
        raise _invalid(
            '`thinking` must be an object such as {"type": "enabled", "budget_tokens": '
            f"1024}}, not {json_kind(thinking)}"
        )
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid(f"`tools` must be a list of tool objects, not {json_kind(tools)}")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _invalid(f"`tools[{i}]` must be an object with a `name` (a string)")


def system_text(body: dict[str, Any]) -> str:
    """The text of a checked body's `system` prompt."""
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(
            b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""
