"""The device half of generation: precision chosen from the hardware, bf16 close to fp32, the host buffer."""

import copy
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_models import PACKING_SHAPES, reference_files, tiny_hypernet

from t2l_ray.render import HostBuffer, Renderer, cpu_has_bf16, forward_dtype

CPU = torch.device("cpu")


def model(variant: str = "L"):
    return tiny_hypernet(variant, std=0.05)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").is_file(),
                    reason="the flags checked are x86 Linux ones")
def test_cpu_bf16_detection_agrees_with_the_cpu_flags():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    assert cpu_has_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_forward_dtype_follows_the_device_and_the_adapter_dtype():
    native = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert forward_dtype(CPU, torch.bfloat16) == native
    assert forward_dtype(CPU, torch.float32) == torch.float32  # fp32 adapters get an fp32 forward
    assert forward_dtype(CPU, torch.float16) == torch.float32  # bf16 holds fewer mantissa bits than fp16
    assert forward_dtype(CPU, torch.float32, "bfloat16") == torch.bfloat16
    assert forward_dtype(CPU, torch.bfloat16, "float32") == torch.float32
    with pytest.raises(ValueError, match="forward dtype must be"):
        forward_dtype(CPU, torch.bfloat16, "float64")


@pytest.mark.parametrize("variant", ["L", "M", "S"])
def test_fp32_forward_writes_the_plain_paths_bytes(variant):
    hypernet, x = model(variant), torch.randn(20, 12)  # 20 > FORWARD_CHUNK: rows come from two forwards
    with torch.no_grad():
        expected = reference_files(hypernet(x), PACKING_SHAPES, hypernet.config.scale, torch.bfloat16)
    renderer = Renderer(hypernet, "bfloat16", "float32")
    rows = renderer.render(x)
    assert [renderer.layout.header + row.tobytes() for row in rows] == expected


@pytest.mark.parametrize("variant", ["L", "M", "S"])
def test_bf16_forward_stays_within_bf16_rounding_of_fp32(variant):
    """The adapters are written in bf16 anyway: a bf16 forward may differ from the fp32 one by about that much."""
    hypernet, x = model(variant), torch.randn(8, 12)
    fp32 = Renderer(copy.deepcopy(hypernet), "bfloat16", "float32")
    bf16 = Renderer(hypernet, "bfloat16", "bfloat16")
    assert hypernet.heads["q_proj"].weight.dtype == torch.bfloat16  # the heads really ran in bf16
    a = torch.frombuffer(bytearray(fp32.render(x).tobytes()), dtype=torch.bfloat16).float()
    b = torch.frombuffer(bytearray(bf16.render(x).tobytes()), dtype=torch.bfloat16).float()
    assert not torch.equal(a, b)
    assert (a - b).norm() / a.norm() < 2**-7  # bf16 keeps 8 mantissa bits: one rounding is up to 2^-9 relative
    assert (a - b).abs().max() < 2**-5 * a.abs().max()


def test_host_buffer_is_reused_and_filled_from_the_device_path():
    """The copy a CUDA chunk takes (device rows -> host buffer rows), run on the CPU: one buffer, grown when needed."""
    buffer = HostBuffer(pin=False)
    first = buffer.take(2, 6, torch.bfloat16)
    buffer.copy_in(first[1:], torch.arange(6, dtype=torch.bfloat16).view(1, 6))
    assert torch.equal(first[1], torch.arange(6, dtype=torch.bfloat16))
    again = buffer.take(2, 6, torch.bfloat16)
    assert again.data_ptr() == first.data_ptr() and torch.equal(again[1], first[1])  # reused, not reallocated
    bigger = buffer.take(4, 6, torch.bfloat16)
    buffer.copy_in(bigger, torch.full((4, 6), 2.0, dtype=torch.bfloat16))
    assert torch.equal(bigger, torch.full((4, 6), 2.0, dtype=torch.bfloat16))
    assert buffer.take(1, 6, torch.bfloat16).data_ptr() == bigger.data_ptr()


def test_renderer_pins_only_with_cuda_and_reuses_its_buffer():
    renderer = Renderer(model(), "bfloat16")
    assert renderer.host.pin == (renderer.device.type == "cuda" and torch.cuda.is_available())
    x = torch.randn(20, 12)  # two forward chunks
    chunks = [(first, rows.copy()) for first, rows in renderer.chunks(x)]
    assert [first for first, _ in chunks] == [0, 16] and [len(rows) for _, rows in chunks] == [16, 4]
    whole = renderer.render(x)
    assert (whole == np.concatenate([rows for _, rows in chunks])).all()
    assert renderer.render(x[:3]).__array_interface__["data"][0] == whole.__array_interface__["data"][0]
