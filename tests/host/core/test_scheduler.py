"""The scheduler is pure: every rule is checked with plain values."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from host.core.scheduler import (
    Admit,
    Evict,
    Load,
    Reject,
    Release,
    Resident,
    ResidentPhase,
    Sleep,
    Snapshot,
    Unload,
    Waiter,
    next_unload_at,
    plan,
    used_mb,
)

GPU = "gpu0"


def one(
    budget_mb: int | None,
    residents: Sequence[Resident],
    waiters: Sequence[Waiter],
    *,
    allowed: frozenset[str] | None = None,
    now: float = 0.0,
) -> Snapshot:
    """A snapshot of one device, GPU (the common case)."""
    return Snapshot(
        {GPU: budget_mb}, residents, waiters, {} if allowed is None else {GPU: allowed}, now
    )


def ready(
    name: str,
    mb: int = 300,
    *,
    in_flight: int = 0,
    last_used: float = 0.0,
    persistent: bool = False,
) -> Resident:
    return Resident(name, {GPU: mb}, "ready", in_flight, last_used, persistent)


def test_nothing_waiting_means_nothing_to_do() -> None:
    assert plan(one(400, [ready("a")], [])) == []


def test_waiters_for_a_ready_model_are_admitted_together() -> None:
    actions = plan(one(400, [ready("a")], [Waiter(1, "a", {GPU: 300}), Waiter(2, "a", {GPU: 300})]))
    assert actions == [Admit((1, 2))]


def test_a_model_that_fits_is_loaded_and_its_waiters_join_one_load() -> None:
    actions = plan(one(400, [], [Waiter(1, "a", {GPU: 300}), Waiter(2, "a", {GPU: 300})]))
    assert actions == [Load("a")]


def test_waiters_join_a_load_under_way() -> None:
    starting = Resident("a", {GPU: 300}, "starting")
    assert plan(one(400, [starting], [Waiter(1, "a", {GPU: 300})])) == []


def test_idle_resident_is_evicted_for_a_model_that_does_not_fit() -> None:
    actions = plan(one(400, [ready("a")], [Waiter(1, "b", {GPU: 300})]))
    assert actions == [Evict("a", for_model="b")]


def test_a_resident_with_requests_in_flight_is_never_evicted() -> None:
    actions = plan(one(400, [ready("a", in_flight=2)], [Waiter(1, "b", {GPU: 300})]))
    assert actions == []


def test_memory_counts_until_the_stop_completes() -> None:
    stopping = Resident("a", {GPU: 300}, "stopping")
    assert plan(one(400, [stopping], [Waiter(1, "b", {GPU: 300})])) == []
    assert plan(one(400, [], [Waiter(1, "b", {GPU: 300})])) == [Load("b")]


def test_a_stop_under_way_counts_as_room_on_its_way() -> None:
    """Replanning while a swap's stop runs must not stop a second model: the stopping
    one's memory frees the room the waiter needs."""
    stopping = Resident("b", {GPU: 400}, "stopping")
    assert plan(one(800, [ready("a", 400), stopping], [Waiter(1, "c", {GPU: 400})])) == []
    # room on its way that is not enough still evicts, and only what makes up the rest
    small = Resident("b", {GPU: 200}, "stopping")
    residents = [ready("a", 300, last_used=1.0), ready("d", 300, last_used=2.0), small]
    actions = plan(one(800, residents, [Waiter(1, "c", {GPU: 400})]))
    assert actions == [Evict("a", for_model="c")]


def test_least_recently_used_idle_resident_goes_first() -> None:
    residents = [ready("old", 200, last_used=1.0), ready("new", 200, last_used=9.0)]
    actions = plan(one(400, residents, [Waiter(1, "c", {GPU: 200})]))
    assert actions == [Evict("old", for_model="c")]


def test_no_eviction_unless_it_makes_enough_room() -> None:
    residents = [ready("busy", 200, in_flight=1), ready("idle", 100)]
    actions = plan(one(400, residents, [Waiter(1, "big", {GPU: 300})]))
    assert actions == []  # evicting "idle" alone frees 200 of the 300 needed: wait instead


