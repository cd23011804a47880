"""The driver side of `t2l-ray train`: prepare data on the driver, run a Ray Train TorchTrainer, report.

Runs on the current Ray cluster (RAY_ADDRESS, or the one this process runs in under `ray job submit`),
else starts a local one. The run folder (`run.output_dir`, a path or URI) holds `config.yaml`,
`metrics.jsonl`, `tokenizer/` (when trained offline), `embeddings/`, the Ray Train checkpoints
(`checkpoint_*`), `hypernet/`, the latest exported hypernet, and `base/` when the base has random weights
(`model.init: random`): the base itself, which the hypernet and its adapters name. Running the same command
again with the same output folder resumes from the latest checkpoint.

Nothing here prints: `on_data` gets the data summary once the data is ready, `on_row` every metrics row as
the workers log it (the CLI draws its progress and metric lines from them).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from t2l_ray import storage
from t2l_ray.base_model import save_base, target_shapes, tokenizer_overrides
from t2l_ray.config import to_dict
from t2l_ray.train.common import fit_reporting, make_trainer, prepare_tokenizer, select_tasks, write_run_config
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.engine import compute_dtype


def prepare_data(cfg: TrainConfig, run_dir: str, scratch: str) -> dict:
    """Tasks, descriptions, tokenizer and embeddings, resolved once on the driver."""
    from t2l_ray.data.inspect import summarize
    from t2l_ray.data.pipeline import cache_uri, embed_descriptions
    from t2l_ray.data.tokenizer import load_tokenizer

    tasks, skipped, by_task = select_tasks(cfg, scratch)
    tokenizer_dir, vocab_size = prepare_tokenizer(cfg, tasks, run_dir, scratch)
    summary = summarize(tasks, skipped, by_task, load_tokenizer(tokenizer_dir), cfg.data.max_prompt_tokens,
                        cfg.data.max_response_tokens)
    storage.write_text(storage.join(run_dir, "data_summary.json"), json.dumps(summary.to_dict(), indent=2))
    texts = sorted({text for values in by_task.values() for text in values})
    table, stats = embed_descriptions(texts, cfg.encoder, cache_uri(run_dir, cfg.encoder))
    return {
        "tasks": tasks, "skipped": skipped, "task_uris": _task_uris(cfg, tasks, run_dir), "descriptions": by_task,
        "tokenizer_dir": tokenizer_dir, "vocab_size": vocab_size, "embeddings": table, "embedding_stats": stats,
        "encoder_dim": len(table["embedding"][0]), "summary": summary,
    }


def _task_uris(cfg: TrainConfig, tasks, run_dir: str) -> list[str]:
    """Where every worker node can read the task files: the source URI itself, or (for the generated suite
    and Lots-of-LoRAs sources) a copy in the run folder, which is shared storage on any multi-node cluster."""
    if cfg.data.source == "suite" or cfg.data.source.startswith("lol:"):
        folder = storage.join(run_dir, "data", "tasks")
        for task in tasks:
            storage.write_bytes(storage.join(folder, Path(task.source_file).name), Path(task.source_file).read_bytes())
        return [storage.join(folder, Path(t.source_file).name) for t in tasks]
    fs, _ = storage.resolve(cfg.data.source)
    if fs.type_name == "local":
        return [t.source_file for t in tasks]
    return [storage.join(cfg.data.source, Path(t.source_file).name) for t in tasks]


def run_training(cfg: TrainConfig, on_data: Callable[[dict], None] | None = None,
                 on_row: Callable[[dict], None] | None = None) -> str:
    """Train; returns the run folder URI. `on_data` gets `{"summary": DataSummary, "embeddings": EmbeddingStats}`
    (reconstruction: `{"library": ..., ...}`, see `recon.run_reconstruction`), `on_row` each metrics row."""
    from t2l_ray.data.pipeline import build_sft_dataset
    from t2l_ray.raycluster import ensure_ray
    from t2l_ray.train.loop import train_loop_per_worker

    cfg.check()
    if cfg.objective == "reconstruction":
        from t2l_ray.train.recon import run_reconstruction

        return run_reconstruction(cfg, on_data=on_data, on_row=on_row)
    ensure_ray()
    run_dir = cfg.run.output_dir
    write_run_config(cfg, run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        data = prepare_data(cfg, run_dir, scratch)
        if on_data is not None:
            on_data({"summary": data["summary"], "embeddings": data["embedding_stats"]})
        cfg.model.config_overrides = tokenizer_overrides(cfg.model, data["vocab_size"])
        dataset = build_sft_dataset(
            data["task_uris"], data["descriptions"], data["embeddings"],
            encoder=cfg.encoder, tokenizer_dir=data["tokenizer_dir"], tasks_per_batch=cfg.data.tasks_per_batch,
            max_prompt_tokens=cfg.data.max_prompt_tokens, max_response_tokens=cfg.data.max_response_tokens,
            seed=cfg.run.seed,
        )
        shapes = target_shapes(cfg.model, cfg.hypernet.target_modules)
        if cfg.model.init == "random":  # the hypernet, so every adapter, names the saved base
            base = save_base(cfg.model, compute_dtype(cfg), data["tokenizer_dir"], storage.join(run_dir, "base"))
            shapes = dataclasses.replace(shapes, base_model=base)
        loop_config = {"train": to_dict(cfg), "run_dir": run_dir, "shapes": shapes.to_dict(),
                       "encoder_dim": data["encoder_dim"], "encoder": cfg.encoder}
        trainer = make_trainer(cfg, train_loop_per_worker, loop_config, run_dir, datasets={"train": dataset})
        fit_reporting(trainer, run_dir, on_row)
    return run_dir
