"""The one client of the daemon's HTTP API, shared by the CLI, MCP, LSP and the bot.

Its answers are the `host.wire` models the daemon's contract is written in, so every
client reads a field by its name and type, and an answer that does not fit fails here,
saying where, instead of as a KeyError deep in a caller.

It also owns how every client finds the bearer token, so that they all send the same
one: a daemon bound beyond loopback refuses everything but `/health` without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from host.auth import TOKEN_FILE, is_loopback
from host.paths import data_dir
from host.wire import Decision, Health, HostStatus, Swap, SwapList, Task, TaskList

R = TypeVar("R", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8788"
TOKEN_ENV = "TIERHOST_TOKEN"
MAX_TOKEN_BYTES = 4096
"""Far above any token the daemon writes (43 characters); a bigger file is not a token."""
_ASCII_SPACE = " \t\r\n\x0b\x0c"


class HostUnreachable(Exception):
    """No daemon answers at the URL."""


class HostError(Exception):
    """The daemon answered with an error; the message is the daemon's own."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class TokenError(Exception):
    """A token was found but cannot be sent; the message names where it came from."""


def default_url() -> str:
    return os.environ.get("TIERHOST_URL", DEFAULT_URL).rstrip("/")


def is_loopback_url(url: str) -> bool:
    """Whether the URL names this machine by a loopback name or address."""
    try:
        return is_loopback(urlsplit(url).hostname or "")
    except ValueError:  # a malformed URL such as http://[::1
        return False


def token_path(directory: Path | None = None) -> Path | None:
    """Where the daemon keeps its token: the data dir (`$TIERHOST_DATA_DIR` or XDG).
    Looking creates nothing: a client on a box without a daemon leaves no data dir."""
    try:
        return data_dir(directory, create=False) / TOKEN_FILE
    except OSError:  # no home, or a data dir that cannot be created: no token there
        return None


def _checked(raw: str, source: str) -> str | None:
    """The token without the line end an editor or `echo` adds; None when empty.

    Only ASCII white space is stripped: the daemon compares exactly what is sent, and
    an HTTP header carries printable ASCII only, so anything else is refused here with
    a message that says where the token came from.
    """
    value = raw.strip(_ASCII_SPACE)
    if not value:
        return None
    if not all("!" <= char <= "~" for char in value):
        raise TokenError(
            f"the token in {source} has characters an HTTP header cannot carry "
            "(spaces, control or non-ASCII characters); copy it again from `tierhost token`"
        )
    return value


