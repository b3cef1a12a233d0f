"""What every benchmark needs: statistics, the machine, and real servers to time."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from host import paths as host_paths
from host.models import gpu
from host.paths import find_llama_server, resolve_gguf

START_TIMEOUT_S = 60.0
PROMPT = "Write one sentence about the sea."


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: with few samples it is the honest worst case, not a guess."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def llama_server() -> Path:
    return find_llama_server(None)


def demo_gguf() -> Path:
    """The demo SmolLM2, or the file `TIERHOST_BENCH_GGUF` names (a run on a lent GPU box,
    where the demo wheel is not installed)."""
    return resolve_gguf(os.environ.get("TIERHOST_BENCH_GGUF", "demo:smollm2"), "bench")


def card() -> str | None:
    """The NVIDIA card a benchmark runs on (NVML index 0), or None on a GPU-less box."""
    reading = gpu.read_memory(0)
    return None if reading is None else f"{reading.name}, {reading.total_mb:,} MiB"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = psutil.virtual_memory().total / 2**30
    used = card()
    gpu_in_use = f"GPU {used}" if used else "no GPU in use (budget-only gpu0)"
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB RAM, {gpu_in_use}; "
        f"{platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until GET /health answers 200, polled every 5 ms (bounded)."""
    started = time.perf_counter()
    deadline = started + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode} before healthy")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"{url} not healthy within {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    start_s: float
    """Spawn to healthy."""


@contextmanager
def bare_llama_server(args: Sequence[str], log: Path) -> Iterator[Server]:
    """One llama-server started by hand, the way a user without Tierhost would."""
    port = free_port()
    argv = [str(llama_server()), "--host", "127.0.0.1", "--port", str(port), *args]
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, START_TIMEOUT_S)
        yield Server(f"http://127.0.0.1:{port}", process, time.perf_counter() - started)
    finally:
        stop(process)


def same_code_env() -> dict[str, str]:
    """The environment for a daemon that runs the code this benchmark imported.

    `python -m host` would otherwise import whatever `host` comes first from its working
    directory or the editable install, which for a benchmark run from a git worktree is
    another checkout's code: a measurement of the wrong thing. So the daemon is started
    with `-P` (no working directory on its path) and the root of this `host` first."""
    root = str(Path(host_paths.__file__).resolve().parents[1])
    before = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + before if before else "")}


@contextmanager
def tierhost_daemon(config_text: str | None, workdir: Path) -> Iterator[str]:
    """`tierhost serve` with a config, in its own data dir; yields its URL."""
    port = free_port()
    data = workdir / f"data-{port}"
    data.mkdir(parents=True)
    argv = [sys.executable, "-P", "-m", "host", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data)]
    if config_text is not None:
        config = workdir / f"tierhost-{port}.toml"
        config.write_text(config_text)
        argv += ["--config", str(config)]
    log = workdir / f"daemon-{port}.log"
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
        env=same_code_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, START_TIMEOUT_S)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop(process)


def wait_models_ready(url: str, names: set[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            states = {
                m["name"]: m["state"] for m in client.get(f"{url}/api/status").json()["models"]
            }
            if all(states.get(n) == "ready" for n in names):
                return
            time.sleep(0.02)
    raise RuntimeError(f"{sorted(names)} not ready within {timeout} s")


@dataclass
class Timing:
    first_token_s: float
    total_s: float
    tokens: int
    server: dict[str, float] | None = None
    """llama-server's own `timings` from the stream's last event (prompt_ms, cache_n…)."""

    @property
    def tokens_per_s(self) -> float:
        """Streaming rate after the first token: what a reader of the stream sees."""
        span = self.total_s - self.first_token_s
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0


def stream_chat(
    client: httpx.Client,
    base: str,
    model: str,
    max_tokens: int,
    prompt: str = PROMPT,
    messages: list[dict[str, str]] | None = None,
) -> Timing:
    """One streamed chat completion: time to the first content token, and to the end."""
    body = {
        "model": model,
        "messages": messages or [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": 0,
        "seed": 1,
        "ignore_eos": True,
    }
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    server: dict[str, float] | None = None
    with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:300]}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            server = event.get("timings") or server
            choices = event.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter() - started
    total = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{model}: the stream carried no tokens")
    return Timing(first, total, tokens, server)


def plain_chat(client: httpx.Client, base: str, model: str) -> float:
    """One non-streamed one-token completion; seconds from send to the full response."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
        "temperature": 0,
    }
    started = time.perf_counter()
    response = client.post(f"{base}/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:300]}")
    return elapsed
