"""host.offload: big inputs go to a worker process and come back as they would inline,
errors included; a worker that dies is an error for its input only."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest

from host.core.routing import RoutingError
from host.errors import ApiError
from host.offload import Offload, WorkerLost
from tests.host import offload_work

T = TypeVar("T")

BIG = "x" * 2048
"""Over the test threshold below (1 KiB), so it goes to the worker."""

WAIT_S = 60
"""The first call starts a Python process, which on a busy 2-core box can take a while."""


@pytest.fixture
async def offload() -> AsyncIterator[Offload]:
    offload = Offload(threshold=1024)
    try:
        yield offload
    finally:
        offload.close()


async def run(offload: Offload, func: Callable[[str], T], text: str) -> T:
    return await asyncio.wait_for(offload.run(len(text), func, text), WAIT_S)


async def test_small_inputs_run_inline(offload: Offload) -> None:
    assert await run(offload, offload_work.pid_and_length, "short") == (os.getpid(), 5)


async def test_big_inputs_run_in_another_process(offload: Offload) -> None:
    pid, length = await run(offload, offload_work.pid_and_length, BIG)
    assert pid != os.getpid() and length == len(BIG)
    again, _ = await run(offload, offload_work.pid_and_length, BIG)
    assert again == pid  # one worker, kept between calls


async def test_an_api_error_comes_back_whole(offload: Offload) -> None:
    with pytest.raises(ApiError) as raised:
        await run(offload, offload_work.refuse_as_api_error, BIG)
    error = raised.value
    assert (error.status, error.kind, error.headers) == (
        413,
        "request_too_large",
        {"Retry-After": "1"},
    )
    assert error.message == "2048 is too many"


async def test_a_routing_error_comes_back_whole(offload: Offload) -> None:
    with pytest.raises(RoutingError) as raised:
        await run(offload, offload_work.refuse_as_routing_error, BIG)
    error = raised.value
    assert (error.status, error.kind, error.message) == (400, "context_length_exceeded", "too long")
    assert error.reasons == ["size: too long"]


async def test_a_dying_worker_fails_its_input_only(offload: Offload) -> None:
    pid, _ = await run(offload, offload_work.pid_and_length, BIG)
    with pytest.raises(WorkerLost, match="2048-byte request"):
        await run(offload, offload_work.die, BIG)
    fresh, _ = await run(offload, offload_work.pid_and_length, BIG)
    assert fresh not in (pid, os.getpid())


async def test_once_closed_big_work_runs_in_a_thread(offload: Offload) -> None:
    offload.close()
    pid, length = await run(offload, offload_work.pid_and_length, BIG)
    assert (pid, length) == (os.getpid(), len(BIG))
