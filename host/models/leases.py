"""A model lease: what a caller holds while it sends one request to a model.

Whatever kind the model is (a llama-server this host runs on one of its devices, or an
endpoint on another box), the proxy, the dispatcher and the validator get the same few
facts from `Fleet.lease()`: where to send the request, with which client and headers,
under which model name, where to look when it goes wrong, and how to give the model back.
Nothing else of the process or the remote leaks through, so a new kind of model is a new
way of making a lease, not a new branch in every caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from host.models.upstream import Upstream


@dataclass
class ModelLease:
    """One request's claim on a model; `release()` exactly once (more is harmless)."""

    model: str
    api_base: str
    """The OpenAI-compatible API root, `/v1` included: `/chat/completions` is appended."""
    http: httpx.AsyncClient
    headers: Mapping[str, str]
    upstream_model: str | None
    """The `model` the other end expects; None when it serves one model and ignores it."""
    log_path: Path | None
    """The server's log, for a managed model; None for a remote endpoint."""
    server_url: str | None
    """A managed llama-server's own root, for its native endpoints (`/slots`,
    `/tokenize`); None for a remote endpoint, whose server is not ours to drive."""
    _release: Callable[[], None] = field(repr=False)
    timeout: httpx.Timeout | None = None
    """The request's timeouts when not the client's own (a remote's connect and read)."""
    _released: bool = field(default=False, repr=False)
    upstream: Upstream | None = field(default=None, kw_only=True)
    """A managed server's own connections for the proxy's hot path (`host.models.upstream`);
    None for a remote endpoint, which is reached with `http`."""

    def timeouts(self) -> httpx.Timeout | Any:
        """For `timeout=` of a request: this lease's, else the client's default."""
        return self.timeout if self.timeout is not None else httpx.USE_CLIENT_DEFAULT

    @property
    def managed(self) -> bool:
        """A server this host runs (it stops generating when a *stream* is dropped)."""
        return self.server_url is not None

    @property
    def chat_url(self) -> str:
        return self.url("/v1/chat/completions")

    def url(self, path: str) -> str:
        """The full URL of an OpenAI path (`/v1/completions`, or without `/v1`)."""
        return self.api_base + path.removeprefix("/v1")

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A request body with the model name the other end expects."""
        return body if self.upstream_model is None else {**body, "model": self.upstream_model}

    def where(self) -> str:
        """For error messages: the managed model's log, or the remote's URL."""
        if self.log_path is not None:
            return f"log: {self.log_path}"
        return f"remote endpoint {self.api_base}"

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release()
