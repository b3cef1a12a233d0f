"""One device's queue, as the arbiter serves it: `serve_order()` in front of the
scheduler, with a fake clock.

The table tests check each rule of `host.core.batching` on plain values. The simulation
runs one GPU that holds one model at a time through the real pure pieces (the order,
then `scheduler.plan`) with made-up service, load and stop times, the way the arbiter
runs them, and checks what the issue asks of the policy: every waiter served within its
bound, the resident keeping the device while its own work waits, priorities honoured,
nothing starving, and far fewer swaps than arrival order.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from host.core import scheduler
from host.core.batching import Policy, QueuedTask, next_look_at, serve_order

POLICY = Policy(max_wait_s=300.0, min_residency_s=10.0, request_max_wait_s=30.0)


def request(
    id: int, model: str, at: float = 0.0, *, priority: int = 10, permitted: bool = True
) -> QueuedTask:
    return QueuedTask(id, model, DEVICE, priority, at, POLICY.request_max_wait_s, permitted)


def task(id: int, model: str, at: float = 0.0, *, priority: int = 0) -> QueuedTask:
    return QueuedTask(id, model, DEVICE, priority, at)


def order(
    waiting: Sequence[QueuedTask],
    serving: dict[str, float] | None = None,
    running: dict[str, int] | None = None,
    now: float = 100.0,
    policy: Policy = POLICY,
) -> tuple[tuple[Hashable, ...], str]:
    result = serve_order(waiting, serving or {}, running or {}, now, policy)
    return result.ids, result.choice.rule


# -- the rules, one by one ------------------------------------------------------------


def test_the_residents_work_goes_first_while_it_waits() -> None:
    waiting = [request(i, "A" if i % 2 else "B", at=90 + i) for i in range(6)]
    assert order(waiting, {"A": 0.0}) == ((1, 3, 5, 0, 2, 4), "batch")


def test_with_nothing_resident_the_highest_priority_then_the_oldest_decides() -> None:
    waiting = [request(1, "A", at=90), request(2, "B", at=91), request(3, "A", at=92)]
    assert order(waiting) == ((1, 3, 2), "next")
    waiting.append(request(4, "B", at=99, priority=50))
    assert order(waiting) == ((4, 2, 1, 3), "next")


def test_a_request_past_its_bound_takes_the_device_once_the_resident_settled() -> None:
    waiting = [request(1, "B", at=60), request(2, "A", at=95)]  # B has waited 40 s > 30 s
    assert order(waiting, {"A": 0.0}) == ((1, 2), "max_wait")
    assert order(waiting, {"A": 95.0}) == ((2, 1), "batch")  # A loaded 5 s ago: it stays


def test_requests_have_the_shorter_bound_and_tasks_the_longer() -> None:
    starving_request = [request(1, "B", at=60), task(2, "A", at=95)]
    assert order(starving_request, {"A": 0.0})[1] == "max_wait"
    patient_task = [task(1, "B", at=60), task(2, "A", at=95)]  # 40 s of a 300 s bound
    assert order(patient_task, {"A": 0.0}) == ((2, 1), "batch")


def test_a_resident_with_starving_work_of_its_own_serves_it_first() -> None:
    waiting = [request(1, "B", at=60), request(2, "A", at=50)]
    assert order(waiting, {"A": 0.0}) == ((2, 1), "batch")


def test_a_higher_priority_takes_the_device_once_the_resident_settled() -> None:
    waiting = [request(1, "A", at=90), task(2, "B", at=95, priority=60)]
    assert order(waiting, {"A": 0.0}) == ((2, 1), "priority")
    assert order(waiting, {"A": 95.0}) == ((1, 2), "batch")


def test_a_resident_still_running_keeps_the_device_with_nothing_waiting() -> None:
    waiting = [request(1, "B", at=95)]
    result = serve_order(waiting, {"A": 0.0}, {"A": 2}, 100.0, POLICY)
    assert result.choice.model == "A" and result.choice.rule == "batch"
    assert result.ids == (1,)  # B is next in line; the scheduler waits for A's work


def test_work_the_mode_holds_back_comes_last_and_decides_nothing() -> None:
    waiting = [request(1, "A", at=10, permitted=False), request(2, "B", at=95)]
    assert order(waiting) == ((2, 1), "next")
    assert order([request(1, "A", permitted=False)])[1] == "empty"


def test_fifo_serves_in_arrival_order_whatever_is_resident() -> None:
    fifo = Policy(batch=False)
    waiting = [request(1, "B", at=90), request(2, "A", at=91), request(3, "B", at=92)]
    assert order(waiting, {"A": 0.0}, policy=fifo) == ((1, 2, 3), "fifo")


def test_the_device_looks_again_when_a_bound_or_the_residency_falls_due() -> None:
    waiting = [request(1, "B", at=80), task(2, "C", at=90)]
    assert next_look_at(waiting, {"A": 0.0}, 100.0, POLICY) == 110.0  # 80 + 30
    assert next_look_at(waiting, {"A": 95.0}, 100.0, POLICY) == 105.0  # 95 + 10
    assert next_look_at(waiting, {"A": 0.0}, 115.0, POLICY) == 390.0  # the task's 300 s
    assert next_look_at(waiting, {}, 100.0, Policy(batch=False)) is None


# -- one GPU, simulated -----------------------------------------------------------------

MODELS = ("A", "B", "C")
MEMORY_MB = 600
BUDGET_MB = 1000  # one model at a time
DEVICE = "gpu0"


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    model: str = field(compare=False, default="")
    arrival: QueuedTask | None = field(compare=False, default=None)


@dataclass
class Outcome:
    waits: dict[int, float]
    """Each request's wait, from arrival to admission."""
    loads: list[tuple[float, str, str]]
    """(when, model, the rule of the order that led to it)."""
    left_with_work: list[tuple[str, int, str]]
    """(model, its waiting work, the rule of the order) whenever a resident was evicted
    with work of its own still queued."""


