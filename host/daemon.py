"""The composition root: builds every part of the daemon from config and owns their lives.

`Host` builds the parts (processes, arbiters, the fleet, the controls, the store, the
dispatcher and the task queue), starts them in order, wires their events to each other
(a model becoming ready or a mode changing wakes the dispatcher; transitions and swaps are
recorded) and stops them in reverse. It decides nothing itself: each part has one job,
and each consumer depends on a narrow protocol of what it uses. Only the entry points
(`host.api.app`, the CLI) import this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from host.activity import RequestLog
from host.auth import is_loopback, load_or_create_token
from host.config import (
    CommandModel,
    Config,
    FallbackProfile,
    LocalModel,
    ManagedModel,
    RemoteModel,
)
from host.controls import Controls
from host.core import placement, routing
from host.core.batching import Policy
from host.core.remote_health import Health, RemoteMode
from host.events import EventHub
from host.metrics import HostMetrics
from host.models import gguf, gpu, type_classifier, warm_pool
from host.models.arbiter import DeviceArbiter, LoadGate, SleepPlan, SwapRecord
from host.models.auto_yield import AutoYield
from host.models.fleet import Fleet
from host.models.kv_slots import SlotKeeper, fingerprint
from host.models.process import (
    LaunchSpec,
    ModelProcess,
    ModelState,
    SleepSpec,
    Transition,
    reap_leftovers,
)
from host.models.remote_health import RemoteHealth
from host.models.sleepers import SleepRoom
from host.models.status import status_document
from host.models.type_model import TypeModel
from host.offload import Offload
from host.paths import find_llama_server, find_program, resolve_gguf
from host.store import Store, TaskRow
from host.tasks.dispatcher import Dispatcher
from host.tasks.queue import TaskQueue

log = logging.getLogger("tierhost")


def sleep_spec(model: LocalModel) -> SleepSpec | None:
    """How a model's process is put to sleep and woken (None: it is stopped)."""
    if model.sleep is None:
        return None
    return SleepSpec(model.sleep.path, model.sleep.wake_path, model.sleep.timeout_s)


