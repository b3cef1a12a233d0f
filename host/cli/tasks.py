"""`tierhost submit|tasks|task|cancel|route|routing`: the task queue from the shell.

Human output on a terminal (tables, a live progress line while waiting); JSON when
`--json` is given or stdout is piped, one object per line while waiting, so scripts can
follow a task without parsing tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from host.client import HostClient
from host.core.evaluation import BadExamples, Score, read_examples, type_reason
from host.json_text import json_kind
from host.wire import TERMINAL, Decision, Task, TypeEvidence

POLL_S = 0.25


def _json_mode(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False)) or not sys.stdout.isatty()


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt:
        return " ".join(args.prompt)
    if sys.stdin.isatty():
        raise SystemExit("tierhost: give the prompt as an argument or on standard input")
    return sys.stdin.read()


def _context(files: list[Path] | None) -> dict[str, Any] | None:
    if not files:
        return None
    entries = []
    for path in files:
        try:
            entries.append({"path": str(path), "content": path.read_text("utf-8")})
        except OSError as exc:
            raise SystemExit(f"tierhost: cannot read {path}: {exc.strerror}") from None
    return {"files": entries}


def phase(task: Task, model_state: str | None) -> str:
    """The progress line of `tierhost submit --wait`: where the task is now."""
    status = task.status.value
    if status == "queued":
        held = task.waiting_because
        position = "" if task.queue_position is None else f" (position {task.queue_position})"
        return f"queued{position}" + (f" — {held}" if held else "")
    if status == "waiting_device":
        if model_state in ("starting", "waking"):
            return f"swapping in {task.model}"
        return "waiting for device"
    if status == "running":
        return f"running on {task.model}: {task.tokens} tokens"
    return status


def _as_json(answer: BaseModel) -> dict[str, Any]:
    """An answer as the daemon sent it: only the keys it sent (`--json`, a pipe)."""
    shown: dict[str, Any] = answer.model_dump(mode="json", exclude_unset=True)
    return shown


async def _wait(client: HostClient, task: Task, as_json: bool) -> Task:
    """Follow a task to its end, showing progress; Ctrl-C cancels it in the host."""
    task_id = task.id
    last_line = ""
    try:
        if as_json:
            while task.status not in TERMINAL:
                line = json.dumps(
                    {
                        "id": task.id,
                        "status": task.status.value,
                        "queue_position": task.queue_position,
                        "tokens": task.tokens,
                    }
                )
                if line != last_line:
                    print(line, flush=True)
                    last_line = line
                await asyncio.sleep(POLL_S)
                task = await client.get_task(task_id)
            return task
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            transient=True,
        ) as progress:
            bar = progress.add_task(f"{task_id}: queued", total=None)
            while task.status not in TERMINAL:
                state = None
                if task.status == "waiting_device":
                    status = await client.status()
                    state = next((m.state for m in status.models if m.name == task.model), None)
                progress.update(bar, description=f"{task_id}: {phase(task, state)}")
                await asyncio.sleep(POLL_S)
                task = await client.get_task(task_id)
        return task
    except (KeyboardInterrupt, asyncio.CancelledError):
        await client.cancel_task(task_id)
        raise


def cmd_submit(args: argparse.Namespace) -> int:
    prompt = _read_prompt(args)
    as_json = _json_mode(args)

    async def run() -> Task:
        async with HostClient(args.url) as client:
            params = {"max_tokens": args.max_tokens} if args.max_tokens else None
            task = await client.submit_task(
                prompt,
                type=args.type,
                tier=args.tier,
                model=args.model,
                force_big=args.force_big or None,
                priority=args.priority,
                validation=args.validation,
                context=_context(args.file),
                params=params,
            )
            if not args.wait:
                return task
            return await _wait(client, task, as_json)

    task = asyncio.run(run())
    if as_json:
        print(json.dumps(_as_json(task)))
    elif task.status == "done":
        print(task.result)
    elif not args.wait:
        print(f"{task.id} queued for {task.tier} ({task.model})")
        for reason in task.decision.reasons if task.decision else []:
            print(f"  - {reason}")
    else:
        print(
            f"tierhost: task {task.id} {task.status.value}: {task.error or ''}",
            file=sys.stderr,
        )
    return 0 if task.status != "failed" else 1


def cmd_tasks(args: argparse.Namespace) -> int:
    async def run() -> list[Task]:
        async with HostClient(args.url) as client:
            return await client.list_tasks(args.status, args.type, args.limit)

    tasks = asyncio.run(run())
    if _json_mode(args):
        print(json.dumps([_as_json(task) for task in tasks]))
        return 0
    table = Table(title="Tasks")
    for column in ("id", "status", "type", "tier", "model", "tokens", "age", "prompt"):
        table.add_column(column)
    now = time.time()
    for task in tasks:
        age = "-" if task.created is None else f"{now - task.created:.0f}s"
        table.add_row(
            task.id,
            task.status.value,
            task.type or "-",
            task.tier or "-",
            task.model or "-",
            str(task.tokens),
            age,
            task.prompt[:40].replace("\n", " "),
        )
    Console().print(table)
    return 0


def cmd_task(args: argparse.Namespace) -> int:
    async def run() -> Task:
        async with HostClient(args.url) as client:
            return await client.get_task(args.id)

    task = asyncio.run(run())
    if _json_mode(args):
        print(json.dumps(_as_json(task)))
        return 0
    console = Console()
    route = f"{task.status.value} — {task.type} → {task.tier} ({task.model})"
    console.print(f"[bold]{escape(task.id)}[/] {escape(route)}")  # names are not markup
    for reason in task.decision.reasons if task.decision else []:
        console.print(f"  reason: {reason}", markup=False)
    for event in task.events or []:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        console.print(f"  {stamp} {event.status}: {event.reason}", markup=False)
    if task.result:
        console.print(task.result, markup=False)
    if task.error:
        console.print(f"[red]{escape(task.error)}[/]")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    async def run() -> Task:
        async with HostClient(args.url) as client:
            return await client.cancel_task(args.id)

    task = asyncio.run(run())
    print(json.dumps(_as_json(task)) if _json_mode(args) else f"{task.id}: {task.status.value}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    async def run() -> Decision:
        async with HostClient(args.url) as client:
            return await client.route(
                " ".join(args.prompt),
                type=args.type,
                tier=args.tier,
                model=args.model,
                force_big=args.force_big or None,
            )

    decision = asyncio.run(run())
    # `--explain` is for reading, piped into `less` or not; `--json` still wins
    if args.json or (_json_mode(args) and not args.explain):
        print(json.dumps(_as_json(decision)))
        return 0
    print(f"{decision.type} → {decision.tier} → {decision.model} on {decision.device or 'remote'}")
    if args.explain:
        for line in explain_type(decision.type_evidence):
            print(line)
        print("route:")
    for reason in decision.reasons:
        print(f"  - {reason}")
    return 0


def _scores(scores: dict[str, float]) -> str:
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {score:g}" for name, score in ranked) or "none"


def explain_type(evidence: TypeEvidence | None) -> list[str]:
    """`tierhost route --explain`: each step of the type's inference, with its evidence,
    in the order the router takes them (`host.core.task_types.choose_type`)."""
    if evidence is None:
        return ["type: given by the request (nothing inferred)"]
    lines = ["type, step by step:"]
    strength = "strong: decides" if evidence.strong_rule else "not strong enough to decide"
    lines.append(f"  1. rules: {evidence.rule} ({strength})")
    lines.append(f"     scores: {_scores(evidence.rule_scores)}")
    opinion = evidence.classifier
    if opinion is None:
        why = "a strong rule decided" if evidence.strong_rule else "none loaded"
        lines.append(f"  2. classifier: not asked ({why})")
    else:
        words = ", ".join(f"'{w}'" for w in opinion.words) or "no telling words"
        bar = f", needed {opinion.needed:.2f}" if opinion.needed is not None else ""
        lines.append(f"  2. classifier: {opinion.type} {opinion.confidence:.2f}{bar} — {words}")
        ranking = ", ".join(f"{entry.type} {entry.probability:.2f}" for entry in opinion.ranking)
        if ranking:
            lines.append(f"     likeliest: {ranking}")
    asked = evidence.classifier_model
    if asked is None:
        lines.append("  3. classifier model: not asked")
    else:
        choices = ", ".join(asked.choices)
        outcome = (
            f"answered {asked.answer!r}" if asked.error is None else f"no answer: {asked.error}"
        )
        lines.append(f"  3. classifier model {asked.model} (among {choices}): {outcome}")
    lines.append(f"  decided by: {evidence.decided_by}")
    return lines


ROUTING_VERSION = 1
"""The one `model-routing.json` version this CLI reads and writes."""
MAX_ROUTING_FILE_BYTES = 1024 * 1024
MAX_INTEGER_DIGITS = 20


class RoutingFileError(ValueError):
    """A routing file that cannot be imported; the message says what is wrong, on one line."""


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refuse_constant(name: str) -> float:
    raise RoutingFileError(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise RoutingFileError(f"an integer of {len(digits)} digits is not a routing value")
    return int(digits)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise RoutingFileError(f"the key {_shown(key)} appears twice in one object")
        document[key] = value
    return document


def parse_routing_document(data: bytes) -> dict[str, str]:
    """The routes of a `model-routing.json` document, checked for shape.

    Whether each task type and tier exists is the daemon's call (it answers 400 or 404 with
    the known names); everything about the file itself is decided here, before any
    request, so that every bad file gets one line that says what is wrong with it.
    """
    if len(data) > MAX_ROUTING_FILE_BYTES:
        raise RoutingFileError(
            f"it is larger than {MAX_ROUTING_FILE_BYTES // 1024} KiB; a routing table is a "
            "few lines"
        )
    try:
        text = data.decode("utf-8-sig")  # an editor's byte-order mark is not an error
    except UnicodeDecodeError as exc:
        raise RoutingFileError(f"it is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise RoutingFileError("it is empty; export one with `tierhost routing export FILE`")
    try:
        document = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=_bounded_int,
            object_pairs_hook=_unique_keys,
        )
    except RoutingFileError:
        raise
    except json.JSONDecodeError as exc:
        raise RoutingFileError(
            f"it is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise RoutingFileError("it nests too deeply to be a routing table") from None
    if not isinstance(document, dict):
        raise RoutingFileError(
            f'it holds {json_kind(document)}, not an object {{"version": 1, "routes": {{...}}}}'
        )
    version = document.get("version", ROUTING_VERSION)
    if type(version) is not int or version != ROUTING_VERSION:
        raise RoutingFileError(
            f"version {_shown(version)} is not supported (this tierhost reads version "
            f"{ROUTING_VERSION})"
        )
    unknown = sorted(set(document) - {"version", "routes"})
    if unknown:
        raise RoutingFileError(
            f"unknown field {_shown(unknown[0])} (a version {ROUTING_VERSION} file has "
            '"version" and "routes")'
        )
    routes = document.get("routes")
    if routes is None:
        raise RoutingFileError('it has no "routes" object')
    if not isinstance(routes, dict):
        raise RoutingFileError(f'"routes" is {json_kind(routes)}, not an object of type → tier')
    for task_type, tier in routes.items():
        if not isinstance(tier, str):
            raise RoutingFileError(
                f"routes[{_shown(task_type)}] is {json_kind(tier)}, not a tier name (a string)"
            )
    return routes


def _display(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)


def read_routing_file(path: Path) -> dict[str, str]:
    """`parse_routing_document` of a file, with the file's name in every error."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_ROUTING_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SystemExit(f"tierhost: cannot read {_display(path)}: {reason}") from None
    try:
        return parse_routing_document(data)
    except RoutingFileError as exc:
        raise SystemExit(f"tierhost: {_display(path)}: {exc}") from None


