"""The per-worker loop of hypernet training, with the objective's step plugged in.

Ray Train runs `train_loop_per_worker` on every worker: setup (recipe, device, seed, the objective's own
pieces, the hypernet inside a DeepSpeed engine, the restored checkpoint), the optimizer steps
(`steps.run_steps`), a metrics row on each log step, a checkpoint every `checkpoint_every` steps, teardown
(`engine.destroy()`). Every checkpoint holds all workers' DeepSpeed state (model, optimizer, scheduler), their
RNG and the trainer state (the step, and what the objective keeps, e.g. the data position) in one Ray Train
checkpoint, and rank 0 exports the full hypernet to `{run}/hypernet/`. A restarted worker group resumes from
the latest checkpoint.

An objective (`Objective`: `sft.SFT`, `recon.Reconstruction`) is what differs: the data, the loss, and the
values it adds to the metrics rows. The driver (`driver.run_training`) calls its `prepare` and hands the
class to every worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from t2l_ray.config import from_dict
from t2l_ray.shapes import BaseShapes
from t2l_ray.train.common import (
    MetricsLog,
    TensorBoard,
    export_hypernet,
    record_worker,
    restore_checkpoint,
    save_and_report,
)
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.engine import build_engine, ray_train_worker
from t2l_ray.train.steps import LogWindow, run_steps

RATES = {"tokens": "tokens_per_s", "samples": "samples_per_s"}
"""Window values that count things; the rows report them per second over all workers."""


@dataclass
class Plan:
    """What an objective's driver side hands the run: the hypernet's shapes and encoder width, loop config
    entries of its own (plain data, sent to every worker), and the Ray Datasets the workers stream."""

    shapes: BaseShapes
    encoder_dim: int
    loop_config: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, Any] | None = None


class Objective(Protocol):
    """One kind of hypernet training: its driver side and, one instance per worker, its worker side."""

    fresh_state: ClassVar[dict]
    """Trainer-state entries of a fresh run beyond `step`; checkpointed and restored with it."""

    @staticmethod
    def prepare(cfg: TrainConfig, run_dir: str, scratch: str, on_data: Callable[[dict], None]) -> Plan:
        """On the driver: resolve the data (copies go under `scratch`), report it to `on_data`."""

    def __init__(self, cfg: TrainConfig, config: dict, rank: int, device: torch.device):
        """On each worker, before the hypernet is built (after its seed is set): load what the steps need."""

    def micro_batches(self, state: dict) -> Generator:
        """The micro-batches from the (restored) trainer `state` on."""

    def loss(self, engine, batch) -> tuple[torch.Tensor, dict]:
        """The loss of one micro-batch, and the other values to log (`RATES` names count values)."""

    def log_values(self, engine, state: dict) -> dict:
        """Entries the objective adds to a metrics row (every worker calls it: it may run collectives)."""


def device_memory(device: torch.device) -> dict[str, float]:
    """`{"peak_mem_gib": ...}`: the most memory torch has held on a GPU worker's device so far; {} on CPU."""
    if device.type != "cuda":
        return {}
    return {"peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30}


def metrics_row(step: int, sums: dict[str, float], micro_steps: int, seconds: float, world: int, extra: dict,
                lr: float, grad_norm, memory: dict) -> dict:
    """One `metrics.jsonl` row from a log window: `sums` (averaged over the workers) become per-micro-step
    means, or per-second rates over all workers for the `RATES` values."""
    means = {name: value / micro_steps for name, value in sums.items() if name not in RATES}
    rates = {RATES[name]: value * world / seconds for name, value in sums.items() if name in RATES}
    return {"step": step, **extra, **means, "lr": lr, "grad_norm": float(grad_norm) if grad_norm is not None else None,
            **rates, "time": time.time(), **memory}


def train_loop_per_worker(config: dict, objective: type[Objective]) -> None:
    """Ray Train's worker function (the driver binds `objective`)."""
    cfg = from_dict(TrainConfig, config["train"])
    rank, world, device = ray_train_worker(cfg.run.use_gpu)
    import ray.train

    from t2l_ray.hypernet import TextToLoRA

    run_dir = config["run_dir"]
    torch.manual_seed(cfg.run.seed)  # the same hypernet init on every worker
    plugin = objective(cfg, config, rank, device)
    hypernet = TextToLoRA(cfg.hypernet, BaseShapes.from_dict(config["shapes"]), config["encoder_dim"])
    engine, _, scheduler = build_engine(hypernet, cfg)

    resuming = ray.train.get_checkpoint() is not None
    state = restore_checkpoint(engine, rank, {"step": 0, **objective.fresh_state}, cfg.run.seed)
    resumed_from = state["step"] if resuming else None  # marked on the first row logged after a restore
    metrics = MetricsLog(run_dir, state["step"]) if rank == 0 else None
    board = TensorBoard(run_dir) if rank == 0 else None
    record_worker(run_dir, rank)  # operators (and the fault-injection test) find each worker's process

    def log(step: int, window: LogWindow) -> None:
        nonlocal resumed_from
        sums, seconds = window.mean_sums(), window.seconds
        row = metrics_row(step, sums, window.steps, seconds, world, plugin.log_values(engine, state),
                          float(scheduler.get_last_lr()[0]), engine.get_global_grad_norm(), device_memory(device))
        if resumed_from is not None:
            row["resumed_from"], resumed_from = resumed_from, None
        if metrics:
            metrics.log(row)
            board.log(row)

    def export() -> None:
        export_hypernet(engine, cfg, hypernet, config["encoder"], run_dir, rank, state["step"])
        if board:
            board.sync()

    def after_step(step: int) -> None:
        state["step"] = step
        if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.max_steps:
            save_and_report(engine, state, rank, final=step == cfg.optim.max_steps, before_report=export)

    batches = plugin.micro_batches(state)
    try:
        run_steps(engine, batches, lambda batch: plugin.loss(engine, batch), start=state["step"],
                  stop=cfg.optim.max_steps, grad_accum=cfg.optim.grad_accum, log_every=cfg.run.log_every,
                  log=log, after_step=after_step)
    finally:
        batches.close()  # the stream's iterator ends here, not when the worker function returns
    engine.destroy()
