"""Per-sample generated LoRAs on a frozen HF causal LM (training and evaluation path).

Every target Linear (`model.layers.{i}.self_attn.q_proj`, ...) is wrapped once by `GeneratedLoRALinear`.
Inside `with generated_lora(model, weights, scale):` sample n of the batch sees
`y = W x + scale * B_n (A_n x)`, with A_n, B_n straight from the hypernet, so gradients flow into the
hypernet only (the base stays frozen). This is the same arithmetic PEFT runs for one loaded adapter
(`lora_B(lora_A(x)) * scaling`), which the tests check logit for logit.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch
from torch import nn

from t2l_ray.hypernet import LoraWeights

_TARGET = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$")


class GeneratedLoRALinear(nn.Module):
    """A frozen Linear plus an optional per-sample low-rank update set from outside."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.lora: tuple[torch.Tensor, torch.Tensor, float] | None = None  # A [N,r,in], B [N,out,r], scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.lora is None:
            return y
        a, b, scale = self.lora
        if x.shape[0] != a.shape[0]:
            raise ValueError(f"batch of {x.shape[0]} inputs but {a.shape[0]} generated LoRAs")
        low = torch.einsum("n...i,nri->n...r", x.to(a.dtype), a)
        return y + (scale * torch.einsum("n...r,nor->n...o", low, b)).to(y.dtype)


def attach(model: nn.Module, target_modules: list[str]) -> dict[tuple[int, str], GeneratedLoRALinear]:
    """Wrap the target Linears of every decoder layer (idempotent); returns them by (layer, module)."""
    slots: dict[tuple[int, str], GeneratedLoRALinear] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, GeneratedLoRALinear):
            match = _TARGET.search(name)
            slots[(int(match.group(1)), match.group(2))] = module
            continue
        match = _TARGET.search(name)
        if not match or match.group(2) not in target_modules or not isinstance(module, nn.Linear):
            continue
        parent_name, _, child = name.rpartition(".")
        wrapper = GeneratedLoRALinear(module)
        setattr(model.get_submodule(parent_name), child, wrapper)
        slots[(int(match.group(1)), match.group(2))] = wrapper
    if not slots:
        raise ValueError(f"no layers.N.(self_attn|mlp).{{{','.join(target_modules)}}} Linear found in the model")
    return slots


@contextmanager
def generated_lora(model: nn.Module, weights: LoraWeights, scale: float):
    """Apply per-sample LoRAs for the duration of the block; the model is left clean afterwards."""
    slots = attach(model, list(weights))
    try:
        for (layer, module), slot in slots.items():
            a, b = weights[module]
            slot.lora = (a[:, layer], b[:, layer], scale)
        yield model
    finally:
        for slot in slots.values():
            slot.lora = None


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model
