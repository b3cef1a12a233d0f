"""The human-readable text that goes beside each structured result.

Some MCP clients show or feed the model only the text content and ignore structured
output, so the text must carry the answer itself, not just "see structured content".
Pure functions of the result models: tested without a daemon.
"""

from __future__ import annotations

from host.wire import TERMINAL, Decision, Task, TaskList
from mcp_server.models import HostStatus

RESULT_PREVIEW_CHARS = 4000


def decision(d: Decision) -> str:
    where = f"on {d.device}" if d.device else "remote"
    lines = [f"{d.type or 'untyped'} → tier {d.tier} → model {d.model} ({where})"]
    lines += [f"  - {reason}" for reason in d.reasons]
    if d.wait_reason:
        lines.append(f"  waits: {d.wait_reason}")
    return "\n".join(lines)


def phase(task: Task, model_state: str | None = None) -> str:
    """One line that says where a task is: queue position, swap, tokens so far."""
    if task.status == "queued":
        line = f"queued (position {task.queue_position or '?'})"
        return line + (f" — {task.waiting_because}" if task.waiting_because else "")
    if task.status == "waiting_device":
        if model_state == "starting":
            return f"swapping in {task.model}"
        return f"waiting for {task.model} to get its device"
    if task.status == "running":
        return f"running on {task.model}: {task.tokens} tokens"
    if task.status == "validating":
        return f"validating: {task.tokens} tokens generated"
    return task.status


def task(t: Task) -> str:
    head = f"task {t.id}: {t.status} — {t.type or 'untyped'} → {t.tier} ({t.model})"
    lines = [head]
    if t.status not in TERMINAL:
        lines.append(f"  {phase(t)}")
    if t.result:
        body = t.result
        if len(body) > RESULT_PREVIEW_CHARS:
            body = body[:RESULT_PREVIEW_CHARS] + f"\n… ({len(t.result)} characters in all)"
        lines += ["", body]
    if t.error:
        lines.append(f"  error: {t.error}")
    return "\n".join(lines)


def task_list(listing: TaskList) -> str:
    if not listing.tasks:
        return "no tasks"
    rows = [
        f"{t.id}  {t.status:<14} {t.type or '-':<14} {t.tier or '-':<10} "
        f"{t.tokens:>5} tok  {t.prompt[:50].replace(chr(10), ' ')}"
        for t in listing.tasks
    ]
    return f"{len(rows)} task(s)\n" + "\n".join(rows)


def mapping(title: str, values: dict[str, str]) -> str:
    return title + "\n" + "\n".join(f"  {k}: {v}" for k, v in values.items())


def host_status(s: HostStatus) -> str:
    lines = [f"Tierhost at {s.url} ({s.daemon})"]
    for d in s.devices:
        budget = "-" if d.budget_mb is None else str(d.budget_mb)
        residents = ", ".join(d.residents) or "nothing resident"
        lines.append(
            f"  device {d.name} [{d.mode}] {d.used_mb}/{budget} MiB: {residents}; queue {d.queue}"
            + (f" — {d.hold}" if d.hold else "")
        )
    for m in s.models:
        lines.append(
            f"  model {m.name} ({m.tier or '-'} on {m.device or 'remote'}): {m.state}, "
            f"{m.in_flight} in flight, {m.queued} queued"
        )
    if s.tasks.by_status:
        counts = ", ".join(f"{k} {v}" for k, v in s.tasks.by_status.items())
        lines.append(f"  tasks: {counts}")
    return "\n".join(lines)
