"""Pure work on big inputs, run in a worker process so the event loop keeps answering.

Parsing, checking and routing an 8 MiB request body is 60-100 ms of C code that holds
the GIL the whole time (`json.loads` never lets go of it), so a worker *thread* does not
help: every other client, `/health` included, waits for it. A worker *process* has its
own GIL; what is left on the loop is copying the bytes across, which is memcpy-fast.

Small inputs (most requests) run inline: a process round trip costs more than the work.
The pool starts on the first big input, not with the daemon, has one low-priority worker
(a client sending big bodies back to back gets one core at most, at lower priority than
the daemon), and a worker that dies is replaced by the next call. Functions sent here
must be importable module-level functions whose arguments and results pickle, and must
not depend on the daemon's state: they get a copy of what they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

OFF_LOOP_BYTES = 1024 * 1024
"""Inputs over this many bytes (or characters) go to the worker process."""

WORKER_NICENESS = 5
"""How much lower the worker's CPU priority is than the daemon's."""


class WorkerLost(Exception):
    """The worker process died while it had this input: an answer of 503."""


def _lower_priority() -> None:
    with contextlib.suppress(OSError):  # not permitted: same priority, still off the loop
        os.nice(WORKER_NICENESS)


class Offload:
    """The daemon's one worker process for pure, CPU-heavy functions of big inputs."""

    def __init__(self, threshold: int = OFF_LOOP_BYTES) -> None:
        self.threshold = threshold
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    async def run(self, size: int, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`func(*args, **kwargs)`, inline when `size` is small, else in the worker.

        Exceptions raised by `func` come back as they were raised (they must pickle). A
        worker that dies on the input raises WorkerLost: the input is not tried again in
        the daemon, where whatever killed the worker (memory, most likely) would kill it.
        Once the host is closing, big work runs in a thread: no new process is started
        for a daemon on its way out."""
        if size <= self.threshold:
            return func(*args, **kwargs)
        if self._closed:
            return await asyncio.to_thread(func, *args, **kwargs)
        try:
            future = self._started().submit(func, *args, **kwargs)
        except (BrokenProcessPool, RuntimeError):  # died idle, or shut down meanwhile
            self._discard()
            future = self._started().submit(func, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            log.warning("the offload worker died on a %d-byte input; a new one starts", size)
            self._discard()
            raise WorkerLost(
                f"the worker preparing this {size}-byte request stopped (out of memory?); "
                "the request was not run"
            ) from None

    def close(self) -> None:
        """Stop the worker without waiting for it; queued work is cancelled."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the daemon has threads, and a forked copy of a lock some
            # thread held would never be released in the child.
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lower_priority,
            )
        return self._pool

    def _discard(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
