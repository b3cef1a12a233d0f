"""The device arbiter in process, against fake model servers whose starts and stops end
when the test says so.

`DeviceArbiter` is the imperative shell around the pure `scheduler.plan()`: it keeps the
queue, counts requests in flight and carries the plan out. Its decisions are made in
`_replan()`, with no await in it, so what it decided is visible at once in
`residents()` (a model it chose to load is `starting`, one it chose to stop is
`stopping`), even before the task that starts or stops the server has run. The tests
read those decisions at the moment they are made, and let the fake servers
(`fake_process.FakeProcess`) finish their starts and stops only when the test wants,
so every interleaving here happens on purpose and nothing waits for time to pass
except the timeouts under test (50 ms). Every other wait is bounded: awaits by
`BOUND_S`, and `until()` by turns of the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

import pytest

from host.core.batching import Policy
from host.core.scheduler import Memory
from host.models.arbiter import (
    DeviceArbiter,
    Lease,
    LoadGate,
    ModelUnavailable,
    QueueFull,
    SleepPlan,
    SwapRecord,
    SwapSink,
    TooManyRequests,
    WaitTimedOut,
    Work,
)
from host.models.process import ModelProcess, ModelState
from host.models.sleepers import SleepRoom
from tests.host.models.fake_process import BOUND_S, FakeProcess

T = TypeVar("T")

TURNS = 200
"""How many turns of the event loop `until()` gives the arbiter. A load, a stop and the
replans after them take a handful of turns; two hundred that change nothing mean the
awaited thing is never going to happen."""

SHORT_TIMEOUT_S = 0.05
"""A request timeout that a test lets expire: the one real wait in these tests."""

GAMING = "gpu0 is in gaming mode"

GPU = "gpu0"
"""The device of the one-device arbiters."""


# -- helpers ---------------------------------------------------------------------------


async def bounded(awaitable: Awaitable[T]) -> T:
    """Await with a bound, failing the test (not timing out the arbiter) past it."""
    try:
        return await asyncio.wait_for(awaitable, BOUND_S)
    except TimeoutError:
        raise AssertionError(f"did not finish within {BOUND_S} s") from None


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the event loop run until `predicate` holds; fail saying what did not happen.

    Bounded by turns of the loop, not by time. `asyncio.sleep(0)` is asyncio's bare
    yield: it lets every callback that is ready run once, it does not wait for time.
    """
    for _ in range(TURNS):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not within {TURNS} turns of the event loop: {what}")


@dataclass
class Device:
    """One arbiter named gpu0 over fake servers, and what a test watches of it."""

    arbiter: DeviceArbiter
    fakes: dict[str, FakeProcess]
    journal: list[str]
    """Every state change of every model of the device, in order: "<model> <state>"."""
    swaps: list[SwapRecord]
    """What the arbiter sent to its swap log (unless the test gave its own sink)."""
    requests: list[asyncio.Task[Lease]] = field(default_factory=list)

    def __getitem__(self, model: str) -> FakeProcess:
        return self.fakes[model]

    def ask(
        self,
        model: str,
        timeout: float = BOUND_S,
        *,
        forced: bool = False,
        priority: int | None = None,
        work: Work = "request",
    ) -> asyncio.Task[Lease]:
        """A request for `model` running on its own, as a client's would."""
        task = asyncio.create_task(
            self.arbiter.acquire(model, timeout, forced, priority=priority, work=work)
        )
        self.requests.append(task)
        return task

    def now(self, model: str, *, forced: bool = False) -> Lease:
        """The fast path, where the test knows it must succeed."""
        lease = self.arbiter.try_acquire_now(model, forced)
        assert lease is not None, f"{model} could not be claimed at once"
        return lease

    def phases(self) -> dict[str, str]:
        """The residents as the arbiter counts them: model -> starting/ready/stopping."""
        return {r.name: r.phase for r in self.arbiter.residents()}

    def hold_stops(self) -> None:
        """Every stop waits in `stopping` until the test calls `finish_stop()`."""
        for fake in self.fakes.values():
            fake.hold_stops = True


