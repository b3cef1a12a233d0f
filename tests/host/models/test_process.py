"""`ModelProcess` against the scripted fake llama-server: start, join, stop, fail, reap."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pytest

from host.models.process import (
    LaunchSpec,
    ModelProcess,
    ModelState,
    StartFailed,
    Transition,
    command_argv,
    is_legal,
    reap_leftovers,
    restart_delay,
    write_pid_file,
)
from host.paths import find_llama_server, resolve_gguf
from tests.conftest import alive, wait_until_gone
from tests.host.fake_command_server import command
from tests.host.fake_llama_server import fake_args, write_wrapper

T = TypeVar("T")
BOUND_S = 20.0
"""The longest any single step of these tests may take."""

STOPPED, STARTING, READY, STOPPING, FAILED = (
    ModelState.STOPPED,
    ModelState.STARTING,
    ModelState.READY,
    ModelState.STOPPING,
    ModelState.FAILED,
)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def bounded(awaitable: Awaitable[T], timeout: float = BOUND_S) -> T:
    return await asyncio.wait_for(awaitable, timeout)


class Recorder:
    """A `subscribe` listener that keeps every transition and lets a test await one.

    The harness checks every recording, once the test is over, with `follows_the_table`."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self._changed = asyncio.Event()

    def __call__(self, transition: Transition) -> None:
        self.transitions.append(transition)
        self._changed.set()

    @property
    def steps(self) -> list[tuple[ModelState, ModelState]]:
        return [(t.old, t.new) for t in self.transitions]

    def entered(self, state: ModelState) -> list[Transition]:
        return [t for t in self.transitions if t.new is state]

    async def wait_for(self, state: ModelState, count: int = 1) -> Transition:
        async def until() -> Transition:
            while len(self.entered(state)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.entered(state)[count - 1]

        return await bounded(until())


def follows_the_table(transitions: list[Transition]) -> None:
    """A recording starts at STOPPED, each move starts where the one before ended, and
    every move is one the table allows."""
    state = STOPPED
    for transition in transitions:
        assert transition.old is state, f"{transition} does not start at {state}"
        assert is_legal(transition.old, transition.new), f"{transition} is not in the table"
        state = transition.new


async def poll_until(condition: Callable[[], bool], what: str) -> None:
    """Wait, bounded, for something only visible by looking (a line in a log)."""
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        await asyncio.sleep(0.01)


def fake_pids(log_path: Path) -> list[int]:
    """The pids the fake servers logged at start, oldest first."""
    if not log_path.exists():
        return []
    return [
        int(line.split()[2])
        for line in log_path.read_text().splitlines()
        if line.startswith("fake: pid ")
    ]


def running_fakes() -> set[int]:
    """Fake servers (llama-server's and command servers') among this test process's
    descendants (zombies do not count)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any(
                "fake_llama_server" in part or "fake_command_server" in part
                for part in child.cmdline()
            ):
                found.add(child.pid)
        except psutil.Error:
            pass
    return found


@dataclass
class Harness:
    tmp_path: Path
    http: httpx.AsyncClient
    wrapper: Path
    gguf: Path
    processes: list[ModelProcess] = field(default_factory=list)
    recorders: list[Recorder] = field(default_factory=list)

    def model(
        self,
        mode: str,
        *,
        name: str = "m",
        state_file: Path | None = None,
        start_timeout_s: float = 10.0,
        stop_grace_s: float = 5.0,
        log_path: Path | None = None,
        ready_delay: float | None = None,
    ) -> tuple[ModelProcess, Recorder]:
        spec = LaunchSpec(
            name=name,
            binary=self.wrapper,
            gguf=self.gguf,
            args=[*fake_args(mode, state_file, ready_delay), "--n-gpu-layers", "0"],
            log_path=log_path or self.tmp_path / "logs" / f"{name}.log",
            pid_path=self.tmp_path / "run" / f"{name}.pid",
            start_timeout_s=start_timeout_s,
            stop_grace_s=stop_grace_s,
        )
        return self._own(ModelProcess(spec))

    def command_model(
        self,
        *flags: str,
        name: str = "c",
        health_path: str = "/health",
        env: dict[str, str] | None = None,
        start_timeout_s: float = BOUND_S,
        stop_grace_s: float = 5.0,
    ) -> tuple[ModelProcess, Recorder]:
        """A command model running `tests/host/fake_command_server.py` with `flags`."""
        argv = command(*flags)
        spec = LaunchSpec(
            name=name,
            binary=Path(argv[0]),
            gguf=Path(),
            args=(),
            log_path=self.tmp_path / "logs" / f"{name}.log",
            pid_path=self.tmp_path / "run" / f"{name}.pid",
            env=env or {},
            start_timeout_s=start_timeout_s,
            stop_grace_s=stop_grace_s,
            command=tuple(argv),
            health_path=health_path,
        )
        return self._own(ModelProcess(spec))

    def _own(self, process: ModelProcess) -> tuple[ModelProcess, Recorder]:
        recorder = Recorder()
        process.subscribe(recorder)
        self.processes.append(process)
        self.recorders.append(recorder)
        return process, recorder


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
        h = Harness(tmp_path, http, write_wrapper(tmp_path), gguf)
        try:
            yield h
        finally:
            await bounded(asyncio.gather(*(p.stop("test over") for p in h.processes)))
            for process in h.processes:
                await process.http.aclose()
    for recorder in h.recorders:
        follows_the_table(recorder.transitions)
    started = {pid for p in h.processes for pid in fake_pids(p.spec.log_path)}
    assert not wait_until_gone(started), "fake servers outlived the test"
    assert not running_fakes(), "a fake server outlived the test"


# -- start and stop ------------------------------------------------------------------


async def test_ensure_ready_starts_the_server_and_stop_ends_it_with_sigterm(
    harness: Harness,
) -> None:
    process, recorder = harness.model("ok", stop_grace_s=30.0)

    url = await bounded(process.ensure_ready())

    assert process.state is READY and process.is_ready()
    assert process.pid is not None and process.port is not None
    assert url == f"http://127.0.0.1:{process.port}" == process.base_url
    assert (await harness.http.get(f"{url}/health")).status_code == 200
    pid = process.pid
    assert fake_pids(process.spec.log_path) == [pid]
    pid_text, created_text = process.spec.pid_path.read_text().split()
    assert int(pid_text) == pid
    assert abs(float(created_text) - psutil.Process(pid).create_time()) < 0.01

    began = time.monotonic()
    await bounded(process.stop("test asked"))

    assert time.monotonic() - began < 10.0, "stop waited for the grace period"
    assert recorder.steps == [
        (STOPPED, STARTING),
        (STARTING, READY),
        (READY, STOPPING),
        (STOPPING, STOPPED),
    ]
    assert [t.reason for t in recorder.transitions[2:]] == ["test asked", "test asked"]
    assert process.state is STOPPED and process.pid is None
    assert not process.spec.pid_path.exists()
    assert not alive({pid})
    assert "fake: got SIGTERM" in process.spec.log_path.read_text()


async def test_stopping_a_stopped_model_changes_nothing(harness: Harness) -> None:
    process, recorder = harness.model("ok")
    await bounded(process.stop())
    assert recorder.steps == []
    assert process.state is STOPPED


async def test_concurrent_ensure_ready_calls_join_one_start(harness: Harness) -> None:
    process, recorder = harness.model("ok")

    urls = await bounded(asyncio.gather(*(process.ensure_ready() for _ in range(5))))

    assert set(urls) == {process.base_url}
    assert recorder.steps == [(STOPPED, STARTING), (STARTING, READY)]
    assert fake_pids(process.spec.log_path) == [process.pid]


async def test_concurrent_callers_share_a_failed_start(harness: Harness) -> None:
    """Callers that joined a start get its failure; none of them starts another server."""
    process, recorder = harness.model("exit-at-start")

    results = await bounded(
        asyncio.gather(*(process.ensure_ready() for _ in range(3)), return_exceptions=True)
    )

    assert all(isinstance(r, StartFailed) for r in results), results
    assert recorder.steps == [(STOPPED, STARTING), (STARTING, FAILED)]
    assert len(fake_pids(process.spec.log_path)) == 1


async def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(
    harness: Harness,
) -> None:
    process, recorder = harness.model("ignore-sigterm", stop_grace_s=0.5)
    await bounded(process.ensure_ready())
    pid = process.pid
    assert pid is not None

    began = time.monotonic()
    await bounded(process.stop())

    assert time.monotonic() - began >= 0.5
    assert "fake: ignoring SIGTERM" in process.spec.log_path.read_text()
    assert not alive({pid})
    assert recorder.steps[-2:] == [(READY, STOPPING), (STOPPING, STOPPED)]
    assert process.state is STOPPED


# -- failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("exit-at-start", "exited with code 1 while starting: error: failed to load model '"),
        ("oom-at-start", "exited with code 1 while starting: ggml_backend_cuda_buffer_type"),
        ("exit-quietly", "exited with code 3 while starting"),
        ("never-ready", "not ready after 1 s"),
    ],
)
async def test_a_start_failure_raises_start_failed_naming_the_model_and_log(
    harness: Harness, mode: str, reason: str
) -> None:
    process, recorder = harness.model(mode, start_timeout_s=1.0)

    with pytest.raises(StartFailed) as caught:
        await bounded(process.ensure_ready())

    failure = caught.value
    assert failure.model == "m"
    assert failure.log_path == process.spec.log_path
    assert failure.reason.startswith(reason)
    assert str(failure) == f"model m failed to start: {failure.reason} (log: {failure.log_path})"
    if mode == "oom-at-start":
        assert "out of memory" in failure.reason
    assert recorder.steps == [(STOPPED, STARTING), (STARTING, FAILED)]
    assert recorder.transitions[-1].reason == failure.reason == process.last_error
    assert process.state is FAILED and process.pid is None
    assert process.consecutive_failures == 1
    assert not process.spec.pid_path.exists()
    assert not wait_until_gone(set(fake_pids(process.spec.log_path)))

    await bounded(process.stop("operator"))
    assert recorder.steps[-1] == (FAILED, STOPPED)


async def test_the_error_in_a_failure_comes_from_this_start_not_an_earlier_one(
    harness: Harness,
) -> None:
    """The log is appended across runs: an old error line must not explain a new failure."""
    log_path = harness.tmp_path / "logs" / "shared.log"
    first, _ = harness.model("exit-at-start", name="first", log_path=log_path)
    with pytest.raises(StartFailed, match="failed to load model"):
        await bounded(first.ensure_ready())

    second, _ = harness.model("exit-quietly", name="second", log_path=log_path)
    with pytest.raises(StartFailed) as caught:
        await bounded(second.ensure_ready())

    assert caught.value.reason == "exited with code 3 while starting"


def test_restart_delay_is_zero_then_doubles_from_half_a_second_to_a_cap() -> None:
    assert [restart_delay(n) for n in range(-1, 10)] == [
        0.0,
        0.0,
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
        30.0,
    ]


async def test_a_failed_start_is_retried_after_the_backoff(harness: Harness) -> None:
    process, recorder = harness.model("exit-at-start", state_file=harness.tmp_path / "once")
    with pytest.raises(StartFailed):
        await bounded(process.ensure_ready())

    await bounded(process.ensure_ready())

    assert recorder.steps == [
        (STOPPED, STARTING),
        (STARTING, FAILED),
        (FAILED, STARTING),
        (STARTING, READY),
    ]
    failed_at, retried_at = recorder.transitions[1].at, recorder.transitions[2].at
    assert retried_at - failed_at >= restart_delay(1) - 0.01
    assert process.restarts == 1


async def test_a_crash_of_a_ready_server_is_reported_and_the_next_start_restarts_it(
    harness: Harness,
) -> None:
    process, recorder = harness.model("crash-mid-stream", state_file=harness.tmp_path / "once")
    url = await bounded(process.ensure_ready())
    crashed_pid = process.pid
    assert crashed_pid is not None

    received: list[bytes] = []
    with pytest.raises(httpx.TransportError):
        async with harness.http.stream(
            "POST", f"{url}/v1/chat/completions", json={**CHAT, "stream": True}
        ) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                received.append(chunk)
    assert b"Hello" in b"".join(received)

    failed = await recorder.wait_for(FAILED)
    assert failed.reason.startswith("exited unexpectedly with code 1")
    assert process.state is FAILED and process.last_error == failed.reason
    assert process.pid is None and not process.spec.pid_path.exists()
    assert not alive({crashed_pid})

    url = await bounded(process.ensure_ready())

    assert process.restarts == 1
    assert process.pid not in (None, crashed_pid)
    assert (await harness.http.post(f"{url}/v1/chat/completions", json=CHAT)).status_code == 200
    assert recorder.steps == [
        (STOPPED, STARTING),
        (STARTING, READY),
        (READY, FAILED),
        (FAILED, STARTING),
        (STARTING, READY),
    ]


@pytest.mark.parametrize("when", ["while spawning", "while waiting for health"])
async def test_a_cancelled_start_ends_stopped_with_no_process(harness: Harness, when: str) -> None:
    process, recorder = harness.model("never-ready", start_timeout_s=30.0)
    task = asyncio.ensure_future(process.ensure_ready())
    if when == "while spawning":

        def cancel_on_starting(transition: Transition) -> None:
            # Listeners run inside the start itself: the cancel lands on its next await.
            if transition.new is STARTING:
                task.cancel()

        process.subscribe(cancel_on_starting)
    else:
        await recorder.wait_for(STARTING)
        await poll_until(lambda: bool(fake_pids(process.spec.log_path)), "the fake server start")
        task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await bounded(task)

    assert recorder.steps == [(STOPPED, STARTING), (STARTING, STOPPED)]
    assert process.state is STOPPED and process.pid is None
    assert not wait_until_gone(set(fake_pids(process.spec.log_path)))
    assert not running_fakes()
    assert not process.spec.pid_path.exists()


# -- moves cut short by a cancel ------------------------------------------------------


async def test_a_start_after_a_stop_cut_short_finishes_that_stop_first(harness: Harness) -> None:
    """A stop cancelled in its before-stop hook leaves STOPPING and a live server; the
    next start must end that server, not start a second one beside it."""
    process, recorder = harness.model("ok")
    await bounded(process.ensure_ready())
    first_pid = process.pid
    assert first_pid is not None
    hook_running = asyncio.Event()

    async def hang() -> None:
        hook_running.set()
        await asyncio.Event().wait()

    process.before_stop.append(hang)
    stopping = asyncio.ensure_future(process.stop("evicted"))
    await bounded(hook_running.wait())
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(stopping)
    assert process.state is STOPPING
    process.before_stop.clear()

    await bounded(process.ensure_ready())

    assert recorder.steps == [
        (STOPPED, STARTING),
        (STARTING, READY),
        (READY, STOPPING),
        (STOPPING, STOPPED),
        (STOPPED, STARTING),
        (STARTING, READY),
    ]
    assert recorder.transitions[3].reason == "finishing an interrupted stop before starting"
    assert not wait_until_gone({first_pid})
    assert process.pid is not None and running_fakes() == {process.pid}


@pytest.mark.parametrize("then", ["stop", "start"])
async def test_a_start_whose_cancel_cleanup_was_cut_short_is_finished_by_the_next_command(
    harness: Harness, then: str
) -> None:
    """A second cancel while a cancelled start waits for its server to heed SIGTERM leaves
    STARTING and a live server; the next stop or start ends it."""
    process, recorder = harness.model(
        "ignore-sigterm", ready_delay=600.0, start_timeout_s=60.0, stop_grace_s=60.0
    )
    log_path = process.spec.log_path
    starting = asyncio.ensure_future(process.ensure_ready())
    await poll_until(lambda: bool(fake_pids(log_path)), "the fake server start")
    stranded_pid = fake_pids(log_path)[0]
    starting.cancel()  # the cleanup sends SIGTERM, then waits out the grace period
    await poll_until(lambda: "fake: ignoring SIGTERM" in log_path.read_text(), "the SIGTERM")
    starting.cancel()  # ... and this cuts that wait short
    with pytest.raises(asyncio.CancelledError):
        await bounded(starting)
    assert process.state is STARTING and alive({stranded_pid})
    # The next SIGTERM is ignored as well: make the grace that ends in SIGKILL short.
    process.spec = dataclasses.replace(process.spec, stop_grace_s=0.2)

    if then == "stop":
        await bounded(process.stop("operator"))
        assert recorder.steps == [(STOPPED, STARTING), (STARTING, STOPPING), (STOPPING, STOPPED)]
    else:
        restarting = asyncio.ensure_future(process.ensure_ready())
        await recorder.wait_for(STARTING, count=2)
        assert recorder.steps == [
            (STOPPED, STARTING),
            (STARTING, STOPPING),
            (STOPPING, STOPPED),
            (STOPPED, STARTING),
        ]
        assert recorder.transitions[1].reason == "finishing an interrupted start before starting"
        restarting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bounded(restarting)
    assert not wait_until_gone({stranded_pid})


# -- a real llama-server ------------------------------------------------------------


@pytest.mark.real
async def test_a_real_server_started_crashed_restarted_and_stopped_moves_by_the_table(
    tmp_path: Path,
) -> None:
    spec = LaunchSpec(
        name="demo",
        binary=find_llama_server(None),
        gguf=resolve_gguf("demo:smollm2", "demo"),
        args=["--ctx-size", "2048", "--parallel", "1", "--no-warmup", "--n-gpu-layers", "0"],
        log_path=tmp_path / "logs" / "demo.log",
        pid_path=tmp_path / "run" / "demo.pid",
        start_timeout_s=60.0,
    )
    process = ModelProcess(spec)
    recorder = Recorder()
    process.subscribe(recorder)
    pids: set[int] = set()
    try:
        url = await bounded(process.ensure_ready(), 90.0)
        assert process.pid is not None
        pids.add(process.pid)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
            assert (await http.get(f"{url}/health")).status_code == 200
        os.killpg(process.pid, signal.SIGKILL)
        crashed = await recorder.wait_for(FAILED)
        assert crashed.reason.startswith("exited unexpectedly with code -9")

        await bounded(process.ensure_ready(), 90.0)
        assert process.pid is not None
        pids.add(process.pid)
        await bounded(process.stop("test over"))
    finally:
        await bounded(process.stop("test over"))
        await process.http.aclose()

    assert recorder.steps == [
        (STOPPED, STARTING),
        (STARTING, READY),
        (READY, FAILED),
        (FAILED, STARTING),
        (STARTING, READY),
        (READY, STOPPING),
        (STOPPING, STOPPED),
    ]
    follows_the_table(recorder.transitions)
    assert not wait_until_gone(pids)


# -- leftovers -----------------------------------------------------------------------


def _group_members(leader: subprocess.Popen[bytes]) -> set[int]:
    """The leader and its children, all in the leader's process group."""
    deadline = time.monotonic() + BOUND_S
    while True:
        kids = psutil.Process(leader.pid).children()
        if kids:
            return {leader.pid, *(k.pid for k in kids)}
        assert time.monotonic() < deadline, "the planted process never forked"
        time.sleep(0.01)


def test_reap_leftovers_kills_the_recorded_groups_and_nothing_else(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # A server left behind by a killed daemon: its own session, with a helper in its group.
    leftover = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 300 & wait"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    # A process that merely reuses a recorded pid: its start time does not match.
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        members = _group_members(leftover)
        write_pid_file(run_dir / "old-model.pid", leftover.pid)
        created = psutil.Process(bystander.pid).create_time()
        (run_dir / "reused.pid").write_text(f"{bystander.pid} {created - 100}\n")
        (run_dir / "garbage.pid").write_text("not a pid file\n")
        (run_dir / "gone.pid").write_text(f"{2**22 + 17} 0.0\n")

        assert reap_leftovers(run_dir) == [leftover.pid]

        assert not wait_until_gone(members)
        assert bystander.poll() is None and alive({bystander.pid})
        assert list(run_dir.glob("*.pid")) == []
    finally:
        for proc in (leftover, bystander):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=BOUND_S)
    assert reap_leftovers(tmp_path / "no-such-dir") == []


# -- command models -----------------------------------------------------------------


def test_a_command_argv_gets_its_port_and_host_and_keeps_every_other_brace() -> None:
    template = ["srv", "--port", "{port}", "--bind={host}:{port}", '{"a": 1}', "{model}"]
    assert command_argv(template, 4242) == [
        "srv",
        "--port",
        "4242",
        "--bind=127.0.0.1:4242",
        '{"a": 1}',
        "{model}",
    ]


async def test_a_command_server_is_polled_at_its_health_path_with_its_env_over_the_hosts(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERHOST_TEST_HOSTS", "from the host")
    monkeypatch.setenv("TIERHOST_TEST_BOTH", "the host's")
    process, recorder = harness.command_model(
        "--health-path",
        "/ready",
        health_path="/ready",
        env={"TIERHOST_TEST_OWN": "its own", "TIERHOST_TEST_BOTH": "the model's"},
    )

    url = await bounded(process.ensure_ready())

    assert recorder.steps == [(STOPPED, STARTING), (STARTING, READY)]
    assert (await harness.http.get(f"{url}/health")).status_code == 404  # not what it polls
    seen = (await harness.http.get(f"{url}/debug/env")).json()
    assert seen["pid"] == process.pid
    assert seen["argv"][seen["argv"].index("--port") + 1] == str(process.port)
    assert seen["argv"][seen["argv"].index("--host") + 1] == "127.0.0.1"
    assert seen["env"]["TIERHOST_TEST_OWN"] == "its own"
    assert seen["env"]["TIERHOST_TEST_HOSTS"] == "from the host"
    assert seen["env"]["TIERHOST_TEST_BOTH"] == "the model's"
    assert process.spec.pid_path.read_text().split()[0] == str(process.pid)
    header = process.spec.log_path.read_text()
    assert "=== tierhost: starting c at" in header
    assert f"listening on 127.0.0.1:{process.port}" in header


async def test_a_command_server_that_never_answers_its_health_path_fails_the_start(
    harness: Harness,
) -> None:
    process, recorder = harness.command_model(health_path="/ready", start_timeout_s=1.0)

    with pytest.raises(StartFailed, match="not ready after 1 s"):
        await bounded(process.ensure_ready())

    assert recorder.steps == [(STOPPED, STARTING), (STARTING, FAILED)]
    assert not process.spec.pid_path.exists()


async def test_a_command_server_that_ignores_sigterm_is_killed_after_its_stop_timeout(
    harness: Harness,
) -> None:
    process, recorder = harness.command_model("--ignore-sigterm", stop_grace_s=0.5)
    await bounded(process.ensure_ready())
    pid = process.pid
    assert pid is not None

    await bounded(process.stop())

    assert "fake-command: ignoring SIGTERM" in process.spec.log_path.read_text()
    assert not alive({pid})
    assert recorder.steps[-2:] == [(READY, STOPPING), (STOPPING, STOPPED)]


async def test_a_command_servers_pid_file_lets_a_later_daemon_reap_it(harness: Harness) -> None:
    process, recorder = harness.command_model()
    await bounded(process.ensure_ready())
    pid = process.pid
    assert pid is not None

    assert reap_leftovers(process.spec.pid_path.parent) == [pid]  # as a restarted daemon would

    await recorder.wait_for(FAILED)  # the crash watch saw it go
    assert not wait_until_gone({pid})
    await bounded(process.ensure_ready())  # and the next request starts it again
    assert process.restarts == 1
