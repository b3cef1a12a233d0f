"""Request bodies and query parameters: every hostile one is a 4xx naming what is wrong.

The reader (host.errors) first, as pure functions; then the same limits against a real
daemon, on every endpoint that reads a body or a `limit`.
"""

from __future__ import annotations

import inspect
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.api import control, proxy
from host.api import routing as routing_api
from host.api import tasks as task_api
from host.errors import (
    ApiError,
    BodyLimits,
    declared_length,
    nesting_exceeds,
    parse_json_object,
)
from tests.conftest import Daemon, running_demo

LIMITS = BodyLimits()


def refusal(raw: bytes, limits: BodyLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_json_object(raw, limits)
    return caught.value


def nested(depth: int, leaf: str = "1") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


# -- the reader ------------------------------------------------------------------------


def test_nesting_up_to_the_limit_parses_and_one_more_level_is_a_400() -> None:
    assert parse_json_object(b'{"a": ' + nested(63) + b"}") == {"a": json.loads(nested(63))}
    error = refusal(b'{"a": ' + nested(64) + b"}")
    assert error.status == 400 and "nested deeper than 64 levels" in error.message
    assert "`host.max_json_depth`" in error.message


@pytest.mark.parametrize("depth", [65, 1000, 5000, 100_000, 4_000_000])
def test_bodies_nested_thousands_deep_never_reach_the_parser(depth: int) -> None:
    for opener, closer in (("[", "]"), ('{"k":', "}")):
        raw = ("{" + '"x":' + opener * depth + "1" + closer * depth + "}").encode()
        assert refusal(raw).status == 400


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[[[[" * 100 + '\\"' + "]]" * 10
    body = {"prompt": text, "more": ["\\", '"[', "{{{" * 50]}
    assert parse_json_object(json.dumps(body).encode()) == body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), children, max_size=4)
    ),
    max_leaves=60,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(value=json_values, limit=st.integers(1, 12), spaced=st.booleans())
def test_the_depth_check_agrees_with_the_parsed_structure(
    value: Any, limit: int, spaced: bool
) -> None:
    raw = json.dumps(value, indent=1 if spaced else None).encode()
    assert nesting_exceeds(raw, limit) == (depth_of(value) > limit)


def test_many_leaves_are_counted_by_passes_with_the_same_answer() -> None:
    wide = b"[" + b",".join([b"[[]]"] * 300_000) + b"]"  # 600k leaves: the pass path
    assert not nesting_exceeds(wide, 3) and nesting_exceeds(wide, 2)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"n": ' + b"9" * 101 + b"}", "101 digits; the limit is 100"),
        (b'{"n": -' + b"9" * 101 + b"}", "101 digits; the limit is 100"),
        (b'{"n": ' + b"9" * 5000 + b"}", "5000 digits"),
        (b'{"n": ' + b"9" * 1_000_000 + b"}", "1000000 digits"),
        (b'{"n": 1e999}', "out of range"),
        (b'{"n": NaN}', "NaN is not JSON"),
        (b'{"n": -Infinity}', "-Infinity is not JSON"),
        (b'{"p": "\xff"}', "not UTF-8"),
        (b'\xef\xbb\xbf{"p": 1}', "not valid JSON"),  # a byte-order mark is not JSON
        ('{"p": "é"}'.encode("utf-16"), "not UTF-8"),
        (b'{"p": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"p": "\\udc00x"}', "lone UTF-16 surrogate"),
        (b'{"p": ', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b'"prompt"', "must be a JSON object, not a string"),
        (b"3", "must be a JSON object, not a number"),
        (b"true", "must be a JSON object, not a boolean"),
        (b"null", "must be a JSON object, not null"),
    ],
)
def test_hostile_json_is_a_400_that_names_the_problem(raw: bytes, says: str) -> None:
    error = refusal(raw)
    assert error.status == 400 and says in error.message
    assert len(error.message) < 300


def test_a_hundred_digits_and_paired_surrogates_are_fine() -> None:
    raw = b'{"n": ' + b"9" * 100 + b', "e": "\\ud83d\\ude00", "f": 1.5e300}'
    assert parse_json_object(raw) == {"n": int("9" * 100), "e": "\U0001f600", "f": 1.5e300}
    tight = BodyLimits(max_depth=2, max_int_digits=3)
    assert refusal(b'{"n": 1234}', tight).message.startswith("a JSON integer has 4 digits")
    assert "deeper than 2 levels" in refusal(b'{"a": [[1]]}', tight).message


