"""`t2l-ray train`: run a training recipe on the current Ray cluster, with a progress bar and metric lines."""

from __future__ import annotations

from typing import List, Optional

import typer

from t2l_ray.cli.console import VerboseOption, capture
from t2l_ray.cli.core import fail, local


def run_or_fail(run, cfg):
    """`run(cfg)` for a training command; a run stopped by a worker's code error prints that worker's
    traceback once and exits 1 with one line (restarting would only repeat it: `train/failures.py`)."""
    import ray.train

    from t2l_ray.cli.console import echo
    from t2l_ray.train.failures import WorkerCodeError

    try:
        return run(cfg)
    except WorkerCodeError as error:
        echo(error.worker_traceback.rstrip(), err=True)
        fail(f"training stopped on a code error, {error}", code=1)
    except ray.train.TrainingFailedError as error:
        fail(f"training failed after run.max_failures={cfg.run.max_failures} restarts: "
             f"{str(error).strip().splitlines()[-1]}", code=1)


def metric_line(row: dict, steps: int) -> str:
    parts = [f"step {row['step']:>{len(str(steps))}}/{steps}", f"loss {row['loss']:.4f}"]
    for key, label, spec in (("lm_loss", "lm_loss", ".4f"), ("delta_w_rel", "delta_w_rel", ".3f"), ("lr", "lr", ".2e"),
                             ("samples_per_s", "samples/s", ".1f"), ("peak_mem_gib", "peak GiB", ".1f")):
        if row.get(key) is not None:
            parts.append(f"{label} {row[key]:{spec}}")
    if "resumed_from" in row:
        parts.append(f"(resumed from step {row['resumed_from']})")
    return "  ".join(parts)


def data_line(data: dict) -> str:
    embeddings = f"embeddings {data['embeddings'].computed} computed, {data['embeddings'].hits} cached"
    if "summary" in data:
        summary = data["summary"]
        skipped = f", {len(summary.skipped)} files skipped" if summary.skipped else ""
        return f"data: {summary.totals()}{skipped}; {embeddings}"
    ranks = "/".join(map(str, data["ranks"]))
    return f"library: {data['loras']} LoRAs (rank {ranks}) from {data['library']}; {data['descriptions']} descriptions; {embeddings}"


def train(
    config: Optional[str] = typer.Option(None, "--config", help="Recipe YAML (see jobs/)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe field: --set optim.lr=1e-4 (repeatable)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Run folder (path or URI); overrides run.output_dir."),
    verbose: bool = VerboseOption,
):
    """Train a T2L hypernetwork (Ray Train + DeepSpeed). Re-running with the same output folder resumes.

    Shows the data, a progress bar, one line per logged step and a summary; Ray's, DeepSpeed's and
    transformers' logs go to RUN/logs/t2l-ray.log. The last line is `run_dir: URI`."""
    import time

    from t2l_ray import storage
    from t2l_ray.cli.core import load_checked
    from t2l_ray.train.config import TrainConfig
    from t2l_ray.train.driver import run_training
    from t2l_ray.train.plot import loss_change

    if output_dir:
        overrides = [*overrides, f"run.output_dir={output_dir}"]
    cfg = load_checked(TrainConfig, config, overrides)
    run_dir, steps = cfg.run.output_dir, cfg.optim.max_steps
    with capture(storage.join(run_dir, "logs"), verbose) as console:
        workers = f"{cfg.run.num_workers} worker{'s' if cfg.run.num_workers != 1 else ''}"
        console.echo(f"train: {cfg.objective}, {workers}, ZeRO-{cfg.deepspeed.zero_stage}, "
                     f"{steps} steps -> {run_dir}")
        bar, rows, started = console.progress("train", "step", total=steps), [], time.monotonic()

        def on_row(row: dict) -> None:
            rows.append(row)
            bar.set(row["step"], loss=f"{row['loss']:.4f}")
            bar.write(metric_line(row, steps))

        try:
            run_or_fail(lambda c: run_training(c, on_data=lambda data: bar.write(data_line(data)), on_row=on_row), cfg)
        finally:
            bar.close()
        if rows:
            first, last = loss_change(rows)
            console.echo(f"trained steps {rows[0]['step']}-{rows[-1]['step']} in {time.monotonic() - started:.0f} s; "
                         f"loss {first:.4f} -> {last:.4f} ({100 * (last - first) / first:+.1f}%, first vs last fifth "
                         f"of the logged steps)")
        console.echo(f"  hypernet  {storage.join(run_dir, 'hypernet')}")
        console.echo(f"  metrics   {storage.join(run_dir, 'metrics.jsonl')} (t2l-ray plot {run_dir})")
        if console.log:
            console.echo(f"  logs      {console.log}")
        console.echo(f"run_dir: {run_dir}")


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