def default_sleep_ram_mb(configured: int | None) -> int:
    """`host.sleep_ram_mb`, else half the RAM available now."""
    if configured is not None:
        return configured
    import psutil

    return int(psutil.virtual_memory().available // 2 // (1024 * 1024))


class UnknownModel(Exception):
    """A request named a model or tier the config does not have."""

    def __init__(self, requested: str, known: list[str]) -> None:
        super().__init__(f"unknown model {requested!r}; known models and tiers: {', '.join(known)}")


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
        self.devices = gpu.measure_devices(config)
        settings = config.scheduler
        self.policy = Policy(
            max_wait_s=settings.max_wait_s,
            min_residency_s=settings.min_residency_s,
            slots_per_model=settings.slots_per_model,
            batch=settings.policy == "batch",
            request_max_wait_s=settings.request_max_wait_s,
            request_priority=settings.request_priority,
        )
        """How every device's queue is served, tasks and requests alike (host.core.batching)."""
        self.token = load_or_create_token(data_dir) if not is_loopback(config.host.host) else None
        self.processes: dict[str, ModelProcess] = {}
        self.slot_keepers: dict[str, SlotKeeper] = {}
        self.arbiters: dict[str, DeviceArbiter] = {}
        self.device_of: dict[str, str] = {}
        self.store: Store | None = None
        self.fleet = Fleet(config, self.arbiters, self.device_of, self.processes, self.http)
        """Leases for every model, managed or remote (filled in by `build()`)."""
        self.remote_health = RemoteHealth(config, self.http)
        """Whether each model on another box answers now, and whether its box is gaming."""
        self.fleet.remote_holds = self.remote_health.hold_reason
        self.controls = Controls(
            config,
            self.arbiters,
            self.fleet.failed_recently,
            self.remote_health.unreachable,
            self.remote_health.holds,
        )
        """Each GPU's mode and the routing table, persisted, and `decide()`."""
        self.controls.on_change(self._wake_dispatcher)
        self.events = EventHub()
        """What changes, as it happens: the dashboard's live feed (`GET /api/events`)."""
        self.controls.on_change(lambda: self.events.publish("controls"))
        self.remote_health.on_change(lambda _name: self._wake_dispatcher())
        self.auto_yield = AutoYield(config, self.controls, self._our_pids)
        """GPUs with `auto_yield` go to gaming mode by themselves while a game holds them."""
        self.offload = Offload()
        """Where big request bodies are parsed, checked and routed (`host.offload`)."""
        self._background: set[asyncio.Task[Any]] = set()
        self.closing = False
        self._dispatcher: Dispatcher | None = None
        self._tasks: TaskQueue | None = None
        self.memory_of: dict[str, int] = {}
        """What each local model counts on its devices in all: memory_mb, else the GGUF
        estimate."""
        self.placement_of: dict[str, dict[str, int]] = {}
        """What each local model counts on each of its devices."""
        self.metrics = HostMetrics(lambda: status_document(self))
        self.activity = RequestLog(
            config.host.request_log_rows,
            count=lambda model, status: self.metrics.requests_total.labels(
                model, str(status)
            ).inc(),
            on_flush=lambda rows: self.events.publish("requests", rows=rows),
        )
        """Every request answered: the activity log and `tierhost_requests_total`."""
        self.sleep_room = SleepRoom(default_sleep_ram_mb(config.host.sleep_ram_mb))
        """The RAM that models left asleep share, box-wide (`host.sleep_ram_mb`)."""
        self.warm_pool = warm_pool.WarmPool(
            {},
            warm_pool.default_budget_mb(config.host.warm_pool_mb),
            lambda: warm_pool.outlook_of(self.distinct_arbiters()),
        )

    # -- construction ------------------------------------------------------------

    def _launch_spec(
        self,
        name: str,
        model: ManagedModel,
        binary: Path,
        profile: FallbackProfile | None = None,
    ) -> LaunchSpec:
        own_args = model.args if profile is None or profile.args is None else profile.args
        launch = self._cards_of(model)
        env = dict(launch.env)
        if all(self.devices[d].gpu_index is not None for d in model.devices):
            args = ["--n-gpu-layers", str(model.gpu_layers), *launch.args, *own_args]
        else:
            # budget-only or CPU device: the model runs on the CPU whatever args say (a
            # split is passed all the same, and has no effect there)
            args = [*launch.args, *own_args, "--n-gpu-layers", "0"]
        if model.kv_slots and "--slot-save-path" not in args:
            args += ["--slot-save-path", str(self.data_dir / "slots" / name)]
        if model.sleep is not None and model.sleep.idle_s is not None:
            args += ["--sleep-idle-seconds", str(model.sleep.idle_s)]
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
            sleep=sleep_spec(model),
        )

    def _cards_of(self, model: LocalModel) -> placement.Launch:
        """Which cards a model's server may see, and its split over them
        (`host.core.placement`). A card's index says the box has at least that many: a
        model on card 1 is pinned even where NVML cannot count the cards."""
        indexes = {d: self.devices[d].gpu_index for d in model.devices}
        known = [i for info in self.devices.values() if (i := info.gpu_index) is not None]
        cards = max(gpu.gpu_count(), max(known) + 1) if known else 0
        return placement.launch_for(model.devices, model.memory_by_device, indexes, cards)

    def _command_spec(self, name: str, model: CommandModel) -> LaunchSpec:
        """A command model's spec: its own argv, health path, env (over the card choice,
        which its env may override) and stop timeout; no GGUF, no llama-server args.
        Raises ConfigError when its program is neither an executable file nor on PATH."""
        env = dict(self._cards_of(model).env)  # its cards; a tensor split is llama-server's
        env.update(model.env)
        search_path = {**os.environ, **env}.get("PATH")
        return LaunchSpec(
            name=name,
            binary=find_program(model.command[0], name, search_path),
            gguf=Path(),
            args=(),
            log_path=self.logs_dir / f"{name}.log",
            pid_path=self.run_dir / f"{name}.pid",
            port=model.port,
            env=env,
            start_timeout_s=model.start_timeout_s,
            stop_grace_s=model.stop_timeout_s or self.config.host.stop_grace_s,
            command=tuple(model.command),
            health_path=model.health_path,
            sleep=sleep_spec(model),
        )

    def _process_for(self, name: str, model: LocalModel, binary: Path) -> ModelProcess:
        """The model's process, and what it counts on its device: a command model its
        configured `memory_mb`; a llama-server that, else its GGUF's estimate, plus its
        fallbacks, its warm-pool file and its KV slots."""
        if isinstance(model, CommandModel):
            self.placement_of[name] = model.memory_by_device
            return ModelProcess(self._command_spec(name, model))
        assert isinstance(model, ManagedModel)
        fallbacks = [self._launch_spec(name, model, binary, p) for p in model.fallbacks]
        process = ModelProcess(self._launch_spec(name, model, binary), fallbacks)
        if len(model.devices) > 1:
            self.placement_of[name] = model.memory_by_device  # the config requires it
        else:
            info = self.devices[model.device]
            estimate = gguf.memory_for(
                name, model, process.spec.gguf, model.device, info.kind, info.budget_mb
            )
            self.placement_of[name] = {model.device: estimate}
        self.warm_pool.files[name] = process.spec.gguf
        if model.kv_slots:
            self._keep_slots(name, process)
        return process

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
            # a wake is a fresh server too: a sleeping llama-server dropped its KV cache
            if transition.new in (ModelState.STARTING, ModelState.WAKING):
                keeper.server_started(fingerprint(process.spec.gguf, process.spec.args))

        process.before_stop.append(save)
        process.subscribe(on_transition)
        self.slot_keepers[name] = keeper

    def _vram_gate(self, devices: Sequence[str]) -> LoadGate | None:
        """On real cards, a load first waits (bounded) until NVML shows its memory free on
        each of them: the VRAM of a server just stopped is released by the driver a
        little later."""
        indexes = {d: i for d in devices if (i := self.devices[d].gpu_index) is not None}
        if not indexes:
            return None

        async def wait_one(model: str, device: str, index: int, need_mb: int) -> None:
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

        async def wait(model: str, need: Mapping[str, int]) -> None:
            await asyncio.gather(
                *(wait_one(model, d, indexes[d], mb) for d, mb in need.items() if d in indexes)
            )

        return wait

    def distinct_arbiters(self) -> list[DeviceArbiter]:
        """Each arbiter once (devices that a model spans share theirs)."""
        return list({id(a): a for a in self.arbiters.values()}.values())

    def build(self) -> None:
        """Create processes and arbiters; raises ConfigError before anything starts."""
        managed = self.config.local()
        needs_llama = bool(self.config.managed())
        binary = find_llama_server(self.config.host.llama_server) if needs_llama else Path()
        for name, model in managed.items():
            process = self._process_for(name, model, binary)
            process.subscribe(self._on_transition)
            self.processes[name] = process
            self.device_of[name] = model.device
            self.memory_of[name] = sum(self.placement_of[name].values())
        spanning = [m.devices for m in managed.values()]
        for group in placement.device_groups(list(self.devices), spanning):
            names = [n for n, m in managed.items() if m.device in group]
            arbiter = DeviceArbiter(
                {d: self.devices[d].budget_mb for d in group},
                {n: self.processes[n] for n in names},
                {n: self.placement_of[n] for n in names},
                {n for n in names if managed[n].persistent},
                {n: managed[n].max_concurrency for n in names},
                max_queue=self.config.host.max_queue,
                on_swap=self._record_swap,
                before_load=self._vram_gate(group),
                idle_unload_s={n: s for n in names if (s := managed[n].idle_unload_s) is not None},
                yield_to_llm={n for n in names if managed[n].yield_to_llm},
                sleep={n: plan for n in names if (plan := self._sleep_plan(n)) is not None},
                room=self.sleep_room,
                policy=self.policy,
            )
            self.arbiters.update(dict.fromkeys(group, arbiter))

    def _sleep_plan(self, name: str) -> SleepPlan | None:
        """How the arbiter counts a model that sleeps: on each card what stays there
        asleep (never more than it takes awake), in RAM its asleep size."""
        model = self.config.local()[name]
        if model.sleep is None:
            return None
        placed = self.placement_of[name]
        asleep = {d: min(model.sleep.device_memory_mb, mb) for d, mb in placed.items()}
        after = None if model.sleep.path is not None else model.sleep.idle_s
        return SleepPlan(asleep, model.sleep.ram_mb, None if after is None else float(after))

    def _type_model(self, name: str) -> TypeModel:
        """The classifier model; one on a GPU is asked only while resident."""
        model = self.config.models[name]
        on_gpu = isinstance(model, LocalModel) and self.devices[model.device].kind == "gpu"
        return TypeModel(self.fleet, name, may_wait=not on_gpu)

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        reaped = await asyncio.to_thread(reap_leftovers, self.run_dir)
        if reaped:
            log.warning("stopped %d server(s) left by an earlier run: %s", len(reaped), reaped)
        if not self.processes:
            self.build()
        self.store = await Store.open(self.data_dir / "tierhost.sqlite3")
        self.store.on_task_change(
            lambda task_id, status: self.events.publish("task", id=task_id, status=status)
        )
        self.activity.start(self.store)
        await self.controls.restore(self.store)
        # fitted once per corpus and machine (seconds), then read from the user's cache
        self.controls.classifier = await asyncio.to_thread(
            type_classifier.load_or_fit, self.config.examples
        )
        if self.config.classifier is not None:
            self.controls.type_model = self._type_model(self.config.classifier)
        self._dispatcher = Dispatcher(
            self.fleet,
            self.store,
            self.policy,
            self.config.validation,
            self.config.validator_model(),
            self._reroute,
        )
        self._tasks = TaskQueue(
            self.config,
            self.store,
            self._dispatcher,
            self.controls,
            self.fleet,
            self.offload,
        )
        await self._dispatcher.start()
        self.warm_pool.start()
        for name, model in self.config.models.items():
            key_env = model.api_key_env if isinstance(model, RemoteModel) else None
            if key_env and not os.environ.get(key_env, "").strip():
                log.warning(
                    "remote model %s: $%s is not set; its requests go without a key", name, key_env
                )
        self.remote_health.start()
        self.auto_yield.start()
        # Persistent models start in the background: the API answers at once, and a
        # request for one of them simply waits in its queue like any other.
        for name, local in self.config.local().items():
            if local.persistent:
                self._spawn(self._warm(name, local.start_timeout_s * 2))

    async def _warm(self, name: str, timeout: float) -> None:
        try:
            lease = await self.fleet.lease(name, timeout=timeout)
        except Exception as exc:
            log.error("persistent model %s did not start: %s", name, exc)
            return
        lease.release()

    async def _reroute(self, row: TaskRow, failed: str, why: str) -> routing.Decision | None:
        """A task's route again after the remote `failed` it: that remote counts as
        unreachable until a probe finds it answering."""
        self.remote_health.mark_down(failed, why)
        request = routing.RouteRequest(
            prompt=row.prompt,
            type=row.type,
            tier=row.request.get("tier"),
            model=row.request.get("model"),
            force_big=bool(row.request.get("force_big")),
            context_files=tuple(f["path"] for f in row.context.get("files", [])),
        )
        try:
            return await self.offload.run(
                len(row.prompt), routing.decide, request, self.controls.snapshot()
            )
        except routing.RoutingError as exc:
            log.info("task %s has nowhere to fail over to: %s", row.id, exc)
            return None

    def _our_pids(self) -> set[int]:
        """The model servers this host started (a yield is never to one of them)."""
        return {process.pid for process in self.processes.values() if process.pid}

    def _wake_dispatcher(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.wake()

    # -- tasks -------------------------------------------------------------------

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("the host is not started")
        return self._dispatcher

    @property
    def tasks(self) -> TaskQueue:
        """Submit, get, list and cancel (`host.tasks.queue`)."""
        if self._tasks is None:
            raise RuntimeError("the host is not started")
        return self._tasks

    # -- read views ----------------------------------------------------------------

    @property
    def modes(self) -> dict[str, str]:
        return self.controls.modes

    @property
    def remote_in_flight(self) -> dict[str, int]:
        return self.fleet.remote_in_flight

    @property
    def remote_health_of(self) -> Mapping[str, Health]:
        return self.remote_health.view()

    @property
    def remote_modes(self) -> Mapping[str, RemoteMode]:
        return self.remote_health.modes

    def known_names(self) -> list[str]:
        """Every name a request may give as its `model`: models, then tiers."""
        return sorted(self.config.models) + sorted(self.config.tiers)

    async def close(self) -> None:
        self.closing = True
        self.events.close()
        if self._dispatcher is not None:
            await self._dispatcher.close()
        await asyncio.gather(*(a.close() for a in self.distinct_arbiters()))
        for task in list(self._background):
            await asyncio.wait({task}, timeout=2)
        await self.warm_pool.close()
        await self.remote_health.stop()
        await self.auto_yield.stop()
        self.offload.close()
        await self.http.aclose()
        for process in self.processes.values():
            await process.http.aclose()
        await self.activity.stop()
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
        self._observe_sleep(transition)
        self.events.publish(
            "model",
            model=transition.model,
            old=transition.old.value,
            state=transition.new.value,
            reason=transition.reason,
        )
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

    def _observe_sleep(self, transition: Transition) -> None:
        """Sleep and wake times into the metrics, as each one ends."""
        process = self.processes.get(transition.model)
        if process is None:
            return
        if transition.new is ModelState.ASLEEP and process.last_sleep_s is not None:
            self.metrics.observe_sleep(transition.model, process.last_sleep_s)
        woke = transition.old is ModelState.WAKING and transition.new is ModelState.READY
        if woke and process.last_wake_s is not None:
            self.metrics.observe_wake(transition.model, process.last_wake_s)

    async def _record_swap(self, record: SwapRecord) -> None:
        self.metrics.observe_swap(record)
        self.events.publish(
            "swap",
            model=record.model,
            device=record.device,
            outcome=record.outcome,
            duration_s=record.duration_s,
            evicted=list(record.evicted),
        )
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
