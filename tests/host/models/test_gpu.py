"""GPU readings: absent NVML is normal; a load waits for memory the driver still holds."""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil
import pytest

from host.config import ConfigError, parse_config
from host.core.auto_yield import GpuProcess
from host.models import gpu
from host.models.gpu import GpuMemory, gpu_count, read_memory, wait_for_free


def card(free_mb: int) -> GpuMemory:
    return GpuMemory(0, "test card", 24000, 24000 - free_mb, free_mb)


def readings(*free: int) -> tuple[Callable[[], GpuMemory | None], list[int]]:
    """A scripted card whose free memory grows as the driver releases a stopped server."""
    seen: list[int] = []

    def read() -> GpuMemory:
        value = free[min(len(seen), len(free) - 1)]
        seen.append(value)
        return card(value)

    return read, seen


async def test_a_load_waits_until_the_stopped_model_memory_is_released() -> None:
    read, seen = readings(2000, 9000, 21000)
    result = await wait_for_free(read, 20000, timeout_s=5, interval_s=0.001)
    assert result.enough and result.free_mb == 21000
    assert seen == [2000, 9000, 21000]


async def test_memory_that_never_frees_gives_up_at_the_bound() -> None:
    read, _ = readings(2000)
    result = await wait_for_free(read, 20000, timeout_s=0.05, interval_s=0.001)
    assert not result.enough and result.free_mb == 2000
    assert result.waited_s >= 0.05


async def test_without_nvml_there_is_nothing_to_wait_for() -> None:
    result = await wait_for_free(lambda: None, 20000, timeout_s=5)
    assert result.enough and result.free_mb is None


def test_readings_degrade_to_none_without_a_card() -> None:
    count = gpu_count()
    assert count >= 0
    if count == 0:
        assert read_memory(0) is None
    else:  # on a lent GPU machine the same call reads the real card
        reading = read_memory(0)
        assert reading is not None and reading.total_mb > 0


class FakeNvml:
    """The few pynvml calls `read_processes` makes, scripted: one compute process whose
    memory the driver reports, one graphics process whose memory it cannot tell, and
    the same pid in both lists (counted once, at its larger figure)."""

    class Entry:
        def __init__(self, pid: int, used: int | None) -> None:
            self.pid = pid
            self.usedGpuMemory = used

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Entry]:
        return [self.Entry(os.getpid(), 512 * MIB), self.Entry(2**22 + 7, 6144 * MIB)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Entry]:
        return [self.Entry(os.getpid(), 1024 * MIB), self.Entry(2**22 + 9, None)]


MIB = 1024 * 1024


def test_the_processes_on_a_card_are_read_with_their_memory_and_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gpu, "_nvml", lambda: FakeNvml())
    processes = gpu.read_processes(0)
    assert processes == [
        GpuProcess(os.getpid(), psutil.Process().name(), 1024),
        GpuProcess(2**22 + 7, f"pid {2**22 + 7}", 6144),  # gone: named by its pid
        GpuProcess(2**22 + 9, f"pid {2**22 + 9}", 0),
    ]


def test_a_card_nvml_cannot_read_has_no_process_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_nvml", lambda: None)
    assert gpu.read_processes(0) is None


TIERS = "".join(
    f'[tiers.{tier}]\nmodels = ["small"]\n' for tier in ("architect", "builder", "operator")
)
SMALL = '[models.small]\ngguf = "/models/small.gguf"\ndevice = "gpu0"\nmemory_mb = 500\n'


def test_two_devices_on_one_real_card_are_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = gpu.GpuMemory(0, "NVIDIA Test", 24_000, 500, 23_500)
    monkeypatch.setattr(gpu, "read_memory", lambda index: card if index == 0 else None)
    devices = "[devices.gpu0]\nmemory_mb = 1000\n[devices.gpu1]\nmemory_mb = 1000\n"
    one_card = parse_config(devices + SMALL + TIERS, "two")
    with pytest.raises(ConfigError, match=r"devices\.gpu1: NVIDIA GPU 0 is already devices\.gpu0"):
        gpu.measure_devices(one_card)

    indexed = devices.replace("[devices.gpu1]\n", "[devices.gpu1]\nindex = 1\n")
    measured = gpu.measure_devices(parse_config(indexed + SMALL + TIERS, "two"))
    assert (measured["gpu0"].gpu_index, measured["gpu1"].gpu_index) == (0, None)  # budget-only
