"""Probing the models on other boxes: is each one serving now?

One probe loop per remote model, each on its own `health_interval_s`, asks
`GET {base_url}/models` (or the model's `health_url`) with the model's own API key and a
short `health_timeout_s`; what the answer means is `host.core.remote_health`'s call. The
routing snapshot reads `unreachable()`, so a box that went away is skipped at once (with
a reason that says so) and taken back when it answers; `/api/status` and `/metrics`
show each remote's health, the last error and the probe's latency. A change of
reachability is logged and reported to the listeners (the dispatcher looks again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import httpx

from host.config import Config, RemoteModel
from host.core.remote_health import Health, Probe, after_probe, changed_reachability
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
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[str, Health], None]] = []

    def on_change(self, listener: Callable[[str, Health], None]) -> None:
        """Called with the model and its new health when it comes up or goes away."""
        self._listeners.append(listener)

    def unreachable(self) -> set[str]:
        return {name for name, health in self.health.items() if not health.reachable}

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
            for listener in self._listeners:
                listener(name, after)
        return after

    async def _loop(self, name: str) -> None:
        interval = self._remotes[name].health_interval_s
        while True:
            try:
                await self.probe(name)
            except Exception:  # a probe must never end its loop: log it, probe again
                log.exception("probing remote model %s failed", name)
            await asyncio.sleep(interval)

    def start(self) -> None:
        for name in self._remotes:
            self._tasks.append(asyncio.create_task(self._loop(name), name=f"probe {name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