def routing_document(routes: dict[str, str]) -> str:
    """What `routing export` writes: the document `routing import` reads back."""
    return json.dumps({"version": ROUTING_VERSION, "routes": routes}, indent=2) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a failed export leaves the old
    file whole instead of half a document."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        reason = exc.strerror or type(exc).__name__
        raise SystemExit(f"tierhost: cannot write {_display(path)}: {reason}") from None


def cmd_routing_eval(args: argparse.Namespace, path: Path) -> int:
    """Score the daemon's router on a labelled JSONL file of your own: each prompt routed
    as the daemon would route it untyped, against the tier its labelled type reaches."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"tierhost: cannot read {_display(path)}: {exc}") from None

    async def run() -> tuple[Score, list[str]]:
        async with HostClient(args.url) as client:
            types = list(await client.routing())
            try:
                examples = read_examples(text, types)
            except BadExamples as exc:
                raise SystemExit(f"tierhost: {_display(path)}: {exc}") from None
            scored = Score()
            want: dict[str, str] = {}
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                disable=_json_mode(args),
            ) as progress:
                job = progress.add_task(f"routing {len(examples)} prompts", total=len(examples))
                for example in examples:
                    if example.type not in want:
                        typed = await client.route(example.prompt, type=example.type)
                        want[example.type] = typed.tier or ""
                    got = await client.route(example.prompt)
                    why = type_reason(got.reasons)
                    scored.add(example, got.type, got.tier, want[example.type], why)
                    progress.advance(job)
            return scored, types

    scored, types = asyncio.run(run())
    if _json_mode(args):
        print(
            json.dumps(
                {
                    "total": scored.total,
                    "type_accuracy": scored.type_accuracy,
                    "tier_accuracy": scored.tier_accuracy,
                    "confusion": [
                        {"expected": e, "inferred": g, "count": n}
                        for (e, g), n in sorted(scored.confusion.items())
                    ],
                    "misses": [
                        {
                            "prompt": m.example.prompt,
                            "expected": m.example.type,
                            "inferred": m.got_type,
                            "tier": m.got_tier,
                            "why": m.why,
                        }
                        for m in scored.misses
                    ],
                }
            )
        )
        return 0
    print(
        f"type right for {scored.right_type} of {scored.total} ({scored.type_accuracy:.0%}), "
        f"tier right for {scored.right_tier} of {scored.total} ({scored.tier_accuracy:.0%})"
    )
    print()
    print("\n".join(scored.table(types)))
    for miss in scored.misses[:20]:
        print(f"  - {miss.example.type} → {miss.got_type}: {miss.example.prompt[:70]!r}")
        if miss.why:
            print(f"      {miss.why}")
    return 0


def cmd_routing(args: argparse.Namespace) -> int:
    if args.action == "eval":
        if args.type is None or args.tier is not None:
            raise SystemExit("tierhost: usage: tierhost routing eval FILE")
        return cmd_routing_eval(args, Path(args.type))
    if args.action == "set" and (args.type is None or args.tier is None):
        raise SystemExit("tierhost: usage: tierhost routing set TYPE TIER")
    if args.action in ("export", "import") and args.tier is not None:
        raise SystemExit(f"tierhost: usage: tierhost routing {args.action} FILE")
    if args.action == "import" and args.type is None:
        raise SystemExit("tierhost: usage: tierhost routing import FILE")
    file = Path(args.type) if args.action in ("export", "import") and args.type else None
    imported = read_routing_file(file) if args.action == "import" and file else None

    async def run() -> dict[str, str]:
        async with HostClient(args.url) as client:
            if args.action == "set":
                routes = await client.routing()
                return await client.set_routing({**routes, args.type: args.tier})
            if imported is not None:
                return await client.set_routing(imported)
            return await client.routing()

    routes = asyncio.run(run())
    if args.action == "export":
        document = routing_document(routes)
        if file is not None:
            _write_atomically(file, document)
            print(f"wrote {_display(file)}", file=sys.stderr)
        else:
            sys.stdout.write(document)
        return 0
    if _json_mode(args):
        print(json.dumps({"routes": routes}))
    else:
        for task_type, tier in routes.items():
            print(f"{task_type:>16} → {tier}")
    return 0


def add_commands(sub: Any) -> None:
    """Register the task commands on the main parser's subparsers."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--url", help="daemon URL (default: $TIERHOST_URL)")

    submit = sub.add_parser("submit", help="queue a task (prompt as argument or on stdin)")
    submit.add_argument("prompt", nargs="*")
    submit.add_argument("--type", help="task type (default: inferred from the prompt)")
    submit.add_argument("--tier", help="run on this tier, whatever the routing table says")
    submit.add_argument("--model", help="run on this model")
    submit.add_argument("--force-big", action="store_true", help="use the GPU even when gaming")
    submit.add_argument("--priority", type=int, default=None, help="-100..100, higher first")
    submit.add_argument("--validation", choices=["none", "final", "block_by_block"])
    submit.add_argument("--max-tokens", type=int)
    submit.add_argument("--file", type=Path, action="append", help="add a file as context")
    submit.add_argument("--wait", action="store_true", help="wait and print the result")
    common(submit)
    submit.set_defaults(func=cmd_submit)

    tasks = sub.add_parser("tasks", help="list tasks")
    tasks.add_argument("--status")
    tasks.add_argument("--type")
    tasks.add_argument("--limit", type=int, default=50)
    common(tasks)
    tasks.set_defaults(func=cmd_tasks)

    task = sub.add_parser("task", help="one task with its events and result")
    task.add_argument("id")
    common(task)
    task.set_defaults(func=cmd_task)

    cancel = sub.add_parser("cancel", help="cancel a task")
    cancel.add_argument("id")
    common(cancel)
    cancel.set_defaults(func=cmd_cancel)

    route = sub.add_parser("route", help="show where a prompt would go, and why")
    route.add_argument("prompt", nargs="+")
    route.add_argument("--type")
    route.add_argument("--tier")
    route.add_argument("--model")
    route.add_argument("--force-big", action="store_true")
    route.add_argument(
        "--explain", action="store_true", help="show each step of the type's inference"
    )
    common(route)
    route.set_defaults(func=cmd_route)

    routing = sub.add_parser(
        "routing", help="show, set, export or import the routing table, or score the router"
    )
    routing.add_argument("action", choices=["show", "set", "export", "import", "eval"])
    routing.add_argument(
        "type", nargs="?", help="set: the task type; export/import: FILE; eval: labelled JSONL"
    )
    routing.add_argument("tier", nargs="?", help="set: the tier")
    common(routing)
    routing.set_defaults(func=cmd_routing)
