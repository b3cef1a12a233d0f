"""The auto-yield loop: reads each `auto_yield` GPU's processes and carries out the core's word.

Every `yield_poll_s` it reads the card's processes from NVML (`host.models.gpu`), tells
this host's own servers from the rest by pid, and asks `host.core.auto_yield.step` what
to do; a yield or a return goes through the controls like the owner's own `tierhost
mode`, with a reason that names the process, so it is logged, persisted and shown. A
card NVML cannot read (a budget-only `gpu0`, a driver gone away) is left as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from host.config import Config
from host.core.auto_yield import Action, GpuProcess, ReturnTo, YieldState, YieldTo, step
from host.models import gpu

log = logging.getLogger("tierhost.auto_yield")

ProcessReader = Callable[[int], Sequence[GpuProcess] | None]
"""The processes on card N, or None when it cannot be read (`gpu.read_processes`)."""


class ModeSetter(Protocol):
    """The controls, as far as a yield needs them."""

    @property
    def modes(self) -> Mapping[str, str]: ...

    async def set_mode(
        self, mode: str, device: str | None = None, reason: str | None = None
    ) -> dict[str, str]: ...


class AutoYield:
    """One loop per GPU device with `auto_yield = true`."""

    def __init__(
        self,
        config: Config,
        controls: ModeSetter,
        ours: Callable[[], set[int]],
        read: ProcessReader = gpu.read_processes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._devices = {
            name: device
            for name, device in config.devices.items()
            if device.kind == "gpu" and device.auto_yield
        }
        self._controls = controls
        self._ours = ours
        self._read = read
        self._clock = clock
        self.states: dict[str, YieldState] = dict.fromkeys(self._devices, YieldState())
        self._tasks: list[asyncio.Task[None]] = []

    async def check(self, name: str) -> Action:
        """One reading of one device, and what was done about it."""
        device = self._devices[name]
        processes = await asyncio.to_thread(self._read, device.index)
        if processes is None:
            return None
        state, action = step(
            self.states[name],
            device=name,
            mode=self._controls.modes.get(name, "auto"),
            processes=processes,
            ours=self._ours(),
            above_mb=device.yield_above_mb,
            grace_s=device.yield_grace_s,
            now=self._clock(),
        )
        self.states[name] = state
        if isinstance(action, YieldTo):
            log.warning("%s yields: %s", name, action.reason)
            await self._controls.set_mode("gaming", name, action.reason)
        elif isinstance(action, ReturnTo):
            log.info("%s returns to %s: %s", name, action.mode, action.reason)
            await self._controls.set_mode(action.mode, name, action.reason)
        return action

    async def _loop(self, name: str) -> None:
        while True:
            try:
                await self.check(name)
            except Exception:  # a reading must never end the loop
                log.exception("auto-yield check of %s failed", name)
            await asyncio.sleep(self._devices[name].yield_poll_s)

    def start(self) -> None:
        for name in self._devices:
            self._tasks.append(asyncio.create_task(self._loop(name), name=f"auto-yield {name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
