"""The one upstream chat client: the host's own requests to a model it has leased.

The dispatcher streams a task's answer and the validation loop asks the validator for a
verdict; both send an OpenAI chat completion through a `ModelLease`, whatever kind the
model is, and read the answer the same way. (The proxy is not a client: it relays the
client's own bytes.) What can go wrong is said once here: an HTTP error status, a stream
event that is not what an OpenAI-compatible server sends, an error reported mid-answer,
an answer of the wrong shape. Transport errors stay `httpx.HTTPError`s, so a caller can
tell "the connection went away before a reply" (worth one retry) from a bad answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from host.models.leases import ModelLease

ERROR_DETAIL_CHARS = 300
"""How much of an error body goes into the message: enough to read, never a whole page."""


class ChatFailed(Exception):
    """The model answered, but not with a chat completion: an error status, a stream
    event that is not JSON or not an object, an error reported mid-answer, or an answer
    of the wrong shape. The message says which, and names the model; `status` is the
    HTTP status of an error answer (a 5xx is the server's fault, worth another model)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


TokensSoFar = Callable[[int], Awaitable[None]]
"""Called after each stream event with the answer's token count so far."""


def pieces_of(model: str, line: str) -> list[str]:
    """The text pieces of one `data: {...}` event of a chat completion stream."""
    try:
        chunk = json.loads(line.removeprefix("data:").strip())
    except (ValueError, RecursionError) as exc:
        raise ChatFailed(
            f"model {model} sent a stream event that is not JSON ({type(exc).__name__}): "
            f"{line[:120]!r}"
        ) from None
    if not isinstance(chunk, dict):
        raise ChatFailed(f"model {model} sent a stream event that is not an object")
    if chunk.get("error") is not None:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ChatFailed(f"model {model} reported an error mid-answer: {message}")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return []
    pieces = []
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            pieces.append(content)
    return pieces


def content_of(model: str, answer: Any) -> str:
    """The assistant's text in a plain (non-streamed) chat completion; "" when the model
    said nothing. An answer of any other shape is a `ChatFailed`."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if choices is None:
        raise ChatFailed(f"model {model} answered without `choices`")
    if not isinstance(choices, list):
        raise ChatFailed(f"model {model} answered `choices` that is not a list")
    if not choices:
        return ""
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if message is None:
        return ""
    if not isinstance(message, dict):
        raise ChatFailed(f"model {model} answered a `message` that is not an object")
    content = message.get("content")
    return content if isinstance(content, str) else ""


async def stream_chat(
    lease: ModelLease, body: dict[str, Any], on_tokens: TokensSoFar | None = None
) -> tuple[str, int]:
    """Stream one answer: (its text, its tokens, counted as content pieces, one per event
    piece as llama-server sends them)."""
    pieces: list[str] = []
    async with lease.http.stream(
        "POST",
        lease.chat_url,
        json=lease.body({**body, "stream": True}),
        headers=lease.headers,
        timeout=lease.timeouts(),
    ) as response:
        if response.status_code >= 400:
            detail = (await response.aread()).decode(errors="replace")[:ERROR_DETAIL_CHARS]
            raise ChatFailed(
                f"model {lease.model} answered HTTP {response.status_code} ({lease.where()}): "
                f"{detail}",
                response.status_code,
            )
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.removeprefix("data:").strip() == "[DONE]":
                continue
            found = pieces_of(lease.model, line)
            pieces.extend(found)
            if on_tokens is not None:
                await on_tokens(len(pieces))
    return "".join(pieces), len(pieces)


async def complete_chat(lease: ModelLease, body: dict[str, Any]) -> str:
    """One plain (non-streamed) answer's text."""
    response = await lease.http.post(
        lease.chat_url,
        json=lease.body({**body, "stream": False}),
        headers=lease.headers,
        timeout=lease.timeouts(),
    )
    if response.status_code >= 400:
        raise ChatFailed(
            f"model {lease.model} answered HTTP {response.status_code} ({lease.where()}): "
            f"{response.text[:ERROR_DETAIL_CHARS]}",
            response.status_code,
        )
    try:
        answer = response.json()
    except ValueError as exc:
        raise ChatFailed(
            f"model {lease.model} answered something that is not JSON ({type(exc).__name__})"
        ) from None
    return content_of(lease.model, answer)
