"""The activity log's rule, its texts, and its buffer over a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from host import activity
from host.activity import Activity, Note, RequestLog, error_message, note_timings, worth_keeping
from host.store import Store


@pytest.mark.parametrize(
    ("method", "path", "status", "kept"),
    [
        ("POST", "/v1/chat/completions", 200, True),
        ("GET", "/v1/models", 200, True),
        ("GET", "/api/status", 200, False),  # the dashboard's own refresh
        ("GET", "/health", 200, False),
        ("GET", "/ui/app.js", 200, False),
        ("GET", "/api/nowhere", 404, True),
        ("GET", "/health", 403, True),  # a foreign Host header
        ("PUT", "/api/mode", 200, True),
        ("POST", "/api/tasks", 201, True),
        ("HEAD", "/", 307, False),
    ],
)
def test_what_is_kept(method: str, path: str, status: int, kept: bool) -> None:
    assert worth_keeping(method, path, status) is kept


def test_an_error_message_is_read_from_either_shape_or_the_text() -> None:
    openai = {"error": {"message": "model nope is not configured", "type": "not_found"}}
    anthropic = {"type": "error", "error": {"type": "not_found_error", "message": "no such"}}
    assert error_message(json.dumps(openai).encode()) == "model nope is not configured"
    assert error_message(json.dumps(anthropic).encode()) == "no such"
    assert error_message(b"Request Entity Too Large") == "Request Entity Too Large"
    assert error_message(b"") is None
    assert error_message(b'{"detail": 3}') is None


def test_client_text_is_bounded_and_printable() -> None:
    assert activity.text("a\x1b[31mred\nline") == "a?[31mred?line"
    long = activity.text("m" * 10_000)
    assert long is not None and len(long) == activity.TEXT_LIMIT and long.endswith("…")
    assert activity.text(b"caf\xe9") == "café"  # a header's bytes, as latin-1


def test_timings_become_counts_and_a_speed() -> None:
    note = Note()
    note_timings(note, {"prompt_n": 12, "predicted_n": 30, "predicted_per_second": 55.55}, 0.25)
    assert (note.wait_ms, note.prompt_tokens, note.completion_tokens, note.tokens_per_s) == (
        250.0,
        12,
        30,
        55.5,
    )
    note_timings(empty := Note(), None, 0.0)
    assert (empty.wait_ms, empty.prompt_tokens) == (0.0, None)


def record(path: str, status: int = 200, at: float = 1.0) -> Activity:
    return Activity(
        at=at,
        method="POST",
        path=path,
        status=status,
        duration_ms=1.0,
        client="127.0.0.1",
        agent="test",
        asked=None,
        model=None,
        tier=None,
        wait_ms=None,
        prompt_tokens=None,
        completion_tokens=None,
        tokens_per_s=None,
        error=None,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "state.sqlite3")
    yield opened
    await opened.close()


async def test_the_log_keeps_the_newest_rows_and_reads_a_note_when_it_writes(
    store: Store,
) -> None:
    flushed: list[int] = []
    log = RequestLog(keep_rows=3, on_flush=flushed.append)
    log.start(store)
    try:
        for i in range(5):
            log.add(record(f"/v1/{i}", at=float(i)), Note())
        streaming = Note(asked="auto")
        log.add(record("/v1/stream", at=9.0), streaming)
        streaming.completion_tokens = 42  # told once the stream's last byte went out
        streaming.cut_short = "the client left before the answer ended"
        rows = await log.recent(10)
    finally:
        await log.stop()

    assert [row["path"] for row in rows] == ["/v1/stream", "/v1/4", "/v1/3"]
    assert (rows[0]["asked"], rows[0]["completion_tokens"]) == ("auto", 42)
    assert rows[0]["error"] == "the client left before the answer ended"
    assert rows[1]["error"] is None
    assert flushed == [6]
    assert await store.recent_requests(10, status=404) == []


async def test_a_full_buffer_drops_the_oldest_and_counts_them(store: Store) -> None:
    log = RequestLog(keep_rows=100_000)
    for i in range(activity.MAX_BUFFERED + 5):
        log.add(record(f"/v1/{i}"), Note())
    assert log.dropped == 5
    log.start(store)
    try:
        newest = await log.recent(1)
    finally:
        await log.stop()
    assert newest[0]["path"] == f"/v1/{activity.MAX_BUFFERED + 4}"


async def test_no_rows_are_kept_when_the_log_is_off(store: Store) -> None:
    counted: list[tuple[str, int]] = []
    log = RequestLog(keep_rows=0, count=lambda model, status: counted.append((model, status)))
    log.start(store)
    try:
        log.counted("coder", 200)
        log.add(record("/v1/chat/completions"), Note())
        assert await log.recent(10) == []
    finally:
        await log.stop()
    assert counted == [("coder", 200)]  # the metric counts all the same
