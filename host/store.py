"""Durable state in one SQLite file (WAL): the swap log and model events.

The daemon is the only writer. Tables are created on open, and a `schema_version`
row lets later versions migrate in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

SCHEMA_VERSION = 1

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


class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.executescript(_SCHEMA)
        await db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
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
