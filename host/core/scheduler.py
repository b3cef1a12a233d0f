"""Who gets the devices next: a pure function of a snapshot, no I/O, no clocks.

The arbiter (the imperative shell in `host.models.arbiter`) takes a snapshot of its
devices — each one's budget, the residents with the memory they hold on each device, and
the waiting requests in the order they are to be served — calls `plan()`, and carries
out the actions. A model may span several devices (a dense model split over two GPUs):
it is loaded only when it fits on every one of them, and evicting it frees every one.
Because the decision is pure, every rule below is tested with plain values.

Rules:
- Waiters are served in the order given (first come, first served unless the shell
  ordered them). A waiter whose model is ready is admitted; one whose model is starting
  joins that load; one whose model is not resident gets a load when the model fits the
  budget of each of its devices next to every resident there (starting, ready or
  stopping residents all count: memory is only free once a server has exited).
- The first waiter whose model does not fit (or is still stopping) blocks its devices
  for everyone behind it: no admissions, no loads past it on those devices, so a stream
  of requests for a resident model cannot starve a swap. A waiter that must wait behind
  a blocked device holds its other devices too (a spanning model is never starved by
  the single-card models of one of its cards), while work on devices nobody blocks goes
  on.
- For each blocked waiter, idle residents (no requests in flight, not persistent) are
  evicted, least recently used first, on every device where it lacks room — only if
  evicting them makes enough room on all of them, counting the memory of residents
  already stopping as on its way: a swap stops only as much as it needs, however often
  the shell replans while a stop is under way. A resident with requests in flight is
  never evicted; the waiter waits for it instead.
- Because one plan decides for all the devices a spanning model touches, two spanning
  models never hold one card each while waiting for the other's: there is no deadlock
  to break.
- A device's mode may restrict which models it holds (`allowed`): a waiter for a model
  that some device of its does not allow waits without blocking others (unless it is
  forced, the force-big override), and idle residents that are not allowed on one of
  their devices are released.
- A resident with `idle_unload_s` that has served nothing for that long (counted from
  the end of its last request; the snapshot's `now` is the clock) is unloaded, unless a
  waiter wants it; `next_unload_at()` says when the next one falls due, so the shell
  can look again then rather than poll.
- A waiter whose model can never fit some device beside that device's persistent
  residents is rejected, saying which device.
- A model that yields to the LLM (`yields`, a TTS server, say) is not served while LLM
  work — a request for a model that does not yield, waiting or in flight — touches any
  of its devices: its waiters wait without blocking anyone, and are served in their order
  once the LLM work is done. LLM work waits for it only as long as its requests already
  running (a resident with requests in flight is never evicted).
- A model that can sleep (a server that frees the card and keeps running: vLLM's sleep
  mode, a llama-server idle past its `--sleep-idle-seconds`) is put to sleep instead of
  stopped when a swap needs its room (`Sleep`); asleep it holds only its asleep memory
  (`asleep`; often nothing on the card, its weights in RAM). A waiter for a sleeping
  model gets a `Load` too, which the shell carries out as a wake: it needs only the
  difference between its awake and asleep memory. An asleep model is idle: a swap that
  still lacks room stops it (`Evict`), least recently used first like any other, and a
  mode that does not allow it releases it. A model falling asleep (`sleeping`) holds
  its awake memory until it is asleep, and a waiter for it waits, as for one stopping.
- Invariant: the memory of each device's residents never exceeds its budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

ResidentPhase = Literal["starting", "ready", "stopping", "sleeping", "asleep"]

Memory = Mapping[str, int]
"""MiB a model takes on each of its devices (one entry for a one-device model)."""


@dataclass(frozen=True)
class Resident:
    name: str
    memory: Memory
    phase: ResidentPhase
    in_flight: int = 0
    last_used: float = 0.0
    persistent: bool = False
    idle_unload_s: float | None = None
    """Unload after this long without a request (None: stay until evicted)."""
    yields: bool = False
    """It yields to the LLM: its requests wait while LLM work touches its devices."""
    asleep: Memory | None = None
    """What it holds on each device once asleep, where it can be put to sleep now; None:
    a swap stops it. For a resident `asleep` or `sleeping`, what it holds asleep."""

    def frees(self) -> Memory:
        """What evicting it frees on each device: its awake memory less its asleep
        memory where it goes to sleep, everything it holds where it is stopped."""
        if self.phase == "ready" and self.asleep is not None:
            return {d: mb - self.asleep.get(d, 0) for d, mb in self.memory.items()}
        return self.memory


@dataclass(frozen=True)
class Waiter:
    id: int
    model: str
    memory: Memory
    forced: bool = False
    """Force-big: may load even where the device's mode does not allow the model."""
    yields: bool = False
    """For a model that yields to the LLM (see the rules)."""


