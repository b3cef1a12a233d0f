"""Issue 7: coming back to a long conversation after a swap, with and without KV slots.

Two demo daemons, the same except that one has `kv_slots = false` on its GPU models.
In each, a ~3,000-token conversation is opened on architect-demo, builder-demo takes the
device (a swap), and the conversation's next turn goes back to architect-demo: timed from
request to first token. With slots, the saved slot is restored and only the new turn is
prefilled; without, the whole history is read again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import httpx

from bench.common import Timing, median, stream_chat, tierhost_daemon, wait_models_ready

FACTS = " ".join(
    f"Fact {i}: the harbour keeps boat number {i} at pier {i % 7}." for i in range(200)
)


@dataclass
class SlotResults:
    first_token_s: dict[str, list[float]] = field(default_factory=dict)
    """'restore' / 'prefill' → seconds to the first token of the turn after the swap."""
    prompt_s: dict[str, list[float]] = field(default_factory=dict)
    """The same turn's prompt processing as llama-server timed it (the part slots save)."""
    cache_n: dict[str, list[int]] = field(default_factory=dict)
    history_tokens: int = 0


def _config(kv_slots: bool) -> str:
    demo = resources.files("host").joinpath("data/demo.toml").read_text("utf-8")
    if kv_slots:
        return demo
    for model in ("architect-demo", "builder-demo"):
        demo = demo.replace(f"[models.{model}]\n", f"[models.{model}]\nkv_slots = false\n")
    return demo


def _come_back(client: httpx.Client, url: str, turn: int) -> tuple[Timing, int]:
    opening = [{"role": "user", "content": f"Conversation {turn}. Remember: {FACTS}"}]
    first = client.post(
        f"{url}/v1/chat/completions",
        json={"model": "architect-demo", "messages": opening, "max_tokens": 4},
    ).json()
    history = int(first["timings"]["prompt_n"])
    reply = {"role": "assistant", "content": first["choices"][0]["message"]["content"]}
    stream_chat(client, url, "builder-demo", 2)  # the swap
    follow_up = [*opening, reply, {"role": "user", "content": "Which pier has boat 12?"}]
    timing = stream_chat(client, url, "architect-demo", 2, messages=follow_up)
    return timing, history


def run(runs: int, workdir: Path) -> SlotResults:
    results = SlotResults()
    for label, kv_slots in (("restore", True), ("prefill", False)):
        samples = results.first_token_s.setdefault(label, [])
        prompt = results.prompt_s.setdefault(label, [])
        cached = results.cache_n.setdefault(label, [])
        with tierhost_daemon(_config(kv_slots), workdir) as url, httpx.Client(timeout=600) as c:
            wait_models_ready(url, {"operator-demo", "validator-demo"})
            for turn in range(max(2, runs // 3)):
                timing, history = _come_back(c, url, turn)
                samples.append(timing.first_token_s)
                prompt.append((timing.server or {}).get("prompt_ms", 0.0) / 1000)
                cached.append(int((timing.server or {}).get("cache_n", 0)))
                results.history_tokens = history
    return results


def report(results: SlotResults) -> list[str]:
    def med(samples: dict[str, list[float]], label: str) -> float:
        return median(samples[label]) * 1000

    runs = len(results.first_token_s["restore"])
    restore, prefill = med(results.first_token_s, "restore"), med(results.first_token_s, "prefill")
    read_restore, read_prefill = med(results.prompt_s, "restore"), med(results.prompt_s, "prefill")
    reused = median([float(n) for n in results.cache_n["restore"]])
    return [
        f"A {results.history_tokens}-token conversation on architect-demo, a swap to "
        f"builder-demo, then the next turn back on architect-demo (median of {runs}):",
        "",
        "| next turn after the swap | request → first token ms | prompt processing ms |",
        "|---|---:|---:|",
        f"| KV slot saved at the swap and restored | {restore:.0f} | {read_restore:.0f} |",
        f"| no slots (`kv_slots = false`) | {prefill:.0f} | {read_prefill:.0f} |",
        "",
        f"With the slot restored, {reused:.0f} tokens came from the cache. Request to first "
        f"token: {prefill / restore:.0f}× faster; prompt processing alone (what the restore "
        f"replaces): {read_prefill / max(read_restore, 0.001):.0f}× faster (target ≥ 50×). "
        "The first column includes loading the model again, which no restore avoids.",
    ]
