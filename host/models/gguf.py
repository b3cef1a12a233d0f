"""How much memory a managed model takes, estimated from its GGUF file and its arguments.

A swap that starts a model which then runs out of memory costs a failed load and a
retry; a config that can never fit should be refused before anything starts. The
file itself says what llama.cpp will allocate: the size of every tensor, the layer
count, KV heads and head sizes. With the server arguments (`--n-gpu-layers`,
`--n-cpu-moe`, `--override-tensor`, `--ctx-size`, `--cache-type-k/v`) that gives
the weights on the device, the weights left in RAM and the KV cache, the way
llama.cpp places them. Only `read_shape` touches the disk (metadata and tensor
table, never the weights); everything else here is pure arithmetic.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from host.config import ConfigError, ManagedModel

MIB = 1024 * 1024

EXPERT_TENSOR = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
"""llama.cpp's pattern for MoE expert weights (what `--n-cpu-moe` and `--cpu-moe` move)."""

_CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "iq4_nl": 18 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
}
"""Bytes per element of each KV cache type llama-server accepts (ggml block sizes)."""

KV_PAD = 256
"""llama.cpp rounds the KV cells of each sequence up to a multiple of this."""

COMPUTE_FLOATS_PER_EMBD = 16
"""Compute buffer ≈ 4 bytes × ubatch × 16 × n_embd: calibrated on llama.cpp's reported
compute buffer (SmolLM2-135M: 18.6 MiB at ubatch 512); a heuristic, not a promise."""


class GgufError(Exception):
    """The file is not a GGUF model this module can read; the message says why."""


@dataclass(frozen=True)
class Tensor:
    name: str
    n_bytes: int

    @property
    def layer(self) -> int | None:
        """The block index of `blk.N.*` tensors; None for embeddings, output and the like."""
        match = re.match(r"blk\.(\d+)\.", self.name)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a GGUF: hyperparameters and the tensor table."""

    architecture: str
    n_layer: int
    n_ctx_train: int
    n_embd: int
    n_vocab: int
    kv_heads: tuple[int, ...]
    """KV heads of each layer (some architectures vary them per layer)."""
    key_length: int
    value_length: int
    tensors: tuple[Tensor, ...]

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def is_moe(self) -> bool:
        return any(re.search(EXPERT_TENSOR, t.name) for t in self.tensors)


@dataclass(frozen=True)
class Placement:
    """What a llama-server command line says about where memory goes."""

    gpu_layers: int = 999
    n_cpu_moe: int = 0
    overrides: tuple[tuple[str, str], ...] = ()
    """`--override-tensor` (pattern, buffer type) pairs, in command-line order."""
    ctx_size: int = 0
    """Total KV cells across all `--parallel` slots; 0 means the model's trained context."""
    parallel: int = 1
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    kv_offload: bool = True
    ubatch: int = 512


@dataclass(frozen=True)
class Estimate:
    """Where a model's memory goes, in MiB. `device_mb` is what counts against a budget."""

    weights_device_mb: float
    weights_host_mb: float
    kv_device_mb: float
    kv_host_mb: float
    compute_mb: float
    ctx_size: int
    layers_on_device: int
    n_layer: int

    @property
    def device_mb(self) -> float:
        return self.weights_device_mb + self.kv_device_mb + self.compute_mb

    @property
    def host_mb(self) -> float:
        return self.weights_host_mb + self.kv_host_mb

    def summary(self) -> str:
        """One line for error messages: the total and its parts."""
        return (
            f"{math.ceil(self.device_mb)} MiB (weights {self.weights_device_mb:.0f} + "
            f"KV cache {self.kv_device_mb:.0f} for {self.ctx_size} tokens + "
            f"compute {self.compute_mb:.0f})"
        )

    def lines(self) -> list[str]:
        """The breakdown `tierhost fit` prints."""
        return [
            f"layers on device   {self.layers_on_device} / {self.n_layer}",
            f"weights on device  {self.weights_device_mb:10.1f} MiB",
            f"weights in RAM     {self.weights_host_mb:10.1f} MiB",
            f"KV cache on device {self.kv_device_mb:10.1f} MiB ({self.ctx_size} tokens)",
            f"KV cache in RAM    {self.kv_host_mb:10.1f} MiB",
            f"compute buffers    {self.compute_mb:10.1f} MiB",
            f"device total       {self.device_mb:10.1f} MiB",
        ]


