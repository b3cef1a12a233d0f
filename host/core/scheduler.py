"""Who gets a device next: a pure function of a snapshot, no I/O, no clocks.

The device arbiter (the imperative shell in `host.models.arbiter`) takes a snapshot of one
device — its budget, its residents and the FIFO of waiting requests — calls `plan()`,
and carries out the actions. Because the decision is pure, every rule below is tested
with plain values.

Rules:
- Waiters are served first come, first served. A waiter whose model is ready is
  admitted; one whose model is starting joins that load; one whose model is not
  resident gets a load when the model fits the budget next to every resident
  (starting, ready or stopping residents all count: memory is only free once a
  server has exited).
- The first waiter whose model does not fit (or is still stopping) blocks everyone
  behind it: no admissions, no loads past it, so a stream of requests for a resident
  model cannot starve a swap.
- For the blocked waiter, idle residents (no requests in flight, not persistent) are
  evicted, least recently used first — only if evicting them makes enough room, and
  counting the memory of residents already stopping as on its way: a swap stops only
  as much as it needs, however often the device replans while a stop is under way. A
  resident with requests in flight is never evicted; the head waits for it instead.
- The device's mode may restrict which models it holds (`allowed`): a waiter for a
  model that is not allowed waits without blocking others (unless it is forced, the
  force-big override), and idle residents that are not allowed are released.
- A resident with `idle_unload_s` that has served nothing for that long (counted from
  the end of its last request; the snapshot's `now` is the clock) is unloaded, unless a
  waiter wants it; `next_unload_at()` says when the next one falls due, so the shell
  can look again then rather than poll.
- Invariant: the memory of a device's residents never exceeds its budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ResidentPhase = Literal["starting", "ready", "stopping"]


@dataclass(frozen=True)
class Resident:
    name: str
    memory_mb: int
    phase: ResidentPhase
    in_flight: int = 0
    last_used: float = 0.0
    persistent: bool = False
    idle_unload_s: float | None = None
    """Unload after this long without a request (None: stay until evicted)."""


@dataclass(frozen=True)
class Waiter:
    id: int
    model: str
    memory_mb: int
    forced: bool = False
    """Force-big: may load even where the device's mode does not allow the model."""


@dataclass(frozen=True)
class Snapshot:
    budget_mb: int | None
    """None: the device has no budget (the CPU), everything fits."""
    residents: Sequence[Resident]
    waiters: Sequence[Waiter]
    allowed: frozenset[str] | None = None
    """Models the device's mode lets it hold; None: any (mode auto)."""
    now: float = 0.0
    """The clock `last_used` is read against (monotonic seconds)."""

    def permits(self, waiter: Waiter) -> bool:
        return self.allowed is None or waiter.forced or waiter.model in self.allowed


@dataclass(frozen=True)
class Admit:
    waiter_ids: tuple[int, ...]


@dataclass(frozen=True)
class Load:
    model: str


@dataclass(frozen=True)
class Evict:
    model: str
    for_model: str


@dataclass(frozen=True)
class Release:
    """Stop an idle resident that the device's mode no longer allows."""

    model: str


@dataclass(frozen=True)
class Unload:
    """Stop a resident that has been idle for its `idle_unload_s`."""

    model: str
    idle_s: float


@dataclass(frozen=True)
class Reject:
    """Waiters whose model can never fit beside the persistent residents."""

    waiter_ids: tuple[int, ...]
    reason: str


Action = Admit | Load | Evict | Release | Unload | Reject


def used_mb(residents: Sequence[Resident]) -> int:
    return sum(r.memory_mb for r in residents)


