"""The command handlers: turn an editor's request into a host task and its result into
something the editor shows.

`Bridge` holds what the handlers share — the one `HostClient` of this bridge, the tasks
it is following (so `tierhost.cancel` without arguments can stop them), and the status
watcher. Errors leave here as `CommandError` (the caller's mistake, or the host's
refusal) or `HostUnreachable`; `server` turns them into JSON-RPC errors.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from lsprotocol.converters import get_converter
from pygls import uris
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from host.client import HostClient, HostError
from host.wire import Task
from lsp import arguments, paths, prompts, results
from lsp.progress import WorkDone, cancel_in_host, follow
from lsp.status import NOTIFICATION, StatusWatcher, Summary, snapshot

_VERBS = {
    "tierhost.plan": "plan",
    "tierhost.design": "design",
    "tierhost.review": "review",
    "tierhost.implement": "implement",
    "tierhost.explain": "explain",
}


SHOWN_CHARS = 2000
"""How much of a result that could not be written a message shows (all of it is in the
command's result)."""


class CommandError(Exception):
    """A request the bridge refuses, with the message the user should read."""


class Bridge:
    """State shared by the command handlers of one language server."""

    def __init__(self, ls: LanguageServer, url: str, token: str | None) -> None:
        self.ls = ls
        self.url = url.rstrip("/")
        self.token = token
        self._client: HostClient | None = None
        self.watcher: StatusWatcher | None = None
        self.running: dict[str, str] = {}
        """Task id → document URI, for the tasks this bridge is following now."""

    @property
    def client(self) -> HostClient:
        """Created on first use, inside the server's event loop (httpx binds to it)."""
        if self._client is None:
            self._client = HostClient(self.url, token=self.token)
        return self._client

    # -- lifecycle -----------------------------------------------------------------

    def start_watching(self) -> None:
        if self.watcher is None:
            self.watcher = StatusWatcher(self.client, self._notify_status)
            self.watcher.start()

    def _notify_status(self, summary: Summary) -> None:
        self.ls.protocol.notify(NOTIFICATION, summary)

    async def shutdown(self) -> None:
        """The editor is going away: stop watching, and cancel the tasks it was waiting
        for — nobody will see their results, and they would hold the GPU. The HTTP
        client stays open: pygls cancels the handlers after this returns, and they still
        tell the host (harmlessly, a second time)."""
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
        if self.running:
            await asyncio.gather(*(cancel_in_host(self.client, t) for t in list(self.running)))

    # -- documents -----------------------------------------------------------------

    def _folders(self) -> list[Path]:
        """The editor's workspace folders (and root), resolved: what the bridge may read."""
        workspace = self.ls.workspace
        return paths.workspace_folders(
            [*(folder.uri for folder in workspace.folders.values()), workspace.root_uri]
        )

    def _document(self, uri: str) -> tuple[TextDocument, paths.Located]:
        """The document a command works on, if the bridge may use it (`paths.locate`):
        the editor's text when it is open, else the file read once, after the check."""
        workspace = self.ls.workspace
        opened = workspace.text_documents.get(unquote(uri))
        try:
            located = paths.locate(uri, self._folders(), opened is not None)
        except paths.Refused as exc:
            raise CommandError(str(exc)) from None
        if opened is not None:
            return opened, located
        if located.disk is None:  # locate refuses a closed document it cannot read; still:
            raise CommandError(f"cannot read {uri}: it is not open in the editor")
        try:
            text = located.disk.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CommandError(f"cannot read {uri}: it is not UTF-8 text") from None
        except OSError as exc:
            raise CommandError(
                f"cannot read {uri}: it is not open in the editor and not readable on disk "
                f"({exc.strerror or exc})"
            ) from None
        document = TextDocument(uri, source=text, position_codec=workspace.position_codec)
        return document, located

    @staticmethod
    def _check_range(selection: types.Range | None, lines: Sequence[str], command: str) -> None:
        if selection is None:
            return
        count = len(lines)
        if selection.start.line > count or selection.end.line > count:
            raise CommandError(
                f"{command}: the range ends at line {selection.end.line} (0-based) but the "
                f"document has {count} line(s)"
            )

    # -- task commands -------------------------------------------------------------

    async def run_task(
        self, command: str, raw: Sequence[Any], cancel: asyncio.Event | None = None
    ) -> dict[str, Any]:
        """Submit the command's task, follow it as progress, and show its result.
        `cancel` (the request was cancelled) stops it like the progress' cancel button."""
        args = arguments.task_args(command, raw)
        document, located = self._document(args.uri)
        lines = document.lines
        self._check_range(args.range, lines, command)
        selection_text: str | None = None
        first = last = None
        if args.range is not None:
            start = document.offset_at_position(args.range.start)
            end = document.offset_at_position(args.range.end)
            selection_text = document.source[start:end]
            first = args.range.start.line + 1
            last = args.range.end.line + (0 if args.range.end.character == 0 else 1)
            last = max(first, last)
        path = located.shown
        request = prompts.build(
            command,
            path=path,
            text=document.source,
            selection=selection_text,
            first_line=first,
            last_line=last,
        )
        options = args.options
        work = WorkDone(self.ls, f"Tierhost: {_VERBS[command]}", cancel)
        await work.begin("submitting to the host", 0 if options.max_tokens else None)
        try:
            submitted = await self.client.submit_task(
                request.prompt,
                type=request.type,
                tier=options.tier,
                model=options.model,
                context=request.context,
                params=options.params() or None,
                validation=options.validation,
                force_big=options.force_big,
                priority=options.priority,
            )
        except BaseException:
            work.end("not submitted")
            raise
        task_id = submitted.id
        self.running[task_id] = args.uri
        # the id first: the user (or `tierhost.cancel [id]`) can refer to the task at once
        work.report(
            f"task {task_id} → {submitted.tier} ({submitted.model})",
            0 if options.max_tokens else None,
        )
        outcome = "ended"
        try:
            final, cancelled = await follow(
                self.client,
                submitted,
                work.report,
                work.cancel_requested,
                max_tokens=options.max_tokens,
            )
            outcome = "cancelled" if cancelled else final.status.value
        finally:
            self.running.pop(task_id, None)
            work.end(f"task {task_id} {outcome}")
        reply: dict[str, Any] = {
            "taskId": task_id,
            "status": final.status.value,
            "type": final.type,
            "tier": final.tier,
            "model": final.model,
            "tokens": final.tokens,
            "cancelledByUser": cancelled,
        }
        if final.status == "done" and command == "tierhost.implement":
            reply.update(await self._offer_edit(final, document, args.range, path))
        elif final.status in ("done", "failed") and command != "tierhost.implement":
            span = (first, last) if first is not None and last is not None else None
            reply.update(await self._show_markdown(command, final, located, path, span))
        if final.status == "failed":
            self._message(f"Tierhost task {task_id} failed: {final.error}", error=True)
            reply["error"] = final.error
        offset = args.range.start.line if command == "tierhost.implement" and args.range else 0
        reply["diagnostics"] = self._publish_findings(final, document, offset, reply)
        return reply

    async def _show_markdown(
        self,
        command: str,
        task: Task,
        located: paths.Located,
        path: str,
        span: tuple[int, int] | None,
    ) -> dict[str, Any]:
        """Write the result to `<folder>/.tierhost/` and show it; where it may not be
        written, show it in a message and return it, saying why."""
        text = results.markdown(command, task, source=path, lines=span, url=self.url)
        if located.folder is None:
            return self._not_written(
                command,
                text,
                "no workspace folder is open, and the bridge writes result files only "
                "inside one (in its .tierhost folder)",
            )
        try:
            target = self._write_result(located.folder, command, task.id, text)
        except paths.Refused as exc:
            return self._not_written(command, text, str(exc))
        except OSError as exc:
            return self._not_written(command, text, f"writing it failed ({exc.strerror or exc})")
        uri = uris.from_fs_path(str(target)) or target.as_uri()
        shown = False
        window = self.ls.client_capabilities.window
        if window and window.show_document and window.show_document.support:
            answer = await self.ls.window_show_document_async(
                types.ShowDocumentParams(uri=uri, take_focus=True)
            )
            shown = bool(answer and answer.success)
        if not shown:
            self._message(f"Tierhost: {command.removeprefix('tierhost.')} written to {target}")
        return {"document": uri, "shown": shown, "written": True}

    @staticmethod
    def _write_result(folder: Path, command: str, task_id: str, text: str) -> Path:
        """Write where `paths.result_file` allows, checked again once `.tierhost` exists,
        and never through a link planted meanwhile (O_NOFOLLOW)."""
        paths.result_file(folder, command, task_id)  # refuses before anything is created
        (folder / paths.FOLDER).mkdir(exist_ok=True)
        target = paths.result_file(folder, command, task_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        return target

    def _not_written(self, command: str, text: str, reason: str) -> dict[str, Any]:
        kind = command.removeprefix("tierhost.")
        shown = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "\n…"
        self._message(
            f"Tierhost: the {kind} was not written to a file: {reason}. "
            f"It is in the command's result, and here:\n\n{shown}"
        )
        return {"markdown": text, "written": False, "reason": reason}

    async def _offer_edit(
        self,
        task: Task,
        document: TextDocument,
        selection: types.Range | None,
        path: str,
    ) -> dict[str, Any]:
        caps = self.ls.client_capabilities.workspace
        versioned = bool(caps and caps.workspace_edit and caps.workspace_edit.document_changes)
        try:
            offer = results.implementation(
                task,
                uri=document.uri,
                path=path,
                version=document.version,
                lines=document.lines,
                selection=selection,
                versioned=versioned,
                units=document.position_codec.client_num_units,
            )
        except ValueError as exc:
            self._message(f"Tierhost: {exc}", error=True)
            return {"applied": False, "reason": str(exc)}
        if offer.note:
            self._message(f"Tierhost: {offer.note}")
        reply: dict[str, Any] = {"origin": offer.origin}
        if not (caps and caps.apply_edit):
            reply.update(applied=False, edit=get_converter().unstructure(offer.edit))
            return reply
        answer = await self.ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(
                edit=offer.edit, label=f"Tierhost: implementation from task {task.id}"
            )
        )
        reply["applied"] = bool(answer and answer.applied)
        if answer and not answer.applied and answer.failure_reason:
            reply["reason"] = answer.failure_reason
        return reply

    def _publish_findings(
        self,
        task: Task,
        document: TextDocument,
        line_offset: int,
        reply: dict[str, Any],
    ) -> int:
        """Publish the task's findings on the document. An empty list from a task that was
        validated clears earlier ones (the code is clean now); from a task no check ran on
        (a plan), or from a host that sends no `findings`, it leaves them alone. Returns
        how many were published."""
        if "findings" not in task.model_fields_set or (
            not task.findings and task.validated is None
        ):
            return 0
        opened = self.ls.workspace.text_documents.get(unquote(document.uri))
        lines = (opened or document).lines  # after any edit
        found = results.diagnostics(
            task.findings,
            task_id=task.id,
            url=self.url,
            lines=lines,
            line_offset=line_offset,
            units=document.position_codec.client_num_units,
        )
        self.ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=document.uri, diagnostics=found)
        )
        return len(found)

    def _message(self, text: str, *, error: bool = False) -> None:
        kind = types.MessageType.Error if error else types.MessageType.Info
        self.ls.window_show_message(types.ShowMessageParams(type=kind, message=text))

    # -- host commands -------------------------------------------------------------

    async def set_mode(self, raw: Sequence[Any]) -> dict[str, Any]:
        mode, device = arguments.mode_args(raw)
        try:
            modes = await self.client.set_mode(mode, device)
        except HostError as exc:
            raise CommandError(f"tierhost.setMode: the host refused: {exc}") from None
        if self.watcher is not None:
            self.watcher.refresh()
        return {"modes": modes}

    async def status(self, raw: Sequence[Any]) -> Summary:
        arguments.no_args("tierhost.status", raw)
        if self.watcher is not None:
            summary = await self.watcher.poll_once()
        else:
            summary = await snapshot(self.client)
        self._message(f"Tierhost: {summary['text']}", error=not summary["reachable"])
        return summary

    async def cancel(self, raw: Sequence[Any]) -> dict[str, Any]:
        target = arguments.cancel_args(raw)
        if target is None:
            ids = list(self.running)
        elif ":" in target:  # a document URI: the tasks started from it
            ids = [t for t, uri in self.running.items() if uri == target]
        else:
            ids = [target]
        cancelled = []
        for task_id in ids:
            try:
                task = await self.client.cancel_task(task_id)
            except HostError as exc:
                if target is not None and ":" not in target:
                    raise CommandError(f"tierhost.cancel: {exc}") from None
                continue  # ended meanwhile
            cancelled.append({"taskId": task_id, "status": task.status.value})
        return {"cancelled": cancelled}