# -- reading the file ------------------------------------------------------------------


def read_shape(path: Path) -> ModelShape:
    """Metadata and tensor sizes of a GGUF, without reading its weights."""
    metadata, tensors = scan(path)

    def field(key: str) -> object:
        return metadata.get(key)

    arch = field("general.architecture")
    if not isinstance(arch, str):
        raise GgufError(f"{path}: no general.architecture in the GGUF metadata")
    n_layer = _int(field(f"{arch}.block_count"), path, "block_count")
    n_embd = _int(field(f"{arch}.embedding_length"), path, "embedding_length")
    heads = field(f"{arch}.attention.head_count")
    n_head = max(heads) if isinstance(heads, list) else _int(heads, path, "head_count")
    raw_kv = field(f"{arch}.attention.head_count_kv")
    if raw_kv is None:
        kv_heads = (n_head,) * n_layer
    elif isinstance(raw_kv, list):
        kv_heads = tuple(int(h) for h in raw_kv)
    else:
        kv_heads = (_int(raw_kv, path, "head_count_kv"),) * n_layer
    head_size = n_embd // n_head if n_head else 0
    key_length = field(f"{arch}.attention.key_length")
    value_length = field(f"{arch}.attention.value_length")
    vocab = field(f"{arch}.vocab_size")
    if vocab is None:
        vocab = field("tokenizer.ggml.tokens#count")
    ctx_train = field(f"{arch}.context_length")
    return ModelShape(
        architecture=arch,
        n_layer=n_layer,
        n_ctx_train=int(ctx_train) if isinstance(ctx_train, int) else 4096,
        n_embd=n_embd,
        n_vocab=int(vocab) if isinstance(vocab, int) else 0,
        kv_heads=kv_heads,
        key_length=int(key_length) if isinstance(key_length, int) else head_size,
        value_length=int(value_length) if isinstance(value_length, int) else head_size,
        tensors=tensors,
    )


_SMALL_ARRAY = 4096
"""Arrays up to this length are read (per-layer values); longer ones (vocabularies) are
skipped and only their length kept, under `key#count`."""


