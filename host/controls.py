"""The controls: what the box's owner sets about where work goes, and the decision made from it.

Two settings steer every request and task: each GPU's mode (`host.core.modes`: `auto`,
pinned to a tier, or released for gaming) and the routing table (task type → tier). Both
are set through the API, kept in the store so a restart keeps them, and read by every
routing decision through one snapshot. Setting a mode is also a command to the device:
its arbiter is told at once which models it may hold (and stops the rest).

Everything that should look again after a change (the dispatcher, whose held-back tasks
may start now) subscribes with `on_change`. The decision itself is pure
(`host.core.routing.decide`); this only gathers its inputs, and asks the classifier
model when a decision says nothing explicit was sure of the type (`decide_asking`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from host.config import Config
from host.core import modes, routing
from host.core.task_types import Classifier
from host.models.type_model import TypeQuestionFailed

log = logging.getLogger("tierhost.controls")


class ModeGate(Protocol):
    """What a device's arbiter does with a mode: hold only these models on the device
    (None: any)."""

    def set_allowed(self, allowed: frozenset[str] | None, reason: str, device: str) -> None: ...


class TypeAsker(Protocol):
    """The classifier model (`host.models.type_model.TypeModel`)."""

    async def ask(self, text: str, choices: Sequence[str]) -> str: ...


class Settings(Protocol):
    """Where the controls are kept between runs (the task store), and the record of
    mode changes beside the models' own events."""

    async def get_setting(self, key: str) -> Any: ...

    async def put_setting(self, key: str, value: Any) -> None: ...

    async def record_model_event(
        self, *, model: str, at: float, old: str, new: str, reason: str
    ) -> None: ...


class Controls:
    """Modes and routes, persisted, and `decide()` on a snapshot of them."""

    def __init__(
        self,
        config: Config,
        gates: Mapping[str, ModeGate],
        failed_recently: Callable[[], set[str]],
        unreachable: Callable[[], set[str]] = set,
        remote_holds: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self.config = config
        self._gates = gates
        self._failed_recently = failed_recently
        self._unreachable = unreachable
        self._remote_holds = remote_holds
        self.modes: dict[str, str] = dict.fromkeys(modes.gpu_devices(config), modes.AUTO)
        self.routes: dict[str, str] = dict(config.routing)
        self._settings: Settings | None = None
        self._listeners: list[Callable[[], None]] = []
        self.classifier: Classifier | None = None
        """The statistical task-type classifier, once the daemon has loaded it."""
        self.type_model: TypeAsker | None = None
        """The configured classifier model, asked when nothing explicit was sure."""

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # -- persisted ----------------------------------------------------------------------

    async def restore(self, settings: Settings) -> None:
        """Take up what was saved; a saved value this config refuses is logged and left."""
        self._settings = settings
        saved_modes = await settings.get_setting("modes") or {}
        for device, mode in saved_modes.items():
            try:
                modes.check_mode(self.config, mode, device)
            except modes.ModeError as exc:
                log.warning("ignoring the saved mode of %s: %s", device, exc)
                continue
            self._apply_mode(device, mode)
        saved_routes = await settings.get_setting("routes")
        if saved_routes is not None:
            try:
                self.routes = routing.validate_routes(saved_routes, self.config)
            except routing.RoutingError as exc:
                log.warning("ignoring the saved routing table: %s", exc)

    def _apply_mode(self, device: str, mode: str, why: str | None = None) -> None:
        self.modes[device] = mode
        hold = modes.hold_reason(device, mode)
        if hold and why:
            hold = f"{hold} ({why})"
        allowed = modes.allowed_models(self.config, device, mode)
        self._gates[device].set_allowed(allowed, hold, device)

    async def set_mode(
        self, mode: str, device: str | None = None, reason: str | None = None
    ) -> dict[str, str]:
        """Change the mode of one GPU device, or of all; stops what the mode excludes.
        `reason`: why, when it is not the owner's own command (auto-yield says which
        process it yields to). Raises `ModeError` for a mode or device that does not exist."""
        devices = modes.check_mode(self.config, mode, device)
        for name in devices:
            old = self.modes[name]
            self._apply_mode(name, mode, reason)
            if old != mode:
                log.info("mode of %s: %s -> %s (%s)", name, old, mode, reason or "mode changed")
                if self._settings is not None:
                    await self._settings.record_model_event(
                        model=f"device:{name}",
                        at=time.time(),
                        old=old,
                        new=mode,
                        reason=reason or "mode changed",
                    )
        if self._settings is not None:
            await self._settings.put_setting("modes", self.modes)
        self._changed()  # a task the old mode held back may start now
        return dict(self.modes)

    async def set_routes(self, routes: Mapping[str, Any]) -> dict[str, str]:
        """Replace the routing table; raises `RoutingError` naming what does not exist."""
        self.routes = routing.validate_routes(routes, self.config)
        if self._settings is not None:
            await self._settings.put_setting("routes", self.routes)
        log.info("routing table changed: %s", self.routes)
        self._changed()
        return dict(self.routes)

    # -- the decision ---------------------------------------------------------------------

    def snapshot(self) -> routing.RoutingSnapshot:
        """Everything a routing decision reads, as of now (taken on the event loop, so a
        worker may decide on it): the remotes that do not answer, and those whose box is
        gaming, included."""
        return routing.snapshot_from_config(
            self.config,
            routes=self.routes,
            modes=self.modes,
            failed=self._failed_recently(),
            unreachable=self._unreachable(),
            remote_holds=self._remote_holds(),
            classifier=self.classifier,
        )

    def decide(self, request: routing.RouteRequest) -> routing.Decision:
        return routing.decide(request, self.snapshot())

    async def decide_asking(
        self,
        request: routing.RouteRequest,
        decide: Callable[[routing.RouteRequest], Awaitable[routing.Decision]],
    ) -> routing.Decision:
        """`decide(request)`, and when its type is only the default and a classifier model
        is configured, the same decision again with the model's answer (or, when it has
        none, the first decision saying why). `decide` is the caller's way of deciding: in
        the offload worker, with the tokenizer's count, and so on."""
        decision = await decide(request)
        question = decision.type_question
        if question is None or self.type_model is None:
            return decision
        try:
            answer = await self.type_model.ask(question.text, question.choices)
        except TypeQuestionFailed as exc:
            log.info("classifier model %s: %s", question.model, exc)
            return decision.unanswered(str(exc))
        return await decide(dataclasses.replace(request, classifier_answer=answer))