@dataclass(frozen=True)
class Snapshot:
    budgets: Mapping[str, int | None]
    """Each device's budget in MiB; None: the device has no budget (the CPU), all fits."""
    residents: Sequence[Resident]
    waiters: Sequence[Waiter]
    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """The models each device's mode lets it hold; a device not named allows any."""
    now: float = 0.0
    """The clock `last_used` is read against (monotonic seconds)."""

    def permits(self, waiter: Waiter) -> bool:
        return waiter.forced or all(self.allows(d, waiter.model) for d in waiter.memory)

    def allows(self, device: str, model: str) -> bool:
        allowed = self.allowed.get(device)
        return allowed is None or model in allowed


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
class Sleep:
    """Put an idle resident to sleep to make room for `for_model` (see the rules)."""

    model: str
    for_model: str


@dataclass(frozen=True)
class Release:
    """Stop an idle resident that a device's mode no longer allows."""

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


Action = Admit | Load | Evict | Sleep | Release | Unload | Reject


def used_mb(residents: Iterable[Resident], device: str) -> int:
    """What the residents hold on `device`."""
    return sum(r.memory.get(device, 0) for r in residents)


def plan(snapshot: Snapshot) -> list[Action]:
    residents = {r.name: r for r in snapshot.residents}
    budgets = snapshot.budgets
    persistent = [r for r in snapshot.residents if r.persistent]
    free: dict[str, int] = {
        d: b - used_mb(snapshot.residents, d) for d, b in budgets.items() if b is not None
    }

    admitted: list[int] = []
    loads: list[str] = []
    rejected: dict[str, str] = {}
    held: set[str] = set()
    """Devices that a waiter ahead is waiting for: nothing behind it is served there."""
    blocked: list[Waiter] = []
    """Waiters whose model needs room that only evictions or finishes can make."""
    llm_busy = llm_devices(snapshot)

    for waiter in snapshot.waiters:
        if waiter.model in rejected:
            continue
        if not snapshot.permits(waiter):
            continue  # waits for the mode to change; does not hold up anyone else
        if waiter.yields and llm_busy & set(waiter.memory):
            continue  # waits for the LLM work on its devices; holds up nobody
        devices = set(waiter.memory)
        resident = residents.get(waiter.model)
        if resident is not None and resident.phase == "ready":
            if not devices & held:
                admitted.append(waiter.id)
            continue
        if waiter.model in loads or (resident is not None and resident.phase == "starting"):
            continue  # joins the load under way
        never = _never_fits(waiter, budgets, persistent)
        if never is not None:
            rejected[waiter.model] = never
            continue
        if devices & held:
            held |= devices  # keeps its place on its other devices too
            continue
        need = _need(waiter, resident)
        if need is not None and all(mb <= free.get(d, mb) for d, mb in need.items()):
            loads.append(waiter.model)  # a start, or the wake of a sleeping model
            for d, mb in need.items():
                if d in free:
                    free[d] -= mb
            continue
        blocked.append(waiter)  # stopping, or does not fit: its devices wait for it
        held |= devices

    actions: list[Action] = []
    if admitted:
        actions.append(Admit(tuple(admitted)))
    for model, reason in rejected.items():
        ids = tuple(w.id for w in snapshot.waiters if w.model == model)
        actions.append(Reject(ids, reason))
    actions.extend(Load(model) for model in loads)
    actions.extend(_evictions(snapshot, blocked, free, admitted))
    releases = _releases(snapshot, admitted)
    actions.extend(releases)
    released = {a.model for a in releases if isinstance(a, Release)}
    actions.extend(u for u in _unloads(snapshot) if u.model not in released)
    return actions


