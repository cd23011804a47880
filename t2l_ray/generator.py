"""Descriptions -> adapter folders: the one generation path shared by `generate`, the factory and Serve.

A `Generator` holds a loaded hypernet checkpoint and its encoder; `render(descriptions)` embeds the batch
once, runs one batched hypernet forward, and returns the bytes of each adapter folder. It never loads the
base model's weights: shapes come from the checkpoint.
`render_embeddings` is the same path without the encoder, for the factory's separate encoder and
hypernet actors.
"""

from __future__ import annotations

import torch

from t2l_ray import adapters
from t2l_ray.checkpoint import HypernetCheckpoint, load_checkpoint
from t2l_ray.encoders import TextEncoder, load_encoder
from t2l_ray.request_rule import content_id


class Generator:
    def __init__(self, checkpoint: HypernetCheckpoint, encoder: TextEncoder | None = None, dtype: str = "bfloat16"):
        self.checkpoint = checkpoint
        self.encoder = encoder or load_encoder(checkpoint.encoder)
        if self.encoder.dim != checkpoint.model.encoder_dim:
            raise ValueError(
                f"encoder {self.encoder.name} gives {self.encoder.dim}-dim embeddings; "
                f"the hypernet expects {checkpoint.model.encoder_dim}"
            )
        self.dtype = dtype

    @classmethod
    def from_uri(cls, uri: str, dtype: str = "bfloat16") -> "Generator":
        return cls(load_checkpoint(uri), dtype=dtype)

    @property
    def config(self):
        return self.checkpoint.model.config

    @torch.inference_mode()
    def render(self, descriptions: list[str], ids: list[str | None] | None = None) -> list[adapters.AdapterFiles]:
        """One encoder pass and one hypernet forward for the whole batch."""
        if not descriptions:
            return []
        embeddings = self.encoder.encode(list(descriptions))
        return render_embeddings(self.checkpoint, embeddings, descriptions, ids, dtype=self.dtype)


@torch.inference_mode()
def render_embeddings(
    checkpoint: HypernetCheckpoint,
    embeddings: torch.Tensor,
    descriptions: list[str],
    ids: list[str | None] | None = None,
    dtype: str = "bfloat16",
    extra_meta: list[dict | None] | None = None,
) -> list[adapters.AdapterFiles]:
    """One hypernet forward over task embeddings already computed (the factory embeds in other actors)."""
    if not descriptions:
        return []
    ids = ids or [None] * len(descriptions)
    extra_meta = extra_meta or [None] * len(descriptions)
    model = checkpoint.model
    device = next(model.parameters()).device
    weights = {name: (a.cpu(), b.cpu()) for name, (a, b) in model(embeddings.to(device)).items()}
    return [
        adapters.render_adapter(
            weights,
            index,
            shapes=model.shapes,
            rank=model.config.rank,
            scale=model.config.scale,
            description=text,
            checkpoint_sha256=checkpoint.sha256,
            encoder=checkpoint.encoder,
            adapter_id=adapter_id or content_id(text, checkpoint.sha256),
            dtype=dtype,
            extra_meta=meta,
        )
        for index, (text, adapter_id, meta) in enumerate(zip(descriptions, ids, extra_meta))
    ]
