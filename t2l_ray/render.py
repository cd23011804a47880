"""Task embeddings -> packed adapter rows in a reused host buffer: the device's half of generation.

The hypernet forward runs in bf16 where the device computes it natively (CUDA with bf16; a CPU with
AVX512-BF16 or AMX-BF16) and the adapters are bf16 anyway, in fp32 otherwise (with TF32 matmuls on CUDA
when the adapters are 16-bit). Only the heads, where nearly all the FLOPs are, change dtype; the small trunk
stays fp32. The rsLoRA scale is folded into B and the cast to the adapter dtype done on the device, into
one packed row per adapter (`packing.pack`); one copy per forward chunk then moves the rows into a host
buffer that holds the batch, is reused from batch to batch and is page-locked on CUDA, so each copy is a
single DMA. The host's half (hash, serialise, write) reads slices of that buffer, starting on a chunk's
rows while the next chunk is generated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from t2l_ray.hypernet import TextToLoRA
from t2l_ray.packing import DTYPES, AdapterLayout, pack, packed_bytes

ForwardDtype = Literal["auto", "bfloat16", "float32"]
FORWARD_CHUNK = 16  # embeddings per forward (and per host copy): bounds the activations, lets writes start early


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
    """Host memory for one batch of packed rows, reused from batch to batch (page-locked when `pin`)."""

    def __init__(self, pin: bool):
        self.pin = pin
        self._memory: torch.Tensor | None = None

    def take(self, rows: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """A `[rows, numel]` view of the buffer, grown when this batch is larger than any before."""
        needed = rows * numel * torch.empty(0, dtype=dtype).element_size()
        if self._memory is None or self._memory.numel() < needed:
            self._memory = torch.empty(needed, dtype=torch.uint8, pin_memory=self.pin)
        return self._memory[:needed].view(dtype).view(rows, numel)

    def copy_in(self, rows: torch.Tensor, packed: torch.Tensor) -> None:
        """Copy rows packed on the device into `rows` of this buffer: one DMA when pinned, then wait for it,
        since host threads read the rows next."""
        rows.copy_(packed, non_blocking=self.pin)
        if packed.device.type == "cuda":
            torch.cuda.current_stream(packed.device).synchronize()


class Renderer:
    """A hypernet made ready for generation on its device: embeddings -> packed rows in the host buffer.

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
    def chunks(self, embeddings: torch.Tensor) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, `[rows, layout.nbytes]` uint8) per forward of up to FORWARD_CHUNK embeddings, as soon as
        those rows are in the host buffer: writers can start on them while the next chunk is generated. Row
        i holds the data of adapter i's weights file (after `layout.header`); valid until the next batch."""
        n, numel = embeddings.shape[0], self.layout.numel
        host = self.host.take(n, numel, self.dtype)
        for start in range(0, n, FORWARD_CHUNK):
            rows = host[start:start + FORWARD_CHUNK]
            chunk = embeddings[start:start + FORWARD_CHUNK].to(self.device, torch.float32)
            if self.device.type == "cpu":
                pack(self.model(chunk), self.layout, self.scale, rows)  # the CPU packs straight into the buffer
            else:
                packed = torch.empty(rows.shape, dtype=self.dtype, device=self.device)
                pack(self.model(chunk), self.layout, self.scale, packed)
                self.host.copy_in(rows, packed)
            yield start, packed_bytes(rows)

    def render(self, embeddings: torch.Tensor) -> np.ndarray:
        """All rows of the batch at once (`[N, layout.nbytes]` uint8, a view of the host buffer)."""
        for _ in self.chunks(embeddings):
            pass
        return packed_bytes(self.host.take(embeddings.shape[0], self.layout.numel, self.dtype))
