"""Durable state in one SQLite file (WAL): tasks and their events, settings, the swap log.

The daemon is the only writer. Tables are created on open, and a `schema_version`
row lets later versions migrate in place. A task and its first event are written in
one transaction before the task is acknowledged; every later change of status is
checked against `host.core.task_states` and written with its event in one transaction too.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from host.core.task_states import ACTIVE, IllegalTransition, TaskStatus, check_move

log = logging.getLogger("tierhost.store")

SCHEMA_VERSION = 3

_MIGRATIONS: tuple[tuple[str, str], ...] = (
    # version 2: validator passes (issue 6)
    ("validated", "INTEGER"),
    ("findings", "TEXT"),
    ("patch", "TEXT"),
    ("scratchpad", "TEXT"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
)
"""Task columns added after version 1, as (name, type): `ALTER TABLE ... ADD COLUMN` for
each one an older file lacks, so a database from an older daemon opens and keeps its rows."""

_SEQ_INDEX = "tasks_seq"
"""Version 3: queue order numbers are unique. Before it, `seq` was read and written in two
statements, so concurrent submissions could share one; such a file is renumbered in its
existing order (seq, then creation) before the unique index is made."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS swaps (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    model      TEXT NOT NULL,
    device     TEXT NOT NULL,
    started    REAL NOT NULL,
    ready      REAL,
    duration_s REAL,
    evicted    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    outcome    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS swaps_started ON swaps (started);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id         TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    type       TEXT,
    prompt     TEXT NOT NULL,
    context    TEXT NOT NULL,
    request    TEXT NOT NULL,
    priority   INTEGER NOT NULL,
    validation TEXT NOT NULL,
    status     TEXT NOT NULL,
    tier       TEXT,
    model      TEXT,
    decision   TEXT,
    result     TEXT,
    error      TEXT,
    tokens     INTEGER NOT NULL DEFAULT 0,
    created    REAL NOT NULL,
    updated    REAL NOT NULL,
    validated  INTEGER,
    findings   TEXT,
    patch      TEXT,
    scratchpad TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, seq);
CREATE TABLE IF NOT EXISTS task_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL REFERENCES tasks (id),
    at      REAL NOT NULL,
    status  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    data    TEXT
);
CREATE INDEX IF NOT EXISTS task_events_task ON task_events (task_id, id);
CREATE TABLE IF NOT EXISTS requests (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    at                REAL NOT NULL,
    method            TEXT NOT NULL,
    path              TEXT NOT NULL,
    status            INTEGER NOT NULL,
    duration_ms       REAL NOT NULL,
    client            TEXT,
    agent             TEXT,
    asked             TEXT,
    model             TEXT,
    tier              TEXT,
    wait_ms           REAL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    tokens_per_s      REAL,
    error             TEXT
);
CREATE TABLE IF NOT EXISTS model_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    model  TEXT NOT NULL,
    at     REAL NOT NULL,
    old    TEXT NOT NULL,
    new    TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class SwapRow:
    id: int
    model: str
    device: str
    started: float
    ready: float | None
    duration_s: float | None
    evicted: list[str]
    reason: str
    outcome: str

    def as_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class TaskRow:
    """A task as stored; `as_json()` is the API's view of it."""

    id: str
    seq: int
    type: str | None
    prompt: str
    context: dict[str, Any]
    request: dict[str, Any]
    """What the client asked for besides the prompt: tier/model override, force_big."""
    priority: int
    validation: str
    status: TaskStatus
    tier: str | None
    model: str | None
    decision: dict[str, Any] | None
    result: str | None
    error: str | None
    tokens: int
    created: float
    updated: float
    validated: bool | None = None
    """None until a validator pass ends (and always for `validation = none`)."""
    findings: list[dict[str, Any]] = field(default_factory=list)
    patch: str | None = None
    scratchpad: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self, *, with_events: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "type": self.type,
            "tier": self.tier,
            "model": self.model,
            "priority": self.priority,
            "validation": self.validation,
            "prompt": self.prompt,
            "context": self.context,
            "override": {k: v for k, v in self.request.items() if v not in (None, False, {})},
            "decision": self.decision,
            "result": self.result,
            "error": self.error,
            "tokens": self.tokens,
            "created": self.created,
            "updated": self.updated,
            "validated": self.validated,
            "findings": self.findings,
            "patch": self.patch,
            "scratchpad": self.scratchpad,
            "attempts": self.attempts,
        }
        if with_events:
            data["events"] = self.events
        return data


_TASK_COLUMNS = (
    "id, seq, type, prompt, context, request, priority, validation, status, tier, model, "
    "decision, result, error, tokens, created, updated, validated, findings, patch, "
    "scratchpad, attempts"
)
_REQUEST_COLUMNS = (
    "at",
    "method",
    "path",
    "status",
    "duration_ms",
    "client",
    "agent",
    "asked",
    "model",
    "tier",
    "wait_ms",
    "prompt_tokens",
    "completion_tokens",
    "tokens_per_s",
    "error",
)
_JSON_FIELDS = frozenset({"decision", "findings", "scratchpad"})


