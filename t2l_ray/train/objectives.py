"""Training objectives: T2L's SFT through the frozen base model, and LoRA reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2l_ray.hypernet import LoraWeights
from t2l_ray.lora import generated_lora


def neftune(embeddings: torch.Tensor, attention_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """NEFTune: uniform noise of scale alpha / sqrt(L * d) on the input embeddings (L = real tokens per sample)."""
    if alpha <= 0:
        return embeddings
    lengths = attention_mask.sum(1, keepdim=True).clamp(min=1).unsqueeze(-1).to(embeddings.dtype)
    scale = alpha / torch.sqrt(lengths * embeddings.shape[-1])
    noise = torch.empty_like(embeddings).uniform_(-1, 1) * scale
    return embeddings + noise * attention_mask.unsqueeze(-1).to(embeddings.dtype)


def response_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Next-token cross-entropy on response tokens only, averaged per sample, then over samples.

    Averaging per sample first weights every sample (every task) equally, whatever its response length.
    """
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
        reduction="none",
    ).view(shift_labels.shape)
    counts = (shift_labels != -100).sum(1)
    per_sample = token_loss.sum(1) / counts.clamp(min=1)
    return per_sample[counts > 0].mean() if (counts > 0).any() else token_loss.sum() * 0


def generated_l2(weights: LoraWeights) -> torch.Tensor:
    """Mean squared value of every generated A and B: keeps generated adapters small."""
    terms = [t.float().pow(2).mean() for pair in weights.values() for t in pair]
    return torch.stack(terms).mean()


def sft_loss(
    base, weights: LoraWeights, scale: float, batch: dict[str, torch.Tensor], *, label_smoothing: float,
    l2: float, neftune_alpha: float, training: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    embeddings = base.get_input_embeddings()(batch["input_ids"])
    if training:
        embeddings = neftune(embeddings, batch["attention_mask"], neftune_alpha)
    with generated_lora(base, weights, scale):
        logits = base(inputs_embeds=embeddings, attention_mask=batch["attention_mask"]).logits
    lm = response_loss(logits, batch["labels"], label_smoothing)
    reg = generated_l2(weights)
    return lm + l2 * reg, {"lm_loss": lm.detach(), "l2": reg.detach()}


def reconstruction_loss(
    weights: LoraWeights, targets: LoraWeights, scale: float, target: str = "delta_w"
) -> torch.Tensor:
    """L1 between generated and target LoRAs: on delta-W = scale * B A (default), or on A and B."""
    terms = []
    for name, (a, b) in weights.items():
        ta, tb = targets[name]
        if target == "delta_w":
            generated = scale * torch.einsum("nlor,nlri->nloi", b, a)
            wanted = torch.einsum("nlor,nlri->nloi", tb, ta)
            terms.append((generated - wanted).abs().mean())
        else:
            terms.append((a - ta).abs().mean() + (scale * b - tb).abs().mean())
    return torch.stack(terms).mean()


__all__ = ["neftune", "response_loss", "generated_l2", "sft_loss", "reconstruction_loss"]
