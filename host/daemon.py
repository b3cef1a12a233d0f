"""The composition root: builds every part of the daemon from config and owns their lives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from host.auth import is_loopback, load_or_create_token
from host.config import Config, ConfigError, FallbackProfile, ManagedModel
from host.core import modes, routing
from host.core.batching import Policy
from host.core.task_states import TaskStatus
from host.metrics import HostMetrics
from host.models import gguf, gpu, warm_pool
from host.models.arbiter import DeviceArbiter, SwapRecord
from host.models.fleet import Fleet
from host.models.kv_slots import SlotKeeper, fingerprint
from host.models.process import LaunchSpec, ModelProcess, ModelState, Transition, reap_leftovers
from host.offload import Offload
from host.paths import find_llama_server, resolve_gguf
from host.store import Store, TaskRow
from host.tasks.dispatcher import Dispatcher

log = logging.getLogger("tierhost")

FAILURE_COOLDOWN_S = 30.0
"""A tier skips a model that failed this recently when another model can serve."""


class UnknownModel(Exception):
    def __init__(self, requested: str, known: list[str]) -> None:
        super().__init__(f"unknown model {requested!r}; known models and tiers: {', '.join(known)}")


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    kind: str
    budget_mb: int | None
    gpu_index: int | None
    """Set when NVML sees a real card behind this device."""


class Host:
    """Everything the daemon runs, started and stopped as one."""

    def __init__(self, config: Config, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.logs_dir = data_dir / "logs"
        self.run_dir = data_dir / "run"
        self.started_at = time.time()
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self.devices = self._measure_devices()
        self.token = load_or_create_token(data_dir) if not is_loopback(config.host.host) else None
        self.processes: dict[str, ModelProcess] = {}
        self.slot_keepers: dict[str, SlotKeeper] = {}
        self.arbiters: dict[str, DeviceArbiter] = {}
        self.device_of: dict[str, str] = {}
        self.store: Store | None = None
        self.fleet = Fleet(config, self.arbiters, self.device_of, self.http)
        """Leases for every model, managed or remote (filled in by `build()`)."""
        self.offload = Offload()
        """Where big request bodies are parsed, checked and routed (`host.offload`)."""
        self._background: set[asyncio.Task[Any]] = set()
        self.modes: dict[str, str] = dict.fromkeys(modes.gpu_devices(config), modes.AUTO)
        self.routes: dict[str, str] = dict(config.routing)
        self.closing = False
        self._dispatcher: Dispatcher | None = None
        self.memory_of: dict[str, int] = {}
        """What each managed model counts on its device: memory_mb, else the GGUF estimate."""
        self.metrics = HostMetrics(self.status)
        self.warm_pool = warm_pool.WarmPool(
            {},
            warm_pool.default_budget_mb(config.host.warm_pool_mb),
            lambda: warm_pool.outlook_of(self.arbiters.values()),
        )

    # -- construction ------------------------------------------------------------

    def _measure_devices(self) -> dict[str, DeviceInfo]:
        devices = {}
        for name, device in self.config.devices.items():
            if device.kind == "cpu":
                devices[name] = DeviceInfo(name, "cpu", device.memory_mb, None)
                continue
            reading = gpu.read_memory(device.index)
            if reading is None:
                if device.memory_mb is None:
                    raise ConfigError(
                        f"config error: devices.{name}.memory_mb: no NVIDIA GPU {device.index} "
                        "to measure; set memory_mb to use it as a budget-only device"
                    )
                devices[name] = DeviceInfo(name, "gpu", device.memory_mb, None)
            else:
                budget = device.memory_mb or max(0, reading.total_mb - device.reserve_mb)
                devices[name] = DeviceInfo(name, "gpu", budget, device.index)
        return devices

    def _launch_spec(
        self,
        name: str,
        model: ManagedModel,
        binary: Path,
        profile: FallbackProfile | None = None,
    ) -> LaunchSpec:
        device = self.devices[model.device]
        env: dict[str, str] = {}
        own_args = model.args if profile is None or profile.args is None else profile.args
        if device.gpu_index is not None:
            args = ["--n-gpu-layers", str(model.gpu_layers), *own_args]
            env["CUDA_VISIBLE_DEVICES"] = str(device.gpu_index)
        else:
            # budget-only or CPU device: the model runs on the CPU whatever args say
            args = [*own_args, "--n-gpu-layers", "0"]
        if model.kv_slots and "--slot-save-path" not in args:
            args += ["--slot-save-path", str(self.data_dir / "slots" / name)]
        return LaunchSpec(
            name=name,
            binary=binary,
            gguf=resolve_gguf(profile.gguf if profile and profile.gguf else model.gguf, name),
            args=args,
            log_path=self.logs_dir / f"{name}.log",
            pid_path=self.run_dir / f"{name}.pid",
            port=model.port,
            env=env,
            start_timeout_s=model.start_timeout_s,
            stop_grace_s=self.config.host.stop_grace_s,
            profile=profile.name if profile else "default",
        )

    def _keep_slots(self, name: str, process: ModelProcess) -> None:
        """Save a model's KV slots before each stop; forget live slots at each start."""
        args = list(process.spec.args)
        directory = Path(args[args.index("--slot-save-path") + 1])
        directory.mkdir(parents=True, exist_ok=True)  # llama-server refuses a missing one
        profiles = process.profiles()
        keeper = SlotKeeper(
            name,
            directory,
            [fingerprint(p.gguf, p.args) for p in profiles],
            self.config.host.slot_disk_mb * 1024 * 1024,
        )

        async def save() -> None:
            await keeper.save_changed(process.http, process.base_url)

        def on_transition(transition: Transition) -> None:
            if transition.new is ModelState.STARTING:
                keeper.server_started(fingerprint(process.spec.gguf, process.spec.args))

        process.before_stop.append(save)
        process.subscribe(on_transition)
        self.slot_keepers[name] = keeper

    def _vram_gate(
        self, device: str, gpu_index: int | None
    ) -> Callable[[str, int], Awaitable[None]] | None:
        """On a real card, a load first waits (bounded) until NVML shows its memory free:
        the VRAM of a server just stopped is released by the driver a little later."""
        if gpu_index is None:
            return None
        index = gpu_index

        async def wait(model: str, need_mb: int) -> None:
            result = await gpu.wait_for_free(lambda: gpu.read_memory(index), need_mb)
            if not result.enough:
                log.warning(
                    "%s: only %s MiB free on %s after %.1f s, %d MiB needed; loading anyway",
                    model,
                    result.free_mb,
                    device,
                    result.waited_s,
                    need_mb,
                )
            elif result.waited_s > 0.05:
                log.info(
                    "%s: waited %.2f s for %s to free its memory", model, result.waited_s, device
                )

        return wait

    def build(self) -> None:
        """Create processes and arbiters; raises ConfigError before anything starts."""
        managed = self.config.managed()
        binary = find_llama_server(self.config.host.llama_server) if managed else Path()
        for name, model in managed.items():
            fallbacks = [self._launch_spec(name, model, binary, p) for p in model.fallbacks]
            process = ModelProcess(self._launch_spec(name, model, binary), fallbacks)
            process.subscribe(self._on_transition)
            self.processes[name] = process
            self.device_of[name] = model.device
            info = self.devices[model.device]
            self.memory_of[name] = gguf.memory_for(
                name, model, process.spec.gguf, model.device, info.kind, info.budget_mb
            )
            self.warm_pool.files[name] = process.spec.gguf
            if model.kv_slots:
                self._keep_slots(name, process)
        for device_name, info in self.devices.items():
            names = [n for n, m in managed.items() if m.device == device_name]
            self.arbiters[device_name] = DeviceArbiter(
                device_name,
                info.budget_mb,
                {n: self.processes[n] for n in names},
                {n: self.memory_of[n] for n in names},
                {n for n in names if managed[n].persistent},
                {n: managed[n].max_concurrency for n in names},
                max_queue=self.config.host.max_queue,
                on_swap=self._record_swap,
                before_load=self._vram_gate(device_name, info.gpu_index),
            )

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        reaped = await asyncio.to_thread(reap_leftovers, self.run_dir)
        if reaped:
            log.warning("stopped %d server(s) left by an earlier run: %s", len(reaped), reaped)
        if not self.processes:
            self.build()
        self.store = await Store.open(self.data_dir / "tierhost.sqlite3")
        await self._restore_modes(self.store)
        await self._restore_routes(self.store)
        settings = self.config.scheduler
        policy = Policy(
            max_wait_s=settings.max_wait_s,
            min_residency_s=settings.min_residency_s,
            slots_per_model=settings.slots_per_model,
            batch=settings.policy == "batch",
        )
        self._dispatcher = Dispatcher(self, self.store, policy)
        await self._dispatcher.start()
        self.warm_pool.start()
        # Persistent models start in the background: the API answers at once, and a
        # request for one of them simply waits in its queue like any other.
        for name, model in self.config.managed().items():
            if model.persistent:
                self._spawn(self._warm(name, model.start_timeout_s * 2))

    async def _warm(self, name: str, timeout: float) -> None:
        try:
            lease = await self.fleet.lease(name, timeout=timeout)
        except Exception as exc:
            log.error("persistent model %s did not start: %s", name, exc)
            return
        lease.release()

    async def _restore_modes(self, store: Store) -> None:
        saved = await store.get_setting("modes") or {}
        for device, mode in saved.items():
            try:
                modes.check_mode(self.config, mode, device)
            except modes.ModeError as exc:
                log.warning("ignoring the saved mode of %s: %s", device, exc)
                continue
            self._apply_mode(device, mode)

    def _apply_mode(self, device: str, mode: str) -> None:
        self.modes[device] = mode
        self.arbiters[device].set_allowed(
            modes.allowed_models(self.config, device, mode), modes.hold_reason(device, mode)
        )

    async def set_mode(self, mode: str, device: str | None = None) -> dict[str, str]:
        """Change the mode of one GPU device, or of all; stops what the mode excludes."""
        devices = modes.check_mode(self.config, mode, device)
        for name in devices:
            old = self.modes[name]
            self._apply_mode(name, mode)
            if old != mode:
                log.info("mode of %s: %s -> %s", name, old, mode)
                if self.store is not None:
                    await self.store.record_model_event(
                        model=f"device:{name}",
                        at=time.time(),
                        old=old,
                        new=mode,
                        reason="mode changed",
                    )
        if self.store is not None:
            await self.store.put_setting("modes", self.modes)
        self._wake_dispatcher()  # a task the old mode held back may start now
        return dict(self.modes)

    def _wake_dispatcher(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.wake()

    # -- tasks -------------------------------------------------------------------

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("the host is not started")
        return self._dispatcher

    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("the host is not started")
        return self.store

    async def submit_task(self, submission: dict[str, Any]) -> dict[str, Any]:
        """Decide where the task goes, store it, then wake the dispatcher. A long prompt
        is decided in the offload worker, on a snapshot taken here."""
        decision = await self.offload.run(
            len(submission["prompt"]),
            routing.decide,
            routing.RouteRequest(
                prompt=submission["prompt"],
                type=submission.get("type"),
                tier=submission.get("tier"),
                model=submission.get("model"),
                force_big=bool(submission.get("force_big")),
                context_files=tuple(f["path"] for f in submission["context"]["files"]),
            ),
            self.routing_snapshot(),
        )
        validation = submission.get("validation") or self.config.validation_default(decision.type)
        task = await self._store().create_task(
            prompt=decision.prompt,
            type=decision.type,
            context=submission["context"],
            request={
                "tier": submission.get("tier"),
                "model": submission.get("model"),
                "force_big": decision.force_big,
                "params": {k: v for k, v in submission["params"].items() if v is not None},
            },
            priority=submission.get("priority", 0),
            validation=validation,
            tier=decision.tier,
            model=decision.model,
            decision=decision.as_json(),
            reason="submitted; " + "; ".join(decision.reasons),
        )
        self.dispatcher.wake()
        return self._task_json(task)

    def _task_json(self, task: TaskRow, *, with_events: bool = False) -> dict[str, Any]:
        data = task.as_json(with_events=with_events)
        progress = self.dispatcher.progress(task.id)
        if progress is not None:
            data["tokens"] = progress["tokens"]
        if task.status is TaskStatus.QUEUED and task.model is not None:
            hold = self.fleet.hold_reason(task.model, bool(task.request.get("force_big")))
            if hold is not None:
                data["waiting_because"] = hold
        return data

    async def get_task(self, task_id: str) -> dict[str, Any]:
        task = await self._store().get_task(task_id, with_events=True)
        data = self._task_json(task, with_events=True)
        if task.status is TaskStatus.QUEUED:
            data["queue_position"] = await self._store().queue_position(task)
        return data

    async def list_tasks(
        self, *, status: str | None, type: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._store().list_tasks(status=status, type=type, limit=limit)
        return [self._task_json(t) for t in rows]

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        await self.dispatcher.cancel(task_id)
        return await self.get_task(task_id)

    # -- routing -------------------------------------------------------------------

    def routing_snapshot(self) -> routing.RoutingSnapshot:
        return routing.snapshot_from_config(
            self.config,
            routes=self.routes,
            modes=self.modes,
            failed={n for n in self.processes if self.recently_failed(n)},
        )

    def decide(self, request: routing.RouteRequest) -> routing.Decision:
        return routing.decide(request, self.routing_snapshot())

    async def _restore_routes(self, store: Store) -> None:
        saved = await store.get_setting("routes")
        if saved is None:
            return
        try:
            self.routes = routing.validate_routes(saved, self.config)
        except routing.RoutingError as exc:
            log.warning("ignoring the saved routing table: %s", exc)

    async def set_routes(self, routes: dict[str, str]) -> dict[str, str]:
        self.routes = routing.validate_routes(routes, self.config)
        await self._store().put_setting("routes", self.routes)
        log.info("routing table changed: %s", self.routes)
        self._wake_dispatcher()
        return dict(self.routes)

    async def close(self) -> None:
        self.closing = True
        if self._dispatcher is not None:
            await self._dispatcher.close()
        await asyncio.gather(*(a.close() for a in self.arbiters.values()))
        for task in list(self._background):
            await asyncio.wait({task}, timeout=2)
        await self.warm_pool.close()
        self.offload.close()
        await self.http.aclose()
        for process in self.processes.values():
            await process.http.aclose()
        if self.store is not None:
            await self.store.close()

    # -- events ------------------------------------------------------------------

    def _on_transition(self, transition: Transition) -> None:
        self.warm_pool.on_transition(transition)
        level = logging.WARNING if transition.new is ModelState.FAILED else logging.INFO
        log.log(
            level,
            "%s: %s -> %s (%s)",
            transition.model,
            transition.old,
            transition.new,
            transition.reason,
        )
        if transition.new is ModelState.READY:
            self._wake_dispatcher()  # tasks waiting on this model's batch may start
        if self.store is not None:
            self._spawn(
                self.store.record_model_event(
                    model=transition.model,
                    at=transition.at,
                    old=transition.old,
                    new=transition.new,
                    reason=transition.reason,
                )
            )

    async def _record_swap(self, record: SwapRecord) -> None:
        self.metrics.observe_swap(record)
        if self.store is not None:
            await self.store.record_swap(
                model=record.model,
                device=record.device,
                started=record.started,
                ready=record.ready,
                evicted=list(record.evicted),
                reason=record.reason,
                outcome=record.outcome,
            )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- requests ----------------------------------------------------------------

    def known_names(self) -> list[str]:
        return sorted(self.config.models) + sorted(self.config.tiers)

    def recently_failed(self, name: str) -> bool:
        process = self.processes.get(name)
        if process is None or process.state is not ModelState.FAILED:
            return False
        failed_at = process.last_failure_at or 0.0
        return time.monotonic() - failed_at < FAILURE_COOLDOWN_S

    # -- status ------------------------------------------------------------------

    async def status_with_tasks(self) -> dict[str, Any]:
        document = self.status()
        counts = await self._store().count_tasks()
        document["tasks"] = {"by_status": counts, "running": len(self.dispatcher.running_ids())}
        return document

    def status(self) -> dict[str, Any]:
        devices = []
        for name, info in self.devices.items():
            arbiter = self.arbiters[name]
            residents = arbiter.residents()
            used = arbiter.used_mb()
            measured = None
            if info.gpu_index is not None:
                reading = gpu.read_memory(info.gpu_index)
                measured = None if reading is None else reading.used_mb
            devices.append(
                {
                    "name": name,
                    "kind": info.kind,
                    "budget_mb": info.budget_mb,
                    "used_mb": used,
                    "gpu_used_mb": measured,
                    "mode": self.modes.get(name, modes.AUTO),
                    "hold": arbiter.mode_reason or None,
                    "residents": [r.name for r in residents],
                    "queue": arbiter.queue_length,
                }
            )
        models = []
        for name, model in self.config.models.items():
            entry: dict[str, Any] = {"name": name, "tier": self.config.tier_of(name)}
            if isinstance(model, ManagedModel):
                process = self.processes[name]
                arbiter = self.arbiters[model.device]
                entry.update(
                    kind="managed",
                    device=model.device,
                    state=process.state.value,
                    pid=process.pid,
                    port=process.port if process.pid else None,
                    in_flight=arbiter.in_flight[name],
                    queued=arbiter.queued(name),
                    memory_mb=self.memory_of.get(name, model.memory_mb),
                    warm=self.warm_pool.residency(name),
                    persistent=model.persistent,
                    restarts=process.restarts,
                    last_error=process.last_error,
                    log=str(process.spec.log_path),
                )
                entry["profile"] = process.spec.profile
                keeper = self.slot_keepers.get(name)
                entry["kv_slots"] = keeper.status() if keeper is not None else None
            else:
                entry.update(
                    kind="remote",
                    device=None,
                    state="remote",
                    pid=None,
                    port=None,
                    in_flight=self.fleet.remote_in_flight[name],
                    queued=0,
                    base_url=model.base_url,
                )
            models.append(entry)
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "devices": devices,
            "models": models,
            "tasks": {},  # filled in by status_with_tasks()
        }
