"""Probing the models on other boxes: is each one serving now, and is its GPU free?

One probe loop per remote model, each on its own `health_interval_s`, asks
`GET {base_url}/models` (or the model's `health_url`) with the model's own API key and a
short `health_timeout_s`; what the answer means is `host.core.remote_health`'s call. The
routing snapshot reads `unreachable()`, so a box that went away is skipped at once (with
a reason that says so) and taken back when it answers; `/api/status` and `/metrics`
show each remote's health, the last error and the probe's latency. A change of
reachability is logged and reported to the listeners (the dispatcher looks again).

A remote with a `mode_url` (a gaming PC's mode endpoint, or the `/api/mode` of the
Tierhost that runs there) has its mode read every `mode_interval_s`; while it says
gaming, or cannot be read, `hold_reason()` holds unforced work back from it, exactly as
a local GPU in gaming mode does (`host.core.remote_health.read_mode`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import httpx

from host.config import Config, RemoteModel
from host.core.remote_health import (
    Health,
    Probe,
    RemoteMode,
    after_probe,
    changed_reachability,
    read_mode,
)
from host.models.fleet import remote_headers

log = logging.getLogger("tierhost.remote")


def probe_url(model: RemoteModel) -> str:
    return model.health_url or f"{model.base_url}/models"


def _error_text(exc: httpx.HTTPError, timeout_s: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})" if str(exc) else "cannot connect"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RemoteHealth:
    """The health of every remote model, kept fresh by one probe loop each."""

    def __init__(self, config: Config, http: httpx.AsyncClient) -> None:
        self._remotes = {
            name: model for name, model in config.models.items() if isinstance(model, RemoteModel)
        }
        self._http = http
        self.health: dict[str, Health] = dict.fromkeys(self._remotes, Health())
        self.modes: dict[str, RemoteMode] = {
            name: RemoteMode() for name, model in self._remotes.items() if model.mode_url
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[str], None]] = []

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Called with the model's name when it comes up or goes away, or its box's mode
        changes between gaming and not."""
        self._listeners.append(listener)

    def _changed(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    def unreachable(self) -> set[str]:
        return {name for name, health in self.health.items() if not health.reachable}

    def mark_down(self, name: str, reason: str) -> None:
        """A request found the remote failing before its probe did: skip it now, until a
        probe finds it answering again (the next is at most `health_interval_s` away)."""
        if name not in self.health:
            return
        before = self.health[name]
        # a failed request is a failed probe, by the same rules (host.core.remote_health)
        failed = Probe(time.time(), before.latency_s or 0.0, error=reason)
        self.health[name] = after_probe(before, failed)
        if before.reachable:
            log.warning(
                "remote model %s failed a request: %s; skipped until it answers", name, reason
            )
            self._changed(name)

    def hold_reason(self, name: str) -> str | None:
        """Why unforced work may not go to this remote now (its box is gaming), or None."""
        mode = self.modes.get(name)
        return mode.reason if mode is not None and mode.gaming else None

    def holds(self) -> dict[str, str]:
        """Every remote that takes only forced work now, and why."""
        return {name: mode.reason for name, mode in self.modes.items() if mode.gaming}

    async def read_mode(self, name: str) -> RemoteMode:
        """Read one remote's mode now and record it."""
        model = self._remotes[name]
        url = model.mode_url
        assert url is not None
        status: int | None = None
        document: object = None
        error: str | None = None
        try:
            response = await self._http.get(
                url, headers=remote_headers(model), timeout=model.health_timeout_s
            )
            status = response.status_code
            try:
                document = response.json()
            except ValueError:
                document = None
        except httpx.HTTPError as exc:
            error = _error_text(exc, model.health_timeout_s)
        before = self.modes[name]
        after = read_mode(url, status, document, error, time.time())
        self.modes[name] = after
        if after.gaming != before.gaming or after.reason != before.reason:
            log.info("remote model %s: %s", name, after.reason)
        if after.gaming != before.gaming:
            self._changed(name)
        return after

    def view(self) -> Mapping[str, Health]:
        return self.health

    async def probe(self, name: str) -> Health:
        """Probe one remote now and record what it says."""
        model = self._remotes[name]
        timeout = model.health_timeout_s
        began = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            response = await self._http.get(
                probe_url(model), headers=remote_headers(model), timeout=timeout
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = _error_text(exc, timeout)
        probe = Probe(time.time(), time.perf_counter() - began, status, error)
        before = self.health[name]
        after = after_probe(before, probe)
        self.health[name] = after
        if changed_reachability(before, after):
            if after.reachable:
                log.info("remote model %s is reachable again", name)
            else:
                log.warning("remote model %s is not reachable: %s", name, after.last_error)
            self._changed(name)
        return after

    async def _loop(
        self, name: str, probe: Callable[[str], Awaitable[object]], interval: float
    ) -> None:
        while True:
            try:
                await probe(name)
            except Exception:  # a probe must never end its loop: log it, probe again
                log.exception("probing remote model %s failed", name)
            await asyncio.sleep(interval)

    def start(self) -> None:
        for name, model in self._remotes.items():
            self._tasks.append(
                asyncio.create_task(
                    self._loop(name, self.probe, model.health_interval_s), name=f"probe {name}"
                )
            )
            if model.mode_url:
                self._tasks.append(
                    asyncio.create_task(
                        self._loop(name, self.read_mode, model.mode_interval_s),
                        name=f"mode of {name}",
                    )
                )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
