"""The RAM that sleeping models share: the shell around `host.core.sleepers`.

Every arbiter asks this one room before it puts a model to sleep; the room decides with
`make_room` over all the sleepers of the box (a model sleeping off one card takes the
same RAM as one sleeping off another), reserves the room at once, so two arbiters
asking together cannot both take the last of it, and stops the least recently used
sleepers it has to, through their own arbiters (the one writer of each device's
bookkeeping).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from host.core.sleepers import Sleeper, make_room
from host.models.process import ModelProcess, ModelState

log = logging.getLogger("tierhost.sleepers")


class SleeperOwner(Protocol):
    """What the room needs of the arbiter that owns a sleeper."""

    def last_used(self, model: str) -> float: ...
    def leaving_sleep(self, model: str) -> bool: ...
    async def stop_sleeper(self, model: str, reason: str) -> None: ...


@dataclass
class _Member:
    process: ModelProcess
    ram_mb: int
    owner: SleeperOwner


class SleepRoom:
    """The box's RAM budget for sleeping models (`host.sleep_ram_mb`)."""

    def __init__(self, budget_mb: int | None) -> None:
        self.budget_mb = budget_mb
        self._members: dict[str, _Member] = {}
        self._granted: set[str] = set()
        """Models given room whose sleep is still under way: their RAM counts already."""

    def join(self, process: ModelProcess, ram_mb: int, owner: SleeperOwner) -> None:
        self._members[process.name] = _Member(process, ram_mb, owner)

    def sleepers(self) -> list[Sleeper]:
        """Everyone holding (or about to hold) RAM asleep, as the pure rule sees them."""
        return [
            Sleeper(
                name,
                member.ram_mb,
                member.owner.last_used(name),
                stoppable=name not in self._granted,
                leaving=name not in self._granted and member.owner.leaving_sleep(name),
            )
            for name, member in self._members.items()
            if name in self._granted
            or member.process.holds_asleep
            or member.process.state in (ModelState.SLEEPING, ModelState.WAKING)
        ]

    @property
    def used_mb(self) -> int:
        return sum(s.ram_mb for s in self.sleepers())

    async def make_room(self, model: str) -> bool:
        """Room for `model` to sleep, stopping LRU sleepers if need be: False when it
        cannot sleep (bigger than the budget, or beside sleepers being woken). A True
        holds the room until `done(model)`."""
        member = self._members[model]
        victims = make_room(self.sleepers(), self.budget_mb, model, member.ram_mb)
        if victims is None:
            return False
        self._granted.add(model)  # before any await: nobody else can take this room
        reason = f"stopped to make RAM for {model} to sleep (host.sleep_ram_mb)"
        results = await asyncio.gather(
            *(self._members[v].owner.stop_sleeper(v, reason) for v in victims),
            return_exceptions=True,
        )
        for victim, result in zip(victims, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not stop sleeper %s: %s", victim, result)
        return True

    def done(self, model: str) -> None:
        self._granted.discard(model)

    def status(self, rss_mb: Callable[[ModelProcess], int | None]) -> dict[str, object]:
        return {
            "budget_mb": self.budget_mb,
            "used_mb": self.used_mb,
            "sleepers": [
                {
                    "model": s.name,
                    "ram_mb": s.ram_mb,
                    "rss_mb": rss_mb(self._members[s.name].process),
                }
                for s in self.sleepers()
            ],
        }
