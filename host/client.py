"""The one client of the daemon's HTTP API, shared by the CLI, MCP, LSP and the bot."""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8788"


class HostUnreachable(Exception):
    """No daemon answers at the URL."""


class HostError(Exception):
    """The daemon answered with an error; the message is the daemon's own."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def default_url() -> str:
    return os.environ.get("TIERHOST_URL", DEFAULT_URL).rstrip("/")


class HostClient:
    def __init__(
        self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = (base_url or default_url()).rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> HostClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise HostUnreachable(
                f"no Tierhost daemon answers at {self.base_url} ({type(exc).__name__}); "
                "start one with `tierhost serve` or set TIERHOST_URL"
            ) from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise HostError(response.status_code, error["type"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise HostError(response.status_code, "http_error", response.text) from None
        return response.json()

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/health")
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/api/status")
        return result

    async def swaps(self, limit: int = 100) -> list[dict[str, Any]]:
        result = await self._request("GET", "/api/swaps", params={"limit": limit})
        swaps: list[dict[str, Any]] = result["swaps"]
        return swaps

    async def modes(self) -> dict[str, str]:
        result = await self._request("GET", "/api/mode")
        modes: dict[str, str] = result["modes"]
        return modes

    async def set_mode(self, mode: str, device: str | None = None) -> dict[str, str]:
        body: dict[str, Any] = {"mode": mode}
        if device is not None:
            body["device"] = device
        result = await self._request("PUT", "/api/mode", json=body)
        modes: dict[str, str] = result["modes"]
        return modes

    # -- routing ---------------------------------------------------------------------

    async def route(self, prompt: str, **fields: Any) -> dict[str, Any]:
        """The routing decision for a prompt, without running anything."""
        body = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}
        result: dict[str, Any] = await self._request("POST", "/api/route", json=body)
        return result

    async def routing(self) -> dict[str, str]:
        result = await self._request("GET", "/api/routing")
        routes: dict[str, str] = result["routes"]
        return routes

    async def set_routing(self, routes: dict[str, str]) -> dict[str, str]:
        result = await self._request("PUT", "/api/routing", json={"routes": routes})
        updated: dict[str, str] = result["routes"]
        return updated

    # -- tasks -----------------------------------------------------------------------

    async def submit_task(self, prompt: str, **fields: Any) -> dict[str, Any]:
        """Store a task in the host's queue; returns it (status `queued`)."""
        body = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}
        result: dict[str, Any] = await self._request("POST", "/api/tasks", json=body)
        return result

    async def get_task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/api/tasks/{task_id}")
        return result

    async def list_tasks(
        self, status: str | None = None, type: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if type is not None:
            params["type"] = type
        result = await self._request("GET", "/api/tasks", params=params)
        tasks: list[dict[str, Any]] = result["tasks"]
        return tasks

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("POST", f"/api/tasks/{task_id}/cancel")
        return result
