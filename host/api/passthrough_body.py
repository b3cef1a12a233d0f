"""Pass-through bodies: the endpoints the proxy routes by `model` alone, and finding it.

Embeddings, speech, transcriptions, images and rerank are not chat: the proxy has no
prompt to route on, no slot to pin and no stream to put back together, so their bodies
go upstream byte for byte. What it must know is the `model` (a model or tier name, like
chat's): a JSON body's `model` field, or a multipart form's `model` field (OpenAI's
`/v1/audio/transcriptions` uploads the audio file that way).

A multipart body is never parsed into parts: the `model` field is found by scanning the
bytes already read (within `host.max_body_mb`) for each part's headers, and the upload
itself is neither copied nor decoded. Pure, like `host.api.openai_body`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from host.errors import ApiError, BodyLimits, parse_json_object, shorten
from host.json_text import json_kind

EMBEDDINGS_PATH = "/v1/embeddings"
SPEECH_PATH = "/v1/audio/speech"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
IMAGES_PATH = "/v1/images/generations"
RERANK_PATH = "/v1/rerank"

PASSTHROUGH_PATHS = (EMBEDDINGS_PATH, SPEECH_PATH, TRANSCRIPTIONS_PATH, IMAGES_PATH, RERANK_PATH)
"""Routed by `model`, sent upstream as they came, answered as the server answers."""

MULTIPART_PATHS = frozenset(PASSTHROUGH_PATHS)
"""Where the guard lets a `multipart/form-data` body in (everywhere else: JSON only)."""

MAX_PART_HEADERS = 16 * 1024
"""The most bytes one part's headers may take; a form whose part claims more is refused."""

MAX_MODEL_CHARS = 256
"""Longer than any model or tier name: a `model` field beyond this is not one."""

_DISPOSITION_NAME = re.compile(rb'(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)
_BOUNDARY = re.compile(r'(?:^|;)\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


@dataclass(frozen=True)
class Passthrough:
    """What the proxy needs of a pass-through body: the name it routes by, and the body
    as parsed when it is JSON (a remote's `remote_model` is written into it), else None."""

    model: str
    json_body: dict[str, object] | None


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def is_multipart(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


def checked_model(value: object, known: Sequence[str], where: str) -> str:
    """The model a request names, or a 400 saying what `model` must be."""
    names = ", ".join(known)
    if value is None:
        raise _invalid(
            f"the request needs a `model` {where} (a model or tier name): one of {names}"
        )
    if not isinstance(value, str) or not value.strip():
        shown = json_kind(value) if not isinstance(value, str) else "an empty string"
        raise _invalid(
            f"`model` {where} must be a model or tier name (a string), not {shown}: one of {names}"
        )
    if len(value) > MAX_MODEL_CHARS:
        raise _invalid(f"`model` {where} is {len(value)} characters; no model name is that long")
    return value


def prepare_passthrough(
    raw: bytes, limits: BodyLimits, content_type: str, known: Sequence[str]
) -> Passthrough:
    """The body's `model`: from the multipart form, or from the JSON object (which is
    parsed, with the limits chat bodies have). Raises a 400 naming what is wrong."""
    if not is_multipart(content_type):
        body = parse_json_object(raw, limits)
        return Passthrough(checked_model(body.get("model"), known, "field"), body)
    boundary = form_boundary(content_type)
    value = form_field(raw, boundary, b"model")
    if value is None:
        raise _invalid(
            "the multipart form needs a `model` field (a model or tier name): one of "
            + ", ".join(known)
        )
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _invalid("the form's `model` field is not UTF-8 text") from None
    return Passthrough(checked_model(text, known, "form field"), None)


def form_boundary(content_type: str) -> bytes:
    """The boundary a multipart Content-Type names, or a 400."""
    match = _BOUNDARY.search(content_type.split(";", 1)[1] if ";" in content_type else "")
    boundary = (match.group(1) or match.group(2)) if match else None
    if not boundary or len(boundary) > 70:  # RFC 2046: 1 to 70 characters
        raise _invalid(
            "a multipart/form-data body needs a `boundary` of 1 to 70 characters in its "
            f"Content-Type, not {shorten(content_type)}"
        )
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise _invalid("the multipart boundary must be ASCII") from None


def form_field(raw: bytes, boundary: bytes, name: bytes) -> bytes | None:
    """The value of the first part named `name` (its bytes, as sent), or None when the
    form has none. Each part's headers are read, its content is only skipped over: one
    `find` per part, linear in the body, and no copy but of headers and the value.

    A malformed form (a part without the blank line ending its headers, headers over
    MAX_PART_HEADERS, no closing delimiter after a part) is a 400."""
    delimiter = b"--" + boundary
    next_part = b"\r\n" + delimiter
    at = raw.find(delimiter)
    if at == -1:
        raise _invalid("the multipart body has no part: its boundary never occurs in it")
    while True:
        start = at + len(delimiter)
        if raw.startswith(b"--", start):
            return None  # the closing delimiter: no part named so
        headers_end = raw.find(b"\r\n\r\n", start, start + MAX_PART_HEADERS)
        if headers_end == -1:
            raise _invalid(
                "a part of the multipart body has no end to its headers (or headers over "
                f"{MAX_PART_HEADERS} bytes)"
            )
        content_start = headers_end + 4
        end = raw.find(next_part, content_start)
        if end == -1:
            raise _invalid("the multipart body ends inside a part (no closing boundary)")
        if _part_name(raw[start:headers_end]) == name:
            return raw[content_start:end]
        at = end + 2


def _part_name(headers: bytes) -> bytes | None:
    """The `name` of a part's `Content-Disposition: form-data; name="..."` header."""
    for line in headers.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            match = _DISPOSITION_NAME.search(value.partition(b";")[2])
            if match is not None:
                return match.group(1) if match.group(1) is not None else match.group(2)
    return None
