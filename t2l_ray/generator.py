"""Descriptions -> adapter folders: the one generation path shared by `generate`, the factory and Serve.

A `Generator` holds a loaded hypernet checkpoint, its encoder and a `render.Renderer`; `render(descriptions)`
embeds the batch once, runs one batched generation (bf16 where the device has it, scale folded and cast on
the device), and returns the bytes of each adapter folder. It never loads the base model's weights: shapes
come from the checkpoint. The factory uses the same Renderer with its own writers (`t2l_ray.factory`).
"""

from __future__ import annotations

import threading

import torch

from t2l_ray import adapters
from t2l_ray.checkpoint import HypernetCheckpoint, load_checkpoint
from t2l_ray.encoders import TextEncoder, load_encoder
from t2l_ray.render import ForwardDtype, Renderer
from t2l_ray.request_rule import content_id


class Generator:
    """A loaded checkpoint, its encoder and a `Renderer`: descriptions in, adapter folders' bytes out."""

    def __init__(self, checkpoint: HypernetCheckpoint, encoder: TextEncoder | None = None, dtype: str = "bfloat16",
                 forward: ForwardDtype = "auto"):
        self.checkpoint = checkpoint
        self.encoder = encoder or load_encoder(checkpoint.encoder)
        if self.encoder.dim != checkpoint.model.encoder_dim:
            raise ValueError(
                f"encoder {self.encoder.name} gives {self.encoder.dim}-dim embeddings; "
                f"the hypernet expects {checkpoint.model.encoder_dim}"
            )
        self.dtype = dtype
        self.renderer = Renderer(checkpoint.model, dtype, forward)
        self._config = adapters.config_bytes(checkpoint.model.shapes, checkpoint.model.config.rank,
                                             [m.name for m in checkpoint.model.modules_])
        self._lock = threading.Lock()  # one host buffer: Serve may call from several threads

    @classmethod
    def from_uri(cls, uri: str, dtype: str = "bfloat16") -> "Generator":
        return cls(load_checkpoint(uri), dtype=dtype)

    @property
    def config(self):
        return self.checkpoint.model.config

    def render(self, descriptions: list[str], ids: list[str | None] | None = None) -> list[adapters.AdapterFiles]:
        """One encoder pass and one batched generation for the whole batch."""
        if not descriptions:
            return []
        return self.render_embeddings(self.encoder.encode(list(descriptions)), descriptions, ids)

    def render_embeddings(self, embeddings: torch.Tensor, descriptions: list[str], ids: list[str | None] | None = None,
                          extra_meta: list[dict | None] | None = None) -> list[adapters.AdapterFiles]:
        """The same without the encoder, for task embeddings already computed."""
        ids = ids or [None] * len(descriptions)
        extra_meta = extra_meta or [None] * len(descriptions)
        sha, header = self.checkpoint.sha256, self.renderer.layout.header
        with self._lock:
            rows = self.renderer.render(embeddings)
            return [
                adapters.AdapterFiles({
                    adapters.WEIGHTS_FILE: b"".join((header, row)),
                    adapters.META_FILE: adapters.meta_bytes(
                        adapter_id=adapter_id or content_id(text, sha), description=text, checkpoint_sha256=sha,
                        encoder=self.checkpoint.encoder, scale=self.renderer.scale, dtype=self.dtype, extra_meta=meta),
                    adapters.CONFIG_FILE: self._config,
                })
                for row, text, adapter_id, meta in zip(rows, descriptions, ids, extra_meta)
            ]
