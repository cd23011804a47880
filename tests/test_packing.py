"""Packed rows + the layout's header are byte for byte what safetensors writes for the same PEFT tensors."""

import pytest
import torch
from safetensors.torch import load, save

from t2l_ray.hypernet import HypernetConfig, TextToLoRA
from t2l_ray.packing import AdapterLayout, lora_key, pack, packed_bytes
from t2l_ray.shapes import BaseShapes, ModuleShape

# 12 layers, so "layers.10" sorts before "layers.2"; an mlp module, so parents sort too.
SHAPES = BaseShapes("tiny", "llama", 12, (ModuleShape("q_proj", 64, 64), ModuleShape("v_proj", 64, 32),
                                          ModuleShape("down_proj", 128, 64)))


def reference_files(weights, shapes: BaseShapes, scale: float, dtype: torch.dtype) -> list[bytes]:
    """The plain way: one tensor per key (B scaled in float32, then cast), serialised by safetensors."""
    n = next(iter(weights.values()))[0].shape[0]
    files = []
    for i in range(n):
        tensors = {}
        for name, (a, b) in weights.items():
            module = shapes.module(name)
            for layer in range(shapes.num_layers):
                tensors[lora_key(layer, module, "A")] = a[i, layer].float().to(dtype).contiguous()
                tensors[lora_key(layer, module, "B")] = (b[i, layer].float() * scale).to(dtype).contiguous()
        files.append(save(tensors, metadata={"format": "pt"}))
    return files


def tiny_hypernet(variant: str, std: float = 0.2) -> TextToLoRA:
    """A T2L of `variant` on SHAPES (12-dim embeddings) whose heads are perturbed, so adapters differ."""
    torch.manual_seed(0)
    config = HypernetConfig(variant=variant, rank=4, latent=16, head_in=32, target_modules=["q_proj", "v_proj", "down_proj"])
    model = TextToLoRA(config, SHAPES, 12).eval()
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(0, std)
    return model


@pytest.mark.parametrize("variant", ["L", "M", "S"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_packed_rows_are_safetensors_files(variant, dtype):
    model = tiny_hypernet(variant)
    with torch.no_grad():
        weights = model(torch.randn(3, 12))
    layout = AdapterLayout(model.modules_, SHAPES.num_layers, 4, dtype)
    rows = torch.empty(3, layout.numel, dtype=dtype)
    pack(weights, layout, model.config.scale, rows)
    packed = packed_bytes(rows)
    expected = reference_files(weights, SHAPES, model.config.scale, dtype)
    assert [layout.header + packed[i].tobytes() for i in range(3)] == expected
    assert layout.file_bytes == len(expected[0])
    assert [entry.key for entry in layout.entries] == sorted(load(expected[0]))


def test_layout_refuses_dtypes_safetensors_rows_cannot_hold():
    with pytest.raises(ValueError, match="adapters are written as"):
        AdapterLayout(SHAPES.modules, 1, 4, torch.int8)
