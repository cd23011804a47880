"""The T2L hypernetwork: a task embedding in, LoRA A and B for every (layer, target module) out.

Faithful to Text-to-LoRA (Charakorn et al. 2025):
- inputs: task embedding -> Linear(d, latent/2) + LayerNorm; learned layer-index and module-type embeddings
  (latent/4 each) + LayerNorm; concatenated to `latent`;
- trunk: a mixer MLP, two pre-LayerNorm residual MLP blocks, then LayerNorm -> Linear -> SiLU -> Linear -> SiLU
  to `head_in` features;
- heads, one per target module type:
  L emits all of A and B (r*(in+out));
  M emits A *or* B (r*max(in,out)) and is told which by a learned selector added before the second block;
  S emits one rank row (max(in,out)) at a time, told which row by a rank position embedding.
- init: head weights are zero and the head biases hold a fresh PEFT LoRA's initial A (kaiming-uniform) and
  B = 0, so every generated adapter starts as delta-W = 0 while A still carries gradient into B.

One call generates every layer x module for a whole batch of task embeddings: the trunk runs once on a
[N, layers, modules, ...] grid and each head once per module type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from t2l_ray.config import doc
from t2l_ray.shapes import BaseShapes

Variant = Literal["L", "M", "S"]


@dataclass
class HypernetConfig:
    """The hypernet's own hyperparameters (T2L's defaults)."""

    variant: Variant = doc("L: heads emit A and B; M: one head per module emits A or B; S: one rank row at a time.", "L")
    rank: int = doc("LoRA rank r of the generated adapters.", 8)
    lora_alpha: float = doc("LoRA alpha used in training (T2L: 2r).", 16.0)
    use_rslora: bool = doc("Scale alpha/sqrt(r) (rsLoRA, T2L) instead of alpha/r.", True)
    target_modules: list[str] = doc("Modules that get a LoRA.", default_factory=lambda: ["q_proj", "v_proj"])
    latent: int = doc("Width of the concatenated (task, layer, module) code.", 128)
    head_in: int = doc("Width of the trunk's output that feeds the heads.", 512)
    dropout: float = doc("Dropout in the mixer and the residual blocks.", 0.05)
    rank_embedding: Literal["learned", "rotary"] = doc("S only: how the rank position is told to the trunk.", "learned")

    @property
    def scale(self) -> float:
        """The factor applied to B @ A in training; folded into B when adapters are written."""
        return self.lora_alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    def check(self) -> None:
        if self.variant not in ("L", "M", "S"):
            raise ValueError(f"variant must be L, M or S, not {self.variant!r}")
        if self.latent % 4 or self.latent <= 0:
            raise ValueError(f"latent must be a positive multiple of 4, not {self.latent}")
        if self.rank <= 0:
            raise ValueError(f"rank must be positive, not {self.rank}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


class ResidualMLP(nn.Module):
    """x + MLP(LayerNorm(x)): a pre-LayerNorm residual block."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Dropout(dropout), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def rotary(x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs of x by angles proportional to `position` (RoPE), broadcasting over leading dims."""
    half = x.shape[-1] // 2
    freqs = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    angles = position.to(torch.float32).unsqueeze(-1) * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half : 2 * half]
    return torch.cat([first * cos - second * sin, first * sin + second * cos, x[..., 2 * half :]], dim=-1)


