"""The fleet: every model the config names, and one way to lease any of them.

A managed model is leased through its device's arbiter (which may first have to load it,
swapping another out, and which holds it back while its device's mode says so); a remote
model through its own in-flight count, at once or not at all (its box does its own
queueing). Either way the caller gets a `ModelLease` and never learns which it was. The
fleet also answers the questions callers ask before they lease: is this model held back,
and why.

The arbiters, the device map and the processes are the daemon's, filled in when it
builds them; the fleet reads them and keeps only the remote counts of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import httpx

from host.config import Config, LocalModel, RemoteModel
from host.models.arbiter import DeviceArbiter, Lease, ModelUnavailable, TooManyRequests, Work
from host.models.leases import ModelLease
from host.models.process import ModelProcess, ModelState

FAILURE_COOLDOWN_S = 30.0
"""A tier skips a model that failed this recently when another model can serve."""


class Fleet:
    """Leases for every kind of model, and whether each may run now."""

    def __init__(
        self,
        config: Config,
        arbiters: Mapping[str, DeviceArbiter],
        device_of: Mapping[str, str],
        processes: Mapping[str, ModelProcess],
        http: httpx.AsyncClient,
    ) -> None:
        self.config = config
        self._arbiters = arbiters
        self._device_of = device_of
        self._processes = processes
        self._http = http
        """The client for remote endpoints (a managed model has its own, per process)."""
        self.remote_in_flight: dict[str, int] = {
            name: 0 for name, entry in config.models.items() if isinstance(entry, RemoteModel)
        }
        self.remote_holds: Callable[[str], str | None] = lambda _model: None
        """Why a remote's own box takes no unforced work now (its GPU mode), or None."""

    # -- before leasing -----------------------------------------------------------

    def permits(self, model: str, forced: bool = False) -> bool:
        """Whether `model` may run now: its device's mode allows it, or, for a remote
        model, its own box's mode does."""
        return self.hold_reason(model, forced) is None

    def hold_reason(self, model: str, forced: bool = False) -> str | None:
        """Why `model` is held back (e.g. "gpu0 is in gaming mode", "its box is in gaming
        mode (http://pc:8788/mode)"), or None."""
        if forced:
            return None
        if model in self.remote_in_flight:
            return self.remote_holds(model)
        arbiter = self._arbiter(model)
        if arbiter is None or arbiter.permits(model, forced):
            return None
        return arbiter.hold_reason(model) or "held back by its device's mode"

    def why_wait(self, model: str) -> str:
        """Why a lease on a managed `model` must wait (see `DeviceArbiter.why_wait`)."""
        arbiter = self._arbiter(model)
        return "" if arbiter is None else arbiter.why_wait(model)

    def device_for(self, model: str) -> str | None:
        """The device a managed model runs on; None for a remote one."""
        return self._device_of.get(model)

    def contended_devices(self) -> dict[str, bool]:
        """Each device, and whether its models compete for memory (a device with a
        budget swaps; a CPU device without one runs everything side by side)."""
        return {name: a.budgets[name] is not None for name, a in self._arbiters.items()}

    def failed_recently(self) -> set[str]:
        """Managed models that failed within FAILURE_COOLDOWN_S: routing skips them when
        another model can serve."""
        now = time.monotonic()
        return {
            name
            for name, process in self._processes.items()
            if process.state is ModelState.FAILED
            and now - (process.last_failure_at or 0.0) < FAILURE_COOLDOWN_S
        }

    # -- leasing ------------------------------------------------------------------

    def lease_now(self, model: str, forced: bool = False) -> ModelLease | None:
        """A lease at once, or None when the model must be waited for (a managed one
        not ready, or others queued ahead on its device). Raises TooManyRequests for a
        remote at its `max_concurrency`, ModelUnavailable for an unknown model."""
        entry = self._entry(model)
        if isinstance(entry, RemoteModel):
            return self._remote(model, entry)
        lease = self._arbiter_of(model).try_acquire_now(model, forced)
        return None if lease is None else self._managed(lease)

    async def lease(
        self,
        model: str,
        timeout: float | None = None,
        *,
        forced: bool = False,
        priority: int | None = None,
        work: Work = "request",
    ) -> ModelLease:
        """A lease on `model`, waiting (up to `timeout`, else `host.queue_timeout_s`)
        for a managed one to be ready, in its device's queue at `priority` (see
        `DeviceArbiter.acquire`). Raises what the arbiter raises (WaitTimedOut,
        QueueFull, ModelUnavailable), TooManyRequests for a busy remote, and
        ModelUnavailable for a model the config does not have (a task queued under an
        older config)."""
        entry = self._entry(model)
        if isinstance(entry, RemoteModel):
            return self._remote(model, entry)
        wait = self.config.host.queue_timeout_s if timeout is None else timeout
        arbiter = self._arbiter_of(model)
        return self._managed(
            await arbiter.acquire(model, wait, forced, priority=priority, work=work)
        )

    # -- the kinds ----------------------------------------------------------------

    def _managed(self, lease: Lease) -> ModelLease:
        process = lease.model
        return ModelLease(
            model=process.name,
            api_base=f"{process.base_url}/v1",
            http=process.http,
            headers={},
            upstream_model=None,
            log_path=process.spec.log_path,
            server_url=process.base_url,
            _release=lease.release,
            upstream=process.upstream,
        )

    def _remote(self, model: str, entry: RemoteModel) -> ModelLease:
        if self.remote_in_flight[model] >= entry.max_concurrency:
            raise TooManyRequests(
                f"model {model} already has {entry.max_concurrency} requests in flight "
                "(its max_concurrency); retry shortly"
            )
        self.remote_in_flight[model] += 1

        def release() -> None:
            self.remote_in_flight[model] -= 1

        return ModelLease(
            model=model,
            api_base=entry.base_url,
            http=self._http,
            headers=remote_headers(entry),
            upstream_model=entry.remote_model or model,
            log_path=None,
            server_url=None,
            _release=release,
            timeout=httpx.Timeout(
                connect=entry.connect_timeout_s, read=entry.read_timeout_s, write=60.0, pool=None
            ),
        )

    def _entry(self, model: str) -> LocalModel | RemoteModel:
        entry = self.config.models.get(model)
        if entry is None:
            raise ModelUnavailable(
                f"model {model} is not in the config (any more); known models: "
                + ", ".join(sorted(self.config.models))
            )
        return entry

    def _arbiter(self, model: str) -> DeviceArbiter | None:
        device = self._device_of.get(model)
        return None if device is None else self._arbiters.get(device)

    def _arbiter_of(self, model: str) -> DeviceArbiter:
        arbiter = self._arbiter(model)
        if arbiter is None:
            raise ModelUnavailable(f"model {model} has no device on this host")
        return arbiter


def remote_headers(model: RemoteModel) -> dict[str, str]:
    """The headers a request to a remote model carries: its API key, when it has one
    (read from the environment variable the config names, never from the config)."""
    key = os.environ.get(model.api_key_env, "").strip() if model.api_key_env else ""
    if not key:
        # Unset or empty: no header at all ("Bearer " alone is not a legal header value,
        # so every request failed before it left), and the remote's 401 says what is missing.
        return {}
    return {"authorization": f"Bearer {key}"}
