"""`t2l-ray train-lora`: the LoRA baselines (task-specific "oracle" LoRAs and one multi-task LoRA)."""

from __future__ import annotations

from typing import List, Optional

import typer


def train_lora(
    config: Optional[str] = typer.Option(None, "--config", help="Recipe YAML (see jobs/); its `baseline` section, if any, applies."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe field: --set baseline.lr=3e-3 (repeatable)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Where the LoRAs go (path or URI); default {run.output_dir}/baselines."),
    mode: Optional[str] = typer.Option(None, "--mode", help="oracle (one LoRA per training task), multitask (one over all), or both."),
):
    """Train baseline LoRAs through the same DeepSpeed engine; writes OUT/oracle/TASK/ and OUT/multitask/.

    OUT/oracle/ is a LoRA library for `t2l-ray train` with objective=reconstruction. Re-running skips
    oracle LoRAs that are already written.
    """
    from t2l_ray.cli.core import load_checked
    from t2l_ray.cli.train import run_or_fail
    from t2l_ray.train.baselines import BaselineRecipe, run_baselines

    if output_dir:
        overrides = [*overrides, f"baseline.output_dir={output_dir}"]
    if mode:
        overrides = [*overrides, f"baseline.mode={mode}"]
    cfg = load_checked(BaselineRecipe, config, overrides)
    out = run_or_fail(run_baselines, cfg)
    typer.echo(f"output_dir: {out}")
