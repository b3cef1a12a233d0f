"""Which queued tasks to start now: swap-minimising, starvation-free, pure.

Submissions often alternate between tiers (plan, implement, plan, implement …). Served
in arrival order on one GPU, every task would swap. `pick()` batches instead: while the
model resident on a device has queued work, its tasks go first, so A B A B … runs as
A A … B B …. Two bounds keep that honest:

- `max_wait_s`: a task that has waited this long is served next, whatever is resident,
  so nothing starves;
- `min_residency_s`: a model that has just been loaded is not swapped out for a starving
  task until it has been resident this long, so the GPU does not thrash.

Tasks for devices without contention (the CPU, remote models) start at once. Only one
model per contended device is fed at a time, so the device arbiter never sees
interleaved requests that would make it swap back and forth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedTask:
    id: str
    model: str
    device: str | None
    """None for a remote model."""
    priority: int
    enqueued_at: float


@dataclass(frozen=True)
class DeviceState:
    name: str
    contended: bool
    """True for a GPU device that time-shares its budget; False for the CPU."""
    current: str | None = None
    """The model the device serves or is about to serve (the last one chosen for it)."""
    current_since: float | None = None
    """When `current` was chosen: the start of its residency."""


@dataclass(frozen=True)
class Policy:
    max_wait_s: float = 300.0
    min_residency_s: float = 10.0
    slots_per_model: int = 2
    """Tasks run at once on one model (llama-server's parallel slots)."""
    batch: bool = True
    """False: plain arrival order (FIFO), the baseline the benchmark compares against."""


@dataclass(frozen=True)
class Plan:
    start: tuple[str, ...]
    """Ids of the queued tasks to start now, in order."""
    current: Mapping[str, str]
    """For each contended device with work, the model it now serves."""


def _order(task: QueuedTask) -> tuple[int, float]:
    return (-task.priority, task.enqueued_at)


def choose_model(
    device: DeviceState,
    queued: Sequence[QueuedTask],
    now: float,
    policy: Policy,
    running: Mapping[str, int] | None = None,
) -> str | None:
    """The model a contended device should serve next.

    While the current model still has tasks running, the device stays with it even when
    it has nothing queued: the other model could not load before those tasks end anyway,
    and tasks for the current model that arrive meanwhile join its batch instead of
    costing two more swaps. Only a starving task moves the device on early."""
    if not queued:
        return None
    if not policy.batch:
        return min(queued, key=lambda t: t.enqueued_at).model
    current = device.current
    settled = device.current_since is None or (now - device.current_since >= policy.min_residency_s)
    starving = [t for t in queued if now - t.enqueued_at >= policy.max_wait_s]
    if starving and (settled or current is None):
        oldest = min(starving, key=lambda t: t.enqueued_at)
        if current is None or not any(t.model == current for t in starving):
            return oldest.model
    if current is not None and any(t.model == current for t in queued):
        return current  # keep the batch going
    if current is not None and (running or {}).get(current, 0) > 0:
        return current  # finishing its batch; the next model starts after it
    return min(queued, key=_order).model


def pick(
    queue: Sequence[QueuedTask],
    running: Mapping[str, int],
    devices: Mapping[str, DeviceState],
    now: float,
    policy: Policy,
) -> Plan:
    """Which queued tasks start now; `running` counts tasks under way per model."""
    chosen: list[str] = []
    in_use: dict[str, int] = dict(running)
    current: dict[str, str] = {}

    def take(tasks: Sequence[QueuedTask]) -> None:
        for task in sorted(tasks, key=_order):
            if in_use.get(task.model, 0) < policy.slots_per_model:
                in_use[task.model] = in_use.get(task.model, 0) + 1
                chosen.append(task.id)

    by_device: dict[str | None, list[QueuedTask]] = {}
    for task in queue:
        by_device.setdefault(task.device, []).append(task)
    for device_name, tasks in by_device.items():
        device = devices.get(device_name) if device_name is not None else None
        if device is None or not device.contended:
            take(tasks)
            continue
        target = choose_model(device, tasks, now, policy, running)
        if target is None:
            continue
        current[device.name] = target
        if not policy.batch:
            # FIFO: only the leading run of the oldest task's model, in arrival order
            ordered = sorted(tasks, key=lambda t: t.enqueued_at)
            run = []
            for queued_task in ordered:
                if queued_task.model != target:
                    break
                run.append(queued_task)
            take(run)
            continue
        # Tasks of the target that start while the previous model still finishes its
        # own simply wait in the device's queue; no more tasks of the previous model
        # are started, so the device swaps once.
        take([t for t in tasks if t.model == target])
    return Plan(tuple(chosen), current)