def test_persistent_residents_are_never_evicted() -> None:
    residents = [ready("validator", 100, persistent=True), ready("a", 300)]
    actions = plan(one(400, residents, [Waiter(1, "b", {GPU: 300})]))
    assert actions == [Evict("a", for_model="b")]


def test_model_that_can_never_fit_beside_persistent_ones_is_rejected() -> None:
    residents = [ready("validator", 200, persistent=True)]
    actions = plan(one(400, residents, [Waiter(1, "b", {GPU: 300}), Waiter(2, "b", {GPU: 300})]))
    assert len(actions) == 1
    reject = actions[0]
    assert isinstance(reject, Reject)
    assert reject.waiter_ids == (1, 2)
    assert "needs 300 MiB" in reject.reason


def test_a_blocked_waiter_holds_back_later_requests_for_the_resident() -> None:
    # "a" is busy; "b" waits for it. A new request for "a" must not overtake "b",
    # or a steady stream of "a" requests would starve the swap forever.
    snapshot = one(
        400, [ready("a", in_flight=1)], [Waiter(1, "b", {GPU: 300}), Waiter(2, "a", {GPU: 300})]
    )
    assert plan(snapshot) == []


def test_requests_ahead_of_the_blocked_waiter_are_still_admitted() -> None:
    snapshot = one(
        400, [ready("a", in_flight=1)], [Waiter(1, "a", {GPU: 300}), Waiter(2, "b", {GPU: 300})]
    )
    assert plan(snapshot) == [Admit((1,))]  # and "a" is not evicted: it just got work


def test_a_device_without_budget_loads_everything_at_once() -> None:
    actions = plan(one(None, [], [Waiter(1, "x", {GPU: 200}), Waiter(2, "y", {GPU: 200})]))
    assert actions == [Load("x"), Load("y")]


def test_models_that_fit_side_by_side_load_in_parallel() -> None:
    actions = plan(one(1000, [], [Waiter(1, "x", {GPU: 300}), Waiter(2, "y", {GPU: 300})]))
    assert actions == [Load("x"), Load("y")]


def test_a_waiter_behind_a_starting_model_is_not_blocked() -> None:
    snapshot = one(
        None,
        [Resident("x", {GPU: 200}, "starting"), ready("y", 200)],
        [Waiter(1, "x", {GPU: 200}), Waiter(2, "y", {GPU: 200})],
    )
    assert plan(snapshot) == [Admit((2,))]


# -- the budget invariant, for any snapshot ----------------------------------------------

names = st.sampled_from(["a", "b", "c", "d"])
memory = {"a": 300, "b": 300, "c": 100, "d": 200}


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    budget = draw(st.sampled_from([400, 500, 700]))
    residents: list[Resident] = []
    for name in draw(st.lists(names, unique=True, max_size=4)):
        if used_mb(residents, GPU) + memory[name] > budget:
            continue  # a snapshot the shell can produce already respects the budget
        phase = draw(st.sampled_from(["starting", "ready", "stopping"]))
        residents.append(
            Resident(
                name,
                {GPU: memory[name]},
                phase,
                draw(st.integers(0, 2)),
                draw(st.floats(0, 10)),
                draw(st.booleans()) and name == "c",
            )
        )
    waiters = [
        Waiter(i, m, {GPU: memory[m]}) for i, m in enumerate(draw(st.lists(names, max_size=8)))
    ]
    return one(budget, residents, waiters)


@settings(max_examples=400)
@given(snapshots())
def test_loads_never_exceed_the_budget_and_evictions_spare_busy_models(snap: Snapshot) -> None:
    actions = plan(snap)
    by_name = {r.name: r for r in snap.residents}
    evicted = {a.model for a in actions if isinstance(a, Evict)}
    for name in evicted:
        assert by_name[name].in_flight == 0 and not by_name[name].persistent
        assert by_name[name].phase == "ready"
    loads = [a.model for a in actions if isinstance(a, Load)]
    assert len(loads) == len(set(loads))
    # evictions free memory only once the stops complete, so loads must fit right now
    budget = snap.budgets[GPU]
    assert budget is not None
    assert used_mb(snap.residents, GPU) + sum(memory[m] for m in loads) <= budget
    for model in loads:
        assert model not in by_name
    admitted = {i for a in actions if isinstance(a, Admit) for i in a.waiter_ids}
    waiting_models = {w.id: w.model for w in snap.waiters}
    for waiter_id in admitted:
        assert by_name[waiting_models[waiter_id]].phase == "ready"


