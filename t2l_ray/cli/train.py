"""`t2l-ray train`: run a training recipe on the current Ray cluster."""

from __future__ import annotations

from typing import List, Optional

import typer


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
    run_dir = run_training(cfg)
    typer.echo(f"run_dir: {run_dir}")


def plot(
    run_dir: str = typer.Argument(..., help="Run folder (path or URI) with a metrics.jsonl."),
    out: Optional[str] = typer.Option(None, "--out", help="PNG path or URI (default RUN_DIR/loss.png)."),
):
    """Render a run's loss curves to a PNG."""
    from t2l_ray.train.plot import plot_run

    try:
        target = plot_run(run_dir, out)
    except (FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    typer.echo(f"wrote {target}")
