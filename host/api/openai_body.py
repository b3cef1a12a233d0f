"""Request bodies: checked before anything reads them, and the text they carry.

OpenAI's (`/v1/chat/completions`, `/v1/completions`) are checked here, Anthropic's
(`/v1/messages`) by `host.api.messages_body`; preparing them (parse, check, strip the tag,
the text to route on) is one path for both, as is everything after it in the proxy.

The proxy reads a few fields of every `/v1` body (`model`, `stream`, `messages`,
`prompt`) to route it, size it and strip `#force_big` from it; a field of a shape no
OpenAI-compatible server accepts is a 400 that names it, here, before any of that code
can trip over it. What the proxy does not read is llama-server's to judge. Pure.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any

from host.api.messages_body import MESSAGES_PATHS, check_messages_body, system_text
from host.core.routing import Decision, RouteRequest, RoutingSnapshot, decide, strip_force_big
from host.errors import ApiError, BodyLimits, parse_json_object
from host.json_text import json_kind

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list):
        raise _invalid(f"`messages` must be a list of messages, not {json_kind(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(
                f"`messages[{i}]` must be an object with `role` and `content`, "
                f"not {json_kind(message)}"
            )
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue  # null: an assistant turn that only calls tools
        if not isinstance(content, list):
            raise _invalid(
                f"`messages[{i}].content` must be a string or a list of content parts, "
                f"not {json_kind(content)}"
            )
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise _invalid(
                    f"`messages[{i}].content[{j}]` must be a content part object "
                    f'(e.g. {{"type": "text", "text": "..."}}), not {json_kind(part)}'
                )
            if "text" in part and not isinstance(part["text"], str):
                raise _invalid(
                    f"`messages[{i}].content[{j}].text` must be a string, "
                    f"not {json_kind(part['text'])}"
                )


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def _check_prompt(prompt: object) -> None:
    """OpenAI's `prompt`: a string, a list of strings, or tokens (a list of integers, or
    a list of such lists)."""
    if isinstance(prompt, str) or _is_token_list(prompt):
        return
    accepted = "`prompt` must be a string, a list of strings or a list of token ids"
    if not isinstance(prompt, list):
        raise _invalid(f"{accepted}, not {json_kind(prompt)}")
    if all(isinstance(p, str) for p in prompt) or all(_is_token_list(p) for p in prompt):
        return
    first = next(i for i, p in enumerate(prompt) if not isinstance(p, str))
    raise _invalid(f"{accepted}; `prompt[{first}]` is {json_kind(prompt[first])}")


def check_body(body: dict[str, Any], path: str) -> None:
    """A 400 naming the first field whose shape no OpenAI-compatible server accepts.

    Only the fields this proxy reads (or that decide how it answers) are checked; the rest
    is llama-server's to judge, which answers them with its own 400."""
    if path in MESSAGES_PATHS:
        check_messages_body(body, path)
        return
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid(f"`stream` must be true or false, not {json_kind(stream)}")
    if path == CHAT_PATH and "messages" not in body:
        raise _invalid('the request needs `messages`: a list of {"role", "content"} objects')
    if path == COMPLETIONS_PATH and "prompt" not in body:
        raise _invalid("the request needs a `prompt`")
    if "messages" in body:
        _check_messages(body["messages"])
    if "prompt" in body:
        _check_prompt(body["prompt"])


