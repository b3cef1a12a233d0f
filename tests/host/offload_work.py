"""Module-level functions for tests/host/test_offload.py: the worker process imports them
by name, so they cannot live in the test module's closures."""

from __future__ import annotations

import os

from host.core.routing import RoutingError
from host.errors import ApiError


def pid_and_length(text: str) -> tuple[int, int]:
    return os.getpid(), len(text)


def refuse_as_api_error(text: str) -> None:
    raise ApiError(413, "request_too_large", f"{len(text)} is too many", {"Retry-After": "1"})


def refuse_as_routing_error(text: str) -> None:
    raise RoutingError(400, "context_length_exceeded", "too long", ("size: too long",))


def die(text: str) -> None:
    os._exit(3)  # what the OOM killer does to the worker, as far as the daemon can tell
