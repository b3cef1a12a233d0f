"""Which sleeping models to stop so another can sleep: a pure function, no I/O.

A model put to sleep keeps its process and its weights in system RAM (vLLM's level-1
sleep) or at least its process (a sleeping llama-server). Sleepers share one RAM budget
for the whole box, whatever device they sleep off, so the room is decided here, apart
from the per-device plan of `host.core.scheduler`.

Rules:
- A model may sleep when its asleep size fits the budget beside the sleepers kept.
- To make room, sleepers are stopped least recently used first, and only as many as
  needed; one still falling asleep (`stoppable` false) is never stopped, its RAM counts.
- A sleeper that is leaving (being woken, wanted by a request, or being stopped) is
  neither counted nor stopped: its RAM is on its way back. For the moment of a swap
  (one model falling asleep while the other wakes) RAM may hold both, as it does
  physically: counting the one being woken would stop the other instead of letting it
  sleep, and a swap back and forth could never be a wake.
- A model whose asleep size exceeds the budget alone, or that cannot fit beside the
  sleepers that cannot be stopped, does not sleep (`None`): the swap stops it instead.
- No budget (None): every model may sleep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sleeper:
    name: str
    ram_mb: int
    """What it holds in RAM asleep."""
    last_used: float
    """When it last served a request (monotonic seconds): the LRU order."""
    stoppable: bool = True
    """False while it is falling asleep: its RAM counts, it is not stopped for room."""
    leaving: bool = False
    """Being woken, wanted by a request, or being stopped: not counted, not stopped."""


def make_room(
    sleepers: Sequence[Sleeper], budget_mb: int | None, model: str, need_mb: int
) -> list[str] | None:
    """The sleepers to stop, LRU first, so that `model` can sleep holding `need_mb`;
    None when it cannot sleep at all (see the rules)."""
    others = [s for s in sleepers if s.name != model and not s.leaving]
    if budget_mb is None:
        return []
    held = sum(s.ram_mb for s in others)
    if held + need_mb <= budget_mb:
        return []
    stopped: list[str] = []
    for sleeper in sorted((s for s in others if s.stoppable), key=lambda s: s.last_used):
        stopped.append(sleeper.name)
        held -= sleeper.ram_mb
        if held + need_mb <= budget_mb:
            return stopped
    return None
