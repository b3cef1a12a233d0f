"""Memory estimates from GGUF files: against llama-server's own account, on a synthetic
MoE file, and as the daemon and `tierhost fit` use them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest

from host.cli.fit import fit_report
from host.config import parse_config
from host.daemon import Host
from host.models.gguf import (
    estimate,
    parse_server_log,
    placement_from_args,
    read_shape,
    smallest_n_cpu_moe,
)
from host.models.status import status_document
from host.paths import find_llama_server, resolve_gguf
from tests.conftest import free_port

DEMO_ARGS = ["--ctx-size", "8192", "--parallel", "2", "--no-warmup"]
LAYERS = 4
EXPERTS = 64
EMBD = 64
EXPERT_FF = 256
EXPERT_BYTES = EXPERTS * EXPERT_FF * EMBD * 2  # one f16 expert tensor
LAYER_EXPERT_BYTES = 3 * EXPERT_BYTES  # up, gate, down


TIERS = '[tiers.architect]\nmodels = ["MODEL"]\n[routing]\n[standing_rules]\n'


def demo_gguf() -> Path:
    return resolve_gguf("demo:smollm2", "test")


def write_moe_gguf(path: Path) -> Path:
    """A tiny fake MoE model: real GGUF layout, meaningless weights."""
    writer = gguf.GGUFWriter(path, "qwen3moe")
    writer.add_block_count(LAYERS)
    writer.add_context_length(2048)
    writer.add_embedding_length(EMBD)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_key_length(16)
    writer.add_value_length(16)
    writer.add_expert_count(EXPERTS)
    writer.add_vocab_size(1000)
    writer.add_tensor("token_embd.weight", np.zeros((1000, EMBD), dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.zeros(EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", np.zeros((1000, EMBD), dtype=np.float16))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((64, EMBD), dtype=np.float16))
        writer.add_tensor(f"blk.{i}.attn_k.weight", np.zeros((32, EMBD), dtype=np.float16))
        writer.add_tensor(f"blk.{i}.attn_v.weight", np.zeros((32, EMBD), dtype=np.float16))
        writer.add_tensor(f"blk.{i}.ffn_gate_inp.weight", np.zeros((EXPERTS, EMBD), np.float32))
        for part in ("up", "gate"):
            writer.add_tensor(
                f"blk.{i}.ffn_{part}_exps.weight",
                np.zeros((EXPERTS, EXPERT_FF, EMBD), dtype=np.float16),
            )
        writer.add_tensor(
            f"blk.{i}.ffn_down_exps.weight", np.zeros((EXPERTS, EMBD, EXPERT_FF), dtype=np.float16)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def moe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_moe_gguf(tmp_path_factory.mktemp("moe") / "fake-moe.gguf")


# -- reading --------------------------------------------------------------------------------


def test_the_header_scan_agrees_with_the_gguf_reader(moe_file: Path) -> None:
    shape = read_shape(moe_file)
    reader = gguf.GGUFReader(moe_file)
    assert [(t.name, t.n_bytes) for t in shape.tensors] == [
        (t.name, int(t.n_bytes)) for t in reader.tensors
    ]
    assert (shape.n_layer, shape.kv_heads, shape.key_length, shape.n_vocab) == (
        LAYERS,
        (2,) * LAYERS,
        16,
        1000,
    )
    assert shape.is_moe


def test_args_are_read_like_llama_server_reads_them() -> None:
    placement = placement_from_args(
        [
            *("-c", "4096", "-np", "4", "-ngl", "10", "--n-gpu-layers=20", "-ctk", "q8_0"),
            *("--override-tensor", r"\.ffn_.*_exps\.=CPU,attn=CUDA0", "--n-cpu-moe", "3"),
            "-nkvo",
        ]
    )
    assert placement.ctx_size == 4096 and placement.parallel == 4
    assert placement.gpu_layers == 20  # the last one wins
    assert placement.cache_type_k == "q8_0" and placement.cache_type_v == "f16"
    assert placement.overrides == ((r"\.ffn_.*_exps\.", "CPU"), ("attn", "CUDA0"))
    assert placement.n_cpu_moe == 3 and not placement.kv_offload
    assert placement_from_args([], gpu_layers=7).gpu_layers == 7


# -- MoE arithmetic ----------------------------------------------------------------------------


def test_n_cpu_moe_moves_the_experts_of_the_first_layers(moe_file: Path) -> None:
    shape = read_shape(moe_file)
    full = estimate(shape, placement_from_args([]))
    assert full.weights_host_mb * 2**20 == 1000 * EMBD * 2  # only the input embeddings
    for n in range(LAYERS + 1):
        moved = estimate(shape, placement_from_args(["--n-cpu-moe", str(n)]))
        assert round((full.weights_device_mb - moved.weights_device_mb) * 2**20) == (
            n * LAYER_EXPERT_BYTES
        )
    every = estimate(shape, placement_from_args(["--cpu-moe"]))
    assert (
        every.weights_device_mb
        == estimate(shape, placement_from_args(["--n-cpu-moe", str(LAYERS)])).weights_device_mb
    )
    one_layer = estimate(shape, placement_from_args(["-ot", r"blk\.3\.ffn_.*_exps=CPU"]))
    assert round((full.weights_device_mb - one_layer.weights_device_mb) * 2**20) == (
        LAYER_EXPERT_BYTES
    )


def test_gpu_layers_offload_the_last_layers_and_their_kv(moe_file: Path) -> None:
    shape = read_shape(moe_file)
    full = estimate(shape, placement_from_args(["-c", "1024"]))
    # llama.cpp counts the output layer as one: -ngl 3 is the last 2 blocks + output
    half = estimate(shape, placement_from_args(["-c", "1024", "-ngl", "3"]))
    assert half.layers_on_device == 2 and full.layers_on_device == LAYERS
    assert half.kv_device_mb == pytest.approx(full.kv_device_mb / 2)
    assert half.kv_host_mb == pytest.approx(full.kv_device_mb / 2)
    # f16 K and V: ctx x layers x kv heads x (key + value length) x 2 bytes
    assert full.kv_device_mb * 2**20 == 1024 * LAYERS * 2 * (16 + 16) * 2
    q8 = estimate(shape, placement_from_args(["-c", "1024", "-ctk", "q8_0", "-ctv", "q8_0"]))
    assert q8.kv_device_mb == pytest.approx(full.kv_device_mb * 34 / 64)
    q4 = estimate(shape, placement_from_args(["-c", "1024", "-ctk", "q4_0", "-ctv", "q4_0"]))
    assert q4.kv_device_mb == pytest.approx(full.kv_device_mb * 18 / 64)
    on_cpu = estimate(shape, placement_from_args(["-c", "1024", "-ngl", "0"]), on_gpu=False)
    assert on_cpu.device_mb > full.device_mb  # a CPU device holds everything


def test_smallest_n_cpu_moe_is_the_fewest_layers_that_fit(moe_file: Path) -> None:
    shape = read_shape(moe_file)
    placement = placement_from_args(["-c", "512"])
    full = estimate(shape, placement).device_mb
    budget = full - 2.5 * LAYER_EXPERT_BYTES / 2**20  # needs 3 layers' experts moved
    assert smallest_n_cpu_moe(shape, placement, full) == 0
    assert smallest_n_cpu_moe(shape, placement, budget) == 3
    assert smallest_n_cpu_moe(shape, placement, 0.01) is None


def test_fit_prints_the_breakdown_and_the_smallest_n_cpu_moe(
    moe_file: Path, tmp_path: Path
) -> None:
    shape = read_shape(moe_file)
    full = estimate(shape, placement_from_args(["-c", "512"])).device_mb
    budget = int(full - 1.5 * LAYER_EXPERT_BYTES / 2**20)  # 2 layers' experts must go
    config = tmp_path / "fit.toml"
    config.write_text(
        f"[devices.gpu0]\nmemory_mb = {budget}\n[devices.big]\nmemory_mb = 100000\n"
        f'[models.moe]\ngguf = "{moe_file}"\ndevice = "big"\nargs = ["-c", "512"]\n'
        + TIERS.replace("MODEL", "moe")
    )
    result = run_cli("fit", "moe", "--device", "gpu0", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "weights on device" in result.stdout and "KV cache on device" in result.stdout
    assert "smallest --n-cpu-moe that fits: 2" in result.stdout
    small_ctx = run_cli("fit", "moe", "--device", "gpu0", "--ctx", "256", "--config", str(config))
    assert "(256 tokens)" in small_ctx.stdout


def test_fit_checks_a_model_on_two_cards_share_by_share(tmp_path: Path) -> None:
    """Weights and KV cache split as the shares say (2:1 here), a compute buffer on each
    card: the configured 100 MiB fit gpu1, the estimate (about 109 MiB) does not."""
    config_text = (
        "[devices.gpu0]\nmemory_mb = 10000\n[devices.gpu1]\nindex = 1\nmemory_mb = 100\n"
        '[models.dense]\ngguf = "demo:smollm2"\ndevices = ["gpu0", "gpu1"]\n'
        f"memory_mb = {{gpu0 = 200, gpu1 = 100}}\nargs = {DEMO_ARGS!r}\n".replace("'", '"')
        + TIERS.replace("MODEL", "dense")
    )
    report = fit_report(parse_config(config_text), "dense", None, None)
    compute = report["estimate"]["compute_mb"]
    on = {card["device"]: card for card in report["devices"]}
    split = on["gpu0"]["estimate_mb"] - compute, on["gpu1"]["estimate_mb"] - compute
    assert split[0] == pytest.approx(2 * split[1], abs=0.2)
    assert sum(split) == pytest.approx(report["estimate"]["device_mb"] - compute, abs=0.2)
    assert on["gpu0"]["fits"] and not on["gpu1"]["fits"] and not report["fits"]
    assert on["gpu1"]["configured_mb"] == 100

    config = tmp_path / "fit.toml"
    config.write_text(config_text)
    result = run_cli("fit", "dense", "--config", str(config))
    assert result.returncode == 1
    assert "dense on gpu0+gpu1 (--tensor-split 200,100)" in result.stdout
    assert "does NOT fit" in result.stdout.splitlines()[-1]


# -- the daemon's use ----------------------------------------------------------------------


def demo_like_config(budget_mb: int, *, memory_line: str = "") -> str:
    return (
        f'[devices.gpu0]\nkind = "gpu"\nmemory_mb = {budget_mb}\n'
        f'[models.big-demo]\ngguf = "demo:smollm2"\ndevice = "gpu0"\n{memory_line}'
        f"args = {DEMO_ARGS!r}\n".replace("'", '"')
        + TIERS.replace("MODEL", "big-demo")
    )


def test_a_model_without_memory_mb_is_scheduled_with_its_estimate(tmp_path: Path) -> None:
    host = Host(parse_config(demo_like_config(400)), tmp_path)
    host.build()
    model = next(m for m in status_document(host)["models"] if m["name"] == "big-demo")
    expected = estimate(read_shape(demo_gguf()), placement_from_args(DEMO_ARGS)).device_mb
    assert model["memory_mb"] == int(np.ceil(expected))
    assert 250 < model["memory_mb"] < 330  # weights ~92 + KV 180 + compute ~19


def test_a_model_that_can_never_fit_is_refused_with_numbers(tmp_path: Path) -> None:
    config = tmp_path / "small.toml"
    config.write_text(demo_like_config(200))
    result = run_cli("serve", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message, message
    assert "models.big-demo: estimated 291 MiB" in message
    assert "KV cache 180 for 8192 tokens" in message
    assert "never fit device gpu0 (200 MiB budget)" in message


def test_an_explicit_memory_mb_over_a_budget_is_refused_too(tmp_path: Path) -> None:
    config = tmp_path / "explicit.toml"
    config.write_text(demo_like_config(200, memory_line="memory_mb = 150\n"))
    host = Host(parse_config(config.read_text()), tmp_path)
    host.build()  # 150 fits 200: the config's number wins over the estimate
    assert host.memory_of["big-demo"] == 150


# -- against llama-server's own account ----------------------------------------------------


@pytest.mark.real
def test_smollm2_estimate_is_within_10_percent_of_what_llama_server_allocates(
    tmp_path: Path,
) -> None:
    """This llama.cpp build prints its buffer sizes at verbosity 4 (`-lv 4`)."""
    port = free_port()
    log_path = tmp_path / "server.log"
    args = [*DEMO_ARGS, "--n-gpu-layers", "0"]
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                *(str(find_llama_server(None)), "-m", str(demo_gguf()), "--port", str(port)),
                *("--host", "127.0.0.1", "-lv", "4", *args),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                assert server.poll() is None, log_path.read_text(errors="replace")
                try:
                    if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            else:
                raise AssertionError("llama-server not healthy within 60 s")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    reported = parse_server_log(log_path.read_text(errors="replace"))
    assert reported.model_mb > 0 and reported.kv_mb > 0, "no buffer lines in the log"
    ours = estimate(read_shape(demo_gguf()), placement_from_args(args), on_gpu=False)
    print(
        f"estimate: weights {ours.weights_device_mb:.1f} + KV {ours.kv_device_mb:.1f} + compute "
        f"{ours.compute_mb:.1f} = {ours.device_mb:.1f} MiB; llama-server: model "
        f"{reported.model_mb:.1f} + KV {reported.kv_mb:.1f} + compute {reported.compute_mb:.1f}"
        f" = {reported.total_mb:.1f} MiB"
    )
    weights_and_kv = ours.weights_device_mb + ours.kv_device_mb
    assert weights_and_kv == pytest.approx(reported.model_mb + reported.kv_mb, rel=0.10)
    assert ours.device_mb == pytest.approx(reported.total_mb, rel=0.10)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
