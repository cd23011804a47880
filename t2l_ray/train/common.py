"""The run folder every training command writes, from the workers' side and from the driver's.

Used by the hypernet loop (`loop.py`, for SFT and reconstruction alike) and the LoRA baselines
(`baselines.py`), so they write the same run folder:
- `config.yaml`, the resolved recipe;
- `metrics.jsonl`, one JSON object per logged step with at least `step`, `loss`, `lr`, `samples_per_s`;
- `tensorboard/`, the same scalars for TensorBoard;
- `checkpoint_*`, Ray Train checkpoints: every rank's DeepSpeed state under tag `ds`, its torch RNG state
  (`rng_rank{N}.pt`) and `trainer_state.json` (step, epoch, data position);
- `hypernet/`, the latest exported hypernet in the foundation's checkpoint format;
- `_workers/rank{N}.pid`, where each worker runs (operators and the fault-injection test find it there).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from t2l_ray import storage
from t2l_ray.raycluster import warn_unadvertised

DS_TAG = "ds"
STATE_FILE = "trainer_state.json"


# ---------------------------------------------------------------------------------------------- worker side


def read_rows(uri: str) -> list[dict]:
    """The rows of a JSONL metrics file; none while it does not exist yet."""
    try:
        lines = storage.read_text(uri).splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


class MetricsLog:
    """`{run}/metrics.jsonl`, rewritten whole on each log so it works on object stores (no appends there)."""

    def __init__(self, run_dir: str, resume_step: int, name: str = "metrics.jsonl"):
        self.uri = storage.join(run_dir, name)
        # the loss curve continues from the restored step, never restarts
        self.rows: list[dict] = [r for r in read_rows(self.uri) if r["step"] <= resume_step]

    def log(self, row: dict) -> None:
        self.rows.append(row)
        storage.write_text(self.uri, "".join(json.dumps(r) + "\n" for r in self.rows))


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


def record_worker(run_dir: str, rank: int) -> None:
    storage.write_text(storage.join(run_dir, "_workers", f"rank{rank}.pid"), str(os.getpid()))


def restore_checkpoint(engine, rank: int, fresh_state: dict, seed: int) -> dict:
    """Resume from Ray Train's latest checkpoint (DeepSpeed state, this rank's RNG, trainer state), else start.

    A fresh start seeds torch per rank (`seed + 1000 * rank`) for per-worker noise (dropout, NEFTune).
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        torch.manual_seed(seed + 1000 * rank)
        return dict(fresh_state)
    with checkpoint.as_directory() as folder:
        engine.load_checkpoint(folder, tag=DS_TAG)
        state = json.loads(Path(folder, STATE_FILE).read_text())
        rng = Path(folder, f"rng_rank{rank}.pt")
        if rng.exists():
            torch.set_rng_state(torch.load(rng))
    return state


def export_hypernet(engine, cfg, hypernet, encoder: str, run_dir: str, rank: int, step: int) -> None:
    """Rank 0 writes `{run}/hypernet/` (a collective under ZeRO-3: every rank must call it)."""
    from t2l_ray.checkpoint import save_checkpoint
    from t2l_ray.hypernet import TextToLoRA
    from t2l_ray.train.engine import full_state_dict

    weights = full_state_dict(engine)
    if rank == 0:
        export = TextToLoRA(cfg.hypernet, hypernet.shapes, hypernet.encoder_dim)
        export.load_state_dict(weights)
        save_checkpoint(export, encoder, storage.join(run_dir, "hypernet"), extra={"step": step, "objective": cfg.objective})


def save_and_report(engine, state: dict, rank: int, *, final: bool, before_report: Callable[[], None] | None = None) -> None:
    """Every rank: DeepSpeed state + RNG + trainer state into one Ray Train checkpoint, then `report`.

    `before_report` runs while the checkpoint folder exists (the hypernet export goes there, so the exported
    hypernet is never newer than the latest reported checkpoint by more than this step).
    """
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        engine.save_checkpoint(folder, tag=DS_TAG)
        torch.save(torch.get_rng_state(), Path(folder, f"rng_rank{rank}.pt"))
        Path(folder, STATE_FILE).write_text(json.dumps(state))
        if before_report is not None:
            before_report()
        ray.train.report({"step": state["step"], "final": final}, checkpoint=ray.train.Checkpoint.from_directory(folder))


# ---------------------------------------------------------------------------------------------- driver side


def write_run_config(cfg, run_dir: str) -> None:
    import yaml

    from t2l_ray.config import to_dict

    storage.makedirs(run_dir)
    storage.write_text(storage.join(run_dir, "config.yaml"), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def make_trainer(cfg, train_loop, loop_config: dict, run_dir: str, datasets: dict | None = None):
    """A TorchTrainer whose Ray Train run folder IS `run_dir` (a path or URI), with the recipe's scaling,
    backend, checkpoint retention, and `run.max_failures` restarts for lost workers only (a code error stops
    the run at once: `failures.py`). Same `run_dir` again = resume."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from t2l_ray.train.failures import StopOnCodeErrors, stop_on_code_errors

    warn_unadvertised(cfg.run.resources_per_worker, "train", "run.resources_per_worker")
    fs, path = storage.resolve(run_dir)
    return TorchTrainer(
        stop_on_code_errors(train_loop),
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.run.num_workers, use_gpu=cfg.run.use_gpu,
            resources_per_worker={"CPU": cfg.run.cpus_per_worker, **cfg.run.resources_per_worker},
        ),
        torch_config=TorchConfig(backend=cfg.run.backend),
        run_config=ray.train.RunConfig(
            name=Path(path).name, storage_path=str(Path(path).parent), storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures), callbacks=[StopOnCodeErrors()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
    )


def fit_reporting(trainer, run_dir: str, on_row: Callable[[dict], None] | None = None,
                  name: str = "metrics.jsonl") -> float:
    """`trainer.fit()` (`failures.fit`), calling `on_row` with each new row of `{run}/metrics.jsonl` while it
    runs (the workers write the file, the driver reads it every 2 s); returns the seconds it took.

    Rows are passed once, in step order: after a restore the workers log again from the checkpoint's step,
    and rows at or below the last one passed are skipped. Rows already in the file (an earlier run that
    this one resumes) are not passed."""
    from t2l_ray.train.failures import fit

    uri = storage.join(run_dir, name)
    last = {"step": max((row["step"] for row in read_rows(uri)), default=0)}

    def deliver() -> None:
        for row in read_rows(uri):
            if row["step"] > last["step"]:
                last["step"] = row["step"]
                if on_row is not None:
                    on_row(row)

    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(2.0):
            deliver()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.time()
    try:
        fit(trainer)
    finally:
        stop.set()
        watcher.join(timeout=5)
    deliver()
    return time.time() - started
