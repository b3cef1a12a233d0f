"""The device arbiter: the imperative shell around `host.core.scheduler.plan`.

One arbiter per device holds the queue of everything waiting for a model on that device
(proxied requests, the requests of running tasks, validator and classifier calls),
counts requests in flight, and carries out the scheduler's actions (admit, load,
evict). Devices that a model spans (a dense model split over two GPUs) share one
arbiter, so one plan decides for all the cards it needs: it is loaded when it fits on
every one, evicted from every one at once, and two spanning models can never hold a
card each while waiting for the other's. Devices no model spans keep one arbiter each.
The queue is served in the order the swap-minimising policy of
`host.core.batching.serve_order` gives it on a device with a budget (arrival order on
one without, where nothing competes). All of its bookkeeping changes in `_replan()`, a
plain function with no await in it, so no two decisions interleave; loads and stops run
as tasks that call `_replan()` again when they finish.

A model that can sleep (`SleepPlan`) is put to sleep instead of stopped when a swap
needs its room, once the box's RAM for sleepers (`host.models.sleepers.SleepRoom`) has
room for it, and stopped otherwise; the next load of it is a wake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from host.core import batching, scheduler
from host.models.process import ModelProcess, ModelState, StartFailed, Transition
from host.models.sleepers import SleepRoom

log = logging.getLogger("tierhost.devices")


class QueueFull(Exception):
    """The device's waiting queue is at its limit (HTTP 503)."""


class TooManyRequests(Exception):
    """The model's concurrency limit is reached (HTTP 429)."""


class WaitTimedOut(Exception):
    """The model did not become available within the queue timeout (HTTP 503)."""


class ModelUnavailable(Exception):
    """The model cannot be loaded; the message says why (HTTP 503)."""


@dataclass(frozen=True)
class SwapRecord:
    """One load onto a device, for the swap log."""

    model: str
    device: str
    started: float
    ready: float | None
    evicted: tuple[str, ...]
    reason: str
    outcome: str

    @property
    def duration_s(self) -> float | None:
        return None if self.ready is None else self.ready - self.started


SwapSink = Callable[[SwapRecord], Awaitable[None]]


Work = Literal["request", "task"]
"""What waits: an interactive request (the shorter bound on waiting) or a task's."""


@dataclass
class _Waiter:
    id: int
    model: str
    memory: scheduler.Memory
    future: asyncio.Future[None]
    forced: bool = False
    priority: int = 0
    max_wait_s: float | None = None
    work: Work = "request"
    enqueued: float = 0.0


@dataclass(frozen=True)
class Queued:
    """One waiter as the status shows it."""

    model: str
    work: Work
    priority: int
    waited_s: float
    max_wait_s: float | None
    held: bool
    """A device's mode holds its model back."""


@dataclass(frozen=True)
class SleepPlan:
    """How a model sleeps, as the arbiter counts it."""

    asleep: scheduler.Memory
    """What it holds on each of its devices asleep."""
    ram_mb: int
    """What it holds in RAM asleep."""
    after_idle_s: float | None = None
    """It sleeps by itself after this long idle (llama-server), and can be left asleep
    only then; None: it is put to sleep on request (vLLM)."""


@dataclass
class _PendingSwap:
    started: float
    evicted: list[str] = field(default_factory=list)


class Lease:
    """A request's claim on a ready model: hold it while the request runs."""

    def __init__(self, arbiter: DeviceArbiter, model: ModelProcess) -> None:
        self._arbiter = arbiter
        self.model = model
        self._released = False

    @property
    def base_url(self) -> str:
        return self.model.base_url

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._arbiter._release(self.model.name)


LoadGate = Callable[[str, scheduler.Memory], Awaitable[None]]
"""Before a load: wait until the memory the model needs on each card is really free."""