@pytest.mark.parametrize("value", ["²", "١٢", "1.5", "+1", "-1", "", " 1", "1_000", "0x10"])
def test_a_content_length_must_be_ascii_digits(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        declared_length(value)
    assert caught.value.status == 400 and "Content-Length" in caught.value.message
    assert declared_length("0") == 0 and declared_length("8388608") == 8388608


# -- a real daemon ---------------------------------------------------------------------

BODY_ENDPOINTS = [
    ("POST", "/api/route"),
    ("POST", "/api/tasks"),
    ("PUT", "/api/mode"),
    ("PUT", "/api/routing"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/rerank"),
]


def state_changing_routes() -> set[tuple[str, str]]:
    found = set()
    for route in [*control.routes, *task_api.routes, *routing_api.routes, *proxy.routes]:
        for method in route.methods or ():
            if method in {"POST", "PUT", "PATCH", "DELETE"}:
                found.add((method, route.path))
    return found


def test_the_body_endpoints_here_are_every_state_change_but_cancel() -> None:
    """A new POST or PUT route fails this until it is added here (and so to the fuzz)."""
    cancel = ("POST", "/api/tasks/{task_id}/cancel")  # takes no body
    assert state_changing_routes() == {*BODY_ENDPOINTS, cancel}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_demo(tmp_path_factory.mktemp("bodies")) as started:
        yield started


def error_of(response: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    assert error["type"] and error["message"]
    return error


JSON = {"content-type": "application/json"}
OVER = json.dumps({"prompt": "x" * (8 * 1024 * 1024)}).encode()


@pytest.mark.real
@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_hostile_bodies_are_400s_on_every_endpoint(daemon: Daemon, method: str, path: str) -> None:
    cases = [
        (b'{"prompt": ' + nested(100_000) + b"}", "nested deeper than 64"),
        (b'{"prompt": "x", "priority": ' + b"7" * 5000 + b"}", "5000 digits; the limit is 100"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"just a string"', "must be a JSON object"),
        (b'{"prompt": "\xff\xfe"}', "not UTF-8"),
        (b'{"prompt": "\\ud800"}', "surrogate"),
        (b"{not json", "not valid JSON"),
        (b"", "no body"),
    ]
    with daemon.client() as http:
        for raw, says in cases:
            response = http.request(method, path, content=raw, headers=JSON)
            assert response.status_code == 400, (raw[:40], response.text)
            assert says in error_of(response)["message"]
        assert http.get("/health").status_code == 200


@pytest.mark.real
@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_an_oversize_body_is_a_413_naming_the_limit(daemon: Daemon, method: str, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(OVER), 256 * 1024):
            yield OVER[start : start + 256 * 1024]

    with daemon.client() as http:
        for content in (OVER, chunks()):
            response = http.request(method, path, content=content, headers=JSON)
            assert response.status_code == 413
            error = error_of(response)
            assert error["type"] == "request_too_large"
            assert "the limit is 8 MiB (`host.max_body_mb`)" in error["message"]
        assert http.get("/health").status_code == 200


@pytest.mark.real
def test_a_chunked_body_within_the_limit_is_read_whole(daemon: Daemon) -> None:
    body = json.dumps({"prompt": "Plan the milestones for a small CLI tool. " * 1200}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    with daemon.client() as http:
        response = http.post("/api/route", content=chunks(), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "planning"


def raw_request(daemon: Daemon, head: bytes, body: bytes = b"") -> bytes:
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


@pytest.mark.real
@pytest.mark.parametrize("length", ["²".encode(), b"1e1", b"-2", b"0x2"])
def test_a_content_length_that_is_not_digits_is_a_400(daemon: Daemon, length: bytes) -> None:
    head = b"\r\n".join(
        [
            b"POST /api/route HTTP/1.1",
            b"Host: 127.0.0.1",
            b"Content-Type: application/json",
            b"Content-Length: " + length,
        ]
    )
    answer = raw_request(daemon, head, b"{}")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    with daemon.client() as http:
        assert http.get("/health").status_code == 200


def endpoints_taking_limit() -> set[str]:
    found = set()
    for route in [*control.routes, *task_api.routes, *routing_api.routes, *proxy.routes]:
        if '"limit"' in inspect.getsource(route.endpoint):
            found.add(route.path)
    return found


@pytest.mark.real
@pytest.mark.parametrize(
    "value", ["²", "%C2%B2", "٣", "0", "-1", "10001", "1e3", "abc", "", "9" * 5000, "1&limit=2"]
)
def test_a_bad_limit_is_the_same_400_everywhere(daemon: Daemon, value: str) -> None:
    paths = endpoints_taking_limit()
    assert paths == {"/api/tasks", "/api/swaps", "/api/requests"}
    with daemon.client() as http:
        for path in sorted(paths):
            response = http.get(f"{path}?limit={value}")
            assert response.status_code == 400, (path, response.text)
            error = error_of(response)
            assert error["type"] == "invalid_request" and "limit" in error["message"]
            assert len(error["message"]) < 200
            assert http.get(f"{path}?limit=5").status_code == 200


@pytest.mark.real
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    params=st.dictionaries(
        st.sampled_from(["limit", "status", "type", "junk"]),
        st.text(max_size=40) | st.sampled_from(["5", "queued", "planning", "done"]),
        max_size=4,
    ),
    raw=st.sampled_from(["", "&type=%ED%A0%80", "&type=%FF%00", "&status=%", "&limit=%B2"]),
)
def test_any_query_string_is_answered_without_a_500(
    daemon: Daemon, params: dict[str, str], raw: str
) -> None:
    query = httpx.QueryParams(params)
    with daemon.client() as http:
        for path in ("/api/tasks", "/api/swaps", "/api/status", "/api/mode"):
            response = http.get(f"{path}?{query}{raw}")
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                error_of(response)
