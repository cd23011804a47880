"""`t2l-ray train`: run a training recipe on the current Ray cluster."""

from __future__ import annotations

from typing import List, Optional

import typer

from t2l_ray.cli.core import fail, local


def run_or_fail(run, cfg):
    """`run(cfg)` for a training command; a run stopped by a worker's code error prints that worker's
    traceback once and exits 1 with one line (restarting would only repeat it: `train/failures.py`)."""
    import ray.train

    from t2l_ray.train.failures import WorkerCodeError

    try:
        return run(cfg)
    except WorkerCodeError as error:
        typer.echo(error.worker_traceback.rstrip(), err=True)
        fail(f"training stopped on a code error, {error}", code=1)
    except ray.train.TrainingFailedError as error:
        fail(f"training failed after run.max_failures={cfg.run.max_failures} restarts: "
             f"{str(error).strip().splitlines()[-1]}", code=1)


def train(
    config: Optional[str] = typer.Option(None, "--config", help="Recipe YAML (see jobs/)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe field: --set optim.lr=1e-4 (repeatable)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Run folder (path or URI); overrides run.output_dir."),
):
    """Train a T2L hypernetwork (Ray Train + DeepSpeed). Re-running with the same output folder resumes."""
    from t2l_ray.cli.core import load_checked
    from t2l_ray.train.config import TrainConfig
    from t2l_ray.train.driver import run_training

    if output_dir:
        overrides = [*overrides, f"run.output_dir={output_dir}"]
    cfg = load_checked(TrainConfig, config, overrides)
    run_dir = run_or_fail(run_training, cfg)
    typer.echo(f"run_dir: {run_dir}")


def plot(
    run_dir: str = typer.Argument(..., help="Run folder (path or URI) with a metrics.jsonl.", callback=local()),
    out: Optional[str] = typer.Option(None, "--out", help="PNG path or URI (default RUN_DIR/loss.png).", callback=local()),
):
    """Render a run's loss curves to a PNG."""
    from t2l_ray.train.plot import plot_run

    try:
        target = plot_run(run_dir, out)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo(f"wrote {target}")
