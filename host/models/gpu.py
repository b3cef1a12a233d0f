"""NVIDIA GPU readings through NVML, when there is a GPU. Its absence is normal.

Every function here answers None when NVML or the card is missing, so callers treat a
GPU-less box (a budget-only `gpu0`) and a real card the same way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from host.config import Config, ConfigError
from host.core.auto_yield import GpuProcess

log = logging.getLogger("tierhost.gpu")


def read_processes(index: int) -> list[GpuProcess] | None:
    """The processes using card `index` (compute and graphics) and their memory, or None
    without NVML or card. A process whose memory NVML cannot tell (some drivers and
    containers) counts as 0 MiB; one whose name cannot be read is named by its pid."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        running = [
            *nvml.nvmlDeviceGetComputeRunningProcesses(handle),
            *nvml.nvmlDeviceGetGraphicsRunningProcesses(handle),
        ]
    except Exception as exc:
        log.debug("NVML process list of GPU %d failed: %s", index, exc)
        return None
    used: dict[int, int] = {}
    for entry in running:
        memory = getattr(entry, "usedGpuMemory", None)
        mb = int(memory) // (1024 * 1024) if isinstance(memory, int) else 0
        used[int(entry.pid)] = max(used.get(int(entry.pid), 0), mb)
    return [GpuProcess(pid, _process_name(pid), mb) for pid, mb in sorted(used.items())]


def _process_name(pid: int) -> str:
    try:
        return str(psutil.Process(pid).name())
    except psutil.Error:
        return f"pid {pid}"


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    total_mb: int
    used_mb: int
    free_mb: int


@functools.cache
def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no library, no card: all normal
        log.debug("NVML not available: %s", exc)
        return None
    return pynvml


def gpu_count() -> int:
    nvml = _nvml()
    if nvml is None:
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception:
        return 0


def read_memory(index: int) -> GpuMemory | None:
    """Used and free memory of card `index` in MiB, or None without NVML or card."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
        name = nvml.nvmlDeviceGetName(handle)
    except Exception as exc:
        log.debug("NVML reading of GPU %d failed: %s", index, exc)
        return None
    mib = 1024 * 1024
    return GpuMemory(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        total_mb=int(info.total) // mib,
        used_mb=int(info.used) // mib,
        free_mb=int(info.free) // mib,
    )


@dataclass(frozen=True)
class FreeWait:
    """How waiting for free GPU memory ended: the last reading, and whether it sufficed."""

    enough: bool
    free_mb: int | None
    waited_s: float


async def wait_for_free(
    read: Callable[[], GpuMemory | None],
    need_mb: int,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
) -> FreeWait:
    """Poll the card until `need_mb` is free, at most `timeout_s`.

    A stopped llama-server's VRAM is not free the moment its process exits: the driver
    releases it a little later. Loading into memory that is still taken fails with an
    out-of-memory error, and a fixed delay is either too long or too short; so the next
    load waits for the reading instead. Without NVML (`read` answers None) there is
    nothing to wait for."""
    started = time.monotonic()
    while True:
        reading = read()
        waited = time.monotonic() - started
        if reading is None:
            return FreeWait(True, None, waited)
        if reading.free_mb >= need_mb:
            return FreeWait(True, reading.free_mb, waited)
        if waited >= timeout_s:
            return FreeWait(False, reading.free_mb, waited)
        await asyncio.sleep(interval_s)


@dataclass(frozen=True)
class DeviceInfo:
    """One configured device as this run measured it."""

    name: str
    kind: str
    budget_mb: int | None
    """What the scheduler may place on it: `memory_mb`, else the card's total less
    `reserve_mb`; None for a CPU device without a budget (it is not contended)."""
    gpu_index: int | None
    """Set when NVML sees a real card behind this device."""


def measure_devices(config: Config) -> dict[str, DeviceInfo]:
    """Each configured device's budget, read from NVML for a real card. A GPU device
    NVML cannot see needs `memory_mb` (it is then a budget-only device); two devices
    may not name the same real card."""
    devices = {}
    cards: dict[int, str] = {}
    for name, device in config.devices.items():
        if device.kind == "cpu":
            devices[name] = DeviceInfo(name, "cpu", device.memory_mb, None)
            continue
        reading = read_memory(device.index)
        if reading is None:
            if device.memory_mb is None:
                raise ConfigError(
                    f"config error: devices.{name}.memory_mb: no NVIDIA GPU {device.index} "
                    "to measure; set memory_mb to use it as a budget-only device"
                )
            devices[name] = DeviceInfo(name, "gpu", device.memory_mb, None)
        else:
            if device.index in cards:  # two budgets on one card would fill it twice over
                raise ConfigError(
                    f"config error: devices.{name}: NVIDIA GPU {device.index} is already "
                    f"devices.{cards[device.index]}; give each GPU device its own `index` "
                    "(an omitted index is 0)"
                )
            cards[device.index] = name
            budget = device.memory_mb or max(0, reading.total_mb - device.reserve_mb)
            devices[name] = DeviceInfo(name, "gpu", budget, device.index)
    return devices