def prompt_text(body: dict[str, Any]) -> str:
    """The text a checked request carries, for type inference and size estimates (an
    Anthropic body's `system` prompt too)."""
    parts: list[str] = []
    system = system_text(body)
    if system:
        parts.append(system)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    elif isinstance(prompt, list):
        parts.extend(p for p in prompt if isinstance(p, str))
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
    return "\n".join(parts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


MAX_INTENT_FILES = 64
"""The most attached file names a turn's kinds are read from (a rule per file is cheap,
but a hostile body may attach thousands)."""


def _newest_user_turn(body: dict[str, Any]) -> Any:
    """The content of the newest user message that says or attaches something."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if _content_text(content).strip() or _attached_files(content):
                return content
    return None


def _attached_files(content: Any) -> tuple[str, ...]:
    """The names of the files attached to one message (OpenAI's `file` content parts)."""
    if not isinstance(content, list):
        return ()
    names = []
    for part in content:
        file = part.get("file") if isinstance(part, dict) and part.get("type") == "file" else None
        name = file.get("filename") if isinstance(file, dict) else None
        if isinstance(name, str) and 0 < len(name) <= 4096:
            names.append(name)
            if len(names) == MAX_INTENT_FILES:
                break
    return tuple(names)


def intent_text(body: dict[str, Any]) -> str:
    """What the type is inferred from: the newest user turn of a conversation, not a long
    system prompt or tool output (agent traffic carries both); a completion's prompt."""
    content = _newest_user_turn(body)
    if content is not None:
        return _content_text(content)  # "" for a turn that only attaches files
    return prompt_text(body)


def intent_files(body: dict[str, Any]) -> tuple[str, ...]:
    """The files attached to the newest user turn, whose kinds are evidence of its type
    (a `.py` file attached to "what's wrong here?" asks for implementation work)."""
    return _attached_files(_newest_user_turn(body))


def strip_tag(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Remove `#force_big` from the prompt and messages before the model sees them."""
    found = False

    def clean(text: str) -> str:
        nonlocal found
        stripped, tagged = strip_force_big(text)
        found = found or tagged
        return stripped

    def clean_part(part: Any) -> Any:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            return {**part, "text": clean(part["text"])}
        return part

    body = dict(body)
    system = body.get("system")  # Anthropic's system prompt: a string or text blocks
    if isinstance(system, str):
        body["system"] = clean(system)
    elif isinstance(system, list):
        body["system"] = [clean_part(p) for p in system]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        body["prompt"] = clean(prompt)
    elif isinstance(prompt, list):
        body["prompt"] = [clean(p) if isinstance(p, str) else p for p in prompt]
    if isinstance(body.get("messages"), list):
        messages = []
        for message in body["messages"]:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                message = {**message, "content": clean(content)}
            elif isinstance(content, list):
                message = {**message, "content": [clean_part(p) for p in content]}
            messages.append(message)
        body["messages"] = messages
    return body, found


@dataclass(frozen=True)
class Prepared:
    """A parsed and checked body, its tag stripped, as it goes upstream."""

    body: dict[str, Any]
    raw: bytes | None
    """The body re-encoded without its tag; None when the bytes as sent can go as they are."""
    tagged: bool
    text: str
    """The prompt's text; empty when the request names a model (nothing routes on it)."""
    intent: str = ""
    """The newest user turn, which the type is inferred from; empty like `text`."""
    intent_files: tuple[str, ...] = ()
    """The names of the files attached to that turn."""


def prepare(
    raw: bytes, limits: BodyLimits, path: str, known: Sequence[str], models: Set[str], typed: bool
) -> Prepared:
    """Parse, check, strip `#force_big` and join the prompt's text: all linear in the
    body, and pure, so a big body is prepared in the offload worker. `known` are the
    names a request may use, `models` those of configured models. The text is only
    needed (and only carried back) when the request is routed: it names no model, or
    says its task type (`typed`)."""
    body = parse_json_object(raw, limits)
    requested = body.get("model")
    if not isinstance(requested, str) or not requested:
        raise _invalid("the request needs a `model` (a string): one of " + ", ".join(known))
    check_body(body, path)
    tagged = False
    encoded: bytes | None = None
    if b"#force_big" in raw.lower():
        body, tagged = strip_tag(body)
        encoded = json.dumps(body).encode()
    routed = typed or requested not in models
    if not routed:
        return Prepared(body, encoded, tagged, "")
    return Prepared(body, encoded, tagged, prompt_text(body), intent_text(body), intent_files(body))


def decide_for_proxy(request: RouteRequest, snap: RoutingSnapshot) -> Decision:
    """`routing.decide`, less the prompt it hands back, which the proxy never reads: so
    a decision made in the offload worker does not carry megabytes back."""
    return dataclasses.replace(decide(request, snap), prompt="")


def encode(body: dict[str, Any]) -> bytes:
    """The body as JSON bytes (linear in its size, so big ones are offloaded)."""
    return json.dumps(body).encode()
