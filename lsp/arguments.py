"""What a `workspace/executeCommand` carries, checked before anything reaches the host.

Editors and scripts build these arrays by hand, so a wrong one must come back as a
JSON-RPC "invalid params" error that says exactly what was expected — not as a
traceback, and not as a task the host runs on half an argument. Pure: no I/O.

Task commands (`tierhost.plan` …) take `[uri]`, `[uri, range]` or
`[uri, range | null, options]`, or one object `{"uri", "range"?, "options"?}`;
`range` is an LSP range (0-based lines and characters), `options` a few task settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lsprotocol import types

from lsp.paths import is_task_id

TASK_COMMANDS: dict[str, str] = {
    "tierhost.plan": "planning",
    "tierhost.design": "design",
    "tierhost.review": "review",
    "tierhost.implement": "implementation",
    "tierhost.explain": "planning",
}
"""Each task command and the task type it submits (the host routes the type to a tier)."""

USAGE = (
    "expected [uri], [uri, range], [uri, range|null, options] or "
    '[{"uri": ..., "range"?: ..., "options"?: ...}]'
)

VALIDATIONS = ("none", "final", "block_by_block")

# option name on the wire → (name in the host's task body, accepted Python types)
_OPTIONS: dict[str, tuple[str, tuple[type, ...]]] = {
    "maxTokens": ("max_tokens", (int,)),
    "temperature": ("temperature", (int, float)),
    "topP": ("top_p", (int, float)),
    "seed": ("seed", (int,)),
    "validation": ("validation", (str,)),
    "forceBig": ("force_big", (bool,)),
    "priority": ("priority", (int,)),
    "tier": ("tier", (str,)),
    "model": ("model", (str,)),
}


class BadArguments(ValueError):
    """The command's arguments are wrong; the message says how, for the person reading it."""


@dataclass(frozen=True)
class Options:
    """Task settings a caller may choose; None means "the host's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    validation: str | None = None
    force_big: bool | None = None
    priority: int | None = None
    tier: str | None = None
    model: str | None = None

    def params(self) -> dict[str, Any]:
        """The host's `params` object (sampling), without the unset keys."""
        values = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class TaskArgs:
    """A task command's target: the document, the selected range (if any), settings."""

    uri: str
    range: types.Range | None
    options: Options


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _position(value: Any, where: str) -> types.Position:
    if not isinstance(value, Mapping):
        raise BadArguments(f'{where} must be an object {{"line": int, "character": int}}')
    line, character = value.get("line"), value.get("character")
    if not (isinstance(line, int) and isinstance(character, int)) or not (
        _is_int(line) and _is_int(character) and line >= 0 and character >= 0
    ):
        raise BadArguments(
            f"{where} needs non-negative integers 'line' and 'character' (0-based), "
            f"got {dict(value)!r}"
        )
    return types.Position(line=line, character=character)