# -- device modes ------------------------------------------------------------------------


def test_a_model_the_mode_does_not_allow_waits_without_blocking_others() -> None:
    snapshot = one(
        400,
        [ready("a")],
        [Waiter(1, "b", {GPU: 300}), Waiter(2, "a", {GPU: 300})],
        allowed=frozenset({"a"}),
    )
    assert plan(snapshot) == [Admit((2,))]


def test_gaming_mode_releases_idle_residents_but_not_busy_ones() -> None:
    residents = [ready("a"), ready("v", 50, in_flight=1, persistent=True)]
    assert plan(one(400, residents, [], allowed=frozenset())) == [Release("a")]


def test_a_forced_request_loads_despite_the_mode() -> None:
    snapshot = one(400, [], [Waiter(1, "b", {GPU: 300}, forced=True)], allowed=frozenset())
    assert plan(snapshot) == [Load("b")]
    resident = one(
        400, [ready("b")], [Waiter(2, "b", {GPU: 300}, forced=True)], allowed=frozenset()
    )
    assert plan(resident) == [Admit((2,))]  # and "b" is not released under it


# -- idle unload ---------------------------------------------------------------------------


def idle(name: str, last_used: float, after_s: float | None = 60.0, **kw: object) -> Resident:
    return Resident(name, {GPU: 300}, "ready", last_used=last_used, idle_unload_s=after_s, **kw)  # type: ignore[arg-type]


def test_a_model_idle_for_its_idle_unload_s_is_unloaded() -> None:
    snap = one(1000, [idle("a", last_used=100.0)], [], now=160.0)
    assert plan(snap) == [Unload("a", 60.0)]
    assert next_unload_at(snap) is None  # due now, not later


def test_before_it_is_due_the_plan_says_when_to_look_again() -> None:
    residents = [idle("a", 100.0), idle("b", 120.0, 10.0), idle("c", 0.0, None)]
    early = one(1000, residents, [], now=125.0)
    assert plan(early) == []
    assert next_unload_at(early) == 130.0  # b's, before a's at 160; c never
    assert plan(one(1000, residents, [], now=130.0)) == [Unload("b", 10.0)]


def test_a_model_in_use_or_wanted_is_never_unloaded_for_idleness() -> None:
    busy = Resident("a", {GPU: 300}, "ready", in_flight=1, last_used=0.0, idle_unload_s=1.0)
    assert plan(one(1000, [busy], [], now=100.0)) == []
    wanted = one(1000, [idle("a", 0.0, 1.0)], [Waiter(1, "a", {GPU: 300})], now=100.0)
    assert plan(wanted) == [Admit((1,))]
    assert next_unload_at(wanted) is None
    starting = Resident("a", {GPU: 300}, "starting", last_used=0.0, idle_unload_s=1.0)
    assert plan(one(1000, [starting], [], now=100.0)) == []


def test_a_model_the_mode_releases_is_not_also_unloaded() -> None:
    snap = one(1000, [idle("a", 0.0, 1.0)], [], allowed=frozenset(), now=100.0)
    assert plan(snap) == [Release("a")]


# -- several devices: models that span cards, models pinned to one ------------------------

BOTH = {"gpu0": 1000, "gpu1": 1000}
DENSE = {"gpu0": 500, "gpu1": 500}
"""A dense model split over both cards."""
MOE = {"gpu1": 900}
"""The big MoE model, on gpu1 only (gpu0 sits on the slow link)."""
SMALL = {"gpu0": 400}


def on(name: str, memory: dict[str, int], **kw: object) -> Resident:
    return Resident(name, memory, "ready", **kw)  # type: ignore[arg-type]


def test_a_spanning_model_loads_only_when_it_fits_every_card() -> None:
    assert plan(Snapshot(BOTH, [], [Waiter(1, "dense", DENSE)])) == [Load("dense")]
    crowded = [on("small", {"gpu0": 600})]
    assert plan(Snapshot(BOTH, crowded, [Waiter(1, "dense", DENSE)])) == [
        Evict("small", for_model="dense")
    ]


