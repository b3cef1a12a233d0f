"""A plain (non-streamed) completion put back together from the stream of the same answer.

llama-server stops generating when the reader of a *stream* goes away, never when a
plain request's client does; so the proxy sends a plain request to a managed model as a
stream (`as_stream`) and rebuilds the one JSON body the client asked for (`Assembly`),
which lets it end the generation the moment its client leaves. Anthropic's Messages API
is treated the same way (`MessageAssembly`).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from host.api.messages_body import MESSAGES_PATH
from host.api.openai_body import CHAT_PATH


def as_stream(body: dict[str, Any], path: str) -> dict[str, Any]:
    """What turns a plain request into the stream of the same answer; for chat, usage is
    asked for too (a plain answer always carries it, a stream only when asked)."""
    changes: dict[str, Any] = {"stream": True}  # a Messages stream always carries usage
    if path == CHAT_PATH:
        options = body.get("stream_options")
        changes["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return changes


def error_status(event: dict[str, Any]) -> int:
    """The status a stream's error event asks for (its `error.code`, llama-server's way),
    else 500: the stream had begun as a 200, so the code is all there is."""
    error = event.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code <= 599 else 500


class Assembly:
    """The events of a streamed completion, put back together as the one JSON body that
    the same request without `stream` gets (OpenAI's `chat.completion` or
    `text_completion`): text and reasoning concatenated per choice, tool calls joined by
    index, log-probabilities appended, the last finish reason, usage and timings."""

    def __init__(self, path: str) -> None:
        self.chat = path == CHAT_PATH
        self.top: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.error: dict[str, Any] | None = None

    def feed(self, event: object) -> None:
        if not isinstance(event, dict):
            return  # llama-server sends `data: null` before a multi-prompt stream
        if "error" in event:
            self.error = self.error or event
            return
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in event:
                self.top.setdefault(key, event[key])
        for key in ("usage", "timings"):
            if event.get(key) is not None:
                self.top[key] = event[key]
        for choice in event.get("choices") or []:
            if isinstance(choice, dict):
                self._feed_choice(choice)

    def _feed_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self.choices.setdefault(index if isinstance(index, int) else 0, {})
        if choice.get("finish_reason") is not None:
            state["finish_reason"] = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = state.setdefault("logprobs", {})
            for key, value in logprobs.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
                else:
                    merged[key] = value
        if not self.chat:
            if isinstance(choice.get("text"), str):
                state["text"] = state.get("text", "") + choice["text"]
            return
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("role"), str):
            state["role"] = delta["role"]
        for key in ("content", "reasoning_content"):
            if isinstance(delta.get(key), str):
                state[key] = state.get(key, "") + delta[key]
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                self._feed_tool_call(state, call)

    @staticmethod
    def _feed_tool_call(state: dict[str, Any], call: dict[str, Any]) -> None:
        calls: dict[int, dict[str, Any]] = state.setdefault("tool_calls", {})
        index = call.get("index", len(calls))
        joined = calls.setdefault(
            index if isinstance(index, int) else len(calls),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        for key in ("id", "type"):
            if call.get(key):
                joined[key] = call[key]
        function = call.get("function")
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    joined["function"][key] += function[key]

    def result(self) -> tuple[int, dict[str, Any]]:
        """The status and the body: 200 and the answer, or the stream's error event."""
        if self.error is not None:
            return error_status(self.error), self.error
        choices = [self._choice(i, self.choices[i]) for i in sorted(self.choices)]
        answer = {
            **{k: v for k, v in self.top.items() if k not in ("usage", "timings")},
            "object": "chat.completion" if self.chat else "text_completion",
            "choices": choices,
        }
        for key in ("usage", "timings"):
            if key in self.top:
                answer[key] = self.top[key]
        return 200, answer

    def _choice(self, index: int, state: dict[str, Any]) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "finish_reason": state.get("finish_reason")}
        if not self.chat:
            choice["text"] = state.get("text", "")
            choice["logprobs"] = state.get("logprobs")
            return choice
        message: dict[str, Any] = {
            "role": state.get("role", "assistant"),
            "content": state.get("content"),
        }
        if "reasoning_content" in state:
            message["reasoning_content"] = state["reasoning_content"]
        if state.get("tool_calls"):
            message["tool_calls"] = [state["tool_calls"][i] for i in sorted(state["tool_calls"])]
        choice["message"] = message
        if "logprobs" in state:
            choice["logprobs"] = state["logprobs"]
        return choice

    def feed_event(self, raw: bytes) -> None:
        """One server-sent event: its `data:` lines (`[DONE]` ends the stream)."""
        for line in raw.split(b"\n"):
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data in (b"", b"[DONE]"):
                continue
            try:
                self.feed(json.loads(data))
            except ValueError:
                continue  # a torn event: what came before it still stands


