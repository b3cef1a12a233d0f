"""Finding a pass-through request's `model`: a JSON field, or a multipart form field
found by scanning the bytes, with a 400 naming what is wrong."""

from __future__ import annotations

import httpx
import pytest

from host.api.passthrough_body import (
    MAX_PART_HEADERS,
    form_boundary,
    form_field,
    is_multipart,
    prepare_passthrough,
)
from host.errors import DEFAULT_LIMITS, ApiError

KNOWN = ["listener", "speaker", "builder"]


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A form as httpx (the OpenAI SDK's client) encodes it: its body and content type."""
    request = httpx.Request("POST", "http://x/", data=fields, files=files)
    return request.read(), request.headers["content-type"]


def test_a_json_body_gives_its_model_and_itself() -> None:
    found = prepare_passthrough(b'{"model": "speaker", "input": "hi"}', DEFAULT_LIMITS, "", KNOWN)
    assert found.model == "speaker"
    assert found.json_body == {"model": "speaker", "input": "hi"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"input": "hi"}', "the request needs a `model` field (a model or tier name)"),
        (b'{"model": null}', "the request needs a `model` field"),
        (b'{"model": 3}', "`model` field must be a model or tier name (a string), not a number"),
        (b'{"model": ["a"]}', "not an array"),
        (b'{"model": "  "}', "not an empty string"),
        (b'{"model": "' + b"m" * 300 + b'"}', "300 characters"),
        (b"[1]", "object"),
        (b"{", "not valid JSON"),
    ],
)
def test_a_json_body_without_a_usable_model_is_a_400(raw: bytes, expected: str) -> None:
    with pytest.raises(ApiError) as caught:
        prepare_passthrough(raw, DEFAULT_LIMITS, "application/json", KNOWN)
    assert caught.value.status == 400
    assert expected in caught.value.message


def test_the_model_field_of_a_form_is_found_before_or_after_the_upload() -> None:
    audio = bytes(range(256)) * 8 + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\nx'
    for fields in ({"model": "listener", "language": "en"}, {"language": "en"}):
        raw, content_type = multipart(fields, {"file": ("a.wav", audio)})
        if "model" not in fields:  # after the file: append a part by hand
            boundary = form_boundary(content_type)
            raw = raw.removesuffix(b"--" + boundary + b"--\r\n") + (
                b"--" + boundary + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
                b"speaker\r\n--" + boundary + b"--\r\n"
            )
        found = prepare_passthrough(raw, DEFAULT_LIMITS, content_type, KNOWN)
        assert found.model == fields.get("model", "speaker")
        assert found.json_body is None


def test_a_file_named_model_is_not_the_model_field() -> None:
    raw, content_type = multipart({"model": "speaker"}, {"modelfile": ("model", b"data")})
    assert form_field(raw, form_boundary(content_type), b"model") == b"speaker"


def test_the_boundary_may_be_quoted_and_the_name_unquoted() -> None:
    raw = b"--b c\r\nContent-Disposition: form-data; name=model\r\n\r\nlistener\r\n--b c--\r\n"
    content_type = 'multipart/form-data; charset=utf-8; boundary="b c"'
    assert is_multipart(content_type)
    assert prepare_passthrough(raw, DEFAULT_LIMITS, content_type, KNOWN).model == "listener"


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (b"--b\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b", "needs a `model` field"),
        (b"--b--\r\n", "multipart/form-data; boundary=b", "needs a `model` field"),
        (b"model=speaker", "multipart/form-data", "needs a `boundary`"),
        (b"x", "multipart/form-data; boundary=" + "b" * 71, "needs a `boundary`"),
        (b"model=speaker", "multipart/form-data; boundary=b", "its boundary never occurs"),
        (
            b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nspeaker',
            "multipart/form-data; boundary=b",
            "ends inside a part",
        ),
        (
            b"--b\r\n" + b"X-Pad: " + b"p" * MAX_PART_HEADERS + b"\r\n\r\n",
            "multipart/form-data; boundary=b",
            "no end to its headers",
        ),
        (
            b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n\xff\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            "not UTF-8",
        ),
        (
            b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            "not an empty string",
        ),
    ],
)
def test_a_form_without_a_usable_model_is_a_400(
    raw: bytes, content_type: str, expected: str
) -> None:
    with pytest.raises(ApiError) as caught:
        prepare_passthrough(raw, DEFAULT_LIMITS, content_type, KNOWN)
    assert caught.value.status == 400
    assert expected in caught.value.message