def test_the_moe_evicts_the_dense_model_from_both_cards_and_the_small_model_stays() -> None:
    residents = [on("dense", DENSE, last_used=1.0), on("small", SMALL, last_used=0.0)]
    actions = plan(Snapshot(BOTH, residents, [Waiter(1, "moe", MOE)]))
    assert actions == [Evict("dense", for_model="moe")]  # small is older but frees no gpu1


def test_a_swap_on_one_card_does_not_hold_up_the_other() -> None:
    residents = [on("moe", MOE, in_flight=1), on("small", SMALL)]
    waiters = [Waiter(1, "dense", DENSE), Waiter(2, "small", SMALL)]
    # dense waits for the moe's request on gpu1, and holds gpu0 too: small waits behind it
    assert plan(Snapshot(BOTH, residents, waiters)) == []
    other = [Waiter(1, "other", {"gpu1": 900}), Waiter(2, "small", SMALL)]
    assert plan(Snapshot(BOTH, residents, other)) == [Admit((2,))]  # gpu0 is nobody's wait


def test_a_spanning_model_waiting_behind_one_card_keeps_its_place_on_the_other() -> None:
    """Else a stream of small-model requests on gpu0 could keep the small model busy, and
    so unevictable, for ever, while the dense model waits its turn on gpu1."""
    residents = [on("moe", MOE, in_flight=1), on("small", {"gpu0": 600})]
    waiters = [Waiter(1, "other", {"gpu1": 900}), Waiter(2, "dense", DENSE)]
    assert plan(Snapshot(BOTH, residents, [*waiters, Waiter(3, "small", SMALL)])) == []
    assert plan(Snapshot(BOTH, residents, [Waiter(3, "small", SMALL), *waiters])) == [Admit((3,))]


def test_a_spanning_model_that_can_never_fit_one_card_is_refused_naming_it() -> None:
    persistent = [on("helper", {"gpu1": 300}, persistent=True)]
    actions = plan(Snapshot(BOTH, persistent, [Waiter(1, "huge", {"gpu0": 500, "gpu1": 800})]))
    assert actions == [
        Reject(
            (1,),
            "model huge needs 800 MiB on gpu1 but only 700 MiB of its 1000 MiB budget is not "
            "held by persistent models",
        )
    ]


def test_a_card_in_gaming_mode_holds_back_spanning_models_and_releases_them() -> None:
    gaming = {"gpu1": frozenset[str]()}
    waiters = [Waiter(1, "dense", DENSE), Waiter(2, "small", SMALL)]
    snapshot = Snapshot(BOTH, [on("small", SMALL)], waiters, gaming)
    assert plan(snapshot) == [Admit((2,))]
    assert plan(Snapshot(BOTH, [on("dense", DENSE)], [], gaming)) == [Release("dense")]


def test_two_spanning_models_take_turns_without_deadlock() -> None:
    a, b = {"gpu0": 600, "gpu1": 600}, {"gpu0": 600, "gpu1": 600}
    busy = [on("a", a, in_flight=1)]
    waiters = [Waiter(1, "b", b), Waiter(2, "a", a)]
    assert plan(Snapshot(BOTH, busy, waiters)) == []  # b waits for a; a's next waits for b
    done = [on("a", a)]
    assert plan(Snapshot(BOTH, done, waiters)) == [Evict("a", for_model="b")]


# A simulation over two cards: random arrivals, loads and stops that take time, requests
# that take time. At every event the plan is carried out, as the arbiter does.

MODELS_2 = {
    "dense": DENSE,
    "moe": MOE,
    "small": SMALL,
    "tiny": {"gpu0": 100},
    "wide": {"gpu0": 300, "gpu1": 300},
}


