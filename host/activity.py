"""The activity log: every request the host answered, as the dashboard and
`GET /api/requests` show it, and `tierhost_requests_total` in `/metrics`.

Its ASGI layer (`host.api.activity`) is the outermost of the app, so it sees what the
guard refuses (a 403 for a foreign Host, a 413) as well as what the routes answer. It
times each request, reads its status and the `X-Tierhost-*` headers of the answer, keeps
the error message of a refusal (the first bytes of its body), and takes what only the
proxy knows (the model asked for, the wait, the token counts and speed) from a note the
proxy fills in on the request's scope (`note_of`).

What is kept (`worth_keeping`): every `/v1` request, every refusal or failure (status
400 and up) on any path, and every request that changes something (not GET or HEAD).
A successful GET elsewhere is a read of the state (the dashboard's own refreshes, a
monitor's `/health`, a Prometheus scrape) and would bury the work in its own polling;
those are counted in `/metrics` all the same.

A request is recorded when its answer's last byte is handed to the server, into a
bounded buffer; `RequestLog` writes the buffer to SQLite in one transaction every
`FLUSH_S`, and before every read, so no request waits on the disk and a read sees
every answered request. The table keeps the newest `host.request_log_rows`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from starlette.types import Scope

from host.store import Store

log = logging.getLogger("tierhost.activity")

FLUSH_S = 0.5
"""How often buffered records are written to SQLite."""
MAX_BUFFERED = 10_000
"""Records kept in memory when SQLite falls behind; the oldest go first."""
ERROR_BODY_BYTES = 4096
"""How much of a refusal's body is read for its message."""
TEXT_LIMIT = 300
"""The longest client-supplied text kept in a record (a path, a model name, a message)."""
NOTE_KEY = "tierhost.activity"


def worth_keeping(method: str, path: str, status: int) -> bool:
    """Whether a request goes into the log (the rule in the module docstring)."""
    return path.startswith("/v1/") or status >= 400 or method not in ("GET", "HEAD")


@dataclass
class Note:
    """What the proxy tells the log about one request, filled in as it learns it."""

    asked: str | None = None
    wait_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    cut_short: str | None = None
    """Why an answer that had begun ended early (the client left, the model died): its
    status says only how it began."""


def note_of(scope: Scope) -> Note:
    """The request's note (a new one for a scope the recorder did not see: a test's app)."""
    state = scope.setdefault("state", {})
    note = state.get(NOTE_KEY)
    if not isinstance(note, Note):
        note = state[NOTE_KEY] = Note()
    return note


def note_timings(note: Note, timings: Mapping[str, Any] | None, waited_s: float) -> None:
    """How long a request waited for its model, and llama-server's `timings` of its
    answer as counts and a speed, into its note."""
    note.wait_ms = round(waited_s * 1000, 1)
    if not timings:
        return
    prompt, predicted = timings.get("prompt_n"), timings.get("predicted_n")
    note.prompt_tokens = int(prompt) if isinstance(prompt, int | float) else None
    note.completion_tokens = int(predicted) if isinstance(predicted, int | float) else None
    per_second = timings.get("predicted_per_second")
    if isinstance(per_second, int | float) and per_second > 0:
        note.tokens_per_s = round(float(per_second), 1)


@dataclass(frozen=True)
class Activity:
    """One answered request, as the log keeps it."""

    at: float
    """Wall-clock seconds when the request arrived."""
    method: str
    path: str
    status: int
    duration_ms: float
    client: str | None
    agent: str | None
    """The client's User-Agent (Claude Code, aider, a browser), shortened."""
    asked: str | None
    """The model the request asked for (a tier, `auto`, a Claude id), as sent."""
    model: str | None
    """The model that served it (`X-Tierhost-Model`)."""
    tier: str | None
    wait_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_per_s: float | None
    error: str | None
    """A refusal's or failure's message."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = "".join(c if c.isprintable() else "?" for c in text[: TEXT_LIMIT + 1])
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def error_message(body: bytes) -> str | None:
    """The `error.message` of an error body in OpenAI's or Anthropic's shape, else its text."""
    try:
        document = json.loads(body)
    except ValueError:
        return text(body.decode("utf-8", "replace").strip()) or None
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return text(error["message"])
    if isinstance(error, str):
        return text(error)
    return None


class RequestLog:
    """The buffer between answered requests and the SQLite table, and its counter."""

    def __init__(
        self,
        keep_rows: int,
        count: Callable[[str, int], None] = lambda model, status: None,
        on_flush: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.keep_rows = keep_rows
        self._count = count
        self._on_flush = on_flush
        self._pending: deque[tuple[Activity, Note]] = deque(maxlen=MAX_BUFFERED)
        self._store: Store | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.dropped = 0
        """Records lost because SQLite fell more than MAX_BUFFERED behind."""

    def counted(self, model: str | None, status: int) -> None:
        self._count(model or "", status)

    def add(self, activity: Activity, note: Note) -> None:
        """Buffer a record; what its note says is read when it is written, since a
        stream's token counts are known only once its last byte is sent."""
        if self.keep_rows <= 0:
            return
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append((activity, note))

    async def flush(self) -> int:
        """Write what is buffered; the number of records written."""
        async with self._lock:
            if self._store is None or not self._pending:
                return 0
            batch = [_with_note(activity, note) for activity, note in self._pending]
            self._pending.clear()
            await self._store.record_requests([a.as_json() for a in batch], self.keep_rows)
        self._on_flush(len(batch))
        return len(batch)

    async def recent(
        self, limit: int, model: str | None = None, status: int | None = None
    ) -> list[dict[str, Any]]:
        await self.flush()
        if self._store is None:
            return []
        return await self._store.recent_requests(limit, model=model, status=status)

    def start(self, store: Store) -> None:
        self._store = store
        self._task = asyncio.create_task(self._run(), name="request log")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.flush()
            except Exception:  # a full disk must not end the log; the next flush retries
                log.exception("writing the request log failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()
        self._store = None


def _with_note(activity: Activity, note: Note) -> Activity:
    return replace(
        activity,
        asked=text(note.asked),
        wait_ms=activity.wait_ms if activity.wait_ms is not None else note.wait_ms,
        prompt_tokens=note.prompt_tokens,
        completion_tokens=note.completion_tokens,
        tokens_per_s=note.tokens_per_s,
        error=activity.error or text(note.cut_short),
    )