def parse_range(value: Any) -> types.Range | None:
    """An LSP range object, or None for "no selection"; an empty range counts as none."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BadArguments(
            f"range must be an LSP range object {{'start': ..., 'end': ...}} or null, "
            f"got {type(value).__name__}"
        )
    start = _position(value.get("start"), "range.start")
    end = _position(value.get("end"), "range.end")
    if (end.line, end.character) < (start.line, start.character):
        raise BadArguments(
            f"range.end ({end.line}:{end.character}) is before range.start "
            f"({start.line}:{start.character})"
        )
    if (end.line, end.character) == (start.line, start.character):
        return None
    return types.Range(start=start, end=end)


def parse_uri(value: Any) -> str:
    if not isinstance(value, str) or not value:
        shown = "nothing" if value is None else f"{type(value).__name__} {value!r}"
        raise BadArguments(f"the first argument must be the document URI (a string), got {shown}")
    scheme, sep, _ = value.partition(":")
    if not sep or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        raise BadArguments(
            f"{value!r} is not a document URI; send the editor's URI, e.g. 'file:///path/app.py'"
        )
    return value


def parse_options(value: Any) -> Options:
    if value is None:
        return Options()
    if not isinstance(value, Mapping):
        raise BadArguments(f"options must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(_OPTIONS))
    if unknown:
        raise BadArguments(
            f"unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(_OPTIONS)}"
        )
    fields: dict[str, Any] = {}
    for key, raw in value.items():
        name, kinds = _OPTIONS[key]
        ok = isinstance(raw, kinds) and (bool in kinds or not isinstance(raw, bool))
        if raw is not None and not ok:
            wanted = " or ".join(k.__name__ for k in kinds)
            raise BadArguments(f"option {key!r} must be {wanted}, got {raw!r}")
        fields[name] = raw
    if fields.get("max_tokens") is not None and fields["max_tokens"] < 1:
        raise BadArguments(f"option 'maxTokens' must be at least 1, got {fields['max_tokens']}")
    if fields.get("validation") is not None and fields["validation"] not in VALIDATIONS:
        raise BadArguments(
            f"option 'validation' must be one of {', '.join(VALIDATIONS)}, "
            f"got {fields['validation']!r}"
        )
    return Options(**fields)


def task_args(command: str, arguments: Sequence[Any]) -> TaskArgs:
    """Check a task command's arguments; raise BadArguments naming what is wrong."""
    try:
        if len(arguments) == 1 and isinstance(arguments[0], Mapping):
            body = arguments[0]
            unknown = sorted(set(body) - {"uri", "range", "options"})
            if unknown:
                raise BadArguments(
                    f"unknown key(s) {', '.join(map(repr, unknown))}; "
                    "known: 'uri', 'range', 'options'"
                )
            return TaskArgs(
                parse_uri(body.get("uri")),
                parse_range(body.get("range")),
                parse_options(body.get("options")),
            )
        if not 1 <= len(arguments) <= 3:
            raise BadArguments(f"got {len(arguments)} argument(s); {USAGE}")
        uri = parse_uri(arguments[0])
        selection = parse_range(arguments[1]) if len(arguments) > 1 else None
        options = parse_options(arguments[2]) if len(arguments) > 2 else Options()
        return TaskArgs(uri, selection, options)
    except BadArguments as exc:
        raise BadArguments(f"{command}: {exc}") from None


def mode_args(arguments: Sequence[Any]) -> tuple[str, str | None]:
    """`tierhost.setMode`: `[mode]` or `[mode, device]` (no device: every GPU)."""
    if not 1 <= len(arguments) <= 2:
        raise BadArguments(
            f"tierhost.setMode: got {len(arguments)} argument(s); expected [mode] or "
            "[mode, device], e.g. ['gaming'] or ['builder', 'gpu0']"
        )
    mode = arguments[0]
    device = arguments[1] if len(arguments) > 1 else None
    if not isinstance(mode, str) or not mode:
        raise BadArguments(
            f"tierhost.setMode: the mode must be a non-empty string "
            f"(auto, gaming or a tier name), got {mode!r}"
        )
    if device is not None and (not isinstance(device, str) or not device):
        raise BadArguments(
            f"tierhost.setMode: the device must be a string like 'gpu0', got {device!r}"
        )
    return mode, device


def cancel_args(arguments: Sequence[Any]) -> str | None:
    """`tierhost.cancel`: `[]` (every task this bridge runs), `[task id]` or `[document uri]`.
    An id must have the host's form: it becomes part of a URL path to the host."""
    if not arguments:
        return None
    if len(arguments) == 1 and isinstance(arguments[0], str) and arguments[0]:
        target = arguments[0]
        if ":" not in target and not is_task_id(target):
            raise BadArguments(
                f"tierhost.cancel: {target!r} is neither a task id (t- and 17 hex digits, "
                "as the host names tasks) nor a document URI"
            )
        return target
    raise BadArguments(
        "tierhost.cancel: expected [] (every task started here), [task id] or [document uri], "
        f"got {list(arguments)!r}"
    )


def no_args(command: str, arguments: Sequence[Any]) -> None:
    if arguments:
        raise BadArguments(f"{command} takes no arguments, got {list(arguments)!r}")