class MessageAssembly:
    """The events of a streamed Anthropic message (`message_start`, `content_block_*`,
    `message_delta`, `message_stop`), put back together as the one `message` object the
    same request without `stream` gets: text, thinking and signatures concatenated per
    block, a tool call's `input_json_delta`s parsed once its block ends, the stop reason
    and usage from `message_delta`."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial_json: dict[int, str] = {}
        self.error: dict[str, Any] | None = None

    def feed(self, event: object) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "error" or "error" in event:
            self.error = self.error or event
        elif kind == "message_start" and isinstance(event.get("message"), dict):
            self.message = {**event["message"], "content": []}
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self.blocks[self._index(event)] = dict(event["content_block"])
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            self._feed_delta(self._index(event), event["delta"])
        elif kind == "content_block_stop":
            self._finish_block(self._index(event))
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                self.message.update(delta)
            usage = event.get("usage")
            if isinstance(usage, dict):
                known = self.message.get("usage")
                self.message["usage"] = {**(known if isinstance(known, dict) else {}), **usage}

    @staticmethod
    def _index(event: dict[str, Any]) -> int:
        index = event.get("index", 0)
        return index if isinstance(index, int) else 0

    def _feed_delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            self.partial_json[index] = self.partial_json.get(index, "") + delta["partial_json"]
            return
        fields = {
            "text_delta": "text",
            "thinking_delta": "thinking",
            "signature_delta": "signature",
        }
        field = fields.get(kind) if isinstance(kind, str) else None
        if field is not None and isinstance(delta.get(field), str):
            block[field] = str(block.get(field) or "") + delta[field]

    def _finish_block(self, index: int) -> None:
        partial = self.partial_json.pop(index, None)
        block = self.blocks.get(index)
        if block is None or partial is None:
            return
        try:
            block["input"] = json.loads(partial) if partial.strip() else {}
        except ValueError:
            block["input"] = {}  # a torn tool call: the stream's end says how it ended

    def result(self) -> tuple[int, dict[str, Any]]:
        """The status and the body: 200 and the message, or the stream's error event."""
        if self.error is not None:
            return error_status(self.error), self.error
        for index in list(self.partial_json):
            self._finish_block(index)
        message = {"type": "message", "role": "assistant", **self.message}
        message.setdefault("id", new_message_id())  # its message_start was lost upstream
        message["content"] = [self.blocks[i] for i in sorted(self.blocks)]
        return 200, message


def new_message_id() -> str:
    return "msg_tierhost_" + secrets.token_hex(12)


_OPENING_BLOCKS = {
    "text_delta": {"type": "text", "text": ""},
    "thinking_delta": {"type": "thinking", "thinking": ""},
}


def missing_start(first_chunk: bytes, model: str) -> bytes:
    """What a Messages stream lacks before its first chunk: nothing (b"") when it begins
    with `message_start`, as it should.

    llama-server now and then drops a stream's first events (a short answer whose
    tokens came in one batch; its chat streams lose their first chunk the same way), and
    Anthropic's SDKs refuse a stream whose first event is not `message_start`. So one is
    made up (an id of ours, the served model, usage unknown), and a `content_block_start`
    for a text or thinking block whose first delta comes with no start. Only the first
    chunk is looked at, once per stream."""
    if first_chunk.lstrip().startswith(b"event: message_start"):
        return b""
    start = {
        "type": "message_start",
        "message": {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    }
    prefix = f"event: message_start\ndata: {json.dumps(start)}\n\n"
    first = _first_event(first_chunk)
    if first is not None and first.get("type") == "content_block_delta":
        delta = first.get("delta")
        kind = delta.get("type") if isinstance(delta, dict) else None
        block = _OPENING_BLOCKS.get(kind) if isinstance(kind, str) else None
        if block is not None:
            opening = {
                "type": "content_block_start",
                "index": first.get("index", 0),
                "content_block": block,
            }
            prefix += f"event: content_block_start\ndata: {json.dumps(opening)}\n\n"
    return prefix.encode()


def _first_event(chunk: bytes) -> dict[str, Any] | None:
    for line in chunk.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                event = json.loads(line[5:])
            except ValueError:
                return None
            return event if isinstance(event, dict) else None
    return None


def assembled_body(payload: bytes, path: str) -> tuple[int, dict[str, Any]]:
    """A streamed answer, read to its end, put back together (`Assembly`).

    Nobody reads a plain answer before its end, so it is taken apart once, not as it
    came: the `data:` lines are parsed as one JSON array (one call into the parser for
    the whole answer, not one per event), each line on its own only if that fails (a torn
    event: what came before it still stands) or the lines were not one value each."""
    assembly: Assembly | MessageAssembly = (
        MessageAssembly() if path == MESSAGES_PATH else Assembly(path)
    )
    datas = []
    for line in payload.split(b"\n"):
        line = line.strip()
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data and data != b"[DONE]":
                datas.append(data)
    try:
        events = json.loads(b"[" + b",".join(datas) + b"]")
    except ValueError:
        events = None
    if isinstance(events, list) and len(events) == len(datas):
        for event in events:
            assembly.feed(event)
        return assembly.result()
    for data in datas:
        try:
            assembly.feed(json.loads(data))
        except ValueError:
            continue
    return assembly.result()
