"""Tiny causal LMs of the four supported families, built from configs (no download)."""

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

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


TINY_SHAPES = BaseShapes("tiny-llama", "llama", 2, (ModuleShape("q_proj", 64, 64), ModuleShape("v_proj", 64, 32)))


def tiny_checkpoint(uri: str, seed: int = 0) -> str:
    """A tiny T2L-M checkpoint (offline MiniLM encoder) whose heads are perturbed, so adapters differ by
    description (an untrained hypernet gives B = 0 for every description)."""
    from t2l_ray import checkpoint
    from t2l_ray.hypernet import HypernetConfig, TextToLoRA

    torch.manual_seed(seed)
    model = TextToLoRA(HypernetConfig(variant="M", rank=4, lora_alpha=8.0, latent=32, head_in=64), TINY_SHAPES, 384)
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(0, 0.02)
    return checkpoint.save_checkpoint(model, "all-minilm-l6-v2", uri)


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