@dataclass
class Card:
    """What a simulated box holds: each model's phase and requests in flight."""

    phase: dict[str, ResidentPhase] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODELS_2, 0))
    last_used: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODELS_2, 0.0))
    sleepers: dict[str, dict[str, int]] = field(default_factory=dict)
    """Models that can sleep, with what they hold asleep."""
    stopped_asleep: set[str] = field(default_factory=set)
    """Models stopping from asleep: they hold only their asleep memory."""

    def residents(self) -> list[Resident]:
        return [
            Resident(
                m,
                self.sleepers[m]
                if p == "asleep" or (p == "stopping" and m in self.stopped_asleep)
                else MODELS_2[m],
                p,
                self.in_flight[m],
                self.last_used[m],
                asleep=self.sleepers.get(m),
            )
            for m, p in self.phase.items()
        ]


@dataclass
class Served:
    waits: dict[int, float]
    """Each request's wait, by its index in the arrivals."""
    evictions: list[tuple[str, str]]
    """(evicted, for) in the order they happened."""


def simulate_two_cards(
    arrivals: list[tuple[float, str]],
    service_s: float,
    sleepers: dict[str, dict[str, int]] | None = None,
) -> Served:
    """Serve `arrivals` (time, model) first come first served, the `sleepers` put to sleep
    instead of stopped. Fails if a card's budget is ever exceeded, a model with requests in
    flight is stopped or put to sleep, or anything is left waiting."""
    events: list[tuple[float, int, str, str | int]] = []
    seq = itertools.count()
    for i, (at, _) in enumerate(arrivals):
        heapq.heappush(events, (at, next(seq), "arrive", i))
    box = Card(sleepers=sleepers or {})
    waiting: list[int] = []
    served = Served({}, [])
    for _ in range(10_000):
        if not events:
            break
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, kind, what = heapq.heappop(events)
            if kind == "arrive":
                waiting.append(int(what))
            elif kind == "finish":
                box.in_flight[str(what)] -= 1
                box.last_used[str(what)] = now
            elif kind == "ready":
                box.phase[str(what)] = "ready"
            elif kind == "stopped":
                del box.phase[str(what)]
                box.stopped_asleep.discard(str(what))
            elif kind == "asleep":
                box.phase[str(what)] = "asleep"
        waiters = [Waiter(i, arrivals[i][1], MODELS_2[arrivals[i][1]]) for i in waiting]
        for action in plan(Snapshot(BOTH, box.residents(), waiters, now=now)):
            match action:
                case Admit(ids):
                    for i in ids:
                        waiting.remove(i)
                        served.waits[i] = now - arrivals[i][0]
                        model = arrivals[i][1]
                        box.in_flight[model] += 1
                        heapq.heappush(events, (now + service_s, next(seq), "finish", model))
                case Load(model):
                    woken = box.phase.get(model) == "asleep"
                    assert model not in box.phase or woken, f"{model} loaded while resident"
                    box.phase[model] = "starting"
                    heapq.heappush(
                        events, (now + (0.3 if woken else 2.0), next(seq), "ready", model)
                    )
                case Sleep(model, for_model):
                    served.evictions.append((model, for_model))
                    assert box.in_flight[model] == 0, (
                        f"{model} put to sleep with requests in flight"
                    )
                    assert box.phase[model] == "ready", (
                        f"{model} put to sleep from {box.phase[model]}"
                    )
                    box.phase[model] = "sleeping"
                    heapq.heappush(events, (now + 0.2, next(seq), "asleep", model))
                case Evict(model) | Release(model) | Unload(model):
                    if isinstance(action, Evict):
                        served.evictions.append((model, action.for_model))
                    assert box.in_flight[model] == 0, f"{model} stopped with requests in flight"
                    if box.phase[model] == "asleep":
                        box.stopped_asleep.add(model)
                    box.phase[model] = "stopping"
                    heapq.heappush(events, (now + 0.5, next(seq), "stopped", model))
                case Reject():
                    raise AssertionError(f"nothing here is too big for its cards: {action}")
        for device, budget in BOTH.items():
            assert used_mb(box.residents(), device) <= budget, f"{device} over its budget"
    assert not events, "the simulation did not settle"
    assert not waiting, f"left waiting forever: {[arrivals[i] for i in waiting]}"
    return served


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 30).map(lambda t: round(t, 1)), st.sampled_from(sorted(MODELS_2))),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([0.1, 1.0, 3.0]),
)
def test_two_cards_never_exceed_a_budget_and_serve_everyone(
    arrivals: list[tuple[float, str]], service_s: float
) -> None:
    served = simulate_two_cards(sorted(arrivals), service_s)
    assert set(served.waits) == set(range(len(arrivals)))
    assert ("small", "moe") not in served.evictions  # they share no card


