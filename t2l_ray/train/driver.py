"""The driver side of `t2l-ray train`: the objective prepares its data on the driver, a Ray Train TorchTrainer
runs the hypernet loop (`loop.py`) on the workers.

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

import functools
import tempfile
from collections.abc import Callable

from t2l_ray.config import to_dict
from t2l_ray.train.common import fit_reporting, make_trainer, write_run_config
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.loop import train_loop_per_worker
from t2l_ray.train.recon import Reconstruction
from t2l_ray.train.sft import SFT

OBJECTIVES = {"sft": SFT, "reconstruction": Reconstruction}
"""`objective` -> its plug-in for `loop.train_loop_per_worker` (the `loop.Objective` protocol)."""


def run_training(cfg: TrainConfig, on_data: Callable[[dict], None] | None = None,
                 on_row: Callable[[dict], None] | None = None) -> str:
    """Train; returns the run folder URI. `on_data` gets `{"summary": DataSummary, "embeddings": EmbeddingStats}`
    (reconstruction: `{"library", "loras", "ranks", "descriptions", "embeddings"}`), `on_row` each metrics row."""
    from t2l_ray.raycluster import ensure_ray

    cfg.check()
    objective = OBJECTIVES[cfg.objective]
    ensure_ray()
    run_dir = cfg.run.output_dir
    write_run_config(cfg, run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        plan = objective.prepare(cfg, run_dir, scratch, on_data or (lambda data: None))
        loop_config = {"train": to_dict(cfg), "run_dir": run_dir, "shapes": plan.shapes.to_dict(),
                       "encoder": cfg.encoder, "encoder_dim": plan.encoder_dim, **plan.loop_config}
        loop = functools.partial(train_loop_per_worker, objective=objective)
        trainer = make_trainer(cfg, loop, loop_config, run_dir, datasets=plan.datasets)
        fit_reporting(trainer, run_dir, on_row)
    return run_dir