def _need(waiter: Waiter, resident: Resident | None) -> Memory | None:
    """What loading the waiter's model takes on each device: all of its memory for a
    start, the rest of it for the wake of an asleep model; None while it is stopping or
    falling asleep (it can load again only once that is done)."""
    if resident is None:
        return waiter.memory
    if resident.phase == "asleep":
        return {d: mb - resident.memory.get(d, 0) for d, mb in waiter.memory.items()}
    return None


def llm_devices(snapshot: Snapshot) -> set[str]:
    """The devices that LLM work (a model that does not yield) is running on now, or
    waiting for (a waiter its mode holds back is not)."""
    busy = {d for r in snapshot.residents if not r.yields and r.in_flight for d in r.memory}
    waiting = (w for w in snapshot.waiters if not w.yields and snapshot.permits(w))
    return busy | {d for w in waiting for d in w.memory}


def _never_fits(
    waiter: Waiter, budgets: Mapping[str, int | None], persistent: Sequence[Resident]
) -> str | None:
    """Why the waiter's model can never fit one of its devices, or None."""
    for device, mb in waiter.memory.items():
        budget = budgets.get(device)
        if budget is None:
            continue
        pinned = used_mb(persistent, device)
        if mb + pinned > budget:
            return (
                f"model {waiter.model} needs {mb} MiB on {device} but only {budget - pinned} "
                f"MiB of its {budget} MiB budget is not held by persistent models"
            )
    return None


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
    """Idle residents a device's mode does not allow, unless a forced request wants them."""
    if not snapshot.allowed:
        return []
    admitted_ids = set(admitted)
    wanted = {w.model for w in snapshot.waiters if w.forced or w.id in admitted_ids}
    return [
        Release(r.name)
        for r in snapshot.residents
        if r.phase in ("ready", "asleep")
        and r.in_flight == 0
        and not all(snapshot.allows(d, r.name) for d in r.memory)
        and r.name not in wanted
    ]


def _evictions(
    snapshot: Snapshot, blocked: Sequence[Waiter], free: Mapping[str, int], admitted: list[int]
) -> list[Action]:
    """Idle residents to put to sleep or stop, LRU first, for each blocked waiter, where
    that makes room for it on every one of its devices. Blocked waiters never share a
    device (the first one blocks its devices for everyone behind it), but a spanning
    victim can free room on the devices of two: what a victim frees is counted as on its
    way for the next waiter too, and a victim is chosen only once."""
    residents = {r.name: r for r in snapshot.residents}
    admitted_ids = set(admitted)
    busy = {w.model for w in snapshot.waiters if w.id in admitted_ids}
    idle = sorted(
        (
            r
            for r in snapshot.residents
            if r.phase in ("ready", "asleep")
            and r.in_flight == 0
            and not r.persistent
            and r.name not in busy
        ),
        key=lambda r: r.last_used,
    )
    coming = dict(free)  # free now, plus what stops and sleeps under way will free
    for resident in snapshot.residents:
        if resident.phase == "stopping":
            _give_back(coming, resident.memory)
        elif resident.phase == "sleeping" and resident.asleep is not None:
            _give_back(
                coming, {d: mb - resident.asleep.get(d, 0) for d, mb in resident.memory.items()}
            )
    actions: list[Action] = []
    for waiter in blocked:
        own = residents.get(waiter.model)
        if own is not None and own.phase != "asleep":
            continue  # it is still stopping or falling asleep: it loads once that is done
        need = _need(waiter, own) or waiter.memory
        short = {d for d, mb in need.items() if d in coming and coming[d] < mb}
        room = dict(coming)
        victims: list[Resident] = []
        for resident in idle:
            if not short:
                break
            if resident.name == waiter.model:
                continue  # the asleep model being woken makes no room for itself
            frees = resident.frees()
            if not any(frees.get(d, 0) > 0 for d in short):
                continue  # frees nothing where the waiter lacks room
            victims.append(resident)
            _give_back(room, frees)
            short = {d for d in short if room[d] < need[d]}
        if short:
            continue  # wait for requests in flight to finish or stops to complete
        actions.extend(
            Sleep(v.name, waiter.model)
            if v.phase == "ready" and v.asleep is not None
            else Evict(v.name, waiter.model)
            for v in victims
        )
        idle = [r for r in idle if r not in victims]
        coming = room
    return actions


def _give_back(free: dict[str, int], memory: Memory) -> None:
    for device, mb in memory.items():
        if device in free:
            free[device] += mb
