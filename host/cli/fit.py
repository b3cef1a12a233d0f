"""`tierhost fit MODEL --device gpu0 [--ctx N]`: will it fit, and what would make it fit.

Works from the config and the GGUF alone (no daemon): the estimate breakdown, the
device's budget, and for MoE models the fewest layers whose experts must stay in RAM
(`--n-cpu-moe`) for the model to fit with the context asked for. A model on several
devices is checked on each: its weights and KV cache split in proportion to its shares
(as `--tensor-split` splits them), and a compute buffer on every card.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from host.config import CommandModel, Config, ConfigError, ManagedModel, load_config
from host.models import gguf, gpu
from host.paths import resolve_gguf


def device_budget(config: Config, name: str) -> tuple[str, int | None]:
    """The device's kind and budget in MiB: configured, else measured with NVML."""
    device = config.devices.get(name)
    if device is None:
        known = ", ".join(sorted(config.devices))
        raise ConfigError(f"unknown device {name!r} (known: {known})")
    if device.memory_mb is not None or device.kind == "cpu":
        return device.kind, device.memory_mb
    reading = gpu.read_memory(device.index)
    if reading is None:
        raise ConfigError(
            f"devices.{name}.memory_mb is not set and there is no NVIDIA GPU {device.index} "
            "to measure"
        )
    return device.kind, max(0, reading.total_mb - device.reserve_mb)


def fit_report(
    config: Config, model_name: str, device_name: str | None, ctx: int | None
) -> dict[str, Any]:
    model = config.models.get(model_name)
    if not isinstance(model, ManagedModel | CommandModel):
        known = ", ".join(sorted(config.local()))
        raise ConfigError(f"{model_name!r} is not a model this host starts (those: {known})")
    if isinstance(model, ManagedModel) and device_name is None and len(model.devices) > 1:
        return _spanning_report(config, model_name, model, ctx)
    device_name = device_name or model.device
    kind, budget = device_budget(config, device_name)
    if isinstance(model, CommandModel):
        return _configured_report(model_name, model, device_name, kind, budget)
    path = resolve_gguf(model.gguf, model_name)
    try:
        shape, placement, result = gguf.estimate_model(model, path, kind, ctx)
    except gguf.GgufError as exc:
        raise ConfigError(str(exc)) from None
    report: dict[str, Any] = {
        "model": model_name,
        "device": device_name,
        "gguf": str(path),
        "budget_mb": budget,
        "ctx_size": result.ctx_size,
        "estimate": _estimate_json(result),
        "fits": budget is None or result.device_mb <= budget,
        "moe": shape.is_moe,
        "n_cpu_moe": None,
    }
    lines = [f"{model_name} on {device_name} ({kind}), {path.name}", *result.lines()]
    lines.append(f"budget             {budget if budget is not None else 'none':>10} MiB")
    if shape.is_moe and kind == "gpu" and budget is not None:
        base = replace(placement, n_cpu_moe=0)
        smallest = gguf.smallest_n_cpu_moe(shape, base, budget)
        report["n_cpu_moe"] = smallest
        if smallest is None:
            lines.append("does not fit even with every layer's experts in RAM (--cpu-moe)")
        else:
            at = gguf.estimate(shape, replace(base, n_cpu_moe=smallest))
            lines.append(
                f"smallest --n-cpu-moe that fits: {smallest} ({at.device_mb:.0f} MiB on "
                f"device, {at.weights_host_mb:.0f} MiB of weights in RAM)"
            )
    lines.append("fits" if report["fits"] else "does NOT fit")
    report["text"] = "\n".join(lines)
    return report


def _estimate_json(result: gguf.Estimate) -> dict[str, float]:
    return {
        "device_mb": round(result.device_mb, 1),
        "weights_device_mb": round(result.weights_device_mb, 1),
        "weights_host_mb": round(result.weights_host_mb, 1),
        "kv_device_mb": round(result.kv_device_mb, 1),
        "kv_host_mb": round(result.kv_host_mb, 1),
        "compute_mb": round(result.compute_mb, 1),
    }


