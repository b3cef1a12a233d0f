"""A stand-in for `ModelProcess` whose starts and stops end when the test says so.

The device arbiter uses a small part of `ModelProcess`: `name`, `state`, `is_ready()`,
`base_url`, `subscribe()`, `ensure_ready()`, `stop()`, and for a model that sleeps
`sleep()` and `holds_asleep`. `FakeProcess` has that surface
and behaves like the real owner of a server where the arbiter can tell: every state
change goes through one `_enter()` that tells the subscribers at once, starts and stops
are serialised by one lock, a cancelled start ends `stopped`, a failed one ends `failed`
and raises `StartFailed`. What a real server decides by itself (when it answers
/health, whether it dies while loading, how long it takes to exit) is decided here by
the test, so every interleaving of loads, stops and requests happens on purpose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

from host.models.process import RESIDENT_STATES, Listener, ModelState, StartFailed, Transition

BOUND_S = 5.0
"""The longest any one step of a test may wait: everything here is in process, so a
step that takes longer is a step that will never happen."""


class FakeProcess:
    """One fake model server: starts wait for the test, stops finish at once unless held."""

    def __init__(self, name: str, port: int, journal: list[str], *, ready: bool = False) -> None:
        self.name = name
        self.port = port
        self.journal = journal
        """Shared by the fakes of one device: "<model> <new state>" for every transition,
        so a test can read the order of stops and starts across models."""
        self.state = ModelState.READY if ready else ModelState.STOPPED
        self.hold_stops = False
        """When set, a stop waits in `stopping` until `finish_stop()`: the memory of a
        server is only free once it has exited, and a test may want to look at that time."""
        self.ensure_ready_calls = 0
        self.stop_reasons: list[str] = []
        self.falls_asleep = True
        """Whether a sleep works; when not, it is stopped instead, as a real one is."""
        self.holds_asleep = False
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._start: asyncio.Future[BaseException | None] | None = None
        self._stop: asyncio.Future[None] | None = None
        self._start_pending = asyncio.Event()
        self._stop_pending = asyncio.Event()

    # -- the surface the arbiter uses ----------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_ready(self) -> bool:
        return self.state is ModelState.READY

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def ensure_ready(self) -> str:
        """Start, then wait for `finish_start()` or `fail_start()` from the test."""
        self.ensure_ready_calls += 1
        if self.is_ready():
            return self.base_url
        async with self._lock:
            if self.is_ready():
                return self.base_url
            if self.state is ModelState.ASLEEP:  # a wake: at once, the same server
                self._enter(ModelState.WAKING, "woken for a request")
                self._enter(ModelState.READY, "woken")
                return self.base_url
            outcome: asyncio.Future[BaseException | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._start = outcome
            self._enter(ModelState.STARTING, "start requested")
            self._start_pending.set()
            try:
                error = await outcome
            except asyncio.CancelledError:
                self._enter(ModelState.STOPPED, "start cancelled")
                raise
            finally:
                self._start = None
                self._start_pending.clear()
            if error is not None:
                self._enter(ModelState.FAILED, str(error))
                raise error
            self._enter(ModelState.READY, "healthy")
            return self.base_url

    async def stop(self, reason: str = "stopped") -> None:
        """Like the real stop: a no-op unless resident, `stopping` then `stopped`."""
        self.stop_reasons.append(reason)
        async with self._lock:
            if self.state not in RESIDENT_STATES:
                if self.state is ModelState.FAILED:
                    self._enter(ModelState.STOPPED, reason)
                return
            self._enter(ModelState.STOPPING, reason)
            if self.hold_stops:
                exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._stop = exited
                self._stop_pending.set()
                try:
                    await exited  # cancelled: stays `stopping`, as a real server would
                finally:
                    self._stop = None
                    self._stop_pending.clear()
            self._enter(ModelState.STOPPED, reason)

    async def sleep(self, reason: str) -> bool:
        """Like the real sleep: `sleeping` then `asleep`, or stopped where it cannot."""
        if self.state is not ModelState.READY or not self.falls_asleep:
            await self.stop(reason)
            return False
        async with self._lock:
            self._enter(ModelState.SLEEPING, reason)
            self._enter(ModelState.ASLEEP, reason)
        return True

    # -- what the test decides -----------------------------------------------------

    async def start_requested(self) -> None:
        """Return once a start of this model is waiting for the test's verdict."""
        await self._bounded(self._start_pending.wait(), "a start")

    async def stop_requested(self) -> None:
        """Return once a held stop of this model is waiting for `finish_stop()`."""
        await self._bounded(self._stop_pending.wait(), "a held stop")

    def finish_start(self) -> None:
        """The server answers /health: the start ends `ready`."""
        self._pending_start().set_result(None)

    def fail_start(self, reason: str) -> None:
        """The server dies while loading: the start ends `failed` with `StartFailed`."""
        error = StartFailed(self.name, reason, Path(f"/logs/{self.name}.log"))
        self._pending_start().set_result(error)

    def finish_stop(self) -> None:
        """The held server exits: the stop ends `stopped`."""
        if self._stop is None:
            raise AssertionError(f"no held stop of {self.name} to finish")
        self._stop.set_result(None)

    def let_everything_through(self) -> None:
        """For teardown: stops no longer wait, and a held stop finishes."""
        self.hold_stops = False
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    # -- internals -----------------------------------------------------------------

    def _pending_start(self) -> asyncio.Future[BaseException | None]:
        if self._start is None or self._start.done():
            raise AssertionError(f"no start of {self.name} is waiting for the test")
        return self._start

    def _enter(self, new: ModelState, reason: str) -> None:
        """The one place where the state changes; subscribers hear of it at once."""
        old, self.state = self.state, new
        self.holds_asleep = new is ModelState.ASLEEP or (
            new is ModelState.STOPPING and old is ModelState.ASLEEP
        )
        self.journal.append(f"{self.name} {new}")
        transition = Transition(self.name, old, new, reason, time.time())
        for listener in self._listeners:
            listener(transition)

    async def _bounded(self, awaitable: Awaitable[object], what: str) -> None:
        try:
            await asyncio.wait_for(awaitable, BOUND_S)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: {what} was not asked for within {BOUND_S} s"
            ) from None
