"""The per-worker training loop that Ray Train runs on every worker.

Each worker: the frozen base model, the hypernet inside a DeepSpeed engine, its shard of the task-grouped
stream. Every `checkpoint_every` steps all workers save the DeepSpeed state (model, optimizer, scheduler)
plus their RNG and data position into one Ray Train checkpoint, and rank 0 exports the full hypernet to
`{run}/hypernet/` in the foundation's checkpoint format. A restarted worker group resumes from the latest
checkpoint and skips the groups it had already consumed in that epoch.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from t2l_ray import storage
from t2l_ray.config import from_dict
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.common import (
    LogWindow,
    MetricsLog,
    device_memory,
    export_hypernet,
    record_worker,
    restore_checkpoint,
    save_and_report,
)
from t2l_ray.train.engine import set_cpu_accelerator_env

class TensorBoard:
    """TensorBoard scalars under `{run}/tensorboard/`; written locally and copied up when the run is remote."""

    def __init__(self, run_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        fs, path = storage.resolve(run_dir)
        self.remote = None if fs.type_name == "local" else storage.join(run_dir, "tensorboard")
        self.folder = str(Path(path, "tensorboard")) if self.remote is None else tempfile.mkdtemp(prefix="t2l-tb-")
        self.writer = SummaryWriter(self.folder)

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, row["step"])
        self.writer.flush()

    def sync(self) -> None:
        if self.remote is None:
            return
        for file in Path(self.folder).iterdir():
            storage.write_bytes(storage.join(self.remote, file.name), file.read_bytes())


def train_loop_per_worker(config: dict) -> None:
    cfg = from_dict(TrainConfig, config["train"])
    set_cpu_accelerator_env(cfg.run.use_gpu)
    import ray.train
    import ray.train.torch

    from t2l_ray.hypernet import TextToLoRA
    from t2l_ray.shapes import BaseShapes
    from t2l_ray.base_model import build_base_model
    from t2l_ray.train.engine import build_engine, compute_dtype
    from t2l_ray.train.objectives import sft_loss

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    run_dir = config["run_dir"]
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.run.seed)  # the same hypernet init on every worker

    base = build_base_model(cfg.model, compute_dtype(cfg), device)
    hypernet = TextToLoRA(cfg.hypernet, BaseShapes.from_dict(config["shapes"]), config["encoder_dim"])
    engine, _, scheduler = build_engine(hypernet, cfg)
    scale = cfg.hypernet.scale

    resuming = ray.train.get_checkpoint() is not None
    state = restore_checkpoint(engine, rank, {"step": 0, "epoch": 0, "position": 0}, cfg.run.seed)
    metrics = MetricsLog(run_dir, state["step"]) if rank == 0 else None
    board = TensorBoard(run_dir) if rank == 0 else None
    resumed_from = state["step"] if resuming else None
    record_worker(run_dir, rank)  # operators (and the fault-injection test) find each worker's process

    shard = ray.train.get_dataset_shard("train")
    window = LogWindow()

    def save(final: bool) -> None:
        def export() -> None:
            export_hypernet(engine, cfg, hypernet, config["encoder"], run_dir, rank, state["step"])
            if board:
                board.sync()

        save_and_report(engine, state, rank, final=final, before_report=export)

    while state["step"] < cfg.optim.max_steps:
        skip, seen = state["position"], 0
        for position, batch in enumerate(shard.iter_torch_batches(batch_size=1, device=device)):
            seen += 1
            if position < skip:
                continue
            state["position"] = position + 1
            batch = {k: v[0] for k, v in batch.items()}
            engine.train()
            embedding = batch["embedding"].to(torch.bfloat16 if cfg.deepspeed.bf16 else torch.float32)
            weights = engine(embedding)
            loss, parts = sft_loss(
                base, weights, scale, batch, label_smoothing=cfg.optim.label_smoothing, l2=cfg.optim.l2_generated,
                neftune_alpha=cfg.optim.neftune_alpha, training=True,
            )
            engine.backward(loss)
            engine.step()
            window.add(loss=loss, lm_loss=parts["lm_loss"], tokens=batch["attention_mask"].sum(),
                       samples=batch["input_ids"].shape[0])
            if not engine.is_gradient_accumulation_boundary():
                continue
            state["step"] += 1
            step = state["step"]
            if step == 1 or step % cfg.run.log_every == 0 or step == cfg.optim.max_steps:
                sums, elapsed = window.mean_sums(), window.seconds
                grad_norm = engine.get_global_grad_norm()
                row = {
                    "step": step, "epoch": state["epoch"], "loss": sums["loss"] / window.steps,
                    "lm_loss": sums["lm_loss"] / window.steps,
                    "lr": float(scheduler.get_last_lr()[0]),
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "tokens_per_s": sums["tokens"] * world / elapsed, "samples_per_s": sums["samples"] * world / elapsed,
                    "time": time.time(), **device_memory(device),
                }
                if resumed_from is not None:
                    row["resumed_from"], resumed_from = resumed_from, None
                if metrics:
                    metrics.log(row)
                    board.log(row)
                window = LogWindow()
            if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.max_steps:
                save(final=step == cfg.optim.max_steps)
            if step >= cfg.optim.max_steps:
                break
        else:
            if seen == 0:
                raise RuntimeError("the training stream yielded no batch: too few tasks or examples for one group")
            state["epoch"] += 1
            state["position"] = 0
    engine.destroy()
