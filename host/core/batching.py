"""Which waiting work a device serves next: swap-minimising, starvation-free, pure.

Work often alternates between tiers (plan, implement, plan, implement …), from tasks and
from editor agents' requests alike. Served in arrival order on one GPU, nearly every
piece of work would swap. The policy batches instead: while a model resident on a
device has work waiting, that work goes first, so A B A B … runs as A A … B B …. The
rules, tried in this order (`choose()`; the first that applies decides):

1. `fifo` (the policy `batch = False`): plain arrival order, the baseline the
   benchmark compares against.
2. `max_wait`: work that has waited its bound is served next, whatever is resident, so
   nothing starves. Tasks wait at most `max_wait_s`; interactive requests carry their own,
   shorter bound (`request_max_wait_s`). A resident model that has its own starving work
   serves it first.
3. `priority`: work of a higher priority than any of the residents' own waiting work
   takes the device.
4. `batch`: a resident model with work waiting keeps the device; so does one that still
   has work running, since the next model could not load before that work ends anyway,
   and its late arrivals join the batch instead of costing two more swaps.
5. `next`: otherwise the highest priority, then the oldest, decides.

`min_residency_s` holds rules 2 and 3 back: a model that has just been loaded is not
swapped out until it has been resident that long, so the GPU does not thrash.

Two callers share the rules. The task dispatcher (`pick()`) decides which queued tasks to
start, feeding one model per contended device at a time; the device arbiter
(`host.models.arbiter`) orders everything waiting on its device — proxied requests, the
requests of running tasks, validator and classifier calls — with `serve_order()` before
the scheduler serves the queue front to back. Work without contention (the CPU, remote
models) starts at once.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class QueuedTask:
    """One piece of waiting work: a queued task, or a request waiting on a device."""

    id: Hashable
    model: str
    device: str | None
    """None for a remote model."""
    priority: int
    enqueued_at: float
    max_wait_s: float | None = None
    """Its own bound on waiting; None: the policy's `max_wait_s` (a task's)."""
    permitted: bool = True
    """False while the device's mode holds its model back: it waits, deciding nothing."""


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
    """The longest a task waits for another model's batch to finish."""
    min_residency_s: float = 10.0
    slots_per_model: int = 2
    """Tasks run at once on one model (llama-server's parallel slots)."""
    batch: bool = True
    """False: plain arrival order (FIFO), the baseline the benchmark compares against."""
    request_max_wait_s: float = 30.0
    """The longest an interactive request waits for another model's batch to finish."""
    request_priority: int = 10
    """A request's priority unless it names one: above a task's default of 0."""

    def bound(self, work: QueuedTask) -> float:
        return self.max_wait_s if work.max_wait_s is None else work.max_wait_s


Rule = Literal["empty", "fifo", "max_wait", "priority", "batch", "next"]


@dataclass(frozen=True)
class Choice:
    """The model a device serves next, the rule that chose it, and why, in words."""

    model: str | None
    rule: Rule
    why: str


@dataclass(frozen=True)
class Order:
    """The order a device serves its waiting work in, and the choice behind it."""

    ids: tuple[Hashable, ...]
    choice: Choice


@dataclass(frozen=True)
class Plan:
    start: tuple[Hashable, ...]
    """Ids of the queued tasks to start now, in order."""
    current: Mapping[str, str]
    """For each contended device with work, the model it now serves."""


def _order(work: QueuedTask) -> tuple[int, float]:
    return (-work.priority, work.enqueued_at)


