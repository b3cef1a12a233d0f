"""What changes in the host, as it happens: the feed of the dashboard's live view.

Parts of the host publish small events (a model's state, a swap, a GPU mode, a task, the
routing table); each reader of `GET /api/events` subscribes and gets them in order. A
publisher never waits: each subscriber has a bounded backlog, and one that falls behind
(a stalled browser tab) loses its backlog and gets one `resync` event instead, telling
it to fetch the state afresh. So no reader, however slow, can hold up the host or grow
its memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

BACKLOG = 256
"""Events kept for one subscriber before it is told to resync."""


@dataclass(frozen=True)
class Event:
    kind: str
    """`model`, `swap`, `mode`, `task`, `routing`; `resync` for a reader that fell behind."""
    data: dict[str, Any]
    at: float
    """Wall-clock seconds."""


class Subscription:
    """One reader's backlog of events."""

    def __init__(self, backlog: int) -> None:
        self._events: deque[Event] = deque()
        self._backlog = backlog
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, event: Event) -> None:
        if len(self._events) >= self._backlog:
            self._events.clear()
            self._events.append(Event("resync", {"reason": "fell behind"}, event.at))
        else:
            self._events.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, timeout: float) -> Event | None:
        """The next event; None after `timeout` seconds without one, or once closed."""
        if not self._events and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        if self._events:
            event = self._events.popleft()
            if not self._events:
                self._ready.clear()
            return event
        self._ready.clear()
        return None


class EventHub:
    """Fans the host's events out to every subscriber; publishing never blocks."""

    def __init__(self, backlog: int = BACKLOG) -> None:
        self._subscribers: set[Subscription] = set()
        self._backlog = backlog
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, **data: Any) -> None:
        event = Event(kind, data, time.time())
        for subscription in self._subscribers:
            subscription.put(event)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        subscription = Subscription(self._backlog)
        if self.closed:
            subscription.close()
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every stream (the host is stopping); later subscribers end at once."""
        self.closed = True
        for subscription in self._subscribers:
            subscription.close()
