"""The pygls wiring: which commands and code actions the server offers, and how a
handler's failure becomes a JSON-RPC error the editor can show.

Every command is `async`: a task runs for seconds to minutes, the server must keep
answering meanwhile, and only async handlers receive `$/cancelRequest`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from host.client import HostError, HostUnreachable
from lsp.arguments import TASK_COMMANDS, BadArguments
from lsp.commands import Bridge, CommandError
from lsp.progress import on_request_cancelled
from lsp.transport import serve_stdio, serve_tcp

NAME = "tierhost-lsp"
VERSION = "0.1.0"
REQUEST_FAILED = types.LSPErrorCodes.RequestFailed.value

CODE_ACTIONS = (
    ("Plan with architect", "tierhost.plan"),
    ("Implement with builder", "tierhost.implement"),
    ("Review with architect", "tierhost.review"),
)
"""What the light bulb offers on a selection: (title, command)."""

ACTION_KIND = f"{types.CodeActionKind.Refactor.value}.tierhost"


class RequestFailed(JsonRpcException):
    """LSP's "the request was valid but failed" (-32803): the host is down or broke."""

    CODE = REQUEST_FAILED


class TierhostServer(LanguageServer):
    """The language server, with the bridge its handlers share.

    It reads its stream with `lsp.transport`, not pygls's reader: a bad frame is
    answered or ends the bridge, never hangs it; `exit_status` is the process's."""

    bridge: Bridge
    start_error: str | None = None
    exit_status: int = 0

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        self.exit_status = serve_stdio(self, stdin, stdout)

    def start_tcp(self, host: str, port: int) -> None:
        self.exit_status = serve_tcp(self, host, port)


Handler = Callable[[Bridge, list[Any]], Awaitable[Any]]


async def guarded(name: str, handler: Handler, bridge: Bridge, args: list[Any]) -> Any:
    """Run a command; turn each kind of failure into the JSON-RPC error that says whose
    fault it is (bad arguments → invalid params; host down → request failed)."""
    try:
        return await handler(bridge, args)
    except (BadArguments, CommandError) as exc:
        raise JsonRpcInvalidParams(str(exc)) from None
    except HostError as exc:
        if exc.status < 500:
            raise JsonRpcInvalidParams(f"{name}: the host refused: {exc}") from None
        raise RequestFailed(f"{name}: the host failed ({exc.status}): {exc}") from None
    except HostUnreachable as exc:
        raise RequestFailed(f"{name}: {exc}") from None


def _task_handler(command: str) -> Handler:
    async def handler(bridge: Bridge, args: list[Any]) -> Any:
        return await bridge.run_task(command, args, on_request_cancelled(bridge.ls))

    return handler


HANDLERS: dict[str, Handler] = {
    **{command: _task_handler(command) for command in TASK_COMMANDS},
    "tierhost.setMode": lambda bridge, args: bridge.set_mode(args),
    "tierhost.status": lambda bridge, args: bridge.status(args),
    "tierhost.cancel": lambda bridge, args: bridge.cancel(args),
}


def code_actions(uri: str, selection: types.Range) -> list[types.CodeAction]:
    """The actions for a selection (none for an empty one): each runs its command on
    the document and the selected range."""
    if (selection.start.line, selection.start.character) == (
        selection.end.line,
        selection.end.character,
    ):
        return []
    return [
        types.CodeAction(
            title=title,
            kind=ACTION_KIND,
            command=types.Command(title=title, command=command, arguments=[uri, selection]),
        )
        for title, command in CODE_ACTIONS
    ]


def _register(server: TierhostServer, name: str, handler: Handler) -> None:
    @server.command(name)
    async def command(ls: TierhostServer, *args: Any) -> Any:
        return await guarded(name, handler, ls.bridge, list(args))


def build_server(
    url: str, token: str | None = None, start_error: str | None = None
) -> TierhostServer:
    """A server that talks to the daemon at `url`; `start_error` (the daemon could not
    be found or started) is shown to the user once the editor is connected."""
    server = TierhostServer(NAME, VERSION)
    server.bridge = Bridge(server, url, token)
    server.start_error = start_error

    for name, handler in HANDLERS.items():
        _register(server, name, handler)

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[ACTION_KIND]),
    )
    def on_code_action(
        ls: TierhostServer, params: types.CodeActionParams
    ) -> list[types.CodeAction]:
        return code_actions(params.text_document.uri, params.range)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: TierhostServer, params: types.InitializedParams) -> None:
        if ls.start_error:
            ls.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Error, message=ls.start_error)
            )
        ls.bridge.start_watching()

    @server.feature(types.SHUTDOWN)
    async def on_shutdown(ls: TierhostServer, params: None) -> None:
        await ls.bridge.shutdown()

    return server
