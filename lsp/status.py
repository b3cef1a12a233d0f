"""The GPU mode and resident models → the custom notification `tierhost/status`.

An editor's status bar should change when the mode changes (from this editor, the
CLI, the Discord bot) and when a swap brings another model in. The daemon has no push
channel, so a watcher polls `/api/status` about once a second (a loopback GET, cheap)
and notifies only when the summary changes; a mode change made through this bridge
asks for a poll at once instead of waiting for the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from host.client import HostClient, HostError, HostUnreachable
from host.wire import HostStatus, ModelStatus

NOTIFICATION = "tierhost/status"
POLL_S = 1.0

Summary = dict[str, Any]


def summarize(status: HostStatus, url: str) -> Summary:
    """What an editor shows: each device's mode and residents; `mode` and `resident` of
    the first GPU device for a one-GPU box; the tiers a GPU can be pinned to (the modes
    to offer besides auto and gaming); and a one-line `text`. A model across GPUs
    (`devices` gpu0 and gpu1) offers its tier on each of them."""
    devices: list[dict[str, Any]] = [
        {
            "name": d.name,
            "kind": d.kind if d.kind is not None else "gpu",
            "mode": d.mode if d.mode is not None else "auto",
            "residents": list(d.residents),
            "hold": d.hold or None,
        }
        for d in status.devices
    ]
    gpus = [d for d in devices if d["kind"] != "cpu"]
    first = gpus[0] if gpus else None
    parts = [f"{d['name']}: {d['mode']} · {', '.join(d['residents']) or 'idle'}" for d in gpus]
    gpu_names = {d["name"] for d in gpus}
    tiers = sorted(
        {m.tier for m in status.models if m.tier and gpu_names.intersection(_placed_on(m))}
    )
    return {
        "reachable": True,
        "url": url,
        "devices": devices,
        "mode": first["mode"] if first else None,
        "resident": first["residents"][0] if first and first["residents"] else None,
        "tiers": tiers,
        "text": " | ".join(parts) or "no GPU devices",
    }


def _placed_on(model: ModelStatus) -> list[str]:
    """The devices a model is placed on (a daemon that lists no `devices` names one)."""
    return model.devices or ([model.device] if model.device else [])


def unreachable(url: str, reason: str) -> Summary:
    return {
        "reachable": False,
        "url": url,
        "devices": [],
        "mode": None,
        "resident": None,
        "tiers": [],
        "text": f"no daemon at {url}",
        "error": reason,
    }


async def snapshot(client: HostClient) -> Summary:
    try:
        return summarize(await client.status(), client.base_url)
    except (HostUnreachable, HostError) as exc:
        return unreachable(client.base_url, str(exc))


class StatusWatcher:
    """Polls the daemon and calls `send` with each new summary (and the first one)."""

    def __init__(
        self,
        client: HostClient,
        send: Callable[[Summary], Awaitable[None] | None],
        poll_s: float = POLL_S,
    ) -> None:
        self._client = client
        self._send = send
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last: Summary | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tierhost-status")

    def refresh(self) -> None:
        """Poll now (after a mode change) rather than at the next tick."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def poll_once(self) -> Summary:
        summary = await snapshot(self._client)
        if summary != self.last:
            self.last = summary
            outcome = self._send(summary)
            if outcome is not None:
                await outcome
        return summary

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            await self.poll_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