LoraWeights = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""module name -> (A [N, layers, r, in], B [N, layers, out, r]); unscaled (multiply by config.scale)."""


class TextToLoRA(nn.Module):
    def __init__(self, config: HypernetConfig, shapes: BaseShapes, encoder_dim: int):
        super().__init__()
        config.check()
        missing = [m for m in config.target_modules if m not in {s.name for s in shapes.modules}]
        if missing:
            raise ValueError(f"target modules {missing} are not in the base shapes {[s.name for s in shapes.modules]}")
        self.config = config
        self.shapes = shapes
        self.encoder_dim = encoder_dim
        self.modules_ = [shapes.module(m) for m in config.target_modules]
        latent, r = config.latent, config.rank

        self.task_proj = nn.Sequential(nn.Linear(encoder_dim, latent // 2), nn.LayerNorm(latent // 2))
        self.layer_embedding = nn.Embedding(shapes.num_layers, latent // 4)
        self.layer_norm = nn.LayerNorm(latent // 4)
        self.module_embedding = nn.Embedding(len(self.modules_), latent // 4)
        self.module_norm = nn.LayerNorm(latent // 4)
        self.mixer = nn.Sequential(
            nn.Linear(latent, 4 * latent), nn.SiLU(), nn.Dropout(config.dropout), nn.Linear(4 * latent, latent)
        )
        self.block1 = ResidualMLP(latent, config.dropout)
        self.block2 = ResidualMLP(latent, config.dropout)
        self.to_head = nn.Sequential(
            nn.LayerNorm(latent),
            nn.Linear(latent, 4 * latent),
            nn.SiLU(),
            nn.Linear(4 * latent, config.head_in),
            nn.SiLU(),
        )
        if config.variant in ("M", "S"):
            self.ab_selector = nn.Parameter(torch.randn(2, latent) * 0.02)  # row 0 asks for A, row 1 for B
        if config.variant == "S" and config.rank_embedding == "learned":
            self.rank_embedding = nn.Parameter(torch.randn(r, latent) * 0.02)

        self.heads = nn.ModuleDict()
        self.a_bias = nn.ParameterDict()
        self.b_bias = nn.ParameterDict()
        for m in self.modules_:
            width = {
                "L": r * (m.in_features + m.out_features),
                "M": r * max(m.in_features, m.out_features),
                "S": max(m.in_features, m.out_features),
            }[config.variant]
            self.heads[m.name] = nn.Linear(config.head_in, width, bias=False)
            self.a_bias[m.name] = nn.Parameter(torch.empty(r, m.in_features))
            self.b_bias[m.name] = nn.Parameter(torch.empty(m.out_features, r))
        self.reset_heads()

    def reset_heads(self) -> None:
        """Zero head weights; biases = a fresh PEFT LoRA init (A kaiming-uniform, B zero) -> delta-W = 0."""
        for name, head in self.heads.items():
            nn.init.zeros_(head.weight)
            nn.init.kaiming_uniform_(self.a_bias[name], a=math.sqrt(5))
            nn.init.zeros_(self.b_bias[name])

    def heads_to(self, dtype: torch.dtype) -> None:
        """Cast the heads and their biases (nearly all parameters and FLOPs) for generation in `dtype`; the
        trunk stays as it is, and `forward` casts its features to the heads' dtype."""
        self.heads.to(dtype)
        self.a_bias.to(dtype)
        self.b_bias.to(dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _codes(self, task_embeddings: torch.Tensor) -> torch.Tensor:
        """[N, layers, modules, latent]: the task code beside the learned layer and module codes."""
        n, layers, modules = task_embeddings.shape[0], self.shapes.num_layers, len(self.modules_)
        device = task_embeddings.device
        task = self.task_proj(task_embeddings)
        layer = self.layer_norm(self.layer_embedding(torch.arange(layers, device=device)))
        module = self.module_norm(self.module_embedding(torch.arange(modules, device=device)))
        return torch.cat(
            [
                task[:, None, None, :].expand(n, layers, modules, -1),
                layer[None, :, None, :].expand(n, layers, modules, -1),
                module[None, None, :, :].expand(n, layers, modules, -1),
            ],
            dim=-1,
        )

    def forward(self, task_embeddings: torch.Tensor) -> LoraWeights:
        """Generate A and B for every layer and target module, for a batch of N task embeddings."""
        if task_embeddings.dim() != 2 or task_embeddings.shape[1] != self.encoder_dim:
            raise ValueError(f"expected task embeddings [N, {self.encoder_dim}], got {tuple(task_embeddings.shape)}")
        cfg, r = self.config, self.config.rank
        x = self.block1(self.mixer(self._codes(task_embeddings)))  # [N, Ly, Md, latent]
        if cfg.variant == "M":
            x = x.unsqueeze(3) + self.ab_selector  # [N, Ly, Md, 2, latent]
        elif cfg.variant == "S":
            x = (x[:, :, :, None, None, :] + self.ab_selector[:, None, :]).expand(-1, -1, -1, 2, r, -1)
            if cfg.rank_embedding == "learned":
                x = x + self.rank_embedding
            else:
                x = rotary(x, torch.arange(r, device=x.device))
        features = self.to_head(self.block2(x))

        out: LoraWeights = {}
        for index, m in enumerate(self.modules_):
            head = self.heads[m.name]
            feats = features[:, :, index].to(head.weight.dtype)
            n, layers = feats.shape[:2]
            if cfg.variant == "L":
                flat = head(feats)  # [N, Ly, r*(in+out)]
                a = flat[..., : r * m.in_features].reshape(n, layers, r, m.in_features)
                b = flat[..., r * m.in_features :].reshape(n, layers, m.out_features, r)
            elif cfg.variant == "M":
                a = head(feats[:, :, 0])[..., : r * m.in_features].reshape(n, layers, r, m.in_features)
                b = head(feats[:, :, 1])[..., : r * m.out_features].reshape(n, layers, r, m.out_features).transpose(-1, -2)
            else:
                a = head(feats[:, :, 0])[..., : m.in_features]  # [N, Ly, r, in]: row k of A
                b = head(feats[:, :, 1])[..., : m.out_features].transpose(-1, -2)  # column k of B
            out[m.name] = (a + self.a_bias[m.name], b + self.b_bias[m.name])
        return out

    def dict_config(self) -> dict:
        """Everything needed to rebuild this hypernet without the base model's weights."""
        from t2l_ray.config import to_dict

        return {"hypernet": to_dict(self.config), "shapes": self.shapes.to_dict(), "encoder_dim": self.encoder_dim}
