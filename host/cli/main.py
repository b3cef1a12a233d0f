"""`tierhost`: run the daemon and look at it from the shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from host.cli import connect, fit, lsp, mcp, tasks, top
from host.client import HostClient, HostError, HostUnreachable, TokenError
from host.config import Config, ConfigError, load_config
from host.paths import data_dir
from host.wire import DeviceStatus, HostStatus, ModelStatus

T = TypeVar("T")


def _apply_overrides(config: Config, host: str | None, port: int | None) -> Config:
    updates: dict[str, Any] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    if not updates:
        return config
    return config.model_copy(update={"host": config.host.model_copy(update=updates)})


def cmd_serve(args: argparse.Namespace) -> int:
    import contextlib
    import math
    import socket
    from types import FrameType

    import uvicorn

    from host.api import proxy
    from host.api.app import create_app
    from host.daemon import Host

    config = _apply_overrides(load_config(args.config), args.host, args.port)
    directory = data_dir(args.data_dir)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll is noise
    host = Host(config, directory)
    host.build()  # config problems surface here, before anything starts
    app = create_app(host)
    print(
        f"tierhost: serving on http://{config.host.host}:{config.host.port} "
        f"(data dir {directory}, config {args.config or 'demo'})",
        file=sys.stderr,
        flush=True,
    )
    grace_s = config.host.stop_grace_s
    stopping = proxy.shutdown_of(app)

    class BoundedServer(uvicorn.Server):
        """uvicorn's server, stopped within `host.stop_grace_s` whatever is in flight.

        At the first SIGTERM or SIGINT, proxied requests get half the grace to finish and
        then end with an error (proxy.Shutdown); anything else still running (an event
        stream, an MCP wait) is cancelled at three quarters. The lifespan shutdown
        (host.close(), which stops the model servers) always runs after: a second signal
        ends the requests at once instead of skipping it, as uvicorn's force exit would.
        """

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                super().handle_exit(sig, frame)
                return
            with contextlib.suppress(RuntimeError):  # no loop running: nothing in flight
                asyncio.get_running_loop().call_soon_threadsafe(stopping.begin, 0.0)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            stopping.begin(grace_s / 2)
            await super().shutdown(sockets)

    server = BoundedServer(
        uvicorn.Config(
            app,
            host=config.host.host,
            port=config.host.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=math.ceil(grace_s * 3 / 4),
        )
    )
    server.run()
    return 0


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def _fetch_status(url: str | None) -> HostStatus:
    async with HostClient(url) as client:
        return await client.status()


def cmd_status(args: argparse.Namespace) -> int:
    status = _run(_fetch_status(args.url))
    if args.json:
        print(status.model_dump_json(indent=2, exclude_unset=True))
        return 0
    console = Console()
    devices = Table(title="Devices")
    for column in ("device", "kind", "mode", "used / budget MiB", "residents", "queue"):
        devices.add_column(column)
    for device in status.devices:
        budget = device.budget_mb
        devices.add_row(
            device.name,
            device.kind or "-",
            device.mode or "-",
            f"{device.used_mb} / {budget if budget is not None else '-'}",
            ", ".join(device.residents) or "-",
            str(device.queue),
        )
    console.print(devices)
    for device in status.devices:
        line = queue_line(device)
        if line:
            console.print(line, markup=False)
    console.print(_models_table(status.models))
    return 0


def queue_line(device: DeviceStatus) -> str:
    """A device's queue in the order it is served, and the rule that ordered it:
    "gpu0 serves builder-demo x3, then architect-demo (task) — batch: …"."""
    if not device.waiting:
        return ""
    runs: list[tuple[str, int]] = []
    for item in device.waiting:
        label = item.model + (" (task)" if item.work == "task" else "")
        label += " (held)" if item.held else ""
        if runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1] + 1)
        else:
            runs.append((label, 1))
    served = ", then ".join(label + (f" x{n}" if n > 1 else "") for label, n in runs)
    order = device.order
    why = f" — {order.rule}: {order.why}" if order is not None and order.rule else ""
    return f"{device.name} serves {served}{why}"


def _models_table(models: list[ModelStatus]) -> Table:
    table = Table(title="Models")
    for column in ("model", "tier", "device", "state", "pid", "port", "in flight", "queued"):
        table.add_column(column)
    colours = {
        "ready": "green",
        "starting": "yellow",
        "stopping": "yellow",
        "sleeping": "yellow",
        "waking": "yellow",
        "asleep": "blue",
        "failed": "red",
    }
    for m in models:
        state = m.state or "-"
        table.add_row(
            m.name,
            m.tier or "-",
            m.device or "remote",
            f"[{colours.get(state, 'white')}]{state}[/]",
            str(m.pid or "-"),
            str(m.port or "-"),
            str(m.in_flight),
            str(m.queued),
        )
    return table


def cmd_models(args: argparse.Namespace) -> int:
    status = _run(_fetch_status(args.url))
    if args.json:
        listed = [m.model_dump(mode="json", exclude_unset=True) for m in status.models]
        print(json.dumps(listed, indent=2))
    else:
        Console().print(_models_table(status.models))
    return 0


async def _mode(url: str | None, mode: str | None, device: str | None) -> dict[str, str]:
    async with HostClient(url) as client:
        if mode is None:
            return await client.modes()
        return await client.set_mode(mode, device)


def cmd_mode(args: argparse.Namespace) -> int:
    modes = _run(_mode(args.url, args.mode, args.device))
    if args.json:
        print(json.dumps({"modes": modes}))
    else:
        for device, mode in modes.items():
            print(f"{device}: {mode}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierhost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", type=Path, help="tierhost.toml (default: the demo config)")
    serve.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default from config: 8788)")
    serve.add_argument("--data-dir", type=Path, help="state, logs and slots (default: XDG)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    for name, func, text in (
        ("status", cmd_status, "devices, residents and models of the running daemon"),
        ("models", cmd_models, "the configured models and their state"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--json", action="store_true", help="print JSON")
        command.add_argument("--url", help="daemon URL (default: $TIERHOST_URL)")
        command.set_defaults(func=func)
    mode = sub.add_parser(
        "mode", help="show or set the GPU mode (auto, a tier name to pin, or gaming)"
    )
    mode.add_argument("mode", nargs="?", help="auto | architect | builder | gaming | <tier>")
    mode.add_argument("--device", help="one GPU device (default: every GPU device)")
    mode.add_argument("--json", action="store_true", help="print JSON")
    mode.add_argument("--url", help="daemon URL (default: $TIERHOST_URL)")
    mode.set_defaults(func=cmd_mode)
    tasks.add_commands(sub)
    mcp.add_commands(sub)
    connect.add_commands(sub)
    lsp.add_commands(sub)
    fit.add_commands(sub)
    top.add_commands(sub)
    return parser


EXIT_CLOSED_PIPE = 141
"""What a command whose reader went away (`tierhost tasks | head -1`) exits with: 128 +
SIGPIPE, as the shell reports for a C tool that SIGPIPE ended, so a script under
`set -o pipefail` can tell a cut-short listing from a failure (1) or a bad config (2)."""


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _run_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except connect.ConnectError as exc:
        print(f"tierhost: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"tierhost: {exc}", file=sys.stderr)
        return 2
    except (HostUnreachable, HostError, TokenError) as exc:
        print(f"tierhost: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """Run one command; quietly stop when stdout's reader has gone (the Python docs'
    recipe: point stdout at /dev/null so the flush at exit cannot raise again)."""
    try:
        try:
            return _run_command(argv)
        finally:  # output still buffered would otherwise fail at exit, loudly
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_CLOSED_PIPE


if __name__ == "__main__":
    sys.exit(main())
