"""The status document: every device and model as they are now, for `/api/status`,
`tierhost status`, `tierhost top`, MCP `host_status` and the metrics.

It is a function over read views of the running parts, so nothing here can change them
and any part can be shown by handing in its view. The one reading it takes itself is
NVML's measured use of a real card (cheap, and only here: `/health` never asks).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import psutil

from host.config import Config, LocalModel
from host.core import modes as mode_names
from host.core.remote_health import Health, RemoteMode
from host.models import gpu
from host.models.arbiter import DeviceArbiter
from host.models.gpu import DeviceInfo
from host.models.kv_slots import SlotKeeper
from host.models.process import ModelProcess, ModelState
from host.models.sleepers import SleepRoom


class Residency(Protocol):
    def residency(self, model: str) -> float | None: ...


class StatusView(Protocol):
    """What the status document reads (the composition root is one)."""

    @property
    def config(self) -> Config: ...
    @property
    def started_at(self) -> float: ...
    @property
    def devices(self) -> Mapping[str, DeviceInfo]: ...
    @property
    def arbiters(self) -> Mapping[str, DeviceArbiter]: ...
    @property
    def processes(self) -> Mapping[str, ModelProcess]: ...
    @property
    def memory_of(self) -> Mapping[str, int]: ...
    @property
    def placement_of(self) -> Mapping[str, Mapping[str, int]]: ...
    @property
    def slot_keepers(self) -> Mapping[str, SlotKeeper]: ...
    @property
    def warm_pool(self) -> Residency: ...
    @property
    def sleep_room(self) -> SleepRoom: ...
    @property
    def modes(self) -> Mapping[str, str]: ...
    @property
    def remote_in_flight(self) -> Mapping[str, int]: ...
    @property
    def remote_health_of(self) -> Mapping[str, Health]: ...
    @property
    def remote_modes(self) -> Mapping[str, RemoteMode]: ...


def status_document(view: StatusView) -> dict[str, Any]:
    """Devices and models now; `tasks` is left empty for the task queue to fill in."""
    return {
        "uptime_s": round(time.time() - view.started_at, 3),
        "devices": [_device(view, name, info) for name, info in view.devices.items()],
        "models": [_model(view, name) for name in view.config.models],
        "sleep_ram": view.sleep_room.status(_rss_mb),
        "tasks": {},
    }


def _rss_mb(process: ModelProcess) -> int | None:
    """What the server's process holds in RAM now, measured (None: not running)."""
    pid = process.pid
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss // (1024 * 1024))
    except psutil.Error:
        return None


def _device(view: StatusView, name: str, info: DeviceInfo) -> dict[str, Any]:
    arbiter = view.arbiters[name]
    waiting = arbiter.waiting(name)
    measured = None
    if info.gpu_index is not None:
        reading = gpu.read_memory(info.gpu_index)
        measured = None if reading is None else reading.used_mb
    return {
        "name": name,
        "kind": info.kind,
        "budget_mb": info.budget_mb,
        "used_mb": arbiter.used_mb(name),
        "gpu_used_mb": measured,
        "mode": view.modes.get(name, mode_names.AUTO),
        "hold": arbiter.mode_reasons.get(name) or None,
        "residents": [r.name for r in arbiter.residents(name) if r.phase != "asleep"],
        "asleep": [r.name for r in arbiter.residents(name) if r.phase == "asleep"],
        "queue": len(waiting),
        "waiting": [
            {
                "model": w.model,
                "work": w.work,
                "priority": w.priority,
                "waited_s": round(w.waited_s, 3),
                "max_wait_s": w.max_wait_s,
                "held": w.held,
            }
            for w in waiting
        ],
        "order": None
        if arbiter.order is None
        else {
            "rule": arbiter.order.choice.rule,
            "model": arbiter.order.choice.model,
            "why": arbiter.order.choice.why,
        },
    }


def _model(view: StatusView, name: str) -> dict[str, Any]:
    model = view.config.models[name]
    entry: dict[str, Any] = {"name": name, "tier": view.config.tier_of(name)}
    if not isinstance(model, LocalModel):
        entry.update(
            kind="remote",
            device=None,
            state="remote",
            pid=None,
            port=None,
            in_flight=view.remote_in_flight.get(name, 0),
            queued=0,
            base_url=model.base_url,
        )
        entry.update(view.remote_health_of.get(name, Health()).as_json())
        mode = view.remote_modes.get(name)
        entry["box_mode"] = (
            None
            if mode is None
            else {"gaming": mode.gaming, "reason": mode.reason, "checked_at": mode.checked_at}
        )
        return entry
    process = view.processes[name]
    arbiter = view.arbiters[model.device]
    keeper = view.slot_keepers.get(name)
    entry.update(
        kind=model.kind,
        device="+".join(model.devices),
        devices=list(model.devices),
        memory_by_device=view.placement_of.get(name, {}),
        state=process.state.value,
        pid=process.pid,
        port=process.port if process.pid else None,
        in_flight=arbiter.in_flight[name],
        queued=arbiter.queued(name),
        memory_mb=view.memory_of.get(name, model.memory_mb),
        warm=view.warm_pool.residency(name),
        persistent=model.persistent,
        restarts=process.restarts,
        last_error=process.last_error,
        log=str(process.spec.log_path),
        profile=process.spec.profile,
        kv_slots=keeper.status() if keeper is not None else None,
        sleep=None if model.sleep is None else _sleep(process),
    )
    return entry


def _sleep(process: ModelProcess) -> dict[str, Any]:
    """A model that sleeps instead of stopping: how often and how fast, and what it holds
    in RAM while it sleeps."""
    asleep = process.state is ModelState.ASLEEP
    return {
        "asleep": asleep,
        "asleep_since": process.asleep_since,
        "sleeps": process.sleeps,
        "wakes": process.wakes,
        "last_sleep_s": _rounded(process.last_sleep_s),
        "last_wake_s": _rounded(process.last_wake_s),
        "rss_mb": _rss_mb(process) if asleep else None,
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 4)
