"""Packed rows + the layout's header are byte for byte what safetensors writes for the same PEFT tensors."""

import pytest
import torch
from fixtures_models import PACKING_SHAPES, reference_files, tiny_hypernet
from safetensors.torch import load

from t2l_ray.packing import AdapterLayout, pack, packed_bytes


@pytest.mark.parametrize("variant", ["L", "M", "S"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_packed_rows_are_safetensors_files(variant, dtype):
    model = tiny_hypernet(variant)
    with torch.no_grad():
        weights = model(torch.randn(3, 12))
    layout = AdapterLayout(model.modules_, PACKING_SHAPES.num_layers, 4, dtype)
    rows = torch.empty(3, layout.numel, dtype=dtype)
    pack(weights, layout, model.config.scale, rows)
    packed = packed_bytes(rows)
    expected = reference_files(weights, PACKING_SHAPES, model.config.scale, dtype)
    assert [layout.header + packed[i].tobytes() for i in range(3)] == expected
    assert layout.file_bytes == len(expected[0])
    assert [entry.key for entry in layout.entries] == sorted(load(expected[0]))


def test_layout_refuses_dtypes_safetensors_rows_cannot_hold():
    with pytest.raises(ValueError, match="adapters are written as"):
        AdapterLayout(PACKING_SHAPES.modules, 1, 4, torch.int8)
