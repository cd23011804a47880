"""Task embeddings -> packed adapter rows in a reused host buffer: the device's half of generation.

The hypernet forward runs in bf16 where the device computes it natively (CUDA with bf16; a CPU with
AVX512-BF16 or AMX-BF16) and the adapters are bf16 anyway, in fp32 otherwise (with TF32 matmuls on CUDA
when the adapters are 16-bit). Only the heads, where nearly all the FLOPs are, change dtype; the small trunk
stays fp32. The rsLoRA scale is folded into B and the cast to the adapter dtype done on the device, into
one packed row per adapter (`packing.pack`); one copy per batch then moves the rows into a host buffer that
is reused from batch to batch and page-locked on CUDA, so the copy is a single DMA. The host's half
(hash, serialise, write) reads slices of that buffer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from t2l_ray.hypernet import TextToLoRA
from t2l_ray.packing import DTYPES, AdapterLayout, pack, packed_bytes

ForwardDtype = Literal["auto", "bfloat16", "float32"]
FORWARD_CHUNK = 16  # embeddings per hypernet forward: bounds the activations (the heads' outputs) per batch


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matmuls (x86 AVX512-BF16 or AMX-BF16), as torch's cpuinfo reports."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.5
    if capabilities is None:
        return False
    found = capabilities()
    return bool(found.get("avx512_bf16") or found.get("amx_bf16"))


def device_has_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def forward_dtype(device: torch.device, adapter_dtype: torch.dtype, requested: ForwardDtype = "auto") -> torch.dtype:
    """bf16 when asked, or ("auto") when the adapters are bf16 and the device has native bf16; else fp32."""
    if requested == "bfloat16":
        return torch.bfloat16
    if requested == "float32":
        return torch.float32
    if requested != "auto":
        raise ValueError(f"forward dtype must be auto, bfloat16 or float32, not {requested!r}")
    return torch.bfloat16 if adapter_dtype == torch.bfloat16 and device_has_bf16(device) else torch.float32


class HostBuffer:
    """Host memory for one batch of packed rows, reused from batch to batch (page-locked when `pin`).

    `take` returns a view of it (growing it when a batch is larger than any before); `receive` copies a
    batch from the device into it, or returns the batch as is when it already is that buffer (CPU)."""

    def __init__(self, pin: bool):
        self.pin = pin
        self._memory: torch.Tensor | None = None

    def take(self, rows: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
        needed = rows * numel * torch.empty(0, dtype=dtype).element_size()
        if self._memory is None or self._memory.numel() < needed:
            self._memory = torch.empty(needed, dtype=torch.uint8, pin_memory=self.pin)
        return self._memory[:needed].view(dtype).view(rows, numel)

    def receive(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.device.type == "cpu" and self._memory is not None and batch.data_ptr() == self._memory.data_ptr():
            return batch  # packed in place by the CPU: nothing to copy
        host = self.take(*batch.shape, batch.dtype)
        host.copy_(batch, non_blocking=self.pin)
        if batch.device.type == "cuda":
            torch.cuda.current_stream(batch.device).synchronize()  # the rows are read by host threads next
        return host


class Renderer:
    """A hypernet made ready for generation on its device: `render(embeddings)` -> packed rows on the host.

    It takes the model over: in a bf16 forward the heads are cast to bf16 in place (the fp32 copy is not
    kept), so the model must not be trained or used for an fp32 forward afterwards."""

    def __init__(self, model: TextToLoRA, dtype: str = "bfloat16", forward: ForwardDtype = "auto"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, not {dtype!r}")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.dtype = DTYPES[dtype]
        self.forward_dtype = forward_dtype(self.device, self.dtype, forward)
        model.heads_to(self.forward_dtype)
        if self.device.type == "cuda" and self.forward_dtype == torch.float32 and self.dtype != torch.float32:
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 keeps more mantissa than 16-bit adapters hold
        self.layout = AdapterLayout(model.modules_, model.shapes.num_layers, model.config.rank, self.dtype)
        self.scale = model.config.scale
        self.host = HostBuffer(pin=self.device.type == "cuda" and torch.cuda.is_available())

    @torch.inference_mode()
    def render(self, embeddings: torch.Tensor) -> np.ndarray:
        """`[N, layout.nbytes]` uint8: row i is the data of adapter i's weights file (after `layout.header`).
        A view of the host buffer: valid until the next call."""
        n, numel = embeddings.shape[0], self.layout.numel
        if self.device.type == "cpu":
            batch = self.host.take(n, numel, self.dtype)  # the CPU packs straight into the host buffer
        else:
            batch = torch.empty(n, numel, dtype=self.dtype, device=self.device)
        for start in range(0, n, FORWARD_CHUNK):
            chunk = embeddings[start:start + FORWARD_CHUNK].to(self.device, torch.float32)
            pack(self.model(chunk), self.layout, self.scale, batch[start:start + FORWARD_CHUNK])
        return packed_bytes(self.host.receive(batch))