def _where(**equals: str | int | None) -> tuple[str, list[str | int]]:
    """A WHERE clause matching each given column (None: not filtered), and its values;
    the column names are this module's own, never a caller's text."""
    given = {column: value for column, value in equals.items() if value is not None}
    if not given:
        return "", []
    return "WHERE " + " AND ".join(f"{c} = ?" for c in given), list(given.values())


def _task_from_row(row: Iterable[Any]) -> TaskRow:
    (
        id_,
        seq,
        type_,
        prompt,
        context,
        request,
        priority,
        validation,
        status,
        tier,
        model,
        decision,
        result,
        error,
        tokens,
        created,
        updated,
        validated,
        findings,
        patch,
        scratchpad,
        attempts,
    ) = row
    return TaskRow(
        id=id_,
        seq=seq,
        type=type_,
        prompt=prompt,
        context=json.loads(context),
        request=json.loads(request),
        priority=priority,
        validation=validation,
        status=TaskStatus(status),
        tier=tier,
        model=model,
        decision=json.loads(decision) if decision else None,
        result=result,
        error=error,
        tokens=tokens,
        created=created,
        updated=updated,
        validated=None if validated is None else bool(validated),
        findings=json.loads(findings) if findings else [],
        patch=patch,
        scratchpad=json.loads(scratchpad) if scratchpad else [],
        attempts=attempts,
    )


