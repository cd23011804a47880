"""Reconstruction training: teach the hypernet to reproduce a library of existing LoRAs from their descriptions.

The library (`reconstruction.library`, a path or URI; `data/library.py`) holds one PEFT LoRA folder per task.
Its descriptions are embedded once on the driver (cached in
`{run}/embeddings/`); every worker loads the (small) library itself, and each step samples
`data.tasks_per_batch` distinct tasks and one description of each, seeded by (run seed, rank, step), so a
resumed run sees the very batches it would have seen. The loss is `objectives.reconstruction_loss`: L1 on
delta-W (default) or on A and B (`reconstruction.target=ab`, which needs the library's rank to equal the
hypernet's). No base model is loaded: reconstruction never runs the LM.

The run folder follows `common.py`: `config.yaml`, `metrics.jsonl` (step, loss, lr, grad_norm, samples_per_s,
and delta_w_l1 / delta_w_rel measured without dropout over the first `EVAL_TASKS` library tasks at every log
step; the same scalars in `tensorboard/`), Ray Train checkpoints, and `hypernet/`, which `generate` and the
factory use.
"""

from __future__ import annotations

import io
import random
import tempfile
import time

import torch

from t2l_ray import storage
from t2l_ray.config import from_dict
from t2l_ray.data.library import LibraryEntry, check_library, library_descriptions, load_targets, scan_library, select_library
from t2l_ray.hypernet import LoraWeights
from t2l_ray.shapes import BaseShapes
from t2l_ray.train.config import TrainConfig

# ---------------------------------------------------------------------------------------------- worker


EVAL_TASKS = 64
"""Library tasks (the first ones by name) whose delta-W error is measured at every log step."""


def delta_w_sums(weights: LoraWeights, targets: LoraWeights, scale: float) -> tuple[list[float], float, float]:
    """Per module the mean |generated - target| delta-W entry, then sum |generated - target| and sum |target|."""
    l1, diff, total = [], 0.0, 0.0
    with torch.no_grad():
        for name, (a, b) in weights.items():
            ta, tb = targets[name]
            generated = scale * torch.einsum("nlor,nlri->nloi", b.float(), a.float())
            wanted = torch.einsum("nlor,nlri->nloi", tb.float(), ta.float())
            error = (generated - wanted).abs()
            l1.append(float(error.mean()))
            diff += float(error.sum())
            total += float(wanted.abs().sum())
    return l1, diff, total


def evaluate(engine, tasks: list[str], embeddings, targets, modules: list[str], per_batch: int, scale: float,
             device, dtype) -> tuple[float, float]:
    """(delta-W L1, relative delta-W error) over `tasks`, each from its first description, no dropout.

    The relative error is sum |generated - target| / sum |target|: 1.0 for the all-zero adapters the hypernet
    starts from, 0 for perfect ones. Every rank runs the same forwards (ZeRO-3 gathers are collective)."""
    was_training = engine.module.training
    engine.eval()
    l1, diff, total = [], 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(tasks), per_batch):
            chunk = tasks[start:start + per_batch]
            generated = engine(torch.stack([embeddings[t][0] for t in chunk]).to(device=device, dtype=dtype))
            wanted = {m: (torch.stack([targets[t][m][0] for t in chunk]).to(device),
                          torch.stack([targets[t][m][1] for t in chunk]).to(device)) for m in modules}
            chunk_l1, chunk_diff, chunk_total = delta_w_sums(generated, wanted, scale)
            l1 += [v * len(chunk) for v in chunk_l1]
            diff, total = diff + chunk_diff, total + chunk_total
    if was_training:
        engine.train()
    return sum(l1) / (len(tasks) * len(modules)), diff / max(total, 1e-30)


def sample_batch(tasks: list[str], per_batch: int, seed: int, rank: int, step: int, micro: int) -> tuple[list[str], random.Random]:
    """The tasks of one micro-batch: distinct, a pure function of (seed, rank, step, micro)."""
    rng = random.Random(f"{seed}:{rank}:{step}:{micro}")
    return rng.sample(tasks, min(per_batch, len(tasks))), rng


