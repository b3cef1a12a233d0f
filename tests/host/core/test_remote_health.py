"""What a probe of another box means: the rules of host.core.remote_health, pure."""

from __future__ import annotations

import pytest

from host.core.remote_health import (
    Health,
    Probe,
    RemoteMode,
    after_probe,
    changed_reachability,
    read_mode,
    verdict,
)


@pytest.mark.parametrize(
    ("probe", "reachable", "error"),
    [
        (Probe(1.0, 0.01, status=200), True, None),
        (Probe(1.0, 0.01, status=401), True, "answers, but HTTP 401 to the probe"),
        (Probe(1.0, 0.01, status=503), False, "answered HTTP 503"),
        (Probe(1.0, 2.0, error="no answer within 2 s"), False, "no answer within 2 s"),
        (Probe(1.0, 0.0), False, "no answer"),
    ],
)
def test_an_answer_under_500_is_up_and_anything_else_is_down(
    probe: Probe, reachable: bool, error: str | None
) -> None:
    assert verdict(probe) == (reachable, error)


def test_a_remote_is_given_the_benefit_of_the_doubt_until_probed() -> None:
    fresh = Health()
    assert fresh.reachable and not fresh.probed
    up = after_probe(fresh, Probe(10.0, 0.004, status=200))
    assert (up.reachable, up.probed, up.since, up.failures) == (True, True, 10.0, 0)
    assert not changed_reachability(fresh, up)  # routing assumed it up already


def test_one_failed_probe_takes_it_out_and_one_answer_brings_it_back() -> None:
    up = after_probe(Health(), Probe(10.0, 0.004, status=200))
    down = after_probe(up, Probe(15.0, 2.0, error="cannot connect"))
    assert (down.reachable, down.since, down.failures, down.last_error) == (
        False,
        15.0,
        1,
        "cannot connect",
    )
    assert changed_reachability(up, down)
    still = after_probe(down, Probe(20.0, 2.0, error="cannot connect"))
    assert (still.since, still.failures) == (15.0, 2)
    assert not changed_reachability(down, still)
    back = after_probe(still, Probe(25.0, 0.003, status=200))
    assert (back.reachable, back.since, back.failures, back.last_error) == (True, 25.0, 0, None)


def test_the_status_fields_say_since_when() -> None:
    down = after_probe(Health(), Probe(15.0, 0.25, error="cannot connect"))
    assert down.as_json() == {
        "reachable": False,
        "probed": True,
        "last_error": "cannot connect",
        "probe_ms": 250.0,
        "checked_at": 15.0,
        "unreachable_since": 15.0,
    }


URL = "http://pc.lan:8790/mode"


@pytest.mark.parametrize(
    ("status", "document", "error", "gaming", "reason"),
    [
        (
            200,
            {"mode": "NORMAL"},
            None,
            False,
            "its box is in normal mode (http://pc.lan:8790/mode)",
        ),
        (
            200,
            {"mode": "gaming"},
            None,
            True,
            "its box is in gaming mode (http://pc.lan:8790/mode)",
        ),
        (200, {"mode": " Gaming "}, None, True, "its box is in gaming mode"),
        (200, {"modes": {"gpu0": "auto", "gpu1": "gaming"}}, None, True, "has gpu1 in gaming"),
        (200, {"modes": {"gpu0": "builder"}}, None, False, "has no GPU in gaming mode"),
        (200, {"modes": {}}, None, False, "has no GPU in gaming mode"),
        (200, {"mode": "sleepy"}, None, True, "neither NORMAL nor GAMING: held back as gaming"),
        (200, ["NORMAL"], None, True, "not a mode document: held back as gaming"),
        (200, None, None, True, "not a mode document"),
        (500, {"mode": "NORMAL"}, None, True, "answered HTTP 500: held back as gaming"),
        (None, None, "no answer within 2 s", True, "does not answer (no answer within 2 s)"),
    ],
)
def test_only_an_answer_that_says_normal_lets_unforced_work_through(
    status: int | None, document: object, error: str | None, gaming: bool, reason: str
) -> None:
    mode = read_mode(URL, status, document, error, 5.0)
    assert mode.gaming is gaming
    assert reason in mode.reason
    assert mode.checked_at == 5.0


def test_a_mode_not_read_yet_holds_work_back() -> None:
    assert RemoteMode().gaming
    assert RemoteMode().reason == "its mode has not been read yet"
