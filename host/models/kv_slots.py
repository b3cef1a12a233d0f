"""KV slots kept across swaps: what a conversation cost to read is not paid again.

A swap stops a model server, and with it every slot's KV cache: the next turn of a long
conversation would prefill its whole history again (a 2,900-token prompt took 14.5 s on
the demo box). llama-server can save a slot to disk and restore it (`--slot-save-path`,
`POST /slots/{id}?action=save|restore`) in milliseconds. This module decides which slot
a chat request uses, remembers which conversation each slot holds, saves the slots that
changed before the server stops, and restores the saved slot whose conversation the next
request continues, so only the new tokens are prefilled.

A conversation continues a saved one when the saved messages are a prefix of the new
messages (roles and contents equal). Anything else (a changed system prompt, an edited
earlier turn) gets a fresh slot: a wrong restore would only cost time, never change an
answer, because llama-server reuses just the common token prefix; but it is avoided.
Saved slots are discarded when the model's file or arguments change, and kept under a
disk budget, least recently saved first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("tierhost.kv_slots")

Message = Mapping[str, Any]
INDEX = "index.json"
HTTP_TIMEOUT_S = 30.0


def canonical(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Only what shapes the prompt: the role and the content of each message."""
    return [{"role": m.get("role"), "content": m.get("content")} for m in messages]


