"""Tiny causal LMs of the four supported families, built from configs (no download)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config

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
