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
import tempfile
from collections.abc import Callable

from t2l_ray import storage
from t2l_ray.base_model import save_base, target_shapes, tokenizer_overrides
from t2l_ray.config import to_dict
from t2l_ray.data.prepare import prepare_data
from t2l_ray.train.common import fit_reporting, make_trainer, write_run_config
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.engine import compute_dtype


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
            on_data({"summary": data.summary, "embeddings": data.embedding_stats})
        cfg.model.config_overrides = tokenizer_overrides(cfg.model, data.vocab_size)
        dataset = build_sft_dataset(
            data.task_uris, data.descriptions, data.embeddings,
            encoder=cfg.encoder, tokenizer_dir=data.tokenizer_dir, tasks_per_batch=cfg.data.tasks_per_batch,
            max_prompt_tokens=cfg.data.max_prompt_tokens, max_response_tokens=cfg.data.max_response_tokens,
            seed=cfg.run.seed,
        )
        shapes = target_shapes(cfg.model, cfg.hypernet.target_modules)
        if cfg.model.init == "random":  # the hypernet, so every adapter, names the saved base
            base = save_base(cfg.model, compute_dtype(cfg), data.tokenizer_dir, storage.join(run_dir, "base"))
            shapes = dataclasses.replace(shapes, base_model=base)
        loop_config = {"train": to_dict(cfg), "run_dir": run_dir, "shapes": shapes.to_dict(),
                       "encoder_dim": data.encoder_dim, "encoder": cfg.encoder}
        trainer = make_trainer(cfg, train_loop_per_worker, loop_config, run_dir, datasets={"train": dataset})
        fit_reporting(trainer, run_dir, on_row)
    return run_dir