def test_alternating_work_over_both_cards_never_evicts_the_small_model_for_the_moe() -> None:
    arrivals = sorted((t * 0.5, m) for t, m in enumerate(["small", "moe", "dense"] * 8))
    served = simulate_two_cards(arrivals, 1.0)
    assert len(served.waits) == 24
    assert {for_model for model, for_model in served.evictions if model == "small"} <= {"dense"}
    assert ("dense", "moe") in served.evictions and ("moe", "dense") in served.evictions


# -- a model that yields to the LLM (a voice after the words) -----------------------------

TTS = {"gpu0": 200}
LLM = {"gpu0": 600}


def test_a_yielding_model_waits_while_llm_work_runs_or_waits_on_its_card() -> None:
    tts = Resident("tts", TTS, "ready", yields=True)
    busy = [Resident("llm", LLM, "ready", in_flight=1), tts]
    speak = Waiter(1, "tts", TTS, yields=True)
    assert plan(Snapshot(BOTH, busy, [speak])) == []  # the LLM is generating
    idle = [Resident("llm", LLM, "ready"), tts]
    assert plan(Snapshot(BOTH, idle, [speak, Waiter(2, "llm", LLM)])) == [Admit((2,))]
    assert plan(Snapshot(BOTH, idle, [speak])) == [Admit((1,))]  # the words are done


def test_llm_work_on_another_card_does_not_hold_a_yielding_model() -> None:
    residents = [
        Resident("moe", MOE, "ready", in_flight=2),
        Resident("tts", TTS, "ready", yields=True),
    ]
    assert plan(Snapshot(BOTH, residents, [Waiter(1, "tts", TTS, yields=True)])) == [Admit((1,))]


def test_llm_work_waits_for_a_yielding_model_only_as_long_as_its_running_requests() -> None:
    """The LLM needs the room the voice holds: the voice's running request finishes, its
    next ones wait, and it is evicted."""
    full = {"gpu0": 1000}
    speaking = [Resident("tts", {"gpu0": 500}, "ready", in_flight=1, yields=True)]
    waiters = [Waiter(1, "llm", {"gpu0": 600}), Waiter(2, "tts", {"gpu0": 500}, yields=True)]
    assert plan(Snapshot(full, speaking, waiters)) == []
    done = [Resident("tts", {"gpu0": 500}, "ready", yields=True)]
    assert plan(Snapshot(full, done, waiters)) == [Evict("tts", for_model="llm")]


def test_a_held_back_llm_waiter_does_not_hold_the_voice() -> None:
    gaming = {"gpu0": frozenset({"tts"})}
    residents = [Resident("tts", TTS, "ready", yields=True)]
    waiters = [Waiter(1, "llm", LLM), Waiter(2, "tts", TTS, yields=True)]
    assert plan(Snapshot(BOTH, residents, waiters, gaming)) == [Admit((2,))]


# -- sleep instead of stop ------------------------------------------------------------


def sleeper(name: str, mb: int = 400, asleep_mb: int = 0, **kw: object) -> Resident:
    return Resident(name, {GPU: mb}, "ready", asleep={GPU: asleep_mb}, **kw)  # type: ignore[arg-type]


def asleep(name: str, asleep_mb: int = 0, **kw: object) -> Resident:
    return Resident(name, {GPU: asleep_mb}, "asleep", asleep={GPU: asleep_mb}, **kw)  # type: ignore[arg-type]


def test_a_model_that_can_sleep_is_put_to_sleep_instead_of_stopped() -> None:
    assert plan(one(600, [sleeper("a")], [Waiter(1, "b", {GPU: 400})])) == [Sleep("a", "b")]


def test_a_sleeping_model_is_woken_with_a_load_when_the_rest_of_it_fits() -> None:
    snap = one(800, [asleep("a", 100), ready("b", 300)], [Waiter(1, "a", {GPU: 500})])
    assert plan(snap) == [Load("a")]  # 400 more needed, 400 free


