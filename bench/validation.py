"""Issue 6: what a validator pass costs per task, beside the generation it checks.

Three figures, on the same machine and model: the deterministic checks (median µs per
code block and language, in process, as the loop runs them); one validator-model
verdict (median ms: SmolLM2 on a llama-server started with validator-demo's arguments,
asked exactly as the loop asks it); and the builder's generation of the answer being
checked (median ms, same server, 64 tokens). Then whole tasks through a daemon, the
same implementation prompt with `validation = none` and `final`, submission to end.
"""

from __future__ import annotations

import ast
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import (
    bare_llama_server,
    demo_gguf,
    median,
    stream_chat,
    tierhost_daemon,
    wait_models_ready,
)
from host.config import load_config
from host.core import verdict
from host.tasks import checks

FENCE = "```"
SAMPLES: dict[str, str] = {
    "python (ast + ruff)": "def add(a: int, b: int) -> int:\n    return a + b\n" * 5,
    "json": '{"name": "x", "items": [1, 2, 3], "nested": {"a": null}}\n',
    "toml": '[tool.x]\nname = "x"\nitems = [1, 2, 3]\n',
    "yaml": "name: x\nitems:\n  - 1\n  - 2\nnested:\n  a: null\n",
    "bash": 'for f in *.txt; do\n  wc -l "$f"\ndone\n',
    "other (structure only)": 'fn main() { println!("hi"); }\n',
}
LANGUAGE = {
    "python (ast + ruff)": "python",
    "python (ast only)": "python",
    "json": "json",
    "toml": "toml",
    "yaml": "yaml",
    "bash": "bash",
    "other (structure only)": "rust",
}
TASK_PROMPT = "Write a Python function add(a, b) that returns a + b."
GENERATION_TOKENS = 64
TERMINAL = {"done", "failed", "cancelled"}


@dataclass
class ValidationResults:
    check_us: dict[str, list[float]]
    verdict_ms: list[float]
    verdicts: Counter[str]
    generation_ms: list[float]
    task_s: dict[str, list[float]]
    task_attempts: list[int]


def _ast_only(code: str) -> checks.CheckResult:
    ast.parse(code)
    return [], []


def time_checks(reps: int) -> dict[str, list[float]]:
    """µs per block for each language's check (structure included), one sample per rep."""
    samples = {**SAMPLES, "python (ast only)": SAMPLES["python (ast + ruff)"]}
    no_ruff = {**checks.CHECKERS, "python": _ast_only}
    found: dict[str, list[float]] = {name: [] for name in samples}
    for name, code in samples.items():
        text = f"{FENCE}{LANGUAGE[name]}\n{code}{FENCE}\n"
        table = no_ruff if name == "python (ast only)" else None
        for _ in range(reps):
            started = time.perf_counter()
            report = checks.check_answer(text, table)
            found[name].append((time.perf_counter() - started) * 1e6)
            if not report.passed:
                raise RuntimeError(f"{name}: the sample failed its check: {report.errors()}")
    return found


def time_model(runs: int, workdir: Path) -> tuple[list[float], Counter[str], list[float]]:
    """Verdict and generation latency on one llama-server with validator-demo's args."""
    model = load_config().models["validator-demo"]
    args = ["-m", str(demo_gguf()), *getattr(model, "args", []), "--n-gpu-layers", "0"]
    code = "def add(a, b):\n    return a + b\n"
    messages = verdict.build_messages(TASK_PROMPT, code, language="python")
    body = {
        "messages": messages,
        "stream": False,
        "temperature": 0,
        "max_tokens": 160,
        "grammar": verdict.VERDICT_GRAMMAR,  # as host.tasks.validation asks it
    }
    verdict_ms: list[float] = []
    kinds: Counter[str] = Counter()
    generation_ms: list[float] = []
    with (
        bare_llama_server(args, workdir / "verdict.log") as server,
        httpx.Client(timeout=120) as client,
        httpx.Client(timeout=120) as streaming,  # llama-server may drop a streamed keep-alive
    ):
        client.post(f"{server.url}/v1/chat/completions", json=body).raise_for_status()  # warm
        for _ in range(runs):
            started = time.perf_counter()
            response = client.post(f"{server.url}/v1/chat/completions", json=body)
            response.raise_for_status()
            answer = response.json()["choices"][0]["message"]["content"] or ""
            kinds[verdict.parse_verdict(answer).kind.value] += 1
            verdict_ms.append((time.perf_counter() - started) * 1000)
            timing = stream_chat(streaming, server.url, "m", GENERATION_TOKENS, TASK_PROMPT)
            generation_ms.append(timing.total_s * 1000)
    return verdict_ms, kinds, generation_ms