def conversation_key(messages: Sequence[Message]) -> str:
    text = json.dumps(canonical(messages), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def continues(saved: Sequence[Message], new: Sequence[Message]) -> bool:
    """True when `new` is `saved` plus more turns (or the same conversation again)."""
    return 0 < len(saved) <= len(new) and canonical(new[: len(saved)]) == canonical(saved)


def fingerprint(gguf: Path, args: Sequence[str]) -> str:
    """Changes when the model file or its arguments change: old slots no longer fit."""
    try:
        stat = gguf.stat()
        identity = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        identity = str(gguf)
    return hashlib.sha256(json.dumps([identity, list(args)]).encode()).hexdigest()[:16]


@dataclass
class SavedSlot:
    key: str
    filename: str
    messages: list[dict[str, Any]]
    size: int
    saved_at: float
    fingerprint: str


@dataclass
class Claim:
    """A slot taken for one request; `restored` is set when a saved slot was loaded."""

    slot: int
    restored: SavedSlot | None = None


@dataclass
class SlotStats:
    restores: int = 0
    tokens_saved: int = 0
    restores_missed: int = 0
    saves: int = 0


@dataclass
class _LiveSlot:
    messages: list[dict[str, Any]] = field(default_factory=list)
    used_at: float = 0.0
    dirty: bool = False


class SlotKeeper:
    """One per managed model: its live slots, its saved slots, and the disk budget."""

    def __init__(
        self, model: str, directory: Path, fingerprints: Sequence[str], budget_bytes: int
    ) -> None:
        """`fingerprints`: one per profile the model may run as, the primary first. Saved
        slots of any of them are kept; only the running profile's are restored."""
        self.model = model
        self.directory = directory
        self.fingerprints = frozenset(fingerprints)
        self.fingerprint = fingerprints[0]
        self.budget_bytes = budget_bytes
        self.stats = SlotStats()
        self.saved: dict[str, SavedSlot] = {}
        self._live: dict[int, _LiveSlot] = {}
        self._busy: set[int] = set()
        self._n_slots: int | None = None
        self._load_index()

    # -- the server's life ----------------------------------------------------------

    def server_started(self, running_fingerprint: str | None = None) -> None:
        """A new server process: its slots are empty, whatever the old one held."""
        if running_fingerprint is not None:
            self.fingerprint = running_fingerprint
        self._live.clear()
        self._busy.clear()
        self._n_slots = None

    async def save_changed(self, http: httpx.AsyncClient, base_url: str) -> None:
        """Before the server stops: save every slot whose conversation changed."""
        for slot, live in sorted(self._live.items()):
            if not live.dirty or not live.messages:
                continue
            key = conversation_key(live.messages)
            filename = f"{self.model}-{key[:24]}.bin"
            try:
                response = await http.post(
                    f"{base_url}/slots/{slot}",
                    params={"action": "save"},
                    json={"filename": filename},
                    timeout=HTTP_TIMEOUT_S,
                )
                response.raise_for_status()
                written = int(response.json().get("n_written", 0))
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("%s: could not save slot %d: %s", self.model, slot, exc)
                continue
            live.dirty = False
            self.saved[key] = SavedSlot(
                key, filename, live.messages, written, time.time(), self.fingerprint
            )
            self.stats.saves += 1
        self._enforce_budget()
        self._write_index()

    # -- one request ----------------------------------------------------------------

    async def claim(
        self, http: httpx.AsyncClient, base_url: str, messages: Sequence[Message]
    ) -> Claim | None:
        """Pick the slot for a chat request, restoring a saved one it continues.

        None when every slot is busy (llama-server then picks, and nothing is tracked)."""
        n_slots = await self._slot_count(http, base_url)
        idle = [s for s in range(n_slots) if s not in self._busy]
        if not idle:
            return None
        # Held conversations are stored canonical: canonicalise the request once, then
        # each candidate is a plain prefix comparison.
        wanted = canonical(messages)

        def held_by(held: list[dict[str, Any]]) -> bool:
            return 0 < len(held) <= len(wanted) and wanted[: len(held)] == held

        live_match = max(
            (s for s in idle if s in self._live and held_by(self._live[s].messages)),
            key=lambda s: len(self._live[s].messages),
            default=None,
        )
        if live_match is not None:
            return self._take(live_match, None)
        slot = min(idle, key=lambda s: (s in self._live, self._live.get(s, _LiveSlot()).used_at))
        saved = max(
            (
                r
                for r in self.saved.values()
                if r.fingerprint == self.fingerprint and held_by(r.messages)
            ),
            key=lambda r: len(r.messages),
            default=None,
        )
        if saved is not None and await self._restore(http, base_url, slot, saved):
            self._live[slot] = _LiveSlot(list(saved.messages), time.time())
            return self._take(slot, saved)
        self._live.pop(slot, None)
        return self._take(slot, None)

    def release(
        self, claim: Claim, messages: Sequence[Message], timings: Mapping[str, Any] | None
    ) -> None:
        """The request ended: the slot now holds its conversation (to save at the stop)."""
        self._busy.discard(claim.slot)
        self._live[claim.slot] = _LiveSlot(canonical(messages), time.time(), dirty=True)
        if claim.restored is None:
            return
        reused = int((timings or {}).get("cache_n", 0))
        if reused > 0:
            self.stats.restores += 1
            self.stats.tokens_saved += reused
        else:
            # The restore did not take (another build, a changed template): the request
            # was prefilled normally; forget the record rather than restore it again.
            self.stats.restores_missed += 1
            log.warning("%s: restored slot %d was not reused; dropping it", self.model, claim.slot)
            self._discard(claim.restored.key)
            self._write_index()

    def abandon(self, claim: Claim) -> None:
        """The request failed before an answer: the slot's content is unknown."""
        self._busy.discard(claim.slot)
        self._live.pop(claim.slot, None)

    def status(self) -> dict[str, Any]:
        return {
            "saved": len(self.saved),
            "saved_bytes": sum(r.size for r in self.saved.values()),
            **asdict(self.stats),
        }

    # -- internals ------------------------------------------------------------------

    def _take(self, slot: int, restored: SavedSlot | None) -> Claim:
        self._busy.add(slot)
        return Claim(slot, restored)

    async def _slot_count(self, http: httpx.AsyncClient, base_url: str) -> int:
        if self._n_slots is None:
            try:
                response = await http.get(f"{base_url}/slots", timeout=HTTP_TIMEOUT_S)
                response.raise_for_status()
                self._n_slots = len(response.json())
            except (httpx.HTTPError, ValueError, TypeError):
                self._n_slots = 0  # no /slots endpoint: leave slot choice to the server
        return self._n_slots

    async def _restore(
        self, http: httpx.AsyncClient, base_url: str, slot: int, saved: SavedSlot
    ) -> bool:
        if not (self.directory / saved.filename).is_file():
            self._discard(saved.key)
            return False
        try:
            response = await http.post(
                f"{base_url}/slots/{slot}",
                params={"action": "restore"},
                json={"filename": saved.filename},
                timeout=HTTP_TIMEOUT_S,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("%s: could not restore %s: %s", self.model, saved.filename, exc)
            self._discard(saved.key)
            self._write_index()
            return False
        saved.saved_at = time.time()  # recently useful: last to go under the budget
        return True

    def _discard(self, key: str) -> None:
        record = self.saved.pop(key, None)
        shared = record is not None and any(
            r.filename == record.filename for r in self.saved.values()
        )
        if record is not None and not shared:
            with contextlib.suppress(OSError):
                (self.directory / record.filename).unlink()

    def _enforce_budget(self) -> None:
        oldest_first = sorted(self.saved.values(), key=lambda r: r.saved_at)
        total = sum(r.size for r in oldest_first)
        for record in oldest_first:
            if total <= self.budget_bytes:
                break
            total -= record.size
            self._discard(record.key)

    def _load_index(self) -> None:
        try:
            entries = json.loads((self.directory / INDEX).read_text())
            records = [SavedSlot(**entry) for entry in entries]
        except (OSError, ValueError, TypeError):
            records = []
        for record in records:
            self.saved[record.key] = record
        stale = [r.key for r in records if r.fingerprint not in self.fingerprints]
        for key in stale:
            self._discard(key)
        if stale:
            log.info("%s: discarded %d saved slot(s): the model changed", self.model, len(stale))
            self._write_index()

    def _write_index(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".{INDEX}.tmp"
        temporary.write_text(json.dumps([asdict(r) for r in self.saved.values()]))
        os.replace(temporary, self.directory / INDEX)