def simulate(
    arrivals: Sequence[QueuedTask],
    policy: Policy,
    *,
    follow_ups: Mapping[Hashable, QueuedTask] | None = None,
    service_s: float = 1.0,
    load_s: float = 2.0,
    stop_s: float = 0.5,
) -> Outcome:
    """Serve `arrivals` on one GPU the way `DeviceArbiter._replan` does: at every event,
    order the queue, plan, carry out the plan. Every admitted request takes `service_s`
    (the server runs them side by side); a request's follow-up, if it has one, arrives
    when it is answered (a client's next turn)."""
    follow_ups = follow_ups or {}
    events: list[_Event] = []
    seq = itertools.count()
    for work in arrivals:
        heapq.heappush(events, _Event(work.enqueued_at, next(seq), "arrive", arrival=work))
    waiting: list[QueuedTask] = []
    phase: dict[str, scheduler.ResidentPhase] = {}
    since: dict[str, float] = {}
    in_flight = dict.fromkeys(MODELS, 0)
    last_used = dict.fromkeys(MODELS, 0.0)
    waits: dict[int, float] = {}
    loads: list[tuple[float, str, str]] = []
    left: list[tuple[str, int, str]] = []
    while events:
        now = events[0].at
        while events and events[0].at == now:
            event = heapq.heappop(events)
            if event.kind == "arrive":
                assert event.arrival is not None
                waiting.append(event.arrival)
            elif event.kind == "finish":
                in_flight[event.model] -= 1
                last_used[event.model] = now
            elif event.kind == "ready":
                phase[event.model] = "ready"
            elif event.kind == "stopped":
                del phase[event.model]
                since.pop(event.model, None)
        serving = {m: s for m, s in since.items() if phase.get(m) in ("starting", "ready")}
        ordered = serve_order(waiting, serving, in_flight, now, policy)
        by_id = {w.id: w for w in waiting}
        memory = {DEVICE: MEMORY_MB}
        snapshot = scheduler.Snapshot(
            {DEVICE: BUDGET_MB},
            [
                scheduler.Resident(m, memory, p, in_flight[m], last_used[m])
                for m, p in phase.items()
            ],
            [scheduler.Waiter(cast(int, i), by_id[i].model, memory) for i in ordered.ids],
            now=now,
        )
        for action in scheduler.plan(snapshot):
            if isinstance(action, scheduler.Admit):
                for waiter_id in action.waiter_ids:
                    work = by_id[waiter_id]
                    waiting.remove(work)
                    waits[waiter_id] = now - work.enqueued_at
                    in_flight[work.model] += 1
                    done = now + service_s
                    heapq.heappush(events, _Event(done, next(seq), "finish", work.model))
                    follow_up = follow_ups.get(waiter_id)
                    if follow_up is not None:
                        follow_up = dataclasses.replace(follow_up, enqueued_at=done)
                        heapq.heappush(events, _Event(done, next(seq), "arrive", arrival=follow_up))
            elif isinstance(action, scheduler.Load):
                phase[action.model] = "starting"
                since[action.model] = now
                loads.append((now, action.model, ordered.choice.rule))
                heapq.heappush(events, _Event(now + load_s, next(seq), "ready", action.model))
            elif isinstance(action, scheduler.Evict):
                phase[action.model] = "stopping"
                own = sum(1 for w in waiting if w.model == action.model)
                if own:
                    left.append((action.model, own, ordered.choice.rule))
                heapq.heappush(events, _Event(now + stop_s, next(seq), "stopped", action.model))
        if not events:
            break
        due = next_look_at(waiting, serving, now, policy)
        if due is not None and due > now:
            heapq.heappush(events, _Event(due, next(seq), "look"))
    assert not waiting, "work left waiting with nothing more to happen"
    return Outcome(waits, loads, left)