def test_waking_a_sleeping_model_puts_the_resident_one_to_sleep() -> None:
    snap = one(500, [asleep("a"), sleeper("b")], [Waiter(1, "a", {GPU: 400})])
    assert plan(snap) == [Sleep("b", "a")]


def test_an_asleep_model_counts_only_its_asleep_memory() -> None:
    snap = one(500, [asleep("a", 100), ready("b", 300)], [Waiter(1, "c", {GPU: 100})])
    assert plan(snap) == [Load("c")]
    assert used_mb(snap.residents, GPU) == 400


def test_an_asleep_model_is_stopped_when_the_swap_still_lacks_room() -> None:
    residents = [asleep("a", 200, last_used=5.0), ready("b", 100, in_flight=1)]
    assert plan(one(500, residents, [Waiter(1, "c", {GPU: 400})])) == [Evict("a", "c")]


def test_an_asleep_model_that_holds_nothing_on_the_card_is_left_asleep() -> None:
    residents = [asleep("a", 0, last_used=0.0), ready("b", 300, last_used=9.0)]
    assert plan(one(400, residents, [Waiter(1, "c", {GPU: 300})])) == [Evict("b", "c")]


def test_a_model_falling_asleep_frees_its_room_on_the_way_and_its_waiter_waits() -> None:
    falling = Resident("a", {GPU: 400}, "sleeping", asleep={GPU: 0})
    snap = one(600, [falling], [Waiter(1, "b", {GPU: 400}), Waiter(2, "a", {GPU: 400})])
    assert plan(snap) == []  # b waits for a to be asleep, no extra eviction; a waits too


def test_a_sleeper_with_requests_in_flight_is_not_put_to_sleep() -> None:
    snap = one(600, [sleeper("a", in_flight=1)], [Waiter(1, "b", {GPU: 400})])
    assert plan(snap) == []


def test_a_mode_that_does_not_allow_an_asleep_model_releases_it() -> None:
    snap = one(600, [asleep("a")], [], allowed=frozenset())
    assert plan(snap) == [Release("a")]


def test_a_waiter_for_an_asleep_spanning_model_wakes_it_on_both_cards() -> None:
    both = {"gpu0": 50, "gpu1": 50}
    dense = Resident("dense", both, "asleep", asleep=both)
    small = Resident("small", {"gpu0": 300}, "ready", asleep={"gpu0": 0})
    snap = Snapshot(
        {"gpu0": 500, "gpu1": 500}, [dense, small], [Waiter(1, "dense", {"gpu0": 400, "gpu1": 400})]
    )
    assert plan(snap) == [Sleep("small", "dense")]  # gpu0 lacks 150; gpu1 has room


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 30).map(lambda t: round(t, 1)), st.sampled_from(sorted(MODELS_2))),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([0.1, 1.0, 3.0]),
)
def test_with_sleepers_two_cards_never_exceed_a_budget_and_serve_everyone(
    arrivals: list[tuple[float, str]], service_s: float
) -> None:
    sleepers = {"dense": {"gpu0": 50, "gpu1": 50}, "small": {"gpu0": 0}, "moe": {"gpu1": 100}}
    served = simulate_two_cards(sorted(arrivals), service_s, sleepers)
    assert set(served.waits) == set(range(len(arrivals)))
    assert ("small", "moe") not in served.evictions


def test_a_spanning_victim_evicted_for_one_waiter_is_room_on_its_way_for_the_other() -> None:
    """Two blocked waiters on different cards, the dense model on both: evicting it for
    the first frees the second's card too, so nothing else there is stopped."""
    dense = Resident("dense", {"gpu0": 500, "gpu1": 500}, "ready", last_used=0.0)
    other = Resident("other", {"gpu1": 400}, "ready", last_used=1.0)
    waiters = [Waiter(1, "a", {"gpu0": 600}), Waiter(2, "b", {"gpu1": 500})]
    snap = Snapshot({"gpu0": 1000, "gpu1": 1000}, [dense, other], waiters)
    assert plan(snap) == [Evict("dense", "a")]
