"""JSON values named in JSON's words, for error messages that must not echo a hostile
value back. Pure, and free of imports, so the CLI and the LSP bridge share it with the
HTTP shell without loading it."""

from __future__ import annotations


def json_kind(value: object) -> str:
    """What a parsed JSON value is: null, a boolean, a number, a string, an array or an
    object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
