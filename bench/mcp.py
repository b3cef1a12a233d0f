"""Issue 4: what an MCP round trip costs, over stdio and over the daemon's `/mcp`.

`route_task` and `host_status` are called against one demo daemon through the official
MCP client, with the same call made straight to the control API as the baseline (the
MCP layer sits on top of it). Target: under 10 ms median over stdio.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from bench.common import median, percentile, tierhost_daemon, wait_models_ready
from mcp_server.clients import http_client

CALLS: dict[str, tuple[str, str, dict[str, Any] | None, dict[str, Any]]] = {
    # tool: (API method, API path, API body, tool arguments)
    "route_task": (
        "POST",
        "/api/route",
        {"prompt": "Plan the schema."},
        {"prompt": "Plan the schema."},
    ),
    "host_status": ("GET", "/api/status", None, {}),
}
WARMUP = 5


@dataclass
class McpResults:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(path, tool) → milliseconds per call; path is api, stdio or http."""


async def _time_tools(client: Client, label: str, runs: int, results: McpResults) -> None:
    async with client:
        for tool, (_, _, _, arguments) in CALLS.items():
            for _ in range(WARMUP):
                await client.call_tool(tool, arguments)
            samples = results.samples.setdefault((label, tool), [])
            for _ in range(runs):
                started = time.perf_counter()
                outcome = await client.call_tool(tool, arguments)
                samples.append((time.perf_counter() - started) * 1000)
                if outcome.is_error:
                    raise RuntimeError(f"{tool} over {label} failed: {outcome.content}")


def run(runs: int, workdir: Path) -> McpResults:
    calls = max(50, runs * 5)
    results = McpResults()
    with tierhost_daemon(None, workdir) as url:
        wait_models_ready(url, {"operator-demo", "validator-demo"})
        with httpx.Client(base_url=url, timeout=30) as api:
            for tool, (method, path, body, _) in CALLS.items():
                for _ in range(WARMUP):
                    api.request(method, path, json=body)
                samples = results.samples.setdefault(("api", tool), [])
                for _ in range(calls):
                    started = time.perf_counter()
                    api.request(method, path, json=body).raise_for_status()
                    samples.append((time.perf_counter() - started) * 1000)
        with (workdir / "mcp-stdio.log").open("w") as errlog:
            makers: dict[str, Callable[[], Client]] = {
                "stdio": lambda: Client(
                    stdio_client(
                        StdioServerParameters(
                            command=sys.executable,
                            args=["-m", "mcp_server", "--no-start"],
                            env={**os.environ, "TIERHOST_URL": url},
                        ),
                        errlog=errlog,
                    )
                ),
                "http": lambda: http_client(url),
            }
            for label, make in makers.items():
                anyio.run(_time_tools, make(), label, calls, results)
    return results


def report(results: McpResults) -> list[str]:
    lines = [
        "| tool | path | calls | median ms | p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    names = {
        "api": "control API directly (baseline)",
        "stdio": "MCP over stdio",
        "http": "MCP over `/mcp`",
    }
    for tool in CALLS:
        for label in ("api", "stdio", "http"):
            samples = results.samples[(label, tool)]
            lines.append(
                f"| `{tool}` | {names[label]} | {len(samples)} | {median(samples):.2f} "
                f"| {percentile(samples, 0.99):.2f} |"
            )
    stdio = median(results.samples[("stdio", "route_task")])
    lines += ["", f"`route_task` over stdio: {stdio:.2f} ms median (target < 10 ms)."]
    return lines