class DeviceArbiter:
    """Time-shares one device, or the devices that models span, between their models."""

    def __init__(
        self,
        budgets: Mapping[str, int | None],
        models: dict[str, ModelProcess],
        memory: Mapping[str, scheduler.Memory],
        persistent: set[str],
        max_concurrency: dict[str, int],
        *,
        max_queue: int = 256,
        on_swap: SwapSink | None = None,
        before_load: LoadGate | None = None,
        idle_unload_s: dict[str, float] | None = None,
        yield_to_llm: set[str] | None = None,
        sleep: Mapping[str, SleepPlan] | None = None,
        room: SleepRoom | None = None,
        policy: batching.Policy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budgets = dict(budgets)
        """Each device's budget in MiB (None: no budget, the CPU)."""
        self.name = "+".join(self.budgets)
        self.models = models
        self._memory = {name: dict(parts) for name, parts in memory.items()}
        self._persistent = persistent
        self._max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._on_swap = on_swap
        self._before_load = before_load
        """On a real card: wait until the memory a load needs is really free (NVML)."""
        self._idle_unload_s = idle_unload_s or {}
        self._yields = yield_to_llm or set()
        """Models whose requests wait for the LLM work on their devices."""
        self._sleep = dict(sleep or {})
        """Models that sleep instead of stopping, and how."""
        self._room = room
        """The box's RAM for sleepers; None: no limit."""
        self._putting_to_sleep: set[str] = set()
        self.policy = policy or batching.Policy()
        self._clock = clock
        """Monotonic seconds: what waits and residencies are measured in (a test's own)."""
        self.order: batching.Order | None = None
        """The order the waiting queue was last served in, and the rule that chose it
        (None on a device without a budget, which serves in arrival order)."""
        self._since: dict[str, float] = {}
        """When each model resident or loading on the device began its residency."""
        self._idle_timer: asyncio.TimerHandle | None = None
        self._waiters: list[_Waiter] = []
        self._ids = itertools.count(1)
        self.in_flight: dict[str, int] = dict.fromkeys(models, 0)
        self._last_used: dict[str, float] = dict.fromkeys(models, 0.0)
        self._loading: set[str] = set()
        self._evicting: set[str] = set()
        self._pending_swaps: dict[str, _PendingSwap] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.allowed: dict[str, frozenset[str]] = {}
        """The models each device's mode allows; a device not named allows any."""
        self.mode_reasons: dict[str, str] = {}
        """Why a device holds models back, e.g. "gpu0 is in gaming mode"; none in auto."""
        for process in models.values():
            process.subscribe(self._on_transition)
            plan = self._sleep.get(process.name)
            if room is not None and plan is not None:
                room.join(process, plan.ram_mb, self)

    # -- observation -------------------------------------------------------------

    def queued(self, model: str) -> int:
        return sum(1 for w in self._waiters if w.model == model)

    @property
    def queue_length(self) -> int:
        return len(self._waiters)

    @property
    def contended(self) -> bool:
        """Whether its models compete for memory (a device with a budget swaps)."""
        return any(b is not None for b in self.budgets.values())

    def devices_of(self, model: str) -> str:
        """Where a model lives, in words: "gpu0", or "gpu0+gpu1" for a spanning one."""
        return "+".join(self._memory[model])

    def residents(self, device: str | None = None) -> list[scheduler.Resident]:
        """What is resident (or loading, or stopping): on `device`, or on any."""
        result = []
        now = self._clock()
        for name, process in self.models.items():
            state = process.state
            if name in self._evicting:
                phase: scheduler.ResidentPhase = "stopping"
            elif name in self._putting_to_sleep or state is ModelState.SLEEPING:
                phase = "sleeping"
            elif name in self._loading or state in (ModelState.STARTING, ModelState.WAKING):
                phase = "starting"
            elif state is ModelState.READY:
                phase = "ready"
            elif state is ModelState.ASLEEP:
                phase = "asleep"
            elif state is ModelState.STOPPING:
                phase = "stopping"
            else:
                continue
            if device is not None and device not in self._memory[name]:
                continue
            plan = self._sleep.get(name)
            asleep = None if plan is None else plan.asleep
            if phase == "ready" and not self._may_sleep_now(name, now):
                asleep = None  # a swap stops it
            held = self._memory[name]
            if plan is not None and process.holds_asleep and phase in ("asleep", "stopping"):
                held = dict(plan.asleep)  # asleep, or stopping from asleep
            result.append(
                scheduler.Resident(
                    name=name,
                    memory=held,
                    phase=phase,
                    in_flight=self.in_flight[name],
                    last_used=self._last_used[name],
                    persistent=name in self._persistent,
                    idle_unload_s=self._idle_unload_s.get(name),
                    yields=name in self._yields,
                    asleep=asleep,
                )
            )
        return result

    def _may_sleep_now(self, model: str, now: float) -> bool:
        """Whether a swap may put `model` to sleep now: one asked to sleep always, one
        that sleeps by itself once idle for its sleep time (it is asleep by then)."""
        plan = self._sleep.get(model)
        if plan is None:
            return False
        return plan.after_idle_s is None or now - self._last_used[model] >= plan.after_idle_s

    def last_used(self, model: str) -> float:
        return self._last_used[model]

    def leaving_sleep(self, model: str) -> bool:
        """Whether an asleep `model` is on its way out of RAM: being woken or wanted by a
        waiter (a wake comes), or being stopped."""
        return (
            self.models[model].state is not ModelState.ASLEEP
            or model in self._loading
            or model in self._evicting
            or any(w.model == model for w in self._waiters)
        )

    async def stop_sleeper(self, model: str, reason: str) -> None:
        """Stop an asleep model for the RAM room (nothing, if it is leaving already)."""
        if self.leaving_sleep(model):
            return
        self._evicting.add(model)
        await self._stop(model, reason)

    def unload(self, model: str, reason: str) -> tuple[str | None, asyncio.Future[None] | None]:
        """Stop `model` on request (the dashboard's Unload): why not, or None and the stop
        under way (None where it is stopped already or on its way out). A model serving
        or wanted by a request, loading, or persistent is not stopped."""
        state = self.models[model].state
        if model in self._persistent:
            return f"{model} is persistent (persistent = true in the config): it stays", None
        if self.in_flight[model]:
            n = self.in_flight[model]
            return f"{model} is serving {n} request{'s' if n > 1 else ''}; try when done", None
        if self.queued(model):
            return f"requests are waiting for {model}; it would only be loaded again", None
        if model in self._loading or state in (ModelState.STARTING, ModelState.WAKING):
            return f"{model} is loading; unload it once it is ready", None
        if state is ModelState.STOPPED or model in self._evicting:
            return None, None
        if model in self._putting_to_sleep or state is ModelState.SLEEPING:
            return f"{model} is falling asleep; unload it once it is asleep", None
        self._evicting.add(model)
        stop = asyncio.ensure_future(self._stop(model, reason))
        self._tasks.add(stop)
        stop.add_done_callback(self._tasks.discard)
        return None, stop

    def used_mb(self, device: str) -> int:
        return scheduler.used_mb(self.residents(device), device)

    def snapshot(self) -> scheduler.Snapshot:
        return scheduler.Snapshot(
            budgets=self.budgets,
            residents=self.residents(),
            waiters=[
                scheduler.Waiter(w.id, w.model, w.memory, w.forced, w.model in self._yields)
                for w in self._waiters
            ],
            allowed=self.allowed,
            now=self._clock(),
        )

    def waiting(self, device: str | None = None) -> list[Queued]:
        """The waiting queue in the order it is served (see `order`), for the status: what
        waits for `device`, or all of it."""
        waiters = [w for w in self._waiters if device is None or device in w.memory]
        if self.order is not None:
            by_id = {w.id: w for w in waiters}
            waiters = [by_id.pop(i) for i in self.order.ids if i in by_id]
            waiters += [w for w in self._waiters if w.id in by_id]
        now = self._clock()
        return [
            Queued(
                w.model,
                w.work,
                w.priority,
                now - w.enqueued,
                w.max_wait_s,
                not self.permits(w.model, w.forced),
            )
            for w in waiters
        ]

    def _serving(self, residents: list[scheduler.Resident]) -> dict[str, float]:
        """Models resident or loading, and not on their way out, with the start of their
        residency (one that was up before the arbiter saw it start counts as settled)."""
        return {
            r.name: self._since.get(r.name, -math.inf)
            for r in residents
            if r.phase in ("starting", "ready")
        }

    def _queued_work(self) -> list[batching.QueuedTask]:
        return [
            batching.QueuedTask(
                w.id,
                w.model,
                self.name,
                w.priority,
                w.enqueued,
                w.max_wait_s,
                self.permits(w.model, w.forced),
            )
            for w in self._waiters
        ]

    def why_wait(self, model: str) -> str:
        """Why a request for `model` cannot be served at once, in words for the client
        (a streaming client is told this before its answer starts)."""
        state = self.models[model].state
        on = self.devices_of(model)
        if model in self._yields and self._llm_working_beside(model):
            where = f"{model} yields to the LLM work on {on} (yield_to_llm) and runs after it"
        elif model in self._evicting or state is ModelState.STOPPING:
            where = f"{model} is stopping on {on}"
        elif model in self._putting_to_sleep or state is ModelState.SLEEPING:
            where = f"{model} is falling asleep on {on}; it is woken once asleep"
        elif state is ModelState.WAKING:
            where = f"{model} is waking on {on}"
        elif state is ModelState.ASLEEP and model not in self._loading:
            where = f"{model} is asleep on {on}; waking it comes first"
        elif model in self._loading or state is ModelState.STARTING:
            where = f"{model} is loading on {on}"
        elif state is ModelState.READY:
            where = f"{model} is loaded on {on}, with work queued before it"
        else:
            mine = set(self._memory[model])
            others = [r.name for r in self.residents() if r.name != model and mine & set(r.memory)]
            holds = f" ({'they hold' if len(mine) > 1 else 'it holds'} {', '.join(others)})"
            where = f"{model} is not loaded on {on}{holds if others else ''}; a swap comes first"
        ahead = len(self._waiters)
        queued = f"; {ahead} {'request waits' if ahead == 1 else 'requests wait'} on {self.name}"
        rule = ""
        if self.order is not None and self.order.choice.model not in (None, model):
            rule = f"; served first: {self.order.choice.why}"
        return where + (queued if ahead else "") + rule

    def _llm_working_beside(self, model: str) -> bool:
        """Whether LLM work runs on one of the devices of `model` (which yields to it)."""
        return bool(scheduler.llm_devices(self.snapshot()) & set(self._memory[model]))

    def permits(self, model: str, forced: bool = False) -> bool:
        return forced or not self._holding(model)

    def _holding(self, model: str) -> list[str]:
        """The devices of `model` whose mode does not allow it."""
        return [
            d for d in self._memory[model] if d in self.allowed and model not in self.allowed[d]
        ]

    def hold_reason(self, model: str) -> str:
        """Why `model` is held back ("gpu1 is in gaming mode"); empty when it is not."""
        return "; ".join(self.mode_reasons.get(d) or f"{d}'s mode" for d in self._holding(model))

    def set_allowed(
        self, allowed: frozenset[str] | None, reason: str, device: str | None = None
    ) -> None:
        """Apply a device's mode (`device` may be left out where there is one): None allows
        every model; releases what is no longer allowed."""
        if device is None:
            (device,) = self.budgets
        if allowed is None:
            self.allowed.pop(device, None)
        else:
            self.allowed[device] = allowed
        if reason:
            self.mode_reasons[device] = reason
        else:
            self.mode_reasons.pop(device, None)
        self._replan()

    # -- requests ----------------------------------------------------------------

    def try_acquire_now(self, model: str, forced: bool = False) -> Lease | None:
        """The fast path: claim a ready model at once when nobody is waiting on the device."""
        if (
            self._waiters
            or self._closed
            or not self.permits(model, forced)
            or model in self._evicting
            or model in self._putting_to_sleep
            or self.models[model].state is not ModelState.READY
            or self.in_flight[model] >= self._max_concurrency[model]
            or (model in self._yields and self._llm_working_beside(model))
        ):
            return None
        self.in_flight[model] += 1
        self._last_used[model] = self._clock()
        return Lease(self, self.models[model])

    async def acquire(
        self,
        model: str,
        timeout: float,
        forced: bool = False,
        *,
        priority: int | None = None,
        work: Work = "request",
    ) -> Lease:
        """Wait until `model` is ready and claim it; cancel-safe (a dropped client leaves).

        A request waits at most the policy's `request_max_wait_s` for another model's
        batch, a task's request `max_wait_s`; without a priority of its own a request
        gets the policy's `request_priority`, a task's request 0."""
        if self._closed:
            raise ModelUnavailable(f"device {self.devices_of(model)} is shutting down")
        limit = self._max_concurrency[model]
        if self.in_flight[model] + self.queued(model) >= limit:
            raise TooManyRequests(
                f"model {model} already has {limit} requests in flight or waiting "
                "(its max_concurrency); retry shortly or raise the limit in the config"
            )
        if len(self._waiters) >= self.max_queue:
            raise QueueFull(
                f"device {self.name} has {self.max_queue} requests waiting (host.max_queue); "
                "retry later"
            )
        loop = asyncio.get_running_loop()
        policy = self.policy
        waiter = _Waiter(
            next(self._ids),
            model,
            self._memory[model],
            loop.create_future(),
            forced=forced,
            priority=(policy.request_priority if work == "request" else 0)
            if priority is None
            else priority,
            max_wait_s=policy.request_max_wait_s if work == "request" else policy.max_wait_s,
            work=work,
            enqueued=self._clock(),
        )
        self._waiters.append(waiter)
        self._replan()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except BaseException as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                if waiter.future.exception() is None:
                    self._release(model)  # admitted just as we gave up: hand it back
            else:
                waiter.future.cancel()
            self._drop(waiter)
            if isinstance(exc, TimeoutError):
                why = f"; {self.hold_reason(model)}" if not self.permits(model, forced) else ""
                raise WaitTimedOut(
                    f"model {model} was not available within {timeout:g} s "
                    f"({self.queue_length} requests waiting on device {self.name}{why})"
                ) from None
            raise
        return Lease(self, self.models[model])

    def _release(self, model: str) -> None:
        self.in_flight[model] -= 1
        self._last_used[model] = self._clock()
        self._replan()

    def _drop(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            self._replan()

    # -- the single writer -------------------------------------------------------

    def _on_transition(self, transition: Transition) -> None:
        name = transition.model
        if transition.new in (ModelState.STARTING, ModelState.READY, ModelState.WAKING):
            self._since.setdefault(name, self._clock())
        elif transition.new in (ModelState.FAILED, ModelState.STOPPED, ModelState.ASLEEP):
            self._since.pop(name, None)
        if transition.new in (
            ModelState.FAILED,
            ModelState.STOPPED,
            ModelState.READY,
            ModelState.ASLEEP,
        ):
            self._replan()

    def _replan(self) -> None:
        if self._closed:
            return
        waited_for = {w.model for w in self._waiters}
        for model in [m for m in self._pending_swaps if m not in waited_for]:
            del self._pending_swaps[model]  # its requests left: the next load is a new swap
        snapshot = self.snapshot()
        look_again: float | None = None
        if self.contended and self._waiters:
            work = self._queued_work()
            serving = self._serving(list(snapshot.residents))
            self.order = batching.serve_order(
                work, serving, self.in_flight, snapshot.now, self.policy
            )
            look_again = batching.next_look_at(work, serving, snapshot.now, self.policy)
            by_id = {w.id: w for w in snapshot.waiters}
            snapshot = dataclasses.replace(
                snapshot, waiters=[by_id[i] for i in self.order.ids if isinstance(i, int)]
            )
        elif self.contended:
            self.order = None
        for action in scheduler.plan(snapshot):
            match action:
                case scheduler.Admit(waiter_ids):
                    self._admit(set(waiter_ids))
                case scheduler.Load(model):
                    self._loading.add(model)
                    self._since[model] = snapshot.now
                    swap = self._pending_swaps.pop(model, None) or _PendingSwap(time.time())
                    self._spawn(self._load(model, swap))
                case scheduler.Evict(model, for_model):
                    self._evicting.add(model)
                    swap = self._pending_swaps.setdefault(for_model, _PendingSwap(time.time()))
                    swap.evicted.append(model)
                    self._spawn(self._stop(model, f"evicted to make room for {for_model}"))
                case scheduler.Sleep(model, for_model):
                    self._putting_to_sleep.add(model)
                    swap = self._pending_swaps.setdefault(for_model, _PendingSwap(time.time()))
                    swap.evicted.append(model)
                    self._spawn(self._put_to_sleep(model, for_model))
                case scheduler.Release(model):
                    self._evicting.add(model)
                    why = self.hold_reason(model) or "released by the device mode"
                    self._spawn(self._stop(model, why))
                case scheduler.Unload(model, idle_s):
                    self._evicting.add(model)
                    self._spawn(self._stop(model, f"idle for {idle_s:.1f} s (idle_unload_s)"))
                case scheduler.Reject(waiter_ids, reason):
                    self._fail_waiters(set(waiter_ids), ModelUnavailable(reason))

        due = [t for t in (scheduler.next_unload_at(snapshot), look_again) if t is not None]
        self._look_again_at(min(due, default=None))

    def _look_again_at(self, due: float | None) -> None:
        """Replan when the next idle model falls due (one timer, moved as plans change)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # planned outside the loop (a test's setup): no one to wake
            return
        self._idle_timer = loop.call_later(max(0.0, due - self._clock()), self._replan)

    def _admit(self, ids: set[int]) -> None:
        now = self._clock()
        for waiter in [w for w in self._waiters if w.id in ids]:
            self._waiters.remove(waiter)
            self.in_flight[waiter.model] += 1
            self._last_used[waiter.model] = now
            if not waiter.future.done():
                waiter.future.set_result(None)
            else:  # the waiter left between the plan and now
                self.in_flight[waiter.model] -= 1

    def _fail_waiters(self, ids: set[int], error: Exception) -> None:
        for waiter in [w for w in self._waiters if w.id in ids]:
            self._waiters.remove(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, model: str, swap: _PendingSwap) -> None:
        process = self.models[model]
        reason = "evicted " + ", ".join(swap.evicted) if swap.evicted else "device had room"
        need = dict(self._memory[model])
        plan = self._sleep.get(model)
        if process.state is ModelState.ASLEEP and plan is not None:
            reason = f"woken from sleep; {reason}"
            need = {d: mb - plan.asleep.get(d, 0) for d, mb in need.items()}
        where = self.devices_of(model)
        try:
            if self._before_load is not None:
                await self._before_load(model, need)
            await process.ensure_ready()
        except Exception as exc:  # StartFailed, or a bug: never a device stuck "starting"
            self._loading.discard(model)
            if isinstance(exc, StartFailed):
                message = str(exc)
            else:
                log.exception("loading %s failed unexpectedly", model)
                message = f"model {model} could not be loaded: {type(exc).__name__}: {exc}"
            ids = {w.id for w in self._waiters if w.model == model}
            self._fail_waiters(ids, ModelUnavailable(message))
            await self._record(
                SwapRecord(model, where, swap.started, None, tuple(swap.evicted), reason, "failed")
            )
            self._replan()
            return
        except asyncio.CancelledError:
            self._loading.discard(model)
            raise
        self._loading.discard(model)
        self._replan()
        await self._record(
            SwapRecord(
                model, where, swap.started, time.time(), tuple(swap.evicted), reason, "ready"
            )
        )

    async def _stop(self, model: str, reason: str) -> None:
        """Stop a model marked `_evicting` (an eviction, a release, an unload), then plan
        again: its memory is free."""
        try:
            await self.models[model].stop(reason)
        finally:
            self._evicting.discard(model)
            self._replan()

    async def _put_to_sleep(self, model: str, for_model: str) -> None:
        """Sleep instead of stop, where the RAM for sleepers has room; stop otherwise."""
        process = self.models[model]
        room = self._room
        try:
            if room is None or await room.make_room(model):
                await process.sleep(f"asleep to make room for {for_model}")
            else:
                await process.stop(
                    f"evicted to make room for {for_model} (no RAM left for it to sleep in: "
                    "host.sleep_ram_mb)"
                )
        finally:
            if room is not None:
                room.done(model)
            self._putting_to_sleep.discard(model)
            self._replan()

    async def _record(self, record: SwapRecord) -> None:
        if self._on_swap is None:
            return
        try:
            await self._on_swap(record)
        except Exception:
            log.exception("could not record swap of %s", record.model)

    async def close(self) -> None:
        """Fail every waiter, stop loads under way, stop every model of the device."""
        self._closed = True
        self._look_again_at(None)
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(ModelUnavailable("the host is shutting down"))
        self._waiters.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(p.stop("host shutting down") for p in self.models.values()),
            return_exceptions=True,
        )
