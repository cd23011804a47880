"""The DeepSpeed engine around the hypernet, and where a Ray Train worker runs.

The hypernet is the only trainable module, so it alone goes into `deepspeed.initialize` (ZeRO shards its
parameters, gradients and optimizer state). The base model beside it (`t2l_ray/base_model.py`) is frozen,
replicated on every worker, and never seen by the optimizer. On CPU workers DeepSpeed runs with its CPU accelerator and the gloo process group
that Ray Train sets up; features the CPU accelerator cannot run are refused by `TrainConfig.check`.
"""

from __future__ import annotations

import os
import sys

import torch

from t2l_ray.train.config import TrainConfig


def deepspeed_config(cfg: TrainConfig) -> dict:
    """The DeepSpeed JSON config: ZeRO stage, AdamW, warmup + linear decay, clipping, accumulation, bf16."""
    ds = {
        "train_micro_batch_size_per_gpu": cfg.data.tasks_per_batch,
        "gradient_accumulation_steps": cfg.optim.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": cfg.deepspeed.bf16},
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW: DeepSpeed's fused/CPU Adam would compile C++ ops on first use.
            "params": {"lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay, "betas": [0.9, 0.999],
                       "eps": 1e-8, "torch_adam": True},
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": cfg.optim.lr, "warmup_num_steps": cfg.optim.warmup_steps,
                       "total_num_steps": cfg.optim.max_steps, "warmup_type": "linear"},
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.deepspeed.offload_optimizer:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return ds


def set_cpu_accelerator_env(use_gpu: bool) -> None:
    """DeepSpeed picks its accelerator at import (CPU workers must say so before that) and JIT-builds ops
    with the first `ninja` on PATH (every process must find the same one, see `pin_build_tools`)."""
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    pin_build_tools()


def pin_build_tools() -> None:
    """Put this interpreter's bin folder first on PATH, before DeepSpeed JIT-loads its C++ ops.

    DeepSpeed's CPU ops build with `ninja` in a shared cache (~/.cache/torch_extensions). The venv ships
    ninja 1.13 and the system has 1.11; they hash build commands differently, so processes that find
    different ninjas on PATH (a shell with the venv activated vs not; Ray workers inherit either) each see
    the other's build as stale and recompile (about a minute of both cores, every time). One ninja for
    every process ends that."""
    folder = os.path.dirname(sys.executable)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if parts[0] != folder:
        os.environ["PATH"] = os.pathsep.join([folder, *[p for p in parts if p != folder]])


def compute_dtype(cfg: TrainConfig) -> torch.dtype:
    """The dtype of the base weights and of the engine's inputs: bf16 with `deepspeed.bf16`, else fp32."""
    return torch.bfloat16 if cfg.deepspeed.bf16 else torch.float32


def ray_train_worker(use_gpu: bool) -> tuple[int, int, torch.device]:
    """`(rank, world size, device)` of this Ray Train worker, once DeepSpeed's accelerator is chosen."""
    set_cpu_accelerator_env(use_gpu)
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()


def build_engine(hypernet: torch.nn.Module, cfg: TrainConfig):
    import deepspeed

    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=hypernet,
        model_parameters=[p for p in hypernet.parameters() if p.requires_grad],
        config=deepspeed_config(cfg),
        dist_init_required=False,
    )
    return engine, optimizer, scheduler


def full_state_dict(engine) -> dict[str, torch.Tensor]:
    """The hypernet's full weights on every rank, also under ZeRO-3 (a collective: all ranks must call it)."""
    import deepspeed

    module = engine.module
    params = list(module.parameters())
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().clone().float().cpu() for k, v in module.state_dict().items()}
    return {k: v.detach().clone().float().cpu() for k, v in module.state_dict().items()}
