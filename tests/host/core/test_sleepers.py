"""The RAM room for sleeping models, checked with plain values."""

from __future__ import annotations

from host.core.sleepers import Sleeper, make_room


def test_a_model_that_fits_beside_the_sleepers_stops_none() -> None:
    assert make_room([Sleeper("a", 4000, 1.0)], 10_000, "b", 6000) == []


def test_the_least_recently_used_sleepers_are_stopped_only_as_far_as_needed() -> None:
    sleepers = [Sleeper("old", 3000, 1.0), Sleeper("older", 3000, 0.5), Sleeper("new", 3000, 9.0)]
    assert make_room(sleepers, 10_000, "b", 3000) == ["older"]
    assert make_room(sleepers, 10_000, "b", 6000) == ["older", "old"]


def test_a_sleeper_falling_asleep_is_never_stopped_and_its_ram_counts() -> None:
    sleepers = [Sleeper("falling", 6000, 0.0, stoppable=False), Sleeper("a", 2000, 5.0)]
    assert make_room(sleepers, 10_000, "b", 4000) == ["a"]
    assert make_room(sleepers, 10_000, "b", 5000) is None


def test_a_sleeper_being_woken_leaves_room_for_the_one_that_makes_way_for_it() -> None:
    """A and B swapping back and forth with room for one sleeper: each swap is a wake."""
    sleepers = [Sleeper("a", 6000, 0.0, leaving=True), Sleeper("c", 3000, 1.0)]
    assert make_room(sleepers, 10_000, "b", 6000) == []
    assert make_room([Sleeper("a", 6000, 0.0)], 10_000, "b", 6000) == ["a"]


def test_a_model_bigger_than_the_budget_does_not_sleep() -> None:
    assert make_room([], 10_000, "b", 12_000) is None
    assert make_room([], 0, "b", 1) is None


def test_the_model_itself_is_not_counted_twice() -> None:
    assert make_room([Sleeper("b", 6000, 0.0)], 10_000, "b", 6000) == []


def test_without_a_budget_every_model_sleeps() -> None:
    assert make_room([Sleeper("a", 10**6, 0.0)], None, "b", 10**6) == []
