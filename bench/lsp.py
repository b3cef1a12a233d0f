"""Issue 5: how fast an editor hears back through the LSP bridge.

An editor runs `tierhost.plan` on a short file through `python -m lsp` (stdio, a real
daemon, real llama-server) and the client timestamps what arrives: the first progress
report (the user sees the task id and its tier), the first "running" report (the model
is generating), and the command's result (the plan written and shown). Twice: with the
architect already resident on gpu0, and with the builder resident so the plan needs a
swap first. Medians over the runs, the two cases interleaved.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path

from bench.common import median, ms, plain_chat, tierhost_daemon, wait_models_ready

MAX_TOKENS = 16
TIMEOUT_S = 300.0
SOURCE = "def mean(values):\n    # TODO: the arithmetic mean of values\n    pass\n"


@dataclass
class Sample:
    case: str
    first_report_s: float
    running_s: float | None
    result_s: float
    status: str
    load: float
    """The 1-minute load average when the sample ended: two shared cores make it matter."""


@dataclass
class _Seen:
    """Progress notifications as they arrive: (seconds since the command was sent, kind,
    message)."""

    started: float = 0.0
    events: list[tuple[float, str, str]] = field(default_factory=list)


def _client(seen: _Seen) -> LanguageClient:
    def create(params: types.WorkDoneProgressCreateParams) -> None:
        return None

    def progress(params: types.ProgressParams) -> None:
        value: Any = params.value
        kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", "")
        message = value.get("message") if isinstance(value, dict) else getattr(value, "message", "")
        seen.events.append((time.perf_counter() - seen.started, str(kind), str(message or "")))

    def show(params: types.ShowDocumentParams) -> types.ShowDocumentResult:
        return types.ShowDocumentResult(success=True)

    def ignore(params: Any) -> None:
        return None

    client = LanguageClient("tierhost-bench", "0")
    feature: Any = client.feature  # pygls' client decorators are untyped
    feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)(create)
    feature(types.PROGRESS)(progress)
    feature(types.WINDOW_SHOW_DOCUMENT)(show)
    feature(types.WINDOW_SHOW_MESSAGE)(ignore)
    feature("tierhost/status")(ignore)
    return client


async def _plan(client: LanguageClient, seen: _Seen, uri: str, case: str) -> Sample:
    seen.events.clear()
    seen.started = time.perf_counter()
    params = types.ExecuteCommandParams(
        command="tierhost.plan",
        arguments=[uri, None, {"maxTokens": MAX_TOKENS, "temperature": 0, "seed": 1}],
    )
    reply = await asyncio.wait_for(client.workspace_execute_command_async(params), TIMEOUT_S)
    status = reply.get("status") if isinstance(reply, dict) else None
    result_s = time.perf_counter() - seen.started
    reports = [(t, m) for t, kind, m in seen.events if kind == "report"]
    if not reports:
        raise RuntimeError(f"tierhost.plan sent no progress report: {reply}")
    running = next((t for t, m in reports if m.startswith("running on")), None)
    return Sample(case, reports[0][0], running, result_s, str(status), os.getloadavg()[0])


async def _session(url: str, workdir: Path, runs: int) -> list[Sample]:
    project = workdir / "lsp-bench-project"
    project.mkdir(exist_ok=True)
    (project / "stats.py").write_text(SOURCE)
    uri = from_fs_path(str(project / "stats.py")) or ""
    seen = _Seen()
    client = _client(seen)
    await client.start_io(sys.executable, "-m", "lsp", "--url", url, "--no-start")
    try:
        await client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(
                    window=types.WindowClientCapabilities(
                        work_done_progress=True,
                        show_document=types.ShowDocumentClientCapabilities(support=True),
                    )
                ),
                root_uri=from_fs_path(str(project)),
            )
        )
        client.initialized(types.InitializedParams())
        samples = []
        with httpx.Client(timeout=TIMEOUT_S) as http:
            for _ in range(runs):
                plain_chat(http, url, "architect-demo")  # architect resident
                samples.append(await _plan(client, seen, uri, "resident"))
                plain_chat(http, url, "builder-demo")  # builder resident: the plan swaps
                samples.append(await _plan(client, seen, uri, "swap"))
        await client.shutdown_async(None)
        client.exit(None)
        return samples
    finally:
        stop: Any = client.stop  # untyped in pygls
        await stop()


def run(runs: int, workdir: Path) -> list[Sample]:
    with tierhost_daemon(None, workdir) as url:
        wait_models_ready(url, {"operator-demo", "validator-demo"})
        return asyncio.run(_session(url, workdir, runs))


def report(results: list[Sample]) -> list[str]:
    lines = [
        f"`tierhost.plan` on a 3-line file through `python -m lsp` (stdio) against the demo "
        f"daemon, `maxTokens` {MAX_TOKENS}; times from sending the command, as the client "
        f"sees them; median of {len(results) // 2} run(s) per case, interleaved:",
        "",
        "| architect | first progress report ms | generating ms | plan shown ms | not done |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, title in (
        ("resident", "already resident"),
        ("swap", "swap needed (builder resident)"),
    ):
        samples = [s for s in results if s.case == case]
        if not samples:
            continue
        running = [s.running_s for s in samples if s.running_s is not None]
        lines.append(
            f"| {title} | {ms(median([s.first_report_s for s in samples]))} "
            f"| {ms(median(running)) if running else '-'} "
            f"| {ms(median([s.result_s for s in samples]))} "
            f"| {sum(s.status != 'done' for s in samples)} |"
        )
    loads = [s.load for s in results]
    lines += [
        "",
        f"Load average during the runs: median {median(loads):.1f}, max {max(loads):.1f} "
        f"on {os.cpu_count()} cores (generation slows when other work shares them).",
        "",
        "The first report carries the task id and its tier, right after the host stored the "
        'task; "generating" is the first report that says the model is running (the bridge '
        "polls the task 25, 75 and 175 ms after submitting it, then every 0.2 s).",
    ]
    return lines
