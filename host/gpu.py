"""NVIDIA GPU readings through NVML, when there is a GPU. Its absence is normal.

Every function here answers None when NVML or the card is missing, so callers treat a
GPU-less box (a budget-only `gpu0`) and a real card the same way.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("tierhost.gpu")


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