def alternating_clients(
    clients: int, each: int
) -> tuple[list[QueuedTask], dict[Hashable, QueuedTask]]:
    """`clients` agents, each sending `each` requests in turn that alternate between two
    models, the next when the last is answered (what aider's architect mode, or an agent
    and its sub-agents, do): the first turns, and each turn's follow-up."""
    ids = itertools.count()
    first, follow_ups = [], {}
    for client in range(clients):
        turns = [
            request(next(ids), "A" if (client + turn) % 2 == 0 else "B", client * 0.01)
            for turn in range(each)
        ]
        first.append(turns[0])
        follow_ups.update({a.id: b for a, b in itertools.pairwise(turns)})
    return first, follow_ups


def test_alternating_requests_swap_a_few_times_instead_of_every_time() -> None:
    first, follow_ups = alternating_clients(12, 2)
    batched = simulate(first, POLICY, follow_ups=follow_ups)
    fifo = simulate(first, Policy(batch=False), follow_ups=follow_ups)
    assert len(batched.waits) == len(fifo.waits) == 24
    assert len(batched.loads) <= 3, batched.loads
    assert len(fifo.loads) >= 4 * len(batched.loads), fifo.loads
    assert sorted(batched.waits.values())[12] < sorted(fifo.waits.values())[12]
    assert max(batched.waits.values()) <= POLICY.request_max_wait_s


def test_a_steady_stream_for_the_resident_cannot_starve_another_model() -> None:
    stream = [request(i, "A", at=i * 0.25) for i in range(400)]  # 100 s of A
    lonely = request(1000, "B", at=5.0)
    outcome = simulate([*stream, lonely], POLICY)
    # B waits its bound, then A's work in flight (1 s) and the swap (0.5 s stop, 2 s load)
    assert outcome.waits[1000] <= POLICY.request_max_wait_s + 1.0 + 0.5 + 2.0 + 1e-9
    assert [model for _, model, _ in outcome.loads] == ["A", "B", "A"]


def test_a_higher_priority_request_is_served_ahead_of_the_batch() -> None:
    stream = [request(i, "A", at=i * 0.25, priority=0) for i in range(200)]
    urgent = request(1000, "B", at=20.0, priority=90)
    outcome = simulate([*stream, urgent], POLICY)
    assert outcome.waits[1000] <= 1.0 + 0.5 + 2.0 + 1e-9  # A's work in flight, then the swap
    assert outcome.left_with_work[0][::2] == ("A", "priority")


arrival = st.builds(
    lambda model, at, priority, is_task: (model, at, priority, is_task),
    st.sampled_from(MODELS),
    st.floats(0.0, 120.0, allow_nan=False),
    st.sampled_from((0, 10, 50)),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(arrival, min_size=1, max_size=60))
def test_every_waiter_is_served_within_its_bound_and_residents_keep_their_batch(
    drawn: list[tuple[str, float, int, bool]],
) -> None:
    arrivals = [
        task(i, model, at, priority=priority)
        if is_task
        else request(i, model, at, priority=priority)
        for i, (model, at, priority, is_task) in enumerate(drawn)
    ]
    outcome = simulate(arrivals, POLICY)
    assert set(outcome.waits) == {w.id for w in arrivals}  # nothing starves
    # The bound holds up to what a starving waiter must still sit through: the resident's
    # residency, its work in flight, a swap, and other starving models ahead of it.
    slack = POLICY.min_residency_s + len(MODELS) * (1.0 + 0.5 + 2.0)
    for work in arrivals:
        assert cast(int, work.id) in outcome.waits
        assert outcome.waits[cast(int, work.id)] <= POLICY.bound(work) + slack
    # A resident is only swapped out with its own work waiting when a bound or a
    # priority said so.
    for model, _, rule in outcome.left_with_work:
        assert rule in ("max_wait", "priority"), (model, rule)


def test_fifo_is_the_baseline_that_swaps_nearly_every_time() -> None:
    first, follow_ups = alternating_clients(12, 2)
    outcome = simulate(first, Policy(batch=False), follow_ups=follow_ups)
    assert len(outcome.waits) == 24
    assert len(outcome.loads) >= 16
