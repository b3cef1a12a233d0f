"""The probe loop of other boxes, against in-process stand-ins for what a real box does
not show on demand (a 500, a box that accepts and never answers, a refused port); a real
second llama-server going away and coming back is in test_remote_health_live.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from host.config import parse_config
from host.core.remote_health import Health
from host.models.remote_health import RemoteHealth, probe_url


def config_for(base_url: str, extra: str = "") -> str:
    return f"""
[devices.cpu]
kind = "cpu"
[models.far]
kind = "remote"
base_url = "{base_url}"
api_key_env = "TIERHOST_TEST_FAR_KEY"
health_timeout_s = 0.3
{extra}
[tiers.architect]
models = ["far"]
[tiers.builder]
models = ["far"]
[tiers.operator]
models = ["far"]
"""


def monitor(handler: Callable[[httpx.Request], httpx.Response], extra: str = "") -> RemoteHealth:
    config = parse_config(config_for("http://far.test/v1", extra), "t.toml")
    return RemoteHealth(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def test_the_probe_asks_the_models_list_unless_told_otherwise() -> None:
    config = parse_config(config_for("http://far.test/v1"), "t.toml")
    assert probe_url(config.models["far"]) == "http://far.test/v1/models"  # type: ignore[arg-type]
    told = parse_config(
        config_for("http://far.test/v1", 'health_url = "http://far.test/health"'), "t.toml"
    )
    assert probe_url(told.models["far"]) == "http://far.test/health"  # type: ignore[arg-type]


async def test_a_probe_carries_the_models_key_and_records_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERHOST_TEST_FAR_KEY", "k-123")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": []})

    health = await monitor(answer).probe("far")
    assert seen[0].url == "http://far.test/v1/models"
    assert seen[0].headers["authorization"] == "Bearer k-123"
    assert (health.reachable, health.probed, health.last_error) == (True, True, None)
    assert health.latency_s is not None


async def test_a_5xx_takes_the_remote_out_and_tells_the_listeners_once() -> None:
    answers = iter([200, 503, 503, 200])
    changes: list[tuple[str, bool]] = []
    remote = monitor(lambda _: httpx.Response(next(answers)))
    remote.on_change(lambda name: changes.append((name, remote.health[name].reachable)))
    for _ in range(4):
        await remote.probe("far")
        if len(changes) == 1:
            assert remote.unreachable() == {"far"}
            assert remote.health["far"].last_error == "answered HTTP 503"
    assert changes == [("far", False), ("far", True)]
    assert remote.unreachable() == set()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never answers (a box that hangs)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_box_that_hangs_is_down_after_the_probe_timeout(silent_port: int) -> None:
    config = parse_config(config_for(f"http://127.0.0.1:{silent_port}/v1"), "t.toml")
    async with httpx.AsyncClient() as http:
        health = await asyncio.wait_for(RemoteHealth(config, http).probe("far"), 5)
    assert (health.reachable, health.last_error) == (False, "no answer within 0.3 s")


async def test_a_refused_port_is_down_and_says_it_cannot_connect() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        config = parse_config(config_for(f"http://127.0.0.1:{port}/v1"), "t.toml")
        async with httpx.AsyncClient() as http:
            health = await RemoteHealth(config, http).probe("far")
    assert health.reachable is False
    assert health.last_error is not None and health.last_error.startswith("cannot connect")


async def test_the_loops_probe_at_once_keep_going_after_an_error_and_stop() -> None:
    probed = asyncio.Event()
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in a probe")  # logged; the loop goes on
        probed.set()
        return httpx.Response(200)

    remote = monitor(answer, "health_interval_s = 0.1")
    remote.start()
    try:
        await asyncio.wait_for(probed.wait(), 5)
    finally:
        await remote.stop()
    assert remote.health["far"] == Health(
        reachable=True,
        probed=True,
        latency_s=remote.health["far"].latency_s,
        checked_at=remote.health["far"].checked_at,
        since=remote.health["far"].since,
    )


async def test_a_key_variable_that_is_not_set_sends_no_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty `Bearer ` is not a legal header value: every request to the remote failed
    before it left the host. Without the key the remote's own 401 says what is missing."""
    monkeypatch.delenv("TIERHOST_TEST_FAR_KEY", raising=False)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401)

    health = await monitor(answer).probe("far")
    assert "authorization" not in seen[0].headers
    assert (health.reachable, health.last_error) == (True, "answers, but HTTP 401 to the probe")


MODE = 'mode_url = "http://pc.test/mode"'


async def test_the_boxs_mode_is_read_and_its_flips_reported() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"mode": "NORMAL"}),
            httpx.Response(200, json={"mode": "GAMING"}),
            httpx.Response(200, json={"modes": {"gpu0": "gaming"}}),
            httpx.Response(200, json={"mode": "normal"}),
        ]
    )
    changes: list[str] = []
    remote = monitor(lambda _: next(answers), MODE)
    remote.on_change(changes.append)
    assert remote.hold_reason("far") == "its mode has not been read yet"  # until read
    await remote.read_mode("far")
    assert remote.hold_reason("far") is None and remote.holds() == {}
    await remote.read_mode("far")
    assert remote.hold_reason("far") == "its box is in gaming mode (http://pc.test/mode)"
    await remote.read_mode("far")
    assert remote.holds() == {"far": "its box has gpu0 in gaming mode (http://pc.test/mode)"}
    await remote.read_mode("far")
    assert remote.holds() == {}
    assert changes == ["far", "far", "far"]  # gaming → not, not → gaming, gaming → not


async def test_a_mode_endpoint_that_stops_answering_holds_the_box_back() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    remote = monitor(refuse, MODE)
    mode = await remote.read_mode("far")
    assert mode.gaming
    assert mode.reason == (
        "its mode endpoint http://pc.test/mode does not answer (cannot connect (refused)): "
        "held back as gaming"
    )


def test_a_remote_without_a_mode_url_is_never_held_back() -> None:
    remote = monitor(lambda _: httpx.Response(200))
    assert remote.hold_reason("far") is None and remote.holds() == {}
