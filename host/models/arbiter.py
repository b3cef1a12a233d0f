"""The device arbiter: the imperative shell around `host.core.scheduler.plan`.

One arbiter per device holds the FIFO of requests waiting for a model on that device,
counts requests in flight, and carries out the scheduler's actions (admit, load,
evict). All of its bookkeeping changes in `_replan()`, a plain function with no await
in it, so no two decisions interleave; loads and stops run as tasks that call
`_replan()` again when they finish.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from host.core import scheduler
from host.models.process import ModelProcess, ModelState, StartFailed, Transition

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


@dataclass
class _Waiter:
    id: int
    model: str
    memory_mb: int
    future: asyncio.Future[None]
    forced: bool = False
    enqueued: float = field(default_factory=time.monotonic)


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


class DeviceArbiter:
    """Time-shares one device between its managed models."""

    def __init__(
        self,
        name: str,
        budget_mb: int | None,
        models: dict[str, ModelProcess],
        memory_mb: dict[str, int],
        persistent: set[str],
        max_concurrency: dict[str, int],
        *,
        max_queue: int = 256,
        on_swap: SwapSink | None = None,
        before_load: Callable[[str, int], Awaitable[None]] | None = None,
        idle_unload_s: dict[str, float] | None = None,
    ) -> None:
        self.name = name
        self.budget_mb = budget_mb
        self.models = models
        self._memory = memory_mb
        self._persistent = persistent
        self._max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._on_swap = on_swap
        self._before_load = before_load
        """On a real card: wait until the memory a load needs is really free (NVML)."""
        self._idle_unload_s = idle_unload_s or {}
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
        self.allowed: frozenset[str] | None = None
        self.mode_reason = ""
        """Why models are held back, e.g. "gpu0 is in gaming mode"; empty in auto."""
        for process in models.values():
            process.subscribe(self._on_transition)

    # -- observation -------------------------------------------------------------

    def queued(self, model: str) -> int:
        return sum(1 for w in self._waiters if w.model == model)

    @property
    def queue_length(self) -> int:
        return len(self._waiters)

    def residents(self) -> list[scheduler.Resident]:
        result = []
        for name, process in self.models.items():
            if name in self._evicting:
                phase: scheduler.ResidentPhase = "stopping"
            elif name in self._loading or process.state is ModelState.STARTING:
                phase = "starting"
            elif process.state is ModelState.READY:
                phase = "ready"
            elif process.state is ModelState.STOPPING:
                phase = "stopping"
            else:
                continue
            result.append(
                scheduler.Resident(
                    name=name,
                    memory_mb=self._memory[name],
                    phase=phase,
                    in_flight=self.in_flight[name],
                    last_used=self._last_used[name],
                    persistent=name in self._persistent,
                    idle_unload_s=self._idle_unload_s.get(name),
                )
            )
        return result

    def used_mb(self) -> int:
        return scheduler.used_mb(self.residents())

    def snapshot(self) -> scheduler.Snapshot:
        return scheduler.Snapshot(
            budget_mb=self.budget_mb,
            residents=self.residents(),
            waiters=[scheduler.Waiter(w.id, w.model, w.memory_mb, w.forced) for w in self._waiters],
            allowed=self.allowed,
            now=time.monotonic(),
        )

    def permits(self, model: str, forced: bool = False) -> bool:
        return self.allowed is None or forced or model in self.allowed

    def set_allowed(self, allowed: frozenset[str] | None, reason: str) -> None:
        """Apply a device mode: None allows every model; releases what is no longer allowed."""
        self.allowed = allowed
        self.mode_reason = reason
        self._replan()

    # -- requests ----------------------------------------------------------------

    def try_acquire_now(self, model: str, forced: bool = False) -> Lease | None:
        """The fast path: claim a ready model at once when nobody is waiting on the device."""
        if (
            self._waiters
            or self._closed
            or not self.permits(model, forced)
            or model in self._evicting
            or self.models[model].state is not ModelState.READY
            or self.in_flight[model] >= self._max_concurrency[model]
        ):
            return None
        self.in_flight[model] += 1
        self._last_used[model] = time.monotonic()
        return Lease(self, self.models[model])

    async def acquire(self, model: str, timeout: float, forced: bool = False) -> Lease:
        """Wait until `model` is ready and claim it; cancel-safe (a dropped client leaves)."""
        if self._closed:
            raise ModelUnavailable(f"device {self.name} is shutting down")
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
        waiter = _Waiter(
            next(self._ids), model, self._memory[model], loop.create_future(), forced=forced
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
                why = f"; {self.mode_reason}" if not self.permits(model, forced) else ""
                raise WaitTimedOut(
                    f"model {model} was not available within {timeout:g} s "
                    f"({self.queue_length} requests waiting on device {self.name}{why})"
                ) from None
            raise
        return Lease(self, self.models[model])

    def _release(self, model: str) -> None:
        self.in_flight[model] -= 1
        self._last_used[model] = time.monotonic()
        self._replan()

    def _drop(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            self._replan()

    # -- the single writer -------------------------------------------------------

    def _on_transition(self, transition: Transition) -> None:
        if transition.new in (ModelState.FAILED, ModelState.STOPPED, ModelState.READY):
            self._replan()

    def _replan(self) -> None:
        if self._closed:
            return
        waited_for = {w.model for w in self._waiters}
        for model in [m for m in self._pending_swaps if m not in waited_for]:
            del self._pending_swaps[model]  # its requests left: the next load is a new swap
        snapshot = self.snapshot()
        for action in scheduler.plan(snapshot):
            match action:
                case scheduler.Admit(waiter_ids):
                    self._admit(set(waiter_ids))
                case scheduler.Load(model):
                    self._loading.add(model)
                    swap = self._pending_swaps.pop(model, None) or _PendingSwap(time.time())
                    self._spawn(self._load(model, swap))
                case scheduler.Evict(model, for_model):
                    self._evicting.add(model)
                    swap = self._pending_swaps.setdefault(for_model, _PendingSwap(time.time()))
                    swap.evicted.append(model)
                    self._spawn(self._evict(model, for_model))
                case scheduler.Release(model):
                    self._evicting.add(model)
                    self._spawn(self._release_for_mode(model))
                case scheduler.Unload(model, idle_s):
                    self._evicting.add(model)
                    self._spawn(self._unload_idle(model, idle_s))
                case scheduler.Reject(waiter_ids, reason):
                    self._fail_waiters(set(waiter_ids), ModelUnavailable(reason))

        self._look_again_at(scheduler.next_unload_at(snapshot))

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
        self._idle_timer = loop.call_later(max(0.0, due - time.monotonic()), self._replan)

    def _admit(self, ids: set[int]) -> None:
        now = time.monotonic()
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
        try:
            if self._before_load is not None:
                await self._before_load(model, self._memory[model])
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
                SwapRecord(
                    model, self.name, swap.started, None, tuple(swap.evicted), reason, "failed"
                )
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
                model, self.name, swap.started, time.time(), tuple(swap.evicted), reason, "ready"
            )
        )

    async def _evict(self, model: str, for_model: str) -> None:
        try:
            await self.models[model].stop(f"evicted to make room for {for_model}")
        finally:
            self._evicting.discard(model)
            self._replan()

    async def _unload_idle(self, model: str, idle_s: float) -> None:
        try:
            await self.models[model].stop(f"idle for {idle_s:.1f} s (idle_unload_s)")
        finally:
            self._evicting.discard(model)
            self._replan()

    async def _release_for_mode(self, model: str) -> None:
        try:
            await self.models[model].stop(self.mode_reason or "released by the device mode")
        finally:
            self._evicting.discard(model)
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