class Devices:
    """Builds devices for one test, and closes them after it whatever the test did."""

    def __init__(self) -> None:
        self._built: list[Device] = []
        self._ports = itertools.count(18001)

    def make(
        self,
        memory_mb: Mapping[str, int | Memory],
        *,
        budget_mb: int | Mapping[str, int | None] | None = 1000,
        ready: Collection[str] = (),
        persistent: Iterable[str] = (),
        max_concurrency: dict[str, int] | None = None,
        max_queue: int = 256,
        on_swap: SwapSink | None = None,
        before_load: LoadGate | None = None,
        idle_unload_s: dict[str, float] | None = None,
        yield_to_llm: Iterable[str] = (),
        sleep: Mapping[str, SleepPlan] | None = None,
        room: SleepRoom | None = None,
        policy: Policy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Device:
        """A device whose models are `memory_mb`'s keys, those in `ready` already up.

        Every model may take 4 requests at once unless `max_concurrency` says otherwise.
        With budgets per device, the arbiter is that group's, and each model's memory is
        given per device.
        """
        journal: list[str] = []
        fakes = {
            name: FakeProcess(name, next(self._ports), journal, ready=name in ready)
            for name in memory_mb
        }
        swaps: list[SwapRecord] = []

        async def record(swap: SwapRecord) -> None:
            swaps.append(swap)

        limits = dict.fromkeys(memory_mb, 4) | (max_concurrency or {})
        budgets = budget_mb if isinstance(budget_mb, Mapping) else {GPU: budget_mb}
        arbiter = DeviceArbiter(
            budgets,
            cast("dict[str, ModelProcess]", fakes),  # the arbiter uses only the fake's surface
            {n: {GPU: mb} if isinstance(mb, int) else mb for n, mb in memory_mb.items()},
            set(persistent),
            limits,
            max_queue=max_queue,
            on_swap=on_swap or record,
            before_load=before_load,
            idle_unload_s=idle_unload_s,
            yield_to_llm=set(yield_to_llm),
            sleep=sleep,
            room=room,
            policy=policy,
            **({} if clock is None else {"clock": clock}),
        )
        device = Device(arbiter, fakes, journal, swaps)
        self._built.append(device)
        return device

    async def close_all(self) -> None:
        for device in self._built:
            for fake in device.fakes.values():
                fake.let_everything_through()
            await bounded(device.arbiter.close())
            await bounded(asyncio.gather(*device.requests, return_exceptions=True))


@pytest.fixture
async def devices() -> AsyncIterator[Devices]:
    built = Devices()
    yield built
    await built.close_all()


def fake(lease: Lease) -> FakeProcess:
    """The fake server a lease points at."""
    return cast("FakeProcess", lease.model)


# -- admission -------------------------------------------------------------------------


async def test_a_ready_resident_is_claimed_at_once_without_a_load(devices: Devices) -> None:
    """Both the fast path and a waiting request take a ready model as it is."""
    device = devices.make({"a": 400}, ready={"a"})
    arbiter, a = device.arbiter, device["a"]

    first = arbiter.try_acquire_now("a")
    assert first is not None
    assert first.base_url == a.base_url
    second = await bounded(arbiter.acquire("a", BOUND_S))

    assert fake(second) is a
    assert arbiter.in_flight["a"] == 2
    assert arbiter.queue_length == 0
    assert a.ensure_ready_calls == 0
    assert device.journal == []


async def test_the_fast_path_never_starts_a_model(devices: Devices) -> None:
    """`try_acquire_now` is for ready models only: a stopped one is left for `acquire`."""
    device = devices.make({"a": 400})

    assert device.arbiter.try_acquire_now("a") is None

    assert device.phases() == {}
    assert device["a"].ensure_ready_calls == 0


async def test_a_model_that_fits_is_loaded_and_its_request_admitted_once_ready(
    devices: Devices,
) -> None:
    """The request waits for the start itself, not just for the decision to load."""
    device = devices.make({"a": 400})
    arbiter, a = device.arbiter, device["a"]

    request = device.ask("a")
    await a.start_requested()
    assert device.phases() == {"a": "starting"}
    assert arbiter.queue_length == 1, "admitted before the server was ready"

    a.finish_start()
    lease = await bounded(request)

    assert fake(lease) is a
    assert arbiter.in_flight["a"] == 1
    assert arbiter.queue_length == 0
    assert device.journal == ["a starting", "a ready"]


# -- swaps on a contended budget -------------------------------------------------------


async def test_a_swap_waits_for_requests_in_flight_then_stops_the_resident_before_loading(
    devices: Devices,
) -> None:
    """Memory is only free once a server has exited: the load comes after the stop ends."""
    device = devices.make({"a": 600, "b": 600}, ready={"a"})
    device.hold_stops()
    arbiter, a, b = device.arbiter, device["a"], device["b"]
    running = device.now("a")

    wanted = device.ask("b")
    await until(lambda: arbiter.queue_length == 1, "the request for b is queued")
    assert device.phases() == {"a": "ready"}, "a resident with a request in flight was evicted"

    running.release()
    assert device.phases() == {"a": "stopping"}, "a is not evicted once its request ended"
    await a.stop_requested()
    assert a.stop_reasons == ["evicted to make room for b"]
    assert device.phases() == {"a": "stopping"}, "b was loaded while a still held its memory"

    a.finish_stop()
    await b.start_requested()
    b.finish_start()
    lease = await bounded(wanted)

    assert fake(lease) is b
    assert device.journal == ["a stopping", "a stopped", "b starting", "b ready"]
    assert device.phases() == {"b": "ready"}


async def test_the_resident_released_longest_ago_is_evicted_first(devices: Devices) -> None:
    """a was claimed first and comes first, but b has been idle longer: the arbiter stamps
    each release, and eviction follows that."""
    device = devices.make({"a": 400, "b": 400, "c": 400}, ready={"a", "b"})
    device.hold_stops()
    arbiter, b = device.arbiter, device["b"]
    on_a, on_b = device.now("a"), device.now("b")
    on_b.release()
    on_a.release()

    device.ask("c")
    await until(lambda: arbiter.queue_length == 1, "the request for c is queued")
    assert device.phases() == {"a": "ready", "b": "stopping"}

    await b.stop_requested()
    assert b.stop_reasons == ["evicted to make room for c"]
    assert device["a"].stop_reasons == []


async def test_a_swap_that_needs_the_room_of_one_resident_stops_only_that_one(
    devices: Devices,
) -> None:
    """A device that holds two models: asking for a third must cost one of them, not both
    (every needless stop is a cold start later)."""
    device = devices.make({"a": 400, "b": 400, "c": 400}, budget_mb=800, ready={"a", "b"})
    device.hold_stops()
    arbiter, a, b, c = device.arbiter, device["a"], device["b"], device["c"]
    device.now("b").release()
    device.now("a").release()

    device.ask("c")
    await until(lambda: arbiter.queue_length == 1, "the request for c is queued")
    assert device.phases() == {"a": "ready", "b": "stopping"}

    await b.stop_requested()
    b.finish_stop()
    await c.start_requested()
    assert device.phases() == {"a": "ready", "c": "starting"}
    assert a.stop_reasons == []


async def test_models_that_fit_side_by_side_load_together_and_stay_resident(
    devices: Devices,
) -> None:
    """Neither load waits for the other, and neither model is stopped for the other."""
    device = devices.make({"a": 400, "b": 400})
    a, b = device["a"], device["b"]

    for_a, for_b = device.ask("a"), device.ask("b")
    await a.start_requested()
    await b.start_requested()
    assert device.phases() == {"a": "starting", "b": "starting"}

    a.finish_start()
    b.finish_start()
    await bounded(asyncio.gather(for_a, for_b))

    assert device.phases() == {"a": "ready", "b": "ready"}
    assert device.arbiter.used_mb(GPU) == 800
    assert a.stop_reasons == b.stop_reasons == []


async def test_a_device_without_a_budget_holds_every_model(devices: Devices) -> None:
    """The CPU has no budget (None): everything fits, however large."""
    device = devices.make({"a": 90_000, "b": 90_000, "c": 90_000}, budget_mb=None)

    requests = [device.ask(name) for name in ("a", "b", "c")]
    for name in ("a", "b", "c"):
        await device[name].start_requested()
        device[name].finish_start()
    await bounded(asyncio.gather(*requests))

    assert device.phases() == {"a": "ready", "b": "ready", "c": "ready"}


# -- order -----------------------------------------------------------------------------


async def test_under_fifo_requests_are_served_in_arrival_order_even_for_the_ready_resident(
    devices: Devices,
) -> None:
    """The baseline policy: a waiting swap blocks everyone behind it, and the fast path
    does not jump the queue either."""
    device = devices.make({"a": 600, "b": 600}, ready={"a"}, policy=Policy(batch=False))
    arbiter, a, b = device.arbiter, device["a"], device["b"]
    running = device.now("a")

    first = device.ask("b")
    await until(lambda: arbiter.queue_length == 1, "the request for b is queued")
    second = device.ask("a")
    await until(lambda: arbiter.queue_length == 2, "the request for a is queued")
    assert arbiter.in_flight["a"] == 1, "the request for the ready a went ahead of b's"
    assert arbiter.try_acquire_now("a") is None, "the fast path jumped the queue"

    running.release()
    await b.start_requested()
    b.finish_start()
    on_b = await bounded(first)
    assert arbiter.queue_length == 1
    assert device.phases() == {"b": "ready"}

    on_b.release()
    await a.start_requested()
    a.finish_start()
    await bounded(second)

    assert device.journal == [
        "a stopping",
        "a stopped",
        "b starting",
        "b ready",
        "b stopping",
        "b stopped",
        "a starting",
        "a ready",
    ]


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_residents_requests_join_its_batch_ahead_of_a_waiting_swap(
    devices: Devices,
) -> None:
    """Under the batch policy a request for the resident goes ahead of one that needs a
    swap, so A B A B … costs one swap, not three; the swap happens once A's work is done."""
    clock = Clock()
    device = devices.make({"a": 600, "b": 600}, ready={"a"}, clock=clock)
    arbiter, b = device.arbiter, device["b"]
    running = device.now("a")
    for_b = device.ask("b")
    await until(lambda: arbiter.queue_length == 1, "the request for b is queued")
    for_a = device.ask("a")
    second = await bounded(for_a)  # admitted at once: a keeps the device for its batch
    assert arbiter.order is not None and arbiter.order.choice.rule == "batch"
    assert [w.model for w in arbiter.waiting()] == ["b"]
    running.release()
    second.release()
    await b.start_requested()
    b.finish_start()
    await bounded(for_b)
    assert device.journal == ["a stopping", "a stopped", "b starting", "b ready"]


async def test_a_request_past_its_bound_holds_up_the_residents_batch(devices: Devices) -> None:
    clock = Clock()
    policy = Policy(request_max_wait_s=30.0, min_residency_s=10.0)
    device = devices.make({"a": 600, "b": 600}, ready={"a"}, policy=policy, clock=clock)
    arbiter = device.arbiter
    running = device.now("a")
    for_b = device.ask("b")
    await until(lambda: arbiter.queue_length == 1, "the request for b is queued")
    clock.now += 31.0  # b has now waited past its 30 s bound
    late_a = device.ask("a")
    await until(lambda: arbiter.queue_length == 2, "the late request for a waits")
    assert arbiter.order is not None and arbiter.order.choice.rule == "max_wait"
    assert [w.model for w in arbiter.waiting()] == ["b", "a"]
    running.release()
    await device["b"].start_requested()
    device["b"].finish_start()
    (await bounded(for_b)).release()
    assert not late_a.done(), "a waits for its own turn after b"


async def test_a_task_waits_longer_than_a_request_and_yields_to_its_priority(
    devices: Devices,
) -> None:
    clock = Clock()
    device = devices.make({"a": 600, "b": 600}, ready={"a"}, clock=clock)
    arbiter = device.arbiter
    running = device.now("a")
    for_b = device.ask("b", work="task")
    await until(lambda: arbiter.queue_length == 1, "the task's request for b is queued")
    clock.now += 31.0  # past a request's bound, far from a task's
    late = await bounded(device.ask("a"))
    assert arbiter.order is not None and arbiter.order.choice.rule == "batch"
    urgent = device.ask("b", priority=90)
    await until(lambda: arbiter.queue_length == 2, "the urgent request for b waits")
    assert [w.priority for w in arbiter.waiting()] == [90, 0]
    later = device.ask("a")  # a's own work no longer jumps the queue: b outranks it
    await until(lambda: arbiter.queue_length == 3, "the later request for a waits")
    assert arbiter.order is not None and arbiter.order.choice.rule == "priority"
    assert [w.model for w in arbiter.waiting()] == ["b", "b", "a"]
    running.release()
    late.release()
    await device["b"].start_requested()
    device["b"].finish_start()
    for lease in await bounded(asyncio.gather(urgent, for_b)):
        lease.release()
    assert not later.done()


async def test_concurrent_requests_for_a_loading_model_join_its_one_load(
    devices: Devices,
) -> None:
    """One start serves every request that came while it was under way."""
    device = devices.make({"b": 600})
    arbiter, b = device.arbiter, device["b"]

    requests = [device.ask("b") for _ in range(3)]
    await b.start_requested()
    await until(lambda: arbiter.queue_length == 3, "all three requests are queued")
    b.finish_start()
    leases = await bounded(asyncio.gather(*requests))

    assert all(fake(lease) is b for lease in leases)
    assert b.ensure_ready_calls == 1
    assert arbiter.in_flight["b"] == 3
    assert device.journal == ["b starting", "b ready"]
    await until(lambda: len(device.swaps) == 1, "the load is in the swap log")


# -- limits ----------------------------------------------------------------------------


async def test_a_model_at_its_max_concurrency_refuses_more_at_once_instead_of_queueing(
    devices: Devices,
) -> None:
    """The limit answers 429 straight away: a request never waits for a free slot."""
    device = devices.make({"a": 400}, ready={"a"}, max_concurrency={"a": 1})
    arbiter = device.arbiter
    running = device.now("a")

    assert arbiter.try_acquire_now("a") is None
    with pytest.raises(TooManyRequests, match="max_concurrency"):
        await bounded(arbiter.acquire("a", BOUND_S))
    assert arbiter.queue_length == 0

    running.release()
    await bounded(arbiter.acquire("a", BOUND_S))
    assert arbiter.in_flight["a"] == 1


async def test_requests_waiting_for_a_load_count_toward_max_concurrency(
    devices: Devices,
) -> None:
    """In flight or queued, both take one of the model's slots."""
    device = devices.make({"b": 600}, max_concurrency={"b": 2})
    arbiter, b = device.arbiter, device["b"]

    queued = [device.ask("b"), device.ask("b")]
    await until(lambda: arbiter.queued("b") == 2, "two requests for b are queued")
    with pytest.raises(TooManyRequests, match="model b already has 2 requests"):
        await bounded(arbiter.acquire("b", BOUND_S))
    assert arbiter.queued("b") == 2

    await b.start_requested()
    b.finish_start()
    await bounded(asyncio.gather(*queued))


async def test_a_full_device_queue_refuses_further_requests(devices: Devices) -> None:
    """`max_queue` counts every waiter of the device, whatever model it waits for."""
    device = devices.make({"b": 600, "c": 600}, max_queue=2)
    arbiter = device.arbiter

    device.ask("b")
    device.ask("b")
    await until(lambda: arbiter.queue_length == 2, "two requests are queued")

    for model in ("b", "c"):
        with pytest.raises(QueueFull, match=r"host\.max_queue"):
            await bounded(arbiter.acquire(model, BOUND_S))
    assert arbiter.queue_length == 2


async def test_a_full_queue_refuses_even_a_request_for_a_ready_model(devices: Devices) -> None:
    """What the code does: the limit is checked before the request knows whether it
    would wait. Here `a` is ready and nothing blocks it (the waiter ahead is joining a
    load that fits), so with room in the queue it would be admitted at once."""
    device = devices.make({"a": 400, "b": 400}, ready={"a"}, max_queue=1)
    arbiter = device.arbiter

    device.ask("b")
    await until(lambda: arbiter.queue_length == 1, "the request for b is queued")
    assert device.phases() == {"a": "ready", "b": "starting"}

    assert arbiter.try_acquire_now("a") is None
    with pytest.raises(QueueFull):
        await bounded(arbiter.acquire("a", BOUND_S))


# -- timeouts and clients that leave ---------------------------------------------------


async def test_a_wait_past_its_timeout_raises_and_leaves_no_waiter_but_the_load_goes_on(
    devices: Devices,
) -> None:
    """A start already under way is not wasted: the model is ready for the next request."""
    device = devices.make({"b": 600})
    arbiter, b = device.arbiter, device["b"]

    with pytest.raises(
        WaitTimedOut,
        match=r"^model b was not available within 0\.05 s \(0 requests waiting on device gpu0\)$",
    ):
        await bounded(arbiter.acquire("b", SHORT_TIMEOUT_S))
    assert arbiter.queue_length == 0
    assert arbiter.queued("b") == 0
    assert device.phases() == {"b": "starting"}

    await b.start_requested()
    b.finish_start()
    await until(lambda: device.phases() == {"b": "ready"}, "b is ready")
    device.now("b")
    assert arbiter.in_flight["b"] == 1


async def test_a_request_that_gave_up_on_a_swap_evicts_nothing_afterwards(
    devices: Devices,
) -> None:
    """Once the only request for b has left, a's finished request is no reason to stop a."""
    device = devices.make({"a": 600, "b": 600}, ready={"a"})
    arbiter, a = device.arbiter, device["a"]
    running = device.now("a")

    with pytest.raises(WaitTimedOut, match="model b"):
        await bounded(arbiter.acquire("b", SHORT_TIMEOUT_S))
    running.release()

    assert device.phases() == {"a": "ready"}
    assert a.stop_reasons == []


async def test_a_cancelled_request_leaves_the_queue(devices: Devices) -> None:
    """A client that goes away while waiting leaves nothing behind it in the queue."""
    device = devices.make({"b": 600})
    arbiter, b = device.arbiter, device["b"]

    request = device.ask("b")
    await b.start_requested()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(request)

    assert arbiter.queue_length == 0
    assert arbiter.in_flight["b"] == 0


async def test_a_request_cancelled_just_as_it_is_admitted_hands_its_claim_back(
    devices: Devices,
) -> None:
    """The client goes away, and in the same turn of the loop, before the request has
    heard of it, the arbiter admits the request: the claim must not stay counted."""
    device = devices.make({"a": 400}, ready={"a"})
    arbiter = device.arbiter
    running = device.now("a")
    arbiter.set_allowed(frozenset(), GAMING)  # a is busy: kept, but new requests wait

    request = device.ask("a")
    await until(lambda: arbiter.queue_length == 1, "the request is held by the mode")
    request.cancel()
    arbiter.set_allowed(None, "")
    assert arbiter.in_flight["a"] == 2, "lifting the mode did not admit the request"

    with pytest.raises(asyncio.CancelledError):
        await bounded(request)
    assert arbiter.in_flight["a"] == 1
    assert arbiter.queue_length == 0
    running.release()
    assert arbiter.in_flight["a"] == 0


# -- failures --------------------------------------------------------------------------


async def test_a_failed_start_fails_every_waiter_for_it_and_the_device_serves_the_next(
    devices: Devices,
) -> None:
    """The reason reaches the clients, and c, which waited behind b, loads at once."""
    device = devices.make({"b": 600, "c": 600})
    arbiter, b, c = device.arbiter, device["b"], device["c"]

    for_b = [device.ask("b"), device.ask("b")]
    for_c = device.ask("c")
    await b.start_requested()
    await until(lambda: arbiter.queue_length == 3, "all three requests are queued")
    assert device.phases() == {"b": "starting"}, "c does not fit beside b"

    b.fail_start("out of memory")
    for request in for_b:
        with pytest.raises(ModelUnavailable, match=r"^model b failed to start: out of memory"):
            await bounded(request)
    await c.start_requested()
    c.finish_start()
    await bounded(for_c)

    assert device.phases() == {"c": "ready"}
    await until(lambda: len(device.swaps) == 2, "both loads are in the swap log")
    assert [(s.model, s.outcome) for s in device.swaps] == [("b", "failed"), ("c", "ready")]


async def test_a_model_that_failed_to_start_is_tried_again_by_the_next_request(
    devices: Devices,
) -> None:
    """The arbiter remembers no failure: backing off is the process's business."""
    device = devices.make({"b": 600})
    b = device["b"]

    first = device.ask("b")
    await b.start_requested()
    b.fail_start("exited with code 1 while starting")
    with pytest.raises(ModelUnavailable):
        await bounded(first)

    second = device.ask("b")
    await b.start_requested()
    b.finish_start()
    await bounded(second)
    assert b.ensure_ready_calls == 2


async def test_a_model_that_can_never_fit_beside_the_persistent_ones_is_refused_at_once(
    devices: Devices,
) -> None:
    """Persistent models are never evicted, so waiting would never help."""
    device = devices.make({"p": 600, "b": 600, "huge": 2000}, ready={"p"}, persistent={"p"})
    arbiter, p = device.arbiter, device["p"]

    with pytest.raises(
        ModelUnavailable,
        match=r"^model b needs 600 MiB on gpu0 but only 400 MiB of its 1000 MiB budget is not "
        r"held by persistent models$",
    ):
        await bounded(arbiter.acquire("b", BOUND_S))
    with pytest.raises(ModelUnavailable, match="model huge needs 2000 MiB"):
        await bounded(arbiter.acquire("huge", BOUND_S))

    assert arbiter.queue_length == 0
    assert device.phases() == {"p": "ready"}
    assert p.stop_reasons == []


async def test_a_load_that_breaks_with_an_unexpected_error_fails_its_waiters_and_frees_the_device(
    devices: Devices,
) -> None:
    """A hook or a start can fail in ways other than StartFailed (an OSError writing the
    log, say); the device must still answer and move on."""

    async def before_load(model: str, memory: Memory) -> None:
        if model == "b":
            raise OSError(28, "No space left on device")

    device = devices.make({"b": 600, "c": 600}, before_load=before_load)
    c = device["c"]

    for_b, for_c = device.ask("b"), device.ask("c")
    await until(for_b.done, "the request for b is answered")
    with pytest.raises(ModelUnavailable, match="No space left on device"):
        await bounded(for_b)
    await c.start_requested()
    c.finish_start()
    await bounded(for_c)


# -- device modes ----------------------------------------------------------------------


async def test_gaming_mode_stops_idle_residents_and_holds_requests_until_it_is_lifted(
    devices: Devices,
) -> None:
    """Gaming frees the card; work that comes meanwhile waits instead of loading."""
    device = devices.make({"a": 400, "b": 400}, ready={"a"})
    arbiter, a, b = device.arbiter, device["a"], device["b"]

    arbiter.set_allowed(frozenset(), GAMING)
    assert device.phases() == {"a": "stopping"}
    await until(lambda: device.phases() == {}, "a has stopped")
    assert a.stop_reasons == [GAMING]
    assert not arbiter.permits("a")
    assert arbiter.permits("a", forced=True)

    held = [device.ask("a"), device.ask("b")]
    await until(lambda: arbiter.queue_length == 2, "both requests are held")
    assert device.phases() == {}, "a model was loaded in gaming mode"

    arbiter.set_allowed(None, "")
    for model in (a, b):
        await model.start_requested()
        model.finish_start()
    await bounded(asyncio.gather(*held))
    assert device.phases() == {"a": "ready", "b": "ready"}
    assert arbiter.mode_reasons == {}


async def test_gaming_mode_stops_a_busy_resident_only_when_its_last_request_ends(
    devices: Devices,
) -> None:
    """A request in flight is never cut off by a mode change."""
    device = devices.make({"a": 400}, ready={"a"})
    arbiter = device.arbiter
    running = device.now("a")

    arbiter.set_allowed(frozenset(), GAMING)
    assert device.phases() == {"a": "ready"}
    assert arbiter.try_acquire_now("a") is None, "a new request got the model in gaming mode"

    running.release()
    assert device.phases() == {"a": "stopping"}


async def test_a_forced_request_loads_in_gaming_mode_and_its_model_goes_when_it_ends(
    devices: Devices,
) -> None:
    """Force-big gets its model, and the card is freed again as soon as it is done."""
    device = devices.make({"a": 400})
    arbiter, a = device.arbiter, device["a"]
    arbiter.set_allowed(frozenset(), GAMING)

    request = device.ask("a", forced=True)
    await a.start_requested()
    a.finish_start()
    lease = await bounded(request)
    assert device.phases() == {"a": "ready"}
    assert arbiter.try_acquire_now("a") is None
    also_forced = device.now("a", forced=True)

    lease.release()
    also_forced.release()
    assert device.phases() == {"a": "stopping"}
    await until(lambda: a.state is ModelState.STOPPED, "a has stopped")
    assert a.stop_reasons == [GAMING]


async def test_a_request_held_by_the_mode_times_out_saying_why(devices: Devices) -> None:
    """The client learns it waited for the mode, not for a slow load."""
    device = devices.make({"a": 400})
    device.arbiter.set_allowed(frozenset(), GAMING)

    with pytest.raises(WaitTimedOut, match=rf"; {GAMING}\)$"):
        await bounded(device.arbiter.acquire("a", SHORT_TIMEOUT_S))
    assert device.arbiter.queue_length == 0


async def test_a_pinned_mode_holds_other_models_without_holding_up_its_own(
    devices: Devices,
) -> None:
    """A held request is not a blocked head: the pinned tier's model behind it loads."""
    device = devices.make({"a": 400, "b": 400})
    arbiter, a = device.arbiter, device["a"]
    arbiter.set_allowed(frozenset({"a"}), "gpu0 is pinned to architect")

    device.ask("b")
    await until(lambda: arbiter.queue_length == 1, "the request for b is held")
    for_a = device.ask("a")
    await a.start_requested()
    a.finish_start()
    await bounded(for_a)

    assert arbiter.queued("b") == 1
    assert device.phases() == {"a": "ready"}


async def test_a_load_under_way_when_gaming_begins_is_stopped_once_ready(
    devices: Devices,
) -> None:
    """A start is not cut short, but its model does not stay: its request waits on."""
    device = devices.make({"b": 400})
    arbiter, b = device.arbiter, device["b"]

    request = device.ask("b")
    await b.start_requested()
    arbiter.set_allowed(frozenset(), GAMING)
    assert device.phases() == {"b": "starting"}

    b.finish_start()
    await until(lambda: b.stop_reasons == [GAMING], "b is released once ready")
    assert arbiter.queued("b") == 1

    arbiter.set_allowed(None, "")
    await b.start_requested()
    b.finish_start()
    await bounded(request)
    assert b.ensure_ready_calls == 2


# -- persistent models -----------------------------------------------------------------


async def test_a_persistent_model_is_never_evicted_even_when_least_recently_used(
    devices: Devices,
) -> None:
    """p was never used and comes first; the swap still takes the room of a."""
    device = devices.make({"p": 400, "a": 400, "c": 400}, ready={"p", "a"}, persistent={"p"})
    device.hold_stops()
    arbiter, p, a, c = device.arbiter, device["p"], device["a"], device["c"]
    device.now("a").release()

    wanted = device.ask("c")
    await until(lambda: arbiter.queue_length == 1, "the request for c is queued")
    assert device.phases() == {"p": "ready", "a": "stopping"}

    await a.stop_requested()
    a.finish_stop()
    await c.start_requested()
    c.finish_start()
    await bounded(wanted)
    assert device.phases() == {"p": "ready", "c": "ready"}
    assert p.stop_reasons == []


async def test_gaming_mode_stops_persistent_models_too(devices: Devices) -> None:
    """What the code does: "never evicted" is about swaps; gaming frees the whole card,
    and lifting it reloads nothing by itself (the next request does)."""
    device = devices.make({"p": 400}, ready={"p"}, persistent={"p"})
    arbiter, p = device.arbiter, device["p"]

    arbiter.set_allowed(frozenset(), GAMING)
    await until(lambda: p.state is ModelState.STOPPED, "p has stopped")
    assert p.stop_reasons == [GAMING]

    arbiter.set_allowed(None, "")
    assert device.phases() == {}
    assert p.ensure_ready_calls == 0


# -- the swap log ----------------------------------------------------------------------


async def test_the_swap_log_gets_one_record_per_load_with_its_evictions_and_outcome(
    devices: Devices,
) -> None:
    """The log says what each load cost and how it ended, failed loads included."""
    device = devices.make({"a": 600, "b": 600, "c": 600})
    a, b, c = device["a"], device["b"], device["c"]

    request = device.ask("a")
    await a.start_requested()
    a.finish_start()
    (await bounded(request)).release()

    request = device.ask("b")
    await b.start_requested()
    b.finish_start()
    (await bounded(request)).release()

    request = device.ask("c")
    await c.start_requested()
    c.fail_start("out of memory")
    with pytest.raises(ModelUnavailable):
        await bounded(request)

    await until(lambda: len(device.swaps) == 3, "three loads are in the swap log")
    assert [(s.model, s.evicted, s.reason, s.outcome) for s in device.swaps] == [
        ("a", (), "device had room", "ready"),
        ("b", ("a",), "evicted a", "ready"),
        ("c", ("b",), "evicted b", "failed"),
    ]
    assert {s.device for s in device.swaps} == {"gpu0"}
    for swap in device.swaps[:2]:
        assert swap.ready is not None
        assert swap.duration_s is not None
        assert swap.duration_s >= 0
    assert device.swaps[2].ready is None
    assert device.swaps[2].duration_s is None


async def test_a_swap_log_that_fails_does_not_hold_up_the_device(
    devices: Devices, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording is best effort: the error is logged and the requests are served."""

    async def broken_sink(swap: SwapRecord) -> None:
        raise RuntimeError("the store is closed")

    device = devices.make({"a": 600, "b": 600}, on_swap=broken_sink)
    a, b = device["a"], device["b"]

    with caplog.at_level(logging.ERROR, logger="tierhost.devices"):
        request = device.ask("a")
        await a.start_requested()
        a.finish_start()
        (await bounded(request)).release()
        await until(
            lambda: any("could not record swap of a" in r.getMessage() for r in caplog.records),
            "the failed recording is logged",
        )

    request = device.ask("b")
    await b.start_requested()
    b.finish_start()
    await bounded(request)


async def test_a_swap_abandoned_by_its_request_is_not_counted_in_a_later_load(
    devices: Devices,
) -> None:
    """b's request evicts a, then leaves; much later b is loaded in c's place. That load
    evicted c only, and began when it was asked for."""
    device = devices.make({"a": 600, "b": 600, "c": 600}, ready={"a"})
    arbiter, a, b, c = device.arbiter, device["a"], device["b"], device["c"]
    a.hold_stops = True

    abandoned = device.ask("b")
    await a.stop_requested()
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(abandoned)
    a.finish_stop()
    await until(lambda: device.phases() == {}, "a has stopped")

    request = device.ask("c")
    await c.start_requested()
    c.finish_start()
    (await bounded(request)).release()

    asked_at = time.time()
    request = device.ask("b")
    await b.start_requested()
    b.finish_start()
    await bounded(request)

    await until(lambda: len(device.swaps) == 2, "the loads of c and b are in the swap log")
    assert arbiter.queue_length == 0
    swap = device.swaps[1]
    assert (swap.model, swap.evicted, swap.reason) == ("b", ("c",), "evicted c")
    assert swap.started >= asked_at


# -- before_load -----------------------------------------------------------------------


async def test_before_load_runs_first_with_the_memory_the_load_needs(devices: Devices) -> None:
    """The VRAM gate: the server is not started until the hook says the memory is free,
    and meanwhile the device already counts that memory as taken."""
    calls: list[tuple[str, Memory]] = []
    memory_free = asyncio.Event()

    async def before_load(model: str, memory: Memory) -> None:
        calls.append((model, memory))
        await asyncio.wait_for(memory_free.wait(), BOUND_S)

    device = devices.make({"b": 600}, before_load=before_load)
    b = device["b"]

    request = device.ask("b")
    await until(lambda: calls == [("b", {GPU: 600})], "before_load is called for b")
    assert b.ensure_ready_calls == 0
    assert device.phases() == {"b": "starting"}
    assert device.arbiter.used_mb(GPU) == 600

    memory_free.set()
    await b.start_requested()
    b.finish_start()
    await bounded(request)
    assert calls == [("b", {GPU: 600})]


# -- close and leases ------------------------------------------------------------------


async def test_close_fails_every_waiter_cancels_loads_and_stops_every_model(
    devices: Devices,
) -> None:
    """Shutdown answers every client, even one in flight does not keep its model up, and
    no task of the arbiter outlives it."""
    device = devices.make({"a": 400, "b": 400, "c": 400}, ready={"a"})
    arbiter, a, b, c = device.arbiter, device["a"], device["b"], device["c"]
    device.now("a")
    loading, blocked = device.ask("b"), device.ask("c")
    await b.start_requested()
    await until(lambda: arbiter.queue_length == 2, "both requests are queued")
    assert device.phases() == {"a": "ready", "b": "starting"}

    await bounded(arbiter.close())

    for request in (loading, blocked):
        with pytest.raises(ModelUnavailable, match="the host is shutting down"):
            await bounded(request)
    assert arbiter.queue_length == 0
    assert "b stopped" in device.journal, "b's start was not cancelled"
    assert {a.state, b.state, c.state} == {ModelState.STOPPED}
    assert all(m.stop_reasons[-1:] == ["host shutting down"] for m in (a, b, c))
    assert asyncio.all_tasks() == {asyncio.current_task()}, "a task outlived close()"


async def test_after_close_requests_are_refused_and_a_late_release_is_harmless(
    devices: Devices,
) -> None:
    """A request still running at shutdown may release its lease after close()."""
    device = devices.make({"a": 400}, ready={"a"})
    arbiter = device.arbiter
    running = device.now("a")

    await bounded(arbiter.close())
    with pytest.raises(ModelUnavailable, match="device gpu0 is shutting down"):
        await bounded(arbiter.acquire("a", BOUND_S))
    running.release()

    assert arbiter.in_flight["a"] == 0
    assert device.journal == ["a stopping", "a stopped"]


async def test_releasing_a_lease_twice_releases_it_once(devices: Devices) -> None:
    """A second release must not free a slot another request still holds."""
    device = devices.make({"a": 600, "b": 600}, ready={"a"})
    arbiter = device.arbiter
    first, second = device.now("a"), device.now("a")
    device.ask("b")
    await until(lambda: arbiter.queue_length == 1, "the request for b is queued")

    first.release()
    first.release()
    assert arbiter.in_flight["a"] == 1
    assert device.phases() == {"a": "ready"}, "a was evicted under a request in flight"

    second.release()
    assert arbiter.in_flight["a"] == 0
    assert device.phases() == {"a": "stopping"}


# -- idle unload -------------------------------------------------------------------------


def stop_seen(fake_process: FakeProcess) -> asyncio.Event:
    """Set when the fake reaches `stopped` (on the arbiter's own timer, here)."""
    seen = asyncio.Event()
    fake_process.subscribe(lambda t: seen.set() if t.new is ModelState.STOPPED else None)
    return seen


async def test_a_model_idle_for_its_idle_unload_s_is_stopped_by_its_own_timer(
    devices: Devices,
) -> None:
    device = devices.make({"a": 400, "b": 400}, ready={"a", "b"}, idle_unload_s={"a": 0.05})
    a_stopped = stop_seen(device["a"])
    device.now("a").release()
    device.now("b").release()
    await bounded(a_stopped.wait())
    assert device["a"].stop_reasons[-1].startswith("idle for 0.")
    assert device["a"].stop_reasons[-1].endswith(" s (idle_unload_s)")
    assert device["b"].state is ModelState.READY  # no idle_unload_s: it stays
    assert device.phases() == {"b": "ready"}


# -- two cards: a dense model on both, the MoE on gpu1, a small model on gpu0 ------------

TWO_CARDS = {"gpu0": 1000, "gpu1": 1000}
TWO_CARD_MODELS: dict[str, Memory] = {
    "dense": {"gpu0": 500, "gpu1": 500},
    "moe": {"gpu1": 900},
    "small": {"gpu0": 400},
}


async def test_the_dense_model_is_resident_on_both_cards_beside_the_small_one(
    devices: Devices,
) -> None:
    device = devices.make(TWO_CARD_MODELS, budget_mb=TWO_CARDS, ready={"small"})
    arbiter, dense = device.arbiter, device["dense"]
    wanted = device.ask("dense")
    await dense.start_requested()
    dense.finish_start()
    (await bounded(wanted)).release()

    assert [r.name for r in arbiter.residents("gpu0")] == ["dense", "small"]
    assert [r.name for r in arbiter.residents("gpu1")] == ["dense"]
    assert (arbiter.used_mb("gpu0"), arbiter.used_mb("gpu1")) == (900, 500)
    assert device.swaps[0].device == "gpu0+gpu1"


async def test_the_moe_evicts_the_dense_model_from_both_cards_and_the_small_one_stays(
    devices: Devices,
) -> None:
    device = devices.make(TWO_CARD_MODELS, budget_mb=TWO_CARDS, ready={"dense", "small"})
    device.hold_stops()
    arbiter, dense, moe = device.arbiter, device["dense"], device["moe"]
    small = device.now("small")  # busy on gpu0 all along: the MoE needs nothing of it

    wanted = device.ask("moe")
    await dense.stop_requested()
    assert dense.stop_reasons == ["evicted to make room for moe"]
    assert "moe is not loaded on gpu1 (it holds dense); a swap comes first" in arbiter.why_wait(
        "moe"
    )
    dense.finish_stop()
    await moe.start_requested()
    moe.finish_start()
    (await bounded(wanted)).release()

    assert device.phases() == {"moe": "ready", "small": "ready"}
    assert (arbiter.used_mb("gpu0"), arbiter.used_mb("gpu1")) == (400, 900)
    small.release()


async def test_gaming_mode_on_one_card_holds_the_dense_model_but_not_the_other_cards_work(
    devices: Devices,
) -> None:
    device = devices.make(TWO_CARD_MODELS, budget_mb=TWO_CARDS, ready={"dense", "small"})
    device.hold_stops()
    arbiter, dense = device.arbiter, device["dense"]
    arbiter.set_allowed(frozenset(), "gpu1 is in gaming mode", "gpu1")
    await dense.stop_requested()
    assert dense.stop_reasons == ["gpu1 is in gaming mode"]
    dense.finish_stop()

    held = device.ask("dense")
    device.now("small").release()  # gpu0 serves on
    await until(lambda: arbiter.queue_length == 1, "the dense request waits")
    assert arbiter.hold_reason("dense") == "gpu1 is in gaming mode"
    assert [w.held for w in arbiter.waiting("gpu0")] == [True]
    assert arbiter.waiting("gpu1")[0].model == "dense"

    arbiter.set_allowed(None, "", "gpu1")
    await dense.start_requested()
    dense.finish_start()
    (await bounded(held)).release()


async def test_two_spanning_models_alternate_on_both_cards(devices: Devices) -> None:
    halves = {"gpu0": 600, "gpu1": 600}
    device = devices.make({"x": halves, "y": halves}, budget_mb=TWO_CARDS, ready={"x"})
    device.hold_stops()
    x, y = device["x"], device["y"]
    busy = device.now("x")
    for_y = device.ask("y")
    await until(lambda: device.arbiter.queue_length == 1, "y waits for x's request")
    busy.release()
    for stopping, starting, wanted in ((x, y, for_y), (y, x, None)):
        if wanted is None:
            wanted = device.ask(starting.name)
        await stopping.stop_requested()
        stopping.finish_stop()
        await starting.start_requested()
        starting.finish_start()
        (await bounded(wanted)).release()
    assert device.journal == [
        "x stopping", "x stopped", "y starting", "y ready",
        "y stopping", "y stopped", "x starting", "x ready",
    ]  # fmt: skip


# -- yield_to_llm --------------------------------------------------------------------------


async def test_a_yielding_model_takes_no_fast_path_while_the_llm_works(devices: Devices) -> None:
    device = devices.make({"llm": 600, "tts": 200}, ready={"llm", "tts"}, yield_to_llm={"tts"})
    arbiter = device.arbiter
    words = device.now("llm")
    assert arbiter.try_acquire_now("tts") is None
    speech = device.ask("tts")
    await until(lambda: arbiter.queue_length == 1, "the speech waits")
    assert "tts yields to the LLM work on gpu0" in arbiter.why_wait("tts")
    more = await bounded(device.ask("llm"))  # more words go ahead of the waiting voice
    words.release()
    assert not speech.done(), "the voice spoke beside the words"
    more.release()
    (await bounded(speech)).release()
    device.now("tts").release()  # nothing of the LLM runs now: the fast path is open


# -- sleep instead of stop -------------------------------------------------------------

ASLEEP_ON_RAM = SleepPlan(asleep={GPU: 0}, ram_mb=100)


async def test_a_swap_puts_the_idle_sleeper_to_sleep_and_its_next_request_wakes_it(
    devices: Devices,
) -> None:
    sleep = {"a": ASLEEP_ON_RAM, "b": ASLEEP_ON_RAM}
    device = devices.make({"a": 600, "b": 600}, ready={"a"}, sleep=sleep)
    arbiter, a, b = device.arbiter, device["a"], device["b"]
    device.now("a").release()

    wanted = device.ask("b")
    await b.start_requested()
    assert device.phases() == {"a": "asleep", "b": "starting"}
    assert arbiter.used_mb(GPU) == 600  # a holds nothing on the card asleep
    b.finish_start()
    (await bounded(wanted)).release()

    lease = await bounded(device.ask("a"))

    assert fake(lease) is a and a.stop_reasons == [] and b.stop_reasons == []
    assert device.journal == [
        "a sleeping", "a asleep", "b starting", "b ready",
        "b sleeping", "b asleep", "a waking", "a ready",
    ]  # fmt: skip
    assert device.swaps[-1].reason.startswith("woken from sleep")


async def test_a_sleeper_that_does_not_fall_asleep_is_stopped_and_the_swap_goes_on(
    devices: Devices,
) -> None:
    device = devices.make({"a": 600, "b": 600}, ready={"a"}, sleep={"a": ASLEEP_ON_RAM})
    a, b = device["a"], device["b"]
    a.falls_asleep = False
    device.now("a").release()

    wanted = device.ask("b")
    await b.start_requested()
    b.finish_start()
    await bounded(wanted)

    assert a.state is ModelState.STOPPED
    assert device.phases() == {"b": "ready"}


async def test_with_ram_for_one_sleeper_the_least_recently_used_is_stopped(
    devices: Devices,
) -> None:
    room = SleepRoom(budget_mb=150)
    sleep = dict.fromkeys("abc", ASLEEP_ON_RAM)
    device = devices.make({"a": 600, "b": 600, "c": 600}, ready={"a"}, sleep=sleep, room=room)
    a, b, c = device["a"], device["b"], device["c"]
    device.now("a").release()
    wanted = device.ask("b")
    await b.start_requested()
    b.finish_start()
    (await bounded(wanted)).release()
    assert room.used_mb == 100  # a asleep

    wanted = device.ask("c")
    await c.start_requested()

    assert a.stop_reasons == ["stopped to make RAM for b to sleep (host.sleep_ram_mb)"]
    assert device.phases() == {"b": "asleep", "c": "starting"}
    assert room.used_mb == 100
    c.finish_start()
    await bounded(wanted)


async def test_swapping_back_and_forth_with_ram_for_one_sleeper_is_always_a_wake(
    devices: Devices,
) -> None:
    """The sleeper being woken leaves room for the one making way for it."""
    room = SleepRoom(budget_mb=150)
    sleep = {"a": ASLEEP_ON_RAM, "b": ASLEEP_ON_RAM}
    device = devices.make({"a": 600, "b": 600}, ready={"a"}, sleep=sleep, room=room)
    a, b = device["a"], device["b"]
    device.now("a").release()
    wanted = device.ask("b")
    await b.start_requested()
    b.finish_start()
    (await bounded(wanted)).release()

    for model in ["a", "b", "a"]:
        (await bounded(device.ask(model))).release()

    assert a.stop_reasons == [] and b.stop_reasons == []
    assert device.journal.count("a waking") == 2 and device.journal.count("b waking") == 1


async def test_a_model_that_sleeps_by_itself_is_stopped_until_idle_for_its_sleep_time(
    devices: Devices,
) -> None:
    """llama-server's --sleep-idle-seconds: only a server idle that long is asleep."""
    now = [1000.0]
    plan = SleepPlan(asleep={GPU: 0}, ram_mb=64, after_idle_s=30.0)
    device = devices.make(
        {"a": 600, "b": 600}, ready={"a"}, sleep={"a": plan, "b": plan}, clock=lambda: now[0]
    )
    a, b = device["a"], device["b"]
    device.now("a").release()  # used at 1000

    now[0] = 1010.0
    wanted = device.ask("b")
    await b.start_requested()
    assert a.state is ModelState.STOPPED  # idle 10 s of its 30: not asleep yet
    b.finish_start()
    (await bounded(wanted)).release()  # b used at 1010

    now[0] = 1045.0
    wanted = device.ask("a")
    await a.start_requested()
    assert b.state is ModelState.ASLEEP  # idle 35 s: asleep by itself, left so
    a.finish_start()
    await bounded(wanted)
