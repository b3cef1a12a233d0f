"""A GPU that yields to games by itself: when to go to gaming mode, and when to come back. Pure.

With `auto_yield = true` on a GPU device, the shell (`host.models.auto_yield`) reads the
card's processes from NVML every few seconds and asks `step()`:

- a process this host did not start, holding more than `yield_above_mb` of the card (a
  game, a render), sends the device to gaming mode, with a reason that names the process
  and its memory; the mode it had is remembered;
- once no such process is left, and none has been for `yield_grace_s` (a game that
  restarts, a loading screen that frees memory for a moment), the device returns to the
  mode it had;
- the owner's own word wins: a mode set by hand while the device is yielded ends the
  yield, and the processes it yielded for are not yielded to again (until they exit); a
  device the owner already put in gaming mode is left to them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

GAMING = "gaming"


@dataclass(frozen=True)
class GpuProcess:
    """A process using the card, as NVML reports it."""

    pid: int
    name: str
    used_mb: int


@dataclass(frozen=True)
class YieldState:
    yielded: bool = False
    previous_mode: str | None = None
    """The mode to return to once the foreign processes are gone."""
    mode_set: str | None = None
    """The mode the yield set (to tell the owner's own change from ours)."""
    clear_since: float | None = None
    """Since when no foreign process has held the card (None: one still does)."""
    accepted: frozenset[int] = field(default_factory=frozenset)
    """Processes the owner chose to keep working beside: not yielded to again."""


@dataclass(frozen=True)
class YieldTo:
    """Put the device in gaming mode."""

    reason: str


@dataclass(frozen=True)
class ReturnTo:
    """Give the device back the mode it had."""

    mode: str
    reason: str


Action = YieldTo | ReturnTo | None


def foreign(
    processes: Sequence[GpuProcess], ours: Collection[int], above_mb: int
) -> list[GpuProcess]:
    """The processes not ours that hold more than `above_mb` of the card, biggest first."""
    found = [p for p in processes if p.pid not in ours and p.used_mb > above_mb]
    return sorted(found, key=lambda p: (-p.used_mb, p.pid))


def _named(device: str, processes: Sequence[GpuProcess]) -> str:
    first = processes[0]
    more = f" and {len(processes) - 1} more" if len(processes) > 1 else ""
    return f"{first.name} (pid {first.pid}) holds {first.used_mb:,} MiB of {device}{more}"


def step(
    state: YieldState,
    *,
    device: str,
    mode: str,
    processes: Sequence[GpuProcess],
    ours: Collection[int],
    above_mb: int,
    grace_s: float,
    now: float,
) -> tuple[YieldState, Action]:
    """The state after one reading of the card, and what to do about it."""
    present = {p.pid for p in processes}
    accepted = state.accepted & present  # an accepted process that exited is forgotten
    games = [p for p in foreign(processes, ours, above_mb) if p.pid not in accepted]

    if state.yielded and mode != state.mode_set:
        # The owner set a mode by hand while yielded: theirs stands, and what we yielded
        # for is theirs to run beside it.
        held = {p.pid for p in foreign(processes, ours, above_mb)}
        return YieldState(accepted=frozenset(accepted | held)), None

    if not state.yielded:
        if not games or mode == GAMING:
            return YieldState(accepted=accepted), None
        reason = f"auto-yield: {_named(device, games)}"
        return YieldState(True, mode, GAMING, None, accepted), YieldTo(reason)

    if games:
        return YieldState(True, state.previous_mode, state.mode_set, None, accepted), None
    clear_since = state.clear_since if state.clear_since is not None else now
    if now - clear_since < grace_s:
        return YieldState(True, state.previous_mode, state.mode_set, clear_since, accepted), None
    back = state.previous_mode or "auto"
    reason = f"auto-yield: no other process has held {device} for {grace_s:g} s"
    return YieldState(accepted=accepted), ReturnTo(back, reason)
