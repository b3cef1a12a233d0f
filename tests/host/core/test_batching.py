"""Swap-minimising task selection, with a fake clock (plain numbers)."""

from __future__ import annotations

from host.core.batching import DeviceState, Plan, Policy, QueuedTask, pick

POLICY = Policy(max_wait_s=100.0, min_residency_s=10.0, slots_per_model=2)
GPU = DeviceState("gpu0", contended=True)


def task(
    id: str, model: str, at: float = 0.0, *, priority: int = 0, device: str | None = "gpu0"
) -> QueuedTask:
    return QueuedTask(id, model, device, priority, at)


def run(
    queue: list[QueuedTask],
    running: dict[str, int] | None = None,
    device: DeviceState = GPU,
    now: float = 1.0,
) -> Plan:
    return pick(
        queue, running or {}, {"gpu0": device, "cpu": DeviceState("cpu", False)}, now, POLICY
    )


def test_alternating_submissions_are_batched_by_model() -> None:
    queue = [task(f"t{i}", "A" if i % 2 == 0 else "B", at=i) for i in range(6)]
    plan = run(queue)
    assert plan.start == ("t0", "t2")  # two slots of A, the oldest model; B waits
    assert plan.current == {"gpu0": "A"}


def test_the_current_model_keeps_the_device_while_it_has_work() -> None:
    device = DeviceState("gpu0", True, current="B", current_since=0.0)
    queue = [task("a1", "A", at=0), task("b1", "B", at=5)]
    assert run(queue, device=device, now=50).start == ("b1",)


def test_the_device_moves_on_when_the_current_model_has_no_work() -> None:
    device = DeviceState("gpu0", True, current="B", current_since=0.0)
    plan = run([task("a1", "A")], device=device)
    assert plan.start == ("a1",) and plan.current == {"gpu0": "A"}


def test_the_device_waits_for_the_current_batch_to_finish_before_moving_on() -> None:
    device = DeviceState("gpu0", True, current="A", current_since=0.0)
    waiting = run([task("b1", "B", at=0.5)], running={"A": 1}, device=device, now=1.0)
    assert waiting.start == () and waiting.current == {"gpu0": "A"}
    late_a = run([task("b1", "B", at=0.5), task("a9", "A", at=0.8)], {"A": 1}, device, 1.0)
    assert late_a.start == ("a9",)  # a late task of the current model joins its batch
    assert run([task("b1", "B", at=0.5)], running={}, device=device, now=2.0).start == ("b1",)
    starving = run([task("b1", "B", at=0.0)], running={"A": 2}, device=device, now=150.0)
    assert starving.start == ("b1",) and starving.current == {"gpu0": "B"}


def test_a_trickle_of_alternating_submissions_still_swaps_twice() -> None:
    """Simulate the dispatcher as the daemon runs it: a submission every 0.05 s, tasks take
    1 s on two slots, and the plan is made again at every arrival and every finish."""
    arrivals = [task(f"t{i}", "A" if i % 2 == 0 else "B", at=0.05 * i) for i in range(40)]
    device, queue, swaps = DeviceState("gpu0", True), [], 0
    running: list[tuple[float, str]] = []  # (finishes at, model)
    events = sorted({t.enqueued_at for t in arrivals})
    now, done = 0.0, 0
    while done < 40:
        queue += [t for t in arrivals if t.enqueued_at == now]
        finished = [r for r in running if r[0] <= now]
        running = [r for r in running if r[0] > now]
        done += len(finished)
        counts: dict[str, int] = {}
        for _, model in running:
            counts[model] = counts.get(model, 0) + 1
        plan = pick(queue, counts, {"gpu0": device}, now, POLICY)
        target = plan.current.get("gpu0", device.current)
        if target != device.current:
            swaps += 1
            device = DeviceState("gpu0", True, target, now)
        started = set(plan.start)
        running += [(now + 1.0, t.model) for t in queue if t.id in started]
        queue = [t for t in queue if t.id not in started]
        upcoming = [e for e in events if e > now] + [r[0] for r in running]
        if not upcoming:
            break
        now = min(upcoming)
    assert done == 40
    assert swaps == 2


def test_a_starving_task_takes_the_device_once_residency_is_served() -> None:
    device = DeviceState("gpu0", True, current="B", current_since=95.0)
    queue = [task("a1", "A", at=0), task("b1", "B", at=90)]
    assert run(queue, device=device, now=101).start == ("b1",)  # B resident only 6 s
    assert run(queue, device=device, now=106).start == ("a1",)  # B had its 10 s


def test_slots_bound_the_tasks_started_per_model() -> None:
    queue = [task(f"a{i}", "A", at=i) for i in range(5)]
    assert run(queue, running={"A": 1}).start == ("a0",)
    assert run(queue, running={"A": 2}).start == ()


def test_priority_orders_tasks_and_picks_the_next_model() -> None:
    queue = [task("a1", "A", at=0), task("b1", "B", at=1, priority=5)]
    assert run(queue).start == ("b1",)
    queue = [task("a1", "A", at=0), task("a2", "A", at=1, priority=5), task("a3", "A", at=2)]
    assert run(queue).start == ("a2", "a1")


def test_uncontended_devices_and_remote_models_start_at_once() -> None:
    queue = [
        task("c1", "cpu-model", device="cpu"),
        task("r1", "remote", device=None),
        task("a1", "A"),
        task("b1", "B", at=1),
    ]
    assert set(run(queue).start) == {"c1", "r1", "a1"}


def test_forty_alternating_tasks_swap_a_handful_of_times() -> None:
    """Simulate the dispatcher: tasks take 1 s, submissions alternate A/B."""
    queue = [task(f"t{i}", "A" if i % 2 == 0 else "B", at=0.01 * i) for i in range(40)]
    device = DeviceState("gpu0", True)
    now, swaps, finished, running = 1.0, 0, 0, {}  # type: ignore[var-annotated]
    while queue:
        plan = pick(queue, running, {"gpu0": device}, now, POLICY)
        target = plan.current["gpu0"]
        if target != device.current:
            swaps += 1
            device = DeviceState("gpu0", True, target, now)
        started = set(plan.start)
        queue = [t for t in queue if t.id not in started]
        finished += len(started)
        now += 1.0
    assert finished == 40
    assert swaps == 2  # A… then B…, instead of 40 swaps in arrival order


def test_fifo_policy_serves_in_arrival_order() -> None:
    fifo = Policy(max_wait_s=100.0, min_residency_s=10.0, slots_per_model=2, batch=False)
    device = DeviceState("gpu0", True, current="B", current_since=0.0)
    queue = [task("a1", "A", at=0), task("b1", "B", at=5), task("a2", "A", at=6)]
    plan = pick(queue, {}, {"gpu0": device}, 50.0, fifo)
    assert plan.start == ("a1",) and plan.current == {"gpu0": "A"}
