"""The engine settings a recipe turns into: DeepSpeed's config and the base model's precision (fast, no Ray)."""

import pytest
import torch

from t2l_ray.base_model import build_base_model
from t2l_ray.config import load_config
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.engine import compute_dtype, deepspeed_config

TINY = '{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, vocab_size: 300}'


def recipe(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, ["model.name_or_path=mistral-7b-instruct-v0.2", "model.init=random",
                                           f"model.config_overrides={TINY}", *overrides])


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_reaches_deepspeed_and_the_base_weights(bf16):
    cfg = recipe(f"deepspeed.bf16={bf16}", "deepspeed.zero_stage=3", "optim.grad_accum=4", "optim.grad_clip=0.5",
                 "data.tasks_per_batch=8", "optim.lr=2e-4", "optim.warmup_steps=7", "optim.max_steps=90")
    ds = deepspeed_config(cfg)
    assert ds["bf16"] == {"enabled": bf16} and ds["zero_optimization"] == {"stage": 3}
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["gradient_accumulation_steps"] == 4
    assert ds["gradient_clipping"] == 0.5 and ds["optimizer"]["params"]["lr"] == 2e-4
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 7 and ds["scheduler"]["params"]["total_num_steps"] == 90
    base = build_base_model(cfg.model, compute_dtype(cfg))
    assert {p.dtype for p in base.parameters()} == {torch.bfloat16 if bf16 else torch.float32}
    assert not any(p.requires_grad for p in base.parameters()) and not base.training


def test_offload_adds_a_cpu_optimizer_offload():
    ds = deepspeed_config(recipe("deepspeed.offload_optimizer=true", "run.use_gpu=true"))
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert "offload_optimizer" not in deepspeed_config(recipe())["zero_optimization"]