def read_token_file(path: Path) -> str | None:
    """The token in a daemon's token file; None when the file is missing or empty."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TOKEN_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_TOKEN_BYTES:
        raise TokenError(f"{path} is over {MAX_TOKEN_BYTES} bytes: it does not hold a token")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise TokenError(
            f"the token in {path} has characters an HTTP header cannot carry (non-ASCII "
            "bytes); copy it again from `tierhost token`"
        ) from None
    return _checked(text, str(path))


def find_token(
    environ: Mapping[str, str] | None = None, directory: Path | None = None
) -> tuple[str, str] | None:
    """The token this machine's clients send, and where it came from: `$TIERHOST_TOKEN`,
    else the token file in the data dir (what the daemon on this machine wrote).

    The same token goes to every URL. Off loopback the daemon requires it; on loopback
    it does too when the daemon on this machine is bound beyond loopback (the guard
    asks by bind address, not by who connects), and a token read from this machine's
    own data dir tells this machine's daemon nothing it does not know.
    """
    env = os.environ if environ is None else environ
    if value := _checked(env.get(TOKEN_ENV, ""), f"${TOKEN_ENV}"):
        return value, f"${TOKEN_ENV}"
    path = token_path(directory)
    if path is not None and (value := read_token_file(path)):
        return value, str(path)
    return None


def discover_token(
    environ: Mapping[str, str] | None = None, directory: Path | None = None
) -> str | None:
    """`find_token` without the source: what the LSP bridge and the bot send."""
    found = find_token(environ, directory)
    return found[0] if found else None


def auth_headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def token_hint(token_source: str | None, directory: Path | None = None) -> str:
    """How to give a client the token, for the message of a 401."""
    if token_source is not None:
        return (
            f"the token from {token_source} was refused; use the one `tierhost token` "
            "prints on the daemon's machine"
        )
    path = token_path(directory)
    where = f" or put it in {path}" if path is not None else ""
    return (
        f"no token was sent: set ${TOKEN_ENV} to the one `tierhost token` prints on the "
        f"daemon's machine{where}"
    )


def error_of(response: httpx.Response, token_source: str | None = None) -> HostError:
    """The daemon's error answer as a `HostError`, on one line; a 401 says how to send
    the token."""
    try:
        error = response.json()["error"]
        kind, message = str(error["type"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        # not the daemon's error shape: another server (a web page), or a proxy between
        kind = "http_error"
        message = f"{response.url} answered HTTP {response.status_code} {response.reason_phrase}"
        if not response.headers.get("content-type", "").startswith("text/html"):
            message += f": {response.text[:300]}"
        message += ", not in a Tierhost daemon's words: is it one?"
    message = " ".join(message.split())
    if response.status_code == 401:
        message = f"{message}; {token_hint(token_source)}"
    return HostError(response.status_code, kind, message)


class HostClient:
    """The daemon's API as async methods. `token=None` finds the token the usual way
    (`find_token`); pass `""` to send none."""

    def __init__(
        self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = (base_url or default_url()).rstrip("/")
        self.token: str | None = token or None
        self.token_source: str | None = "the caller" if token else None
        if token is None and (found := find_token()):
            self.token, self.token_source = found
        try:
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                headers=auth_headers(self.token),
                timeout=timeout,
                # a proxy from the environment never sees loopback traffic or its token
                trust_env=not is_loopback_url(self.base_url),
            )
        except httpx.InvalidURL as exc:
            raise HostUnreachable(f"{self.base_url!r} is not a daemon URL ({exc})") from None

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
            raise error_of(response, self.token_source)
        try:
            return response.json()
        except ValueError:
            raise HostError(
                response.status_code,
                "bad_response",
                f"{self.base_url} answered {path} with something that is not JSON: "
                "is it a Tierhost daemon?",
            ) from None

    async def _read(self, model: type[R], method: str, path: str, **kwargs: Any) -> R:
        """The answer as its `host.wire` model; one that does not fit is a HostError
        (`bad_response`) naming the first thing wrong, not a KeyError later."""
        answer = await self._request(method, path, **kwargs)
        try:
            return model.model_validate(answer)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the answer"
            raise HostError(
                200,
                "bad_response",
                f"{self.base_url} answered {path} with a {model.__name__} that does not "
                f"fit: {where}: {first['msg']}",
            ) from None

    async def health(self) -> Health:
        return await self._read(Health, "GET", "/health")

    async def status(self) -> HostStatus:
        return await self._read(HostStatus, "GET", "/api/status")

    async def swaps(self, limit: int = 100) -> list[Swap]:
        return (await self._read(SwapList, "GET", "/api/swaps", params={"limit": limit})).swaps

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

    async def route(self, prompt: str, **fields: Any) -> Decision:
        """The routing decision for a prompt, without running anything."""
        body = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}
        return await self._read(Decision, "POST", "/api/route", json=body)

    async def routing(self) -> dict[str, str]:
        result = await self._request("GET", "/api/routing")
        routes: dict[str, str] = result["routes"]
        return routes

    async def set_routing(self, routes: dict[str, str]) -> dict[str, str]:
        result = await self._request("PUT", "/api/routing", json={"routes": routes})
        updated: dict[str, str] = result["routes"]
        return updated

    # -- tasks -----------------------------------------------------------------------

    async def submit_task(self, prompt: str, **fields: Any) -> Task:
        """Store a task in the host's queue; returns it (status `queued`)."""
        body = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}
        return await self._read(Task, "POST", "/api/tasks", json=body)

    async def get_task(self, task_id: str) -> Task:
        return await self._read(Task, "GET", f"/api/tasks/{task_id}")

    async def list_tasks(
        self, status: str | None = None, type: str | None = None, limit: int = 100
    ) -> list[Task]:
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if type is not None:
            params["type"] = type
        return (await self._read(TaskList, "GET", "/api/tasks", params=params)).tasks

    async def cancel_task(self, task_id: str) -> Task:
        return await self._read(Task, "POST", f"/api/tasks/{task_id}/cancel")
