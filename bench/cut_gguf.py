"""Cut a llama-architecture GGUF to its first N blocks: a small model with real weights.

python -m bench.cut_gguf SOURCE DEST N

A lent GPU box takes at most 64 MiB of files in a call, and the demo SmolLM2 alone is
94 MiB; its first four of thirty blocks, the embedding and the tokenizer make 39 MiB that
llama-server loads, offloads and answers with (badly: it is a quarter of a small model).
The checks it is carried for are about where the weights live, not what they say.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def _value(field: Any) -> tuple[Any, GGUFValueType, GGUFValueType | None]:
    kind = field.types[0]
    if kind == GGUFValueType.ARRAY:
        item = field.types[1]
        if item == GGUFValueType.STRING:
            values: list[Any] = [
                bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data
            ]
        else:
            values = [field.parts[i].tolist()[0] for i in field.data]
        return values, kind, item
    if kind == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8"), kind, None
    return field.parts[field.data[0]].tolist()[0], kind, None


def cut(source: str, dest: str, blocks: int) -> None:
    reader = GGUFReader(source)
    writer = GGUFWriter(dest, "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # written by the writer itself
        if field.name == "llama.block_count":
            writer.add_uint32(field.name, blocks)
            continue
        value, kind, item = _value(field)
        writer.add_key_value(field.name, value, kind, sub_type=item)
    for tensor in reader.tensors:
        if tensor.name.startswith("blk.") and int(tensor.name.split(".")[1]) >= blocks:
            continue
        data = np.asarray(tensor.data)
        writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    cut(sys.argv[1], sys.argv[2], int(sys.argv[3]))
