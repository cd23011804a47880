"""Tiny models built from configs (no download): causal LMs of the four supported families, T2L hypernets and
their checkpoints, a saved base with its tokenizer."""

import pytest
import torch
from safetensors.torch import save
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

from t2l_ray.hypernet import HypernetConfig, TextToLoRA
from t2l_ray.packing import lora_key
from t2l_ray.shapes import BaseShapes, ModuleShape

COMMON = dict(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)

TINY_CONFIGS = {
    "llama": lambda: LlamaConfig(**COMMON),
    "mistral": lambda: MistralConfig(**COMMON, sliding_window=None),
    "gemma2": lambda: Gemma2Config(**COMMON, head_dim=16, query_pre_attn_scalar=16, sliding_window=32),
    "qwen2": lambda: Qwen2Config(**COMMON),
}


def tiny_model(family: str):
    torch.manual_seed(0)
    config = TINY_CONFIGS[family]()
    config._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(params=sorted(TINY_CONFIGS))
def tiny_family(request):
    return request.param


@pytest.fixture(scope="session")
def minilm():
    from t2l_ray.encoders import load_encoder

    return load_encoder()


def tiny_bert(vocab_size: int, hidden_size: int = 32):
    """A random 2-layer BERT encoder (an encoder that is not MiniLM): for the encoder specs and dimension checks."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=2 * hidden_size)).eval()


TINY_SHAPES = BaseShapes("tiny-llama", "llama", 2, (ModuleShape("q_proj", 64, 64), ModuleShape("v_proj", 64, 32)))


def tiny_checkpoint(uri: str, seed: int = 0) -> str:
    """A tiny T2L-M checkpoint (offline MiniLM encoder) whose heads are perturbed, so adapters differ by
    description (an untrained hypernet gives B = 0 for every description)."""
    from t2l_ray import checkpoint

    torch.manual_seed(seed)
    model = TextToLoRA(HypernetConfig(variant="M", rank=4, lora_alpha=8.0, latent=32, head_in=64), TINY_SHAPES, 384)
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(0, 0.02)
    return checkpoint.save_checkpoint(model, "all-minilm-l6-v2", uri)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """`tiny_checkpoint` saved once per test module -> (its folder, its sha256)."""
    uri = str(tmp_path_factory.mktemp("ckpt") / "t2l")
    return uri, tiny_checkpoint(uri)


def tiny_base_folder(folder) -> str:
    """A saved tiny Llama (weights, config, a trained BPE tokenizer with the chat template) whose LoRA shapes are
    TINY_SHAPES', so `tiny_checkpoint`'s adapters fit it: what `t2l-ray serve --base-model` loads."""
    from t2l_ray.data.tokenizer import train_tokenizer

    texts = [f"Task {i}: reverse the words, sort the letters, answer yes or no, count to {i}." for i in range(200)]
    tokenizer = train_tokenizer(texts, folder, vocab_size=400)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
    return str(folder)


# 12 layers, so "layers.10" sorts before "layers.2"; an mlp module, so parents sort too.
PACKING_SHAPES = BaseShapes("tiny", "llama", 12, (ModuleShape("q_proj", 64, 64), ModuleShape("v_proj", 64, 32),
                                                  ModuleShape("down_proj", 128, 64)))


def reference_files(weights, shapes: BaseShapes, scale: float, dtype: torch.dtype) -> list[bytes]:
    """The plain way: one tensor per key (B scaled in float32, then cast), serialised by safetensors."""
    n = next(iter(weights.values()))[0].shape[0]
    files = []
    for i in range(n):
        tensors = {}
        for name, (a, b) in weights.items():
            module = shapes.module(name)
            for layer in range(shapes.num_layers):
                tensors[lora_key(layer, module, "A")] = a[i, layer].float().to(dtype).contiguous()
                tensors[lora_key(layer, module, "B")] = (b[i, layer].float() * scale).to(dtype).contiguous()
        files.append(save(tensors, metadata={"format": "pt"}))
    return files


def tiny_hypernet(variant: str, std: float = 0.2) -> TextToLoRA:
    """A T2L of `variant` on PACKING_SHAPES (12-dim embeddings) whose heads are perturbed, so adapters differ."""
    torch.manual_seed(0)
    config = HypernetConfig(variant=variant, rank=4, latent=16, head_in=32, target_modules=["q_proj", "v_proj", "down_proj"])
    model = TextToLoRA(config, PACKING_SHAPES, 12).eval()
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(0, std)
    return model
