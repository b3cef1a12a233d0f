"""The event hub: fan-out in order, a bounded backlog per reader, and an end."""

from __future__ import annotations

from host.events import EventHub


async def test_every_subscriber_gets_every_event_in_order() -> None:
    hub = EventHub()
    with hub.subscribe() as first, hub.subscribe() as second:
        hub.publish("mode", device="gpu0", mode="gaming")
        hub.publish("model", model="a", state="ready")
        for reader in (first, second):
            got = [await reader.next(1.0), await reader.next(1.0)]
            assert [(e.kind, e.data) for e in got if e is not None] == [
                ("mode", {"device": "gpu0", "mode": "gaming"}),
                ("model", {"model": "a", "state": "ready"}),
            ]
    assert hub.subscribers == 0


async def test_a_reader_that_falls_behind_gets_one_resync_instead_of_its_backlog() -> None:
    hub = EventHub(backlog=3)
    with hub.subscribe() as slow:
        for i in range(10):
            hub.publish("model", n=i)
        kinds = []
        while (event := await slow.next(0.0)) is not None:
            kinds.append((event.kind, event.data))
    assert kinds[0] == ("resync", {"reason": "fell behind"})
    assert len(kinds) <= 3  # never more than its backlog held


async def test_no_event_in_time_is_none_and_closing_ends_every_reader() -> None:
    hub = EventHub()
    with hub.subscribe() as reader:
        assert await reader.next(0.01) is None
        hub.close()
        assert reader.closed and await reader.next(5.0) is None
    with hub.subscribe() as late:
        assert late.closed