def load_embeddings(uri: str, encoder: str, descriptions: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Task -> [descriptions, dim] from the run's embedding cache (parquet keyed by `encoders.text_key`)."""
    import pyarrow.parquet as pq

    from t2l_ray.encoders import text_key

    table = pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pydict()
    by_key = dict(zip(table["key"], table["embedding"]))
    return {task: torch.tensor([by_key[text_key(encoder, t)] for t in texts], dtype=torch.float32)
            for task, texts in descriptions.items()}


def recon_loop_per_worker(config: dict) -> None:
    """Ray Train worker: the hypernet in a DeepSpeed engine, L1 against library LoRAs, checkpoints as SFT."""
    cfg = from_dict(TrainConfig, config["train"])
    from t2l_ray.train.engine import set_cpu_accelerator_env

    set_cpu_accelerator_env(cfg.run.use_gpu)
    import ray.train
    import ray.train.torch

    from t2l_ray.hypernet import TextToLoRA
    from t2l_ray.train.common import (LogWindow, MetricsLog, device_memory, export_hypernet, record_worker,
                                      restore_checkpoint, save_and_report)
    from t2l_ray.train.engine import build_engine
    from t2l_ray.train.loop import TensorBoard
    from t2l_ray.train.objectives import reconstruction_loss

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    run_dir, encoder = config["run_dir"], config["encoder"]
    device = ray.train.torch.get_device()
    dtype = torch.bfloat16 if cfg.deepspeed.bf16 else torch.float32
    shapes = BaseShapes.from_dict(config["shapes"])
    modules = list(cfg.hypernet.target_modules)

    descriptions: dict[str, list[str]] = config["descriptions"]
    entries = {task: LibraryEntry(task, **entry) for task, entry in config["library"].items()}
    targets = {task: load_targets(entries[task], shapes, modules) for task in sorted(descriptions)}  # on the CPU
    embeddings = load_embeddings(config["embeddings_uri"], encoder, descriptions)
    tasks = sorted(descriptions)

    torch.manual_seed(cfg.run.seed)  # the same hypernet init on every worker
    hypernet = TextToLoRA(cfg.hypernet, shapes, config["encoder_dim"])
    engine, _, scheduler = build_engine(hypernet, cfg)
    scale = cfg.hypernet.scale
    state = restore_checkpoint(engine, rank, {"step": 0}, cfg.run.seed)
    metrics = MetricsLog(run_dir, state["step"]) if rank == 0 else None
    board = TensorBoard(run_dir) if rank == 0 else None
    record_worker(run_dir, rank)

    def export() -> None:
        export_hypernet(engine, cfg, hypernet, encoder, run_dir, rank, state["step"])
        if board:
            board.sync()

    def save(final: bool) -> None:
        save_and_report(engine, state, rank, final=final, before_report=export)

    eval_tasks = tasks[:EVAL_TASKS]
    window = LogWindow()
    while state["step"] < cfg.optim.max_steps:
        step = state["step"]
        for micro in range(cfg.optim.grad_accum):
            chosen, rng = sample_batch(tasks, cfg.data.tasks_per_batch, cfg.run.seed, rank, step, micro)
            embedding = torch.stack([embeddings[t][rng.randrange(len(embeddings[t]))] for t in chosen])
            wanted = {m: (torch.stack([targets[t][m][0] for t in chosen]).to(device),
                          torch.stack([targets[t][m][1] for t in chosen]).to(device)) for m in modules}
            engine.train()
            generated = engine(embedding.to(device=device, dtype=dtype))
            generated = {m: (a.float(), b.float()) for m, (a, b) in generated.items()}
            loss = reconstruction_loss(generated, wanted, scale, cfg.reconstruction.target)
            engine.backward(loss)
            engine.step()
            window.add(loss=loss, samples=len(chosen))
        state["step"] += 1
        step = state["step"]
        if step == 1 or step % cfg.run.log_every == 0 or step == cfg.optim.max_steps:
            sums, elapsed = window.mean_sums(), window.seconds
            l1, rel = evaluate(engine, eval_tasks, embeddings, targets, modules, cfg.data.tasks_per_batch, scale,
                               device, dtype)
            grad_norm = engine.get_global_grad_norm()
            row = {
                "step": step, "loss": sums["loss"] / window.steps, "delta_w_l1": l1, "delta_w_rel": rel,
                "lr": float(scheduler.get_last_lr()[0]),
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "samples_per_s": sums["samples"] * world / elapsed, "time": time.time(), **device_memory(device),
            }
            if metrics:
                metrics.log(row)
                board.log(row)
            window = LogWindow()
        if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.max_steps:
            save(final=step == cfg.optim.max_steps)
    engine.destroy()


# ---------------------------------------------------------------------------------------------- driver


def run_reconstruction(cfg: TrainConfig, on_data=None, on_row=None) -> str:
    """Train the hypernet to reconstruct `reconstruction.library`; returns the run folder URI.

    Runs on the current Ray cluster (RAY_ADDRESS, or the job's), else a private local one; the same
    `run.output_dir` again resumes from its latest checkpoint. `on_data` gets `{"library": URI, "loras": N,
    "ranks": [...], "descriptions": N, "embeddings": EmbeddingStats}`, `on_row` each metrics row."""
    from t2l_ray.base_model import target_shapes
    from t2l_ray.data.pipeline import cache_uri, embed_descriptions
    from t2l_ray.raycluster import ensure_ray
    from t2l_ray.train.common import fit_reporting, make_trainer, write_run_config

    cfg.check()
    if cfg.objective != "reconstruction":
        raise ValueError(f"run_reconstruction needs objective=reconstruction, not {cfg.objective!r}")
    ensure_ray()
    run_dir = cfg.run.output_dir
    write_run_config(cfg, run_dir)
    shapes = target_shapes(cfg.model, cfg.hypernet.target_modules)
    with tempfile.TemporaryDirectory() as scratch:
        entries = select_library(cfg, scan_library(cfg.reconstruction.library), scratch)
        check_library(cfg, entries, shapes)
        descriptions = library_descriptions(cfg, entries, scratch)
    texts = sorted({t for values in descriptions.values() for t in values})
    embeddings_uri = cache_uri(run_dir, cfg.encoder)
    table, stats = embed_descriptions(texts, cfg.encoder, embeddings_uri)
    if on_data is not None:
        on_data({"library": cfg.reconstruction.library, "loras": len(entries), "descriptions": len(texts),
                 "ranks": sorted({e.rank for e in entries.values()}), "embeddings": stats})
    trainer = make_trainer(cfg, recon_loop_per_worker, {
        "train": _plain(cfg), "run_dir": run_dir, "shapes": shapes.to_dict(), "encoder": cfg.encoder,
        "encoder_dim": len(table["embedding"][0]), "embeddings_uri": embeddings_uri, "descriptions": descriptions,
        "library": {t: {"uri": e.uri, "config": e.config, "meta": e.meta} for t, e in entries.items()},
    }, run_dir)
    fit_reporting(trainer, run_dir, on_row)
    return run_dir


def _plain(cfg: TrainConfig) -> dict:
    from t2l_ray.config import to_dict

    return to_dict(cfg)