def split_estimate(result: gguf.Estimate, shares: dict[str, int]) -> dict[str, float]:
    """What each card takes of a split model: weights and KV cache in proportion to the
    shares (all equal when none), and a whole compute buffer on every card."""
    total = sum(shares.values())
    split = result.device_mb - result.compute_mb
    return {d: split * part / total + result.compute_mb for d, part in shares.items()}


def _spanning_report(
    config: Config, model_name: str, model: ManagedModel, ctx: int | None
) -> dict[str, Any]:
    path = resolve_gguf(model.gguf, model_name)
    budgets = {d: device_budget(config, d) for d in model.devices}
    try:
        shape, _, result = gguf.estimate_model(model, path, "gpu", ctx)
    except gguf.GgufError as exc:
        raise ConfigError(str(exc)) from None
    configured = model.memory_by_device
    shares = configured or dict.fromkeys(model.devices, 1)
    estimates = split_estimate(result, shares)
    parts = ",".join(str(shares[d]) for d in model.devices)
    where = "+".join(model.devices)
    lines = [f"{model_name} on {where} (--tensor-split {parts}), {path.name}", *result.lines()]
    cards = []
    for device_name, (kind, budget) in budgets.items():
        need = estimates[device_name]
        fits = budget is None or (kind == "gpu" and need <= budget)
        cards.append(
            {
                "device": device_name,
                "budget_mb": budget,
                "estimate_mb": round(need, 1),
                "configured_mb": configured.get(device_name),
                "fits": fits,
            }
        )
        shown = f"{budget} MiB" if budget is not None else "none"
        lines.append(
            f"{device_name:<18} {need:>10.1f} MiB of it (budget {shown}, configured "
            f"{configured.get(device_name, '-')} MiB): {'fits' if fits else 'does NOT fit'}"
        )
    report: dict[str, Any] = {
        "model": model_name,
        "device": where,
        "devices": cards,
        "gguf": str(path),
        "budget_mb": None,
        "ctx_size": result.ctx_size,
        "estimate": _estimate_json(result),
        "fits": all(card["fits"] for card in cards),
        "moe": shape.is_moe,
        "n_cpu_moe": None,
    }
    lines.append("fits" if report["fits"] else "does NOT fit")
    report["text"] = "\n".join(lines)
    return report


def _configured_report(
    model_name: str, model: CommandModel, device_name: str, kind: str, budget: int | None
) -> dict[str, Any]:
    """A command model's fit: its configured `memory_mb` against the budget. There is no
    file to estimate from (the server is not ours to look inside), and nothing to tune."""
    need = model.memory_by_device.get(device_name, model.memory_mb)
    fits = budget is None or need <= budget
    lines = [
        f"{model_name} on {device_name} ({kind}), command {model.command[0]}",
        f"configured         {need:>10} MiB (memory_mb; no estimate for a command)",
        f"budget             {budget if budget is not None else 'none':>10} MiB",
        "fits" if fits else "does NOT fit",
    ]
    return {
        "model": model_name,
        "device": device_name,
        "command": list(model.command),
        "budget_mb": budget,
        "memory_mb": need,
        "estimate": None,
        "fits": fits,
        "moe": False,
        "n_cpu_moe": None,
        "text": "\n".join(lines),
    }


def cmd_fit(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    report = fit_report(config, args.model, args.device, args.ctx)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "text"}, indent=2))
    else:
        print(report["text"])
    return 0 if report["fits"] or report["n_cpu_moe"] is not None else 1


def add_commands(sub: Any) -> None:
    """Register `fit` on the main parser's subparsers."""
    fit = sub.add_parser("fit", help="estimate a model's memory from its GGUF and check it fits")
    fit.add_argument("model", help="a model of the config that this host starts")
    fit.add_argument("--device", help="device to check against (default: the model's own)")
    fit.add_argument("--ctx", type=int, help="total context (all slots); default: from args")
    fit.add_argument("--config", type=Path, help="tierhost.toml (default: the demo config)")
    fit.add_argument("--json", action="store_true", help="print JSON")
    fit.set_defaults(func=cmd_fit)
