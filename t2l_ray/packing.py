"""One adapter's weights file as a header plus one packed row of bytes, written by the device.

safetensors is a little-endian u64 header length, a JSON header (compact, keys in data order, padded with
spaces to 8 bytes) and the tensors' raw little-endian bytes, sorted by key. `AdapterLayout` computes that
header and where each PEFT tensor lies in the data, once per (shapes, rank, dtype): every adapter of a
checkpoint has the same header, so a weights file is `layout.header` followed by one row of `pack`'s
output, byte for byte what `safetensors.torch.save` writes for the same tensors. Writers then hash and
write slices of a batch buffer instead of building per-tensor copies.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from t2l_ray.hypernet import LoraWeights
from t2l_ray.shapes import ModuleShape

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
METADATA = {"format": "pt"}

if sys.byteorder != "little":  # the packed rows are the tensors' memory, which safetensors wants little-endian
    raise ImportError("t2l_ray.packing writes safetensors from raw tensor memory and needs a little-endian host")


def lora_key(layer: int, module: ModuleShape, which: str) -> str:
    return f"base_model.model.model.layers.{layer}.{module.parent}.{module.name}.lora_{which}.weight"


@dataclass(frozen=True)
class Entry:
    """One tensor of the file: `layer`'s A (`[r, in]`) or B (`[out, r]`) of `module`, at elements [start, end)."""

    key: str
    layer: int
    module: str
    which: str
    shape: tuple[int, int]
    start: int
    end: int


class AdapterLayout:
    """Keys, shapes and offsets of one adapter's tensors in file order, and the file's header bytes."""

    def __init__(self, modules: Sequence[ModuleShape], num_layers: int, rank: int, dtype: torch.dtype):
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"adapters are written as {sorted(map(str, SAFETENSORS_DTYPES))}, not {dtype}")
        self.dtype = dtype
        tensors = []
        for module in modules:
            for layer in range(num_layers):
                tensors.append((lora_key(layer, module, "A"), layer, module.name, "A", (rank, module.in_features)))
                tensors.append((lora_key(layer, module, "B"), layer, module.name, "B", (module.out_features, rank)))
        self.entries: list[Entry] = []
        offset = 0
        for key, layer, name, which, shape in sorted(tensors):  # safetensors' order: by key (one dtype)
            self.entries.append(Entry(key, layer, name, which, shape, offset, offset + shape[0] * shape[1]))
            offset += shape[0] * shape[1]
        self.numel = offset
        self.itemsize = torch.empty(0, dtype=dtype).element_size()
        self.nbytes = self.numel * self.itemsize
        self.header = self._header()

    def _header(self) -> bytes:
        fields: dict = {"__metadata__": METADATA}
        for entry in self.entries:
            fields[entry.key] = {"dtype": SAFETENSORS_DTYPES[self.dtype], "shape": list(entry.shape),
                                 "data_offsets": [entry.start * self.itemsize, entry.end * self.itemsize]}
        text = json.dumps(fields, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text

    @property
    def file_bytes(self) -> int:
        return len(self.header) + self.nbytes


@torch.no_grad()
def pack(weights: LoraWeights, layout: AdapterLayout, scale: float, out: torch.Tensor) -> None:
    """Write every adapter of `weights` into a row of `out` (`[N, layout.numel]`, `layout.dtype`, on the
    weights' device): A as is, B times `scale` computed in float32, each cast once to the row's dtype."""
    n = out.shape[0]
    for entry in layout.entries:
        a, b = weights[entry.module]
        dest = out[:, entry.start:entry.end].view(n, *entry.shape)
        if entry.which == "A":
            dest.copy_(a[:, entry.layer])
        else:
            torch.mul(b[:, entry.layer].float(), scale, out=dest)


def packed_bytes(out: torch.Tensor):
    """The rows of `out` as a `[N, bytes]` uint8 numpy view (no copy; `out` must be on the CPU)."""
    return out.view(torch.uint8).numpy()