def scan(path: Path) -> tuple[dict[str, object], tuple[Tensor, ...]]:
    """The metadata and the tensor table of a GGUF file, read straight from its header.

    `gguf.GGUFReader` builds a numpy view of every vocabulary string, which takes
    seconds on a small box; this walks the same layout (with the `gguf` package's type
    codes and quantisation block sizes) and skips what the estimate does not need.
    """
    import gguf  # numpy comes with it: import only when a file is actually read

    try:
        with path.open("rb") as file:
            reader = _HeaderReader(file)
            if reader.raw(4) != b"GGUF":
                raise GgufError(f"{path}: not a GGUF file (bad magic)")
            version = reader.unpack("<I")
            if not 2 <= version <= 255:
                raise GgufError(f"{path}: unsupported GGUF version {version}")
            n_tensors, n_kv = reader.unpack("<Q"), reader.unpack("<Q")
            metadata: dict[str, object] = {}
            for _ in range(n_kv):
                key = reader.string()
                kind = gguf.GGUFValueType(reader.unpack("<I"))
                if kind is gguf.GGUFValueType.ARRAY:
                    item_kind = gguf.GGUFValueType(reader.unpack("<I"))
                    count = reader.unpack("<Q")
                    metadata[f"{key}#count"] = count
                    if count <= _SMALL_ARRAY:
                        metadata[key] = [reader.value(item_kind) for _ in range(count)]
                    else:
                        reader.skip_values(item_kind, count)
                else:
                    metadata[key] = reader.value(kind)
            tensors = []
            for _ in range(n_tensors):
                name = reader.string()
                n_dims = reader.unpack("<I")
                elements = math.prod(reader.unpack("<Q") for _ in range(n_dims))
                quant = gguf.GGMLQuantizationType(reader.unpack("<I"))
                reader.unpack("<Q")  # offset
                block, size = gguf.GGML_QUANT_SIZES[quant]
                tensors.append(Tensor(name, elements // block * size))
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise GgufError(f"{path}: not a readable GGUF file ({exc})") from None
    return metadata, tuple(tensors)


_SCALAR_FORMATS = {
    "UINT8": "<B",
    "INT8": "<b",
    "UINT16": "<H",
    "INT16": "<h",
    "UINT32": "<I",
    "INT32": "<i",
    "FLOAT32": "<f",
    "BOOL": "<?",
    "UINT64": "<Q",
    "INT64": "<q",
    "FLOAT64": "<d",
}


class _HeaderReader:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def raw(self, n: int) -> bytes:
        data = self._file.read(n)
        if len(data) != n:
            raise ValueError("the file ends inside its header")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.raw(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.raw(self.unpack("<Q")).decode("utf-8", errors="replace")

    def value(self, kind: Any) -> object:
        if kind.name == "STRING":
            return self.string()
        return self.unpack(_SCALAR_FORMATS[kind.name])

    def skip_values(self, kind: Any, count: int) -> None:
        if kind.name == "STRING":
            for _ in range(count):
                self._file.seek(self.unpack("<Q"), 1)
        elif kind.name == "ARRAY":
            raise ValueError("nested arrays are not supported")
        else:
            self._file.seek(struct.calcsize(_SCALAR_FORMATS[kind.name]) * count, 1)


def _int(value: object, path: Path, key: str) -> int:
    if not isinstance(value, int):
        raise GgufError(f"{path}: GGUF metadata lacks an integer {key}")
    return value


# -- reading the command line ------------------------------------------------------------

_FLAGS = {
    "-ngl": "gpu_layers",
    "--gpu-layers": "gpu_layers",
    "--n-gpu-layers": "gpu_layers",
    "-ncmoe": "n_cpu_moe",
    "--n-cpu-moe": "n_cpu_moe",
    "-c": "ctx_size",
    "--ctx-size": "ctx_size",
    "-np": "parallel",
    "--parallel": "parallel",
    "-ctk": "cache_type_k",
    "--cache-type-k": "cache_type_k",
    "-ctv": "cache_type_v",
    "--cache-type-v": "cache_type_v",
    "-ub": "ubatch",
    "--ubatch-size": "ubatch",
}


def placement_from_args(args: Sequence[str], gpu_layers: int = 999) -> Placement:
    """Read the memory-relevant llama-server flags; the last occurrence wins, as in llama.cpp.

    `gpu_layers` is the config's value, used when args do not set `--n-gpu-layers`.
    """
    values: dict[str, str] = {}
    overrides: list[tuple[str, str]] = []
    cpu_moe = False
    kv_offload = True
    items = list(args)
    for i, arg in enumerate(items):
        flag, eq, inline = arg.partition("=")
        value = inline if eq else (items[i + 1] if i + 1 < len(items) else "")
        if flag in _FLAGS:
            values[_FLAGS[flag]] = value
        elif flag in ("-ot", "--override-tensor"):
            overrides += _parse_overrides(value)
        elif arg in ("-cmoe", "--cpu-moe"):
            cpu_moe = True
        elif arg in ("-nkvo", "--no-kv-offload"):
            kv_offload = False
        elif arg in ("-kvo", "--kv-offload"):
            kv_offload = True
    if cpu_moe:
        overrides.append((EXPERT_TENSOR, "CPU"))

    def number(key: str, default: int) -> int:
        raw = values.get(key)
        if raw is None:
            return default
        if key == "gpu_layers" and raw in ("all", "auto"):
            return 999
        try:
            return int(raw)
        except ValueError:
            return default

    parallel = number("parallel", 1)
    return Placement(
        gpu_layers=number("gpu_layers", gpu_layers),
        n_cpu_moe=number("n_cpu_moe", 0),
        overrides=tuple(overrides),
        ctx_size=number("ctx_size", 0),
        parallel=parallel if parallel > 0 else 1,
        cache_type_k=values.get("cache_type_k", "f16").lower(),
        cache_type_v=values.get("cache_type_v", "f16").lower(),
        kv_offload=kv_offload,
        ubatch=number("ubatch", 512),
    )


def _parse_overrides(spec: str) -> list[tuple[str, str]]:
    pairs = []
    for part in spec.split(","):
        pattern, _, buffer = part.rpartition("=")
        if pattern:
            pairs.append((pattern, buffer))
    return pairs


# -- the estimate ---------------------------------------------------------------------


def _on_host_buffer(buffer: str) -> bool:
    return buffer.upper().startswith("CPU")


def estimate(shape: ModelShape, placement: Placement, *, on_gpu: bool = True) -> Estimate:
    """Memory of `shape` served with `placement`.

    On a GPU (real or budget-only, which stands in for one) the device holds the
    offloaded layers, as llama.cpp places them: the last `gpu_layers` blocks, the
    output layer when `gpu_layers` exceeds the block count, never the input
    embeddings; tensors matched by a CPU override (`--n-cpu-moe`, `--cpu-moe`,
    `--override-tensor ...=CPU`) stay in RAM. On a CPU device everything counts.
    """
    n_layer = shape.n_layer
    gpu_layers = max(0, placement.gpu_layers) if on_gpu else 0
    first_gpu_layer = max(n_layer + 1 - gpu_layers, 0)
    output_on_device = on_gpu and gpu_layers > n_layer
    overrides = list(placement.overrides) + [
        (rf"blk\.{i}{EXPERT_TENSOR}", "CPU") for i in range(placement.n_cpu_moe)
    ]
    compiled = [(re.compile(p), b) for p, b in overrides]
    has_output = any(t.name.startswith("output.") for t in shape.tensors)

    device = host = 0
    for tensor in shape.tensors:
        layer = tensor.layer
        if not on_gpu:
            on_device = True
        elif layer is not None:
            on_device = layer >= first_gpu_layer
        else:
            on_device = output_on_device and tensor.name.startswith("output")
        for pattern, buffer in compiled:
            if on_gpu and pattern.search(tensor.name):
                on_device = not _on_host_buffer(buffer)
                break
        if on_device:
            device += tensor.n_bytes
        else:
            host += tensor.n_bytes
        if on_gpu and output_on_device and not has_output and tensor.name == "token_embd.weight":
            device += tensor.n_bytes  # tied embeddings: the output layer gets its own copy

    ctx = kv_cells(shape, placement)
    k_bytes = _CACHE_TYPE_BYTES.get(placement.cache_type_k, 2.0)
    v_bytes = _CACHE_TYPE_BYTES.get(placement.cache_type_v, 2.0)
    kv_device = kv_host = 0.0
    for layer, heads in enumerate(shape.kv_heads[:n_layer]):
        size = ctx * heads * (shape.key_length * k_bytes + shape.value_length * v_bytes)
        if not on_gpu or (placement.kv_offload and layer >= first_gpu_layer):
            kv_device += size
        else:
            kv_host += size

    layers_on_device = n_layer if not on_gpu else max(0, n_layer - first_gpu_layer)
    compute = 0.0
    if layers_on_device or not on_gpu:
        ubatch = max(1, min(placement.ubatch, ctx))
        compute = 4.0 * ubatch * COMPUTE_FLOATS_PER_EMBD * shape.n_embd
        compute += 4.0 * shape.n_vocab * placement.parallel  # logits output buffer
    return Estimate(
        weights_device_mb=device / MIB,
        weights_host_mb=host / MIB,
        kv_device_mb=kv_device / MIB,
        kv_host_mb=kv_host / MIB,
        compute_mb=compute / MIB,
        ctx_size=ctx,
        layers_on_device=layers_on_device,
        n_layer=n_layer,
    )


def kv_cells(shape: ModelShape, placement: Placement) -> int:
    """KV cells allocated in total: the context split over the slots, each padded."""
    total = placement.ctx_size or shape.n_ctx_train
    per_slot = math.ceil(total / placement.parallel)
    per_slot = math.ceil(per_slot / KV_PAD) * KV_PAD
    return per_slot * placement.parallel


def smallest_n_cpu_moe(shape: ModelShape, placement: Placement, budget_mb: float) -> int | None:
    """The fewest leading layers whose experts must stay in RAM for the model to fit.

    None when even every layer's experts in RAM leave it over the budget (or it has no
    experts to move); 0 when it fits as it is.
    """
    if not shape.is_moe:
        return None
    for n in range(shape.n_layer + 1):
        if estimate(shape, replace(placement, n_cpu_moe=n)).device_mb <= budget_mb:
            return n
    return None


# -- llama-server's own account ------------------------------------------------------------


@dataclass(frozen=True)
class Reported:
    """What a llama-server log says it allocated (MiB), summed over buffers."""

    model_mb: float
    kv_mb: float
    compute_mb: float

    @property
    def total_mb(self) -> float:
        return self.model_mb + self.kv_mb + self.compute_mb


_MODEL_BUFFER = re.compile(r"\b(\S+)\s+model buffer size =\s*([\d.]+) MiB")
_KV_BUFFER = re.compile(r"\b\S+\s+KV buffer size =\s*([\d.]+) MiB")
_KV_SELF = re.compile(r"KV self size\s*=\s*([\d.]+) MiB")
_COMPUTE = re.compile(r"\b\S+\s+(?:compute|output) buffer size =\s*([\d.]+) MiB")


def parse_server_log(text: str) -> Reported:
    """Read the buffer sizes llama.cpp logs at load (with `-lv 4` or more on recent builds).

    Recent builds print `CPU_Mapped model buffer size = 92.10 MiB` and
    `CPU KV buffer size = 180.00 MiB`; older ones `KV self size = ...`.
    """
    model = sum(float(m.group(2)) for m in _MODEL_BUFFER.finditer(text))
    kv = sum(float(m.group(1)) for m in _KV_BUFFER.finditer(text))
    if not kv:
        kv = sum(float(m.group(1)) for m in _KV_SELF.finditer(text))
    compute = sum(float(m.group(1)) for m in _COMPUTE.finditer(text))
    return Reported(model_mb=model, kv_mb=kv, compute_mb=compute)


# -- for the service and the CLI ---------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _cached_shape(path: Path, size: int, mtime_ns: int) -> ModelShape:
    return read_shape(path)


def shape_of(path: Path) -> ModelShape:
    """`read_shape`, cached while the file keeps its size and time (models share files)."""
    stat = path.stat()
    return _cached_shape(path, stat.st_size, stat.st_mtime_ns)


def estimate_model(
    model: ManagedModel, path: Path, device_kind: str, ctx_size: int | None = None
) -> tuple[ModelShape, Placement, Estimate]:
    """A configured model's estimate on a device of `device_kind` (`gpu` or `cpu`)."""
    shape = shape_of(path)
    placement = placement_from_args(model.args, model.gpu_layers)
    if ctx_size is not None:
        placement = replace(placement, ctx_size=ctx_size)
    return shape, placement, estimate(shape, placement, on_gpu=device_kind == "gpu")


def memory_for(
    name: str,
    model: ManagedModel,
    path: Path,
    device_name: str,
    device_kind: str,
    budget_mb: int | None,
) -> int:
    """What the scheduler counts for `name`: `memory_mb` when the config gives it, else
    the estimate. Raises ConfigError, with the numbers, when it can never fit."""
    if model.memory_mb is not None:
        needed = model.memory_mb
        what = f"memory_mb {needed} MiB"
        hint = ""
    else:
        try:
            shape, placement, result = estimate_model(model, path, device_kind)
        except (GgufError, OSError) as exc:
            raise ConfigError(
                f"config error: models.{name}: cannot estimate its memory ({exc}); set memory_mb"
            ) from None
        needed = math.ceil(result.device_mb)
        what = f"estimated {result.summary()}"
        hint = f"; see `tierhost fit {name}`"
        if budget_mb is not None and device_kind == "gpu":
            moe = smallest_n_cpu_moe(shape, placement, budget_mb)
            if moe:
                hint = f"; --n-cpu-moe {moe} would fit (`tierhost fit {name}`)"
    if budget_mb is not None and needed > budget_mb:
        raise ConfigError(
            f"config error: models.{name}: {what} can never fit device {device_name} "
            f"({budget_mb} MiB budget){hint}"
        )
    return needed
