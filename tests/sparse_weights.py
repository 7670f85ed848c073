"""Safetensors files of a model's full shapes that take no disk: the header says each tensor's shape, and the data
is a hole (a sparse file of zero bytes). For the checks that read a checkpoint's headers alone (a 32B model's
weights are 65 GB)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """`path`: a bf16 safetensors file of tensors `shapes`, all zero, its data a hole."""
    header, offset = {}, 0
    for name, shape in sorted(shapes.items()):
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as file:
        file.write(len(encoded).to_bytes(8, "little") + encoded)
        file.truncate(8 + len(encoded) + offset)
