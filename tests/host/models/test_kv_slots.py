"""KV slots across swaps: the keeper's rules, then a real swap with a real conversation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from host.models.kv_slots import SlotKeeper, continues, conversation_key, fingerprint
from tests.conftest import Daemon

USER = {"role": "user", "content": "Tell me about the sea."}
REPLY = {"role": "assistant", "content": "The sea is large."}
MORE = {"role": "user", "content": "And the tides?"}


def test_a_conversation_continues_only_its_own_prefix() -> None:
    assert continues([USER], [USER, REPLY, MORE])
    assert continues([USER], [USER])
    assert not continues([], [USER])
    assert not continues([USER, REPLY, MORE], [USER])
    edited = {"role": "user", "content": "Tell me about the lake."}
    assert not continues([USER], [edited, REPLY, MORE])
    # extra fields (names, tool ids) do not change what the prompt was
    assert continues([{**USER, "name": "x"}], [USER, REPLY])
    assert conversation_key([USER]) == conversation_key([{**USER, "name": "x"}])


class FakeSlots:
    """A scripted /slots endpoint: saves write files, restores check them."""

    def __init__(self, directory: Path, n_slots: int = 2) -> None:
        self.directory = directory
        self.n_slots = n_slots
        self.calls: list[tuple[str, int, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slots":
            return httpx.Response(200, json=[{"id": i} for i in range(self.n_slots)])
        slot = int(request.url.path.rsplit("/", 1)[1])
        action = request.url.params["action"]
        filename = json.loads(request.content)["filename"]
        self.calls.append((action, slot, filename))
        if action == "save":
            (self.directory / filename).write_bytes(b"k" * 1000)
            return httpx.Response(200, json={"n_written": 1000})
        if not (self.directory / filename).exists():
            return httpx.Response(400, json={"error": "no such file"})
        return httpx.Response(200, json={"n_restored": 10})


def saved_files(directory: Path) -> list[Path]:
    return list(directory.glob("*.bin"))


def keeper_and_server(tmp_path: Path, budget: int = 10_000) -> tuple[SlotKeeper, FakeSlots, Any]:
    server = FakeSlots(tmp_path)
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handle))
    return SlotKeeper("m", tmp_path, ["fp1"], budget), server, http


async def test_a_saved_conversation_is_restored_into_a_slot_after_a_restart(
    tmp_path: Path,
) -> None:
    keeper, server, http = keeper_and_server(tmp_path)
    async with http:
        claim = await keeper.claim(http, "http://m", [USER])
        assert claim is not None and claim.restored is None
        keeper.release(claim, [USER], {"cache_n": 0})
        await keeper.save_changed(http, "http://m")
        assert [c[0] for c in server.calls] == ["save"]

        keeper.server_started()  # the model was swapped out and back in
        again = await keeper.claim(http, "http://m", [USER, REPLY, MORE])
        assert again is not None and again.restored is not None
        assert server.calls[-1][0] == "restore"
        keeper.release(again, [USER, REPLY, MORE], {"cache_n": 9})
    assert keeper.stats.restores == 1 and keeper.stats.tokens_saved == 9


async def test_another_conversation_gets_a_fresh_slot_not_a_wrong_restore(
    tmp_path: Path,
) -> None:
    keeper, server, http = keeper_and_server(tmp_path)
    async with http:
        claim = await keeper.claim(http, "http://m", [USER])
        assert claim is not None
        keeper.release(claim, [USER], None)
        await keeper.save_changed(http, "http://m")
        keeper.server_started()
        other = [{"role": "user", "content": "Write a haiku."}]
        fresh = await keeper.claim(http, "http://m", other)
    assert fresh is not None and fresh.restored is None
    assert [c[0] for c in server.calls] == ["save"]


async def test_a_live_slot_keeps_its_conversation_without_a_restore(tmp_path: Path) -> None:
    keeper, server, http = keeper_and_server(tmp_path)
    async with http:
        first = await keeper.claim(http, "http://m", [USER])
        assert first is not None
        keeper.release(first, [USER], None)
        second = await keeper.claim(http, "http://m", [USER, REPLY, MORE])
        busy = await keeper.claim(http, "http://m", [USER, REPLY, MORE])
        third = await keeper.claim(http, "http://m", [MORE])
    assert second is not None and second.slot == first.slot and second.restored is None
    assert busy is not None and busy.slot != first.slot  # the other slot
    assert third is None  # every slot busy: llama-server chooses
    assert server.calls == []


async def test_a_restore_that_did_not_take_is_forgotten(tmp_path: Path) -> None:
    keeper, _, http = keeper_and_server(tmp_path)
    async with http:
        claim = await keeper.claim(http, "http://m", [USER])
        assert claim is not None
        keeper.release(claim, [USER], None)
        await keeper.save_changed(http, "http://m")
        keeper.server_started()
        again = await keeper.claim(http, "http://m", [USER, REPLY])
        assert again is not None and again.restored is not None
        keeper.release(again, [USER, REPLY], {"cache_n": 0})
    assert keeper.stats.restores_missed == 1 and keeper.saved == {}
    assert not saved_files(tmp_path)


async def test_the_disk_budget_drops_the_least_recently_saved(tmp_path: Path) -> None:
    keeper, _, http = keeper_and_server(tmp_path, budget=2500)
    conversations = [[{"role": "user", "content": f"topic {i}"}] for i in range(3)]
    async with http:
        for conversation in conversations:
            claim = await keeper.claim(http, "http://m", conversation)
            assert claim is not None
            keeper.release(claim, conversation, None)
            await keeper.save_changed(http, "http://m")
    kept = {r.messages[0]["content"] for r in keeper.saved.values()}
    assert kept == {"topic 1", "topic 2"}
    assert len(saved_files(tmp_path)) == 2


async def test_slots_saved_for_another_model_file_or_args_are_discarded(tmp_path: Path) -> None:
    keeper, _, http = keeper_and_server(tmp_path)
    async with http:
        claim = await keeper.claim(http, "http://m", [USER])
        assert claim is not None
        keeper.release(claim, [USER], None)
        await keeper.save_changed(http, "http://m")
    assert SlotKeeper("m", tmp_path, ["fp1"], 10_000).saved  # same model: still there
    changed = SlotKeeper("m", tmp_path, ["fp2"], 10_000)
    assert changed.saved == {} and not saved_files(tmp_path)


def test_the_fingerprint_follows_the_file_and_the_args(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"one")
    first = fingerprint(gguf, ["--ctx-size", "4096"])
    assert fingerprint(gguf, ["--ctx-size", "4096"]) == first
    assert fingerprint(gguf, ["--ctx-size", "8192"]) != first
    gguf.write_bytes(b"other file")
    assert fingerprint(gguf, ["--ctx-size", "4096"]) != first


# -- a real swap -----------------------------------------------------------------------


def chat(daemon: Daemon, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    with daemon.client(timeout=300) as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": messages, "max_tokens": 4, "temperature": 0},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def slot_status(daemon: Daemon, model: str) -> dict[str, Any]:
    models = {m["name"]: m for m in daemon.status()["models"]}
    status: dict[str, Any] = models[model]["kv_slots"]
    return status


@pytest.mark.real
def test_a_long_conversation_survives_a_swap_without_a_second_prefill(
    demo_daemon: Daemon,
) -> None:
    history = " ".join(
        f"Fact {i}: the harbour keeps boat number {i} at pier {i % 7}." for i in range(140)
    )
    opening = [{"role": "user", "content": f"Remember these facts. {history}"}]
    first = chat(demo_daemon, "architect-demo", opening)
    prefilled = first["timings"]["prompt_n"]
    assert prefilled > 1500  # a real ~2,000-token context

    chat(demo_daemon, "builder-demo", [USER])  # the swap: architect-demo is stopped
    assert slot_status(demo_daemon, "architect-demo")["saved"] == 1

    reply = {"role": "assistant", "content": first["choices"][0]["message"]["content"]}
    follow_up = [*opening, reply, {"role": "user", "content": "Which pier has boat 12?"}]
    second = chat(demo_daemon, "architect-demo", follow_up)
    assert second["timings"]["cache_n"] >= prefilled - 8
    assert second["timings"]["prompt_n"] < prefilled / 10  # only the new turn was read
    restored = slot_status(demo_daemon, "architect-demo")
    assert restored["restores"] == 1 and restored["tokens_saved"] >= prefilled - 8

    chat(demo_daemon, "builder-demo", [USER])  # swap again, then a different conversation
    changed = [{"role": "user", "content": f"Forget the boats. {history}"}, *follow_up[1:]]
    third = chat(demo_daemon, "architect-demo", changed)
    assert third["timings"]["cache_n"] < prefilled / 10  # no wrong slot was restored
    assert slot_status(demo_daemon, "architect-demo")["restores"] == 1


async def test_slots_of_another_profile_are_kept_but_not_restored(tmp_path: Path) -> None:
    server = FakeSlots(tmp_path)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as http:
        keeper = SlotKeeper("m", tmp_path, ["primary", "small-quant"], 10_000)
        claim = await keeper.claim(http, "http://m", [USER])
        assert claim is not None
        keeper.release(claim, [USER], None)
        await keeper.save_changed(http, "http://m")

        keeper.server_started("small-quant")  # a failed start moved to the fallback
        other_weights = await keeper.claim(http, "http://m", [USER, REPLY, MORE])
        assert other_weights is not None and other_weights.restored is None
        keeper.abandon(other_weights)

        keeper.server_started("primary")
        same_weights = await keeper.claim(http, "http://m", [USER, REPLY, MORE])
    assert same_weights is not None and same_weights.restored is not None
