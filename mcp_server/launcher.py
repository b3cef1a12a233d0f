"""Make sure a daemon answers before the stdio server starts, starting one if needed.

An editor launches `tierhost mcp` on its own; the user should not have to remember to
run `tierhost serve` first. If nothing answers at a loopback URL, the daemon is started
detached (its own session, so it outlives this editor session and keeps owning the
GPU for every other client), with its log in the data dir. A URL on another machine is
never "fixed" by starting a local daemon: that is reported instead.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from host.auth import is_loopback
from host.client import HostClient, HostUnreachable
from host.paths import data_dir

START_TIMEOUT_S = 60.0
POLL_S = 0.05
LOG_NAME = "daemon.log"


class DaemonStartFailed(Exception):
    """A daemon was needed, and could not be found or started; the message says why."""


@dataclass(frozen=True)
class Outcome:
    """What `ensure_daemon` did: found one, or started one (with its pid and log)."""

    url: str
    started: bool
    pid: int | None = None
    log: Path | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        """What to say on stderr: plainly whether this session attached to a daemon or
        started one of its own (which has its own tasks, routing and modes)."""
        if not self.started:
            return f"tierhost mcp: attached to the Tierhost daemon at {self.url}"
        return (
            f"tierhost mcp: no daemon answered at {self.url}, so I started `tierhost serve` "
            f"there, a daemon of my own, in the background (pid {self.pid}, log {self.log}); "
            f"healthy after {self.seconds:.1f} s. Its tasks, routing and GPU modes are its "
            "own: if you meant another daemon, set TIERHOST_URL to its address (`tierhost "
            f"connect` prints the lines). It keeps running after this session; stop it with "
            f"`kill {self.pid}`."
        )

    def daemon(self) -> str:
        """The same fact in a few words, for `host_status`'s `daemon` field."""
        if not self.started:
            return f"attached {self.url}"
        pid = f" (pid {self.pid})" if self.pid is not None else ""
        return f"started by tierhost mcp on {self.url}{pid}"


async def _answers(url: str, token: str | None) -> bool:
    async with HostClient(url, token=token, timeout=2.0) as client:
        try:
            await client.health()
        except HostUnreachable:
            return False
        return True


def _spawn(url: str, directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    log = directory / LOG_NAME
    argv = [sys.executable, "-m", "host", "serve", "--host", host, "--port", str(port)]
    argv += ["--data-dir", str(directory)]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,  # detached: not killed with the editor's process group
        )
    return process, log


async def ensure_daemon(
    url: str,
    *,
    token: str | None = None,
    directory: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
    start: bool = True,
) -> Outcome:
    """Return once a daemon answers at `url`; start one first if none does (and `start`)."""
    if await _answers(url, token):
        return Outcome(url, started=False)
    if not start:
        raise DaemonStartFailed(
            f"tierhost mcp: no Tierhost daemon answers at {url} (and --no-start was given); "
            "start one with `tierhost serve`"
        )
    host = urlsplit(url).hostname or ""
    if not is_loopback(host):
        raise DaemonStartFailed(
            f"tierhost mcp: no Tierhost daemon answers at {url}, and it is not on this "
            "machine, so I cannot start it; start `tierhost serve` there or fix --url"
        )
    directory = data_dir(directory)
    process, log = _spawn(url, directory)
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if await _answers(url, token):
            # another client may have won a start race; then ours has exited and theirs serves
            pid = process.pid if process.poll() is None else None
            return Outcome(url, True, pid, log, time.monotonic() - began)
        if process.poll() is not None and not await _answers(url, token):
            break
        await anyio.sleep(POLL_S)
    if process.poll() is None:
        process.terminate()
    tail = log.read_text(errors="replace")[-2000:]
    raise DaemonStartFailed(
        f"tierhost mcp: no daemon answered at {url}, and the one I started "
        f"(`tierhost serve`, log {log}) did not become healthy within {timeout_s:g} s:\n{tail}"
    )