_SETTABLE = frozenset(
    {"type", "tier", "model", "decision", "result", "error", "tokens"}
    | {"validated", "findings", "patch", "scratchpad", "attempts"}
)


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring a task table from an older daemon up to this schema, in place."""
    async with db.execute("PRAGMA table_info(tasks)") as cur:
        have = {row[1] for row in await cur.fetchall()}
    for name, kind in _MIGRATIONS:
        if name not in have:
            await db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")
    async with db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (_SEQ_INDEX,)
    ) as cur:
        indexed = await cur.fetchone() is not None
    if not indexed:
        await _renumber_duplicate_seqs(db)
        await db.execute(f"CREATE UNIQUE INDEX {_SEQ_INDEX} ON tasks (seq)")
    await db.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )


async def _renumber_duplicate_seqs(db: aiosqlite.Connection) -> None:
    """Give every task a distinct seq, keeping the order (seq, created, rowid), when some
    share one; a file without duplicates is left as it is."""
    async with db.execute("SELECT COUNT(*) - COUNT(DISTINCT seq) FROM tasks") as cur:
        row = await cur.fetchone()
    if not row or not row[0]:
        return
    await db.execute("CREATE TEMP TABLE renumbered (id TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
    await db.execute(
        "INSERT INTO renumbered (id, seq) "
        "SELECT id, ROW_NUMBER() OVER (ORDER BY seq, created, rowid) FROM tasks"
    )
    await db.execute(
        "UPDATE tasks SET seq = (SELECT r.seq FROM renumbered AS r WHERE r.id = tasks.id)"
    )
    await db.execute("DROP TABLE temp.renumbered")


def new_task_id() -> str:
    """Sortable by creation time, unguessable enough to be a handle: `t-<ms hex><rand>`."""
    return f"t-{int(time.time() * 1000):011x}{secrets.token_hex(3)}"


class UnknownTask(Exception):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


TaskListener = Callable[[str, str], None]
"""Told a task's id and new status after each change is committed (the dashboard's feed)."""


class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._task_listeners: list[TaskListener] = []

    def on_task_change(self, listener: TaskListener) -> None:
        """Call `listener(task_id, status)` after every committed change of a task's
        status: this store is the one writer of them, so no change goes unheard. A
        listener must not block; one that raises is logged and the write stands."""
        self._task_listeners.append(listener)

    def _task_changed(self, task_id: str, status: TaskStatus) -> None:
        for listener in self._task_listeners:
            try:
                listener(task_id, status.value)
            except Exception:
                log.exception("a task listener failed on %s", task_id)

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.executescript(_SCHEMA)
        await _migrate(db)
        await db.commit()
        return cls(db, path)

    async def close(self) -> None:
        await self._db.close()

    async def record_swap(
        self,
        *,
        model: str,
        device: str,
        started: float,
        ready: float | None,
        evicted: list[str],
        reason: str,
        outcome: str,
    ) -> None:
        duration = None if ready is None else ready - started
        await self._db.execute(
            "INSERT INTO swaps (model, device, started, ready, duration_s, evicted, reason, "
            "outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (model, device, started, ready, duration, ",".join(evicted), reason, outcome),
        )
        await self._db.commit()

    async def swaps(self, limit: int = 100) -> list[SwapRow]:
        async with self._db.execute(
            "SELECT id, model, device, started, ready, duration_s, evicted, reason, outcome "
            "FROM swaps ORDER BY id DESC LIMIT ?",
            (limit,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            SwapRow(
                r[0], r[1], r[2], r[3], r[4], r[5], [e for e in r[6].split(",") if e], r[7], r[8]
            )
            for r in reversed(list(rows))
        ]

    async def record_model_event(
        self, *, model: str, at: float, old: str, new: str, reason: str
    ) -> None:
        await self._db.execute(
            "INSERT INTO model_events (model, at, old, new, reason) VALUES (?, ?, ?, ?, ?)",
            (model, at, old, new, reason),
        )
        await self._db.commit()

    # -- the activity log (host.activity) -------------------------------------------

    async def record_requests(self, rows: list[dict[str, Any]], keep: int) -> None:
        """Append answered requests (`host.activity`) in one transaction, and drop all
        but the newest `keep`."""
        if not rows:
            return
        await self._db.executemany(
            f"INSERT INTO requests ({', '.join(_REQUEST_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _REQUEST_COLUMNS)})",
            [tuple(row[c] for c in _REQUEST_COLUMNS) for row in rows],
        )
        await self._db.execute(
            "DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - ?", (keep,)
        )
        await self._db.commit()

    async def recent_requests(
        self, limit: int, *, model: str | None = None, status: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest answered requests first, of one served model or status if given."""
        clause, values = _where(model=model, status=status)
        async with self._db.execute(
            f"SELECT id, {', '.join(_REQUEST_COLUMNS)} FROM requests {clause} "
            "ORDER BY id DESC LIMIT ?",
            (*values, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [dict(zip(("id", *_REQUEST_COLUMNS), row, strict=True)) for row in rows]

    # -- settings: routing table, device modes ------------------------------------

    async def get_setting(self, key: str) -> Any | None:
        async with self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return None if row is None else json.loads(row[0])

    async def put_setting(self, key: str, value: Any) -> None:
        await self._db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )
        await self._db.commit()

    # -- tasks --------------------------------------------------------------------

    async def create_task(
        self,
        *,
        prompt: str,
        type: str | None,
        context: dict[str, Any],
        request: dict[str, Any],
        priority: int,
        validation: str,
        tier: str | None = None,
        model: str | None = None,
        decision: dict[str, Any] | None = None,
        reason: str = "submitted",
    ) -> TaskRow:
        """Store a new queued task and its first event in one transaction. Its queue
        order number is assigned by the INSERT itself, so concurrent submissions never
        share one (the unique index would refuse it anyway)."""
        now = time.time()
        task_id = new_task_id()
        await self._db.execute(
            f"INSERT INTO tasks ({_TASK_COLUMNS}) SELECT ?, COALESCE(MAX(seq), 0) + 1, "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, ?, ?, NULL, NULL, NULL, NULL, 0 "
            "FROM tasks",
            (
                task_id,
                type,
                prompt,
                json.dumps(context),
                json.dumps(request),
                priority,
                validation,
                TaskStatus.QUEUED.value,
                tier,
                model,
                json.dumps(decision) if decision is not None else None,
                now,
                now,
            ),
        )
        await self._db.execute(
            "INSERT INTO task_events (task_id, at, status, reason) VALUES (?, ?, ?, ?)",
            (task_id, now, TaskStatus.QUEUED.value, reason),
        )
        await self._db.commit()
        self._task_changed(task_id, TaskStatus.QUEUED)
        return await self.get_task(task_id)

    async def get_task(self, task_id: str, *, with_events: bool = False) -> TaskRow:
        async with self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise UnknownTask(task_id)
        task = _task_from_row(row)
        if with_events:
            task.events = await self.task_events(task_id)
        return task

    async def task_events(self, task_id: str) -> list[dict[str, Any]]:
        async with self._db.execute(
            "SELECT at, status, reason, data FROM task_events WHERE task_id = ? ORDER BY id",
            (task_id,),
        ) as cur:
            rows = await cur.fetchall()
        return [
            {
                "at": at,
                "status": status,
                "reason": reason,
                **({"data": json.loads(data)} if data else {}),
            }
            for at, status, reason, data in rows
        ]

    async def list_tasks(
        self, *, status: str | None = None, type: str | None = None, limit: int = 100
    ) -> list[TaskRow]:
        clause, params = _where(status=status, type=type)
        async with self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks {clause} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [_task_from_row(r) for r in rows]

    async def queued_tasks(self) -> tuple[list[TaskRow], list[str]]:
        """Every queued task in queue order, and apart the ids of those whose row cannot
        be read (damaged JSON), so that one bad row does not hold up the others."""
        async with self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status = ? ORDER BY seq",
            (TaskStatus.QUEUED.value,),
        ) as cur:
            rows = await cur.fetchall()
        readable: list[TaskRow] = []
        unreadable: list[str] = []
        for row in rows:
            try:
                readable.append(_task_from_row(row))
            except (ValueError, TypeError, RecursionError):
                unreadable.append(row[0])
        return readable, unreadable

    async def fail_unreadable(self, task_id: str, reason: str) -> None:
        """End a queued task whose row cannot be read, as failed with `reason`. Its
        unreadable JSON columns are reset to empty values, so it reads again (the event
        names them); a task that is no longer queued is left alone."""
        columns = ("context", "request", *_JSON_FIELDS)
        async with self._db.execute(
            f"SELECT {', '.join(columns)} FROM tasks WHERE id = ? AND status = ?",
            (task_id, TaskStatus.QUEUED.value),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return
        damaged = []
        for name, value in zip(columns, row, strict=True):
            try:
                if value is not None:
                    json.loads(value)
            except (ValueError, TypeError, RecursionError):
                damaged.append(name)
        resets = {name: "{}" if name in ("context", "request") else None for name in damaged}
        sets = "".join(f", {name} = ?" for name in resets)
        now = time.time()
        await self._db.execute(
            f"UPDATE tasks SET status = ?, error = ?, updated = ?{sets} "
            "WHERE id = ? AND status = ?",
            (
                TaskStatus.FAILED.value,
                reason,
                now,
                *resets.values(),
                task_id,
                TaskStatus.QUEUED.value,
            ),
        )
        await self._db.execute(
            "INSERT INTO task_events (task_id, at, status, reason, data) VALUES (?, ?, ?, ?, ?)",
            (task_id, now, TaskStatus.FAILED.value, reason, json.dumps({"damaged": damaged})),
        )
        await self._db.commit()
        self._task_changed(task_id, TaskStatus.FAILED)

    async def queue_position(self, task: TaskRow) -> int:
        """1 for the next queued task of its model, 2 for the one after it, and so on."""
        async with self._db.execute(
            "SELECT COUNT(*) FROM tasks WHERE status = ? AND model IS ? AND seq < ?",
            (TaskStatus.QUEUED.value, task.model, task.seq),
        ) as cur:
            row = await cur.fetchone()
        return (int(row[0]) if row else 0) + 1

    async def count_tasks(self) -> dict[str, int]:
        async with self._db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status") as cur:
            rows = await cur.fetchall()
        return {status: count for status, count in rows}

    async def move_task(
        self,
        task_id: str,
        new: TaskStatus,
        reason: str,
        *,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> TaskRow:
        """Change a task's status (checked against host.core.task_states) and record the event.

        The UPDATE only applies while the task still has the status that was checked, so
        of two callers racing to move it, one wins and the other gets IllegalTransition
        (with the status it lost to) and writes no event: a move is also a claim."""
        task = await self.get_task(task_id)
        check_move(task_id, task.status, new)
        now = time.time()
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"cannot set task fields {sorted(unknown)}")
        values = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in values)
        cursor = await self._db.execute(
            f"UPDATE tasks SET status = ?, updated = ?{', ' + sets if sets else ''} "
            "WHERE id = ? AND status = ?",
            (new.value, now, *values.values(), task_id, task.status.value),
        )
        if cursor.rowcount != 1:
            current = await self.get_task(task_id)
            raise IllegalTransition(task_id, current.status, new)
        await self._db.execute(
            "INSERT INTO task_events (task_id, at, status, reason, data) VALUES (?, ?, ?, ?, ?)",
            (task_id, now, new.value, reason, json.dumps(data) if data else None),
        )
        await self._db.commit()
        self._task_changed(task_id, new)
        return await self.get_task(task_id)

    async def update_task_progress(self, task_id: str, tokens: int) -> None:
        """Token count while running: not an event, just the latest figure."""
        await self._db.execute(
            "UPDATE tasks SET tokens = ?, updated = ? WHERE id = ?", (tokens, time.time(), task_id)
        )
        await self._db.commit()

    async def requeue_interrupted(self, reason: str) -> list[str]:
        """Every task under way goes back to queued, with why: at a start (after a kill
        the last daemon could not clean up) and when the daemon stops."""
        placeholders = ", ".join("?" for _ in ACTIVE)
        async with self._db.execute(
            f"SELECT id FROM tasks WHERE status IN ({placeholders}) ORDER BY seq",
            tuple(s.value for s in ACTIVE),
        ) as cur:
            ids = [row[0] for row in await cur.fetchall()]
        requeued = []
        for task_id in ids:
            try:
                await self.move_task(task_id, TaskStatus.QUEUED, reason)
            except IllegalTransition:
                continue  # it ended meanwhile: nothing to requeue
            requeued.append(task_id)
        return requeued