def choose(
    waiting: Sequence[QueuedTask],
    serving: Mapping[str, float],
    running: Mapping[str, int],
    now: float,
    policy: Policy,
) -> Choice:
    """The model a contended device serves next.

    `serving` maps each model resident (or loading) on the device to the start of its
    residency; `running` counts the work under way per model."""
    candidates = [w for w in waiting if w.permitted]
    if not candidates:
        return Choice(None, "empty", "nothing waits that the device's mode allows")
    if not policy.batch:
        first = min(candidates, key=lambda w: w.enqueued_at)
        return Choice(first.model, "fifo", "arrival order (policy fifo)")
    newest = max(serving.values(), default=-math.inf)
    settled = now - newest >= policy.min_residency_s
    starving = [w for w in candidates if now - w.enqueued_at >= policy.bound(w)]
    if starving and settled and not any(w.model in serving for w in starving):
        oldest = min(starving, key=lambda w: w.enqueued_at)
        return Choice(
            oldest.model,
            "max_wait",
            f"work for {oldest.model} has waited {now - oldest.enqueued_at:.1f} s, "
            f"past its {policy.bound(oldest):g} s bound",
        )
    own = [w for w in candidates if w.model in serving]
    top = max(w.priority for w in candidates)
    if own and settled and top > max(w.priority for w in own):
        first = min((w for w in candidates if w.priority == top), key=lambda w: w.enqueued_at)
        return Choice(
            first.model,
            "priority",
            f"work for {first.model} has priority {top}, above the residents' own",
        )
    if own:
        first = min(own, key=_order)
        return Choice(first.model, "batch", f"{first.model} keeps the device while its work waits")
    busy = sorted(m for m in serving if running.get(m, 0) > 0)
    if busy:
        return Choice(busy[0], "batch", f"{busy[0]} finishes the work it has running first")
    first = min(candidates, key=_order)
    return Choice(first.model, "next", f"{first.model} has the highest priority, then the oldest")


def serve_order(
    waiting: Sequence[QueuedTask],
    serving: Mapping[str, float],
    running: Mapping[str, int],
    now: float,
    policy: Policy,
) -> Order:
    """Everything waiting on one device, in the order it is to be served.

    The chosen model's work comes first (with a resident chosen, the work of every
    resident: none of it costs a swap), then the rest by priority and age; work the mode
    holds back comes last, in arrival order. The scheduler serves the order front to back,
    and the first piece of work that needs a swap holds up everything behind it."""
    choice = choose(waiting, serving, running, now, policy)
    held = sorted((w for w in waiting if not w.permitted), key=lambda w: w.enqueued_at)
    allowed = [w for w in waiting if w.permitted]
    if not policy.batch:
        ahead = sorted(allowed, key=lambda w: w.enqueued_at)
        return Order(tuple(w.id for w in ahead + held), choice)
    if choice.model in serving:
        first = [w for w in allowed if w.model in serving]
    else:
        first = [w for w in allowed if w.model == choice.model]
    rest = [w for w in allowed if w not in first]
    ordered = sorted(first, key=_order) + sorted(rest, key=_order) + held
    return Order(tuple(w.id for w in ordered), choice)


def next_look_at(
    waiting: Sequence[QueuedTask], serving: Mapping[str, float], now: float, policy: Policy
) -> float | None:
    """When the order may change with nothing else happening: the next piece of work
    reaches its bound, or the newest resident has served its `min_residency_s`."""
    if not policy.batch:
        return None
    due = [
        w.enqueued_at + policy.bound(w)
        for w in waiting
        if w.permitted and w.enqueued_at + policy.bound(w) > now
    ]
    newest = max(serving.values(), default=None)
    if waiting and newest is not None and newest + policy.min_residency_s > now:
        due.append(newest + policy.min_residency_s)
    return min(due, default=None)


def choose_model(
    device: DeviceState,
    queued: Sequence[QueuedTask],
    now: float,
    policy: Policy,
    running: Mapping[str, int] | None = None,
) -> str | None:
    """The model a contended device should serve next, for the task dispatcher: its
    `current` model is the one resident (chosen at `current_since`)."""
    serving: dict[str, float] = {}
    if device.current is not None:
        since = device.current_since
        serving[device.current] = -math.inf if since is None else since
    return choose(queued, serving, running or {}, now, policy).model


def pick(
    queue: Sequence[QueuedTask],
    running: Mapping[str, int],
    devices: Mapping[str, DeviceState],
    now: float,
    policy: Policy,
) -> Plan:
    """Which queued tasks start now; `running` counts tasks under way per model."""
    chosen: list[Hashable] = []
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
