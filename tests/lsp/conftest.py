"""One real daemon for the LSP tests, and an LSP client per test that drives the bridge
the way VS Code does (its capability preset), through `python -m lsp` on stdio.

The daemon (with its persistent SmolLM2 servers) takes seconds to start on two cores, so
the tests share one and leave its GPU mode as they found it. Every wait is bounded:
recorded state is polled against a deadline, never slept on.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls import uris
from pytest_lsp import (
    ClientServerConfig,
    LanguageClient,
    client_capabilities,
    make_test_lsp_client,
)

from tests.conftest import Daemon, start_daemon, wait_for_models, wait_until_gone

WAIT_S = 120.0
"""Bound on any one wait for the bridge (a task on a busy two-core box included)."""

SOURCE = '''\
def add(a, b):
    """Return the sum of a and b."""
    return a + b


def mean(values):
    # TODO: return the arithmetic mean of values
    pass
'''


def plain(value: Any) -> Any:
    """pygls hands a custom notification's params over as nested namedtuples: back to JSON."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class Recorder:
    """What the editor received besides the standard pytest-lsp records."""

    def __init__(self) -> None:
        self.applied: list[types.ApplyWorkspaceEditParams] = []
        self.statuses: list[dict[str, Any]] = []


def make_client(recorder: Recorder) -> Callable[[], LanguageClient]:
    def factory() -> LanguageClient:
        client = make_test_lsp_client()

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
            recorder.applied.append(params)
            return types.ApplyWorkspaceEditResult(applied=True)

        @client.feature("tierhost/status")
        def status(params: Any) -> None:
            recorder.statuses.append(plain(params))

        return client

    return factory


async def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll recorded state until `check()` is truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(scope="session")
def lsp_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The packaged demo daemon on loopback, shared by the LSP tests."""
    daemon = start_daemon(tmp_path_factory.mktemp("lsp-daemon"))
    try:
        wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")
        yield daemon
    finally:
        daemon.stop()
        left = wait_until_gone(daemon.children_seen)
        assert not left, f"model servers outlived the daemon: {left}"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "stats.py").write_text(SOURCE)
    return root


class Editor:
    """A connected client, the workspace it opened, and helpers to drive the bridge."""

    def __init__(
        self,
        client: LanguageClient,
        recorder: Recorder,
        root: Path,
        initialized: types.InitializeResult,
    ) -> None:
        self.client = client
        self.initialized = initialized
        self.recorder = recorder
        self.root = root
        self.uri = uris.from_fs_path(str(root / "stats.py")) or ""

    async def command(self, name: str, *arguments: Any, timeout: float = WAIT_S) -> Any:
        params = types.ExecuteCommandParams(command=name, arguments=list(arguments))
        return await asyncio.wait_for(self.client.workspace_execute_command_async(params), timeout)


async def start_client(
    url: str, extra_args: tuple[str, ...] = ()
) -> tuple[LanguageClient, Recorder]:
    """The bridge started and connected, not yet initialized."""
    recorder = Recorder()
    config = ClientServerConfig(
        server_command=[sys.executable, "-m", "lsp", "--url", url, "--no-start", *extra_args],
        client_factory=make_client(recorder),
    )
    client = await config.start()
    assert isinstance(client, LanguageClient)
    return client, recorder


async def open_editor(
    url: str, root: Path | None, extra_args: tuple[str, ...] = ()
) -> tuple[LanguageClient, Recorder, types.InitializeResult]:
    """VS Code's capabilities, with `root` as its one workspace folder (None: a window
    with no folder open, as when VS Code opens a single file)."""
    client, recorder = await start_client(url, extra_args)
    root_uri = uris.from_fs_path(str(root)) if root is not None else None
    folders = [types.WorkspaceFolder(uri=root_uri, name="project")] if root_uri else None
    result = await asyncio.wait_for(
        client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities("visual-studio-code"),
                root_uri=root_uri,
                workspace_folders=folders,
            )
        ),
        WAIT_S,
    )
    return client, recorder, result


@contextlib.asynccontextmanager
async def editing(url: str, workspace: Path) -> AsyncIterator[Editor]:
    """VS Code (its capabilities) connected to a bridge of the daemon at `url`, with
    `stats.py` open; shut down cleanly after."""
    client, recorder, result = await open_editor(url, workspace)
    ed = Editor(client, recorder, workspace, result)
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=ed.uri, language_id="python", version=1, text=SOURCE
            )
        )
    )
    try:
        yield ed
    finally:
        await asyncio.wait_for(client.shutdown_session(), WAIT_S)
        await client.stop()


@pytest_asyncio.fixture
async def editor(lsp_daemon: Daemon, workspace: Path) -> AsyncIterator[Editor]:
    """VS Code connected to the bridge of the shared demo daemon."""
    async with editing(lsp_daemon.url, workspace) as ed:
        yield ed
