"""The task state machine: which status may follow which, and nothing else.

A task is stored before it is acknowledged, and every change of status is an event row
with a time and a reason (see `host.store`). This module is the one place that says
which changes are legal, so the store refuses an illegal one whoever asks for it.
"""

from __future__ import annotations

import enum


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    WAITING_DEVICE = "waiting_device"
    RUNNING = "running"
    VALIDATING = "validating"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE = frozenset({TaskStatus.WAITING_DEVICE, TaskStatus.RUNNING, TaskStatus.VALIDATING})

_NEXT: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.QUEUED: frozenset(
        {TaskStatus.WAITING_DEVICE, TaskStatus.CANCELLED, TaskStatus.FAILED}
    ),
    # back to QUEUED: the daemon restarted, or the model's device was taken (gaming mode)
    TaskStatus.WAITING_DEVICE: frozenset(
        {TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.CANCELLED, TaskStatus.FAILED}
    ),
    TaskStatus.RUNNING: frozenset(
        {
            TaskStatus.VALIDATING,
            TaskStatus.DONE,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
            TaskStatus.QUEUED,
        }
    ),
    TaskStatus.VALIDATING: frozenset(
        {
            TaskStatus.RUNNING,
            TaskStatus.DONE,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
            TaskStatus.QUEUED,
        }
    ),
    TaskStatus.DONE: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, task_id: str, old: TaskStatus, new: TaskStatus) -> None:
        super().__init__(f"task {task_id} is {old}; it cannot become {new}")
        self.task_id = task_id
        self.old = old
        self.new = new


def can_move(old: TaskStatus, new: TaskStatus) -> bool:
    return new in _NEXT[old]


def check_move(task_id: str, old: TaskStatus, new: TaskStatus) -> None:
    if not can_move(old, new):
        raise IllegalTransition(task_id, old, new)