def plan(snapshot: Snapshot) -> list[Action]:
    residents = {r.name: r for r in snapshot.residents}
    budget = snapshot.budget_mb
    pinned = sum(r.memory_mb for r in snapshot.residents if r.persistent)
    free = None if budget is None else budget - used_mb(snapshot.residents)

    admitted: list[int] = []
    loads: list[str] = []
    rejected: dict[str, str] = {}
    blocked: Waiter | None = None
    """The first waiter whose model needs room that only evictions or finishes can make."""

    for waiter in snapshot.waiters:
        if waiter.model in rejected:
            continue
        resident = residents.get(waiter.model)
        if not snapshot.permits(waiter):
            continue  # waits for the mode to change; does not hold up anyone else
        if resident is not None and resident.phase == "ready":
            if blocked is None:
                admitted.append(waiter.id)
            continue
        if waiter.model in loads or (resident is not None and resident.phase == "starting"):
            continue  # joins the load under way
        if budget is not None and waiter.memory_mb + pinned > budget:
            rejected[waiter.model] = (
                f"model {waiter.model} needs {waiter.memory_mb} MiB but only "
                f"{budget - pinned} MiB of the {budget} MiB budget is not held by "
                "persistent models"
            )
            continue
        if blocked is not None:
            continue
        if resident is None and (free is None or waiter.memory_mb <= free):
            loads.append(waiter.model)
            if free is not None:
                free -= waiter.memory_mb
            continue
        blocked = waiter  # stopping, or does not fit: everyone behind it waits

    actions: list[Action] = []
    if admitted:
        actions.append(Admit(tuple(admitted)))
    for model, reason in rejected.items():
        ids = tuple(w.id for w in snapshot.waiters if w.model == model)
        actions.append(Reject(ids, reason))
    actions.extend(Load(model) for model in loads)
    if blocked is not None and blocked.model not in residents and free is not None:
        actions.extend(_evictions(snapshot, blocked, free, admitted))
    releases = _releases(snapshot, admitted)
    actions.extend(releases)
    released = {a.model for a in releases if isinstance(a, Release)}
    actions.extend(u for u in _unloads(snapshot) if u.model not in released)
    return actions


def _idle_unloadable(snapshot: Snapshot) -> list[Resident]:
    wanted = {w.model for w in snapshot.waiters}
    return [
        r
        for r in snapshot.residents
        if r.idle_unload_s is not None
        and r.phase == "ready"
        and r.in_flight == 0
        and r.name not in wanted
    ]


def _unloads(snapshot: Snapshot) -> list[Unload]:
    """Residents idle for their `idle_unload_s` or longer."""
    return [
        Unload(r.name, snapshot.now - r.last_used)
        for r in _idle_unloadable(snapshot)
        if r.idle_unload_s is not None and snapshot.now - r.last_used >= r.idle_unload_s
    ]


def next_unload_at(snapshot: Snapshot) -> float | None:
    """When the next idle resident falls due for unloading (None: none will on its own)."""
    due = [
        r.last_used + r.idle_unload_s
        for r in _idle_unloadable(snapshot)
        if r.idle_unload_s is not None and r.last_used + r.idle_unload_s > snapshot.now
    ]
    return min(due, default=None)


def _releases(snapshot: Snapshot, admitted: list[int]) -> list[Action]:
    """Idle residents the mode does not allow, unless a forced request wants them."""
    if snapshot.allowed is None:
        return []
    admitted_ids = set(admitted)
    wanted = {w.model for w in snapshot.waiters if w.forced or w.id in admitted_ids}
    return [
        Release(r.name)
        for r in snapshot.residents
        if r.phase == "ready"
        and r.in_flight == 0
        and r.name not in snapshot.allowed
        and r.name not in wanted
    ]


def _evictions(snapshot: Snapshot, blocked: Waiter, free: int, admitted: list[int]) -> list[Action]:
    """Idle residents to stop, LRU first, if stopping them makes room for `blocked`."""
    admitted_ids = set(admitted)
    busy = {w.model for w in snapshot.waiters if w.id in admitted_ids}
    idle = sorted(
        (
            r
            for r in snapshot.residents
            if r.phase == "ready" and r.in_flight == 0 and not r.persistent and r.name not in busy
        ),
        key=lambda r: (r.in_flight, r.last_used),
    )
    free += sum(r.memory_mb for r in snapshot.residents if r.phase == "stopping")
    victims: list[Resident] = []
    for resident in idle:
        if free >= blocked.memory_mb:
            break
        victims.append(resident)
        free += resident.memory_mb
    if free < blocked.memory_mb:
        return []  # wait for requests in flight to finish or stops to complete
    return [Evict(v.name, blocked.model) for v in victims]