def time_tasks(runs: int, workdir: Path) -> tuple[dict[str, list[float]], list[int]]:
    """Submission → end of the same implementation task, without and with validation."""
    durations: dict[str, list[float]] = {"none": [], "final": []}
    attempts: list[int] = []
    with tierhost_daemon(None, workdir) as url, httpx.Client(timeout=60) as client:
        wait_models_ready(url, {"operator-demo", "validator-demo"})
        for _ in range(runs):
            for policy in ("none", "final"):
                body = {
                    "prompt": TASK_PROMPT,
                    "type": "implementation",
                    "validation": policy,
                    "params": {"max_tokens": GENERATION_TOKENS, "temperature": 0},
                }
                started = time.perf_counter()
                response = client.post(f"{url}/api/tasks", json=body)
                response.raise_for_status()
                task_id = response.json()["id"]
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    task = client.get(f"{url}/api/tasks/{task_id}").json()
                    if task["status"] in TERMINAL:
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError(f"task {task_id} did not finish within 300 s")
                durations[policy].append(time.perf_counter() - started)
                if policy == "final":
                    attempts.append(task["attempts"])
    return durations, attempts


def run(runs: int, workdir: Path) -> ValidationResults:
    check_us = time_checks(max(20, runs * 10))
    verdict_ms, kinds, generation_ms = time_model(runs, workdir)
    task_s, attempts = time_tasks(max(1, runs // 2), workdir)
    return ValidationResults(check_us, verdict_ms, kinds, generation_ms, task_s, attempts)


def report(results: ValidationResults) -> list[str]:
    lines = [
        "Deterministic checks, in process, one fenced block each (median µs per block; "
        "ruff and `bash -n` are subprocesses):",
        "",
        "| block | median µs | samples |",
        "|---|---:|---:|",
    ]
    for name, values in results.check_us.items():
        lines.append(f"| {name} | {median(values):,.0f} | {len(values)} |")
    verdicts = ", ".join(f"{kind} {count}" for kind, count in sorted(results.verdicts.items()))
    none_s = median(results.task_s["none"])
    final_s = median(results.task_s["final"])
    lines += [
        "",
        f"Validator verdict (SmolLM2, validator-demo's arguments, the verdict grammar, up to "
        f"160 tokens): median "
        f"{median(results.verdict_ms):,.0f} ms over {len(results.verdict_ms)} runs "
        f"(verdicts: {verdicts}); beside it, generating the {GENERATION_TOKENS}-token answer "
        f"took a median {median(results.generation_ms):,.0f} ms on the same server.",
        "",
        f"Whole implementation tasks through the daemon (median of {len(results.task_s['none'])}"
        f"): `validation = none` {none_s:.2f} s, `final` {final_s:.2f} s "
        f"({final_s / none_s:.1f}×; median {median(results.task_attempts):g} attempt(s), "
        f"at most 1 + max_retries = 4). The verdict is constrained by a grammar to `PASS` "
        "or `FAIL: reason`; without it SmolLM2 never answered in form and every validated "
        "task used all its retries.",
    ]
    return lines
