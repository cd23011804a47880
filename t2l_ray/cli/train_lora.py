"""`t2l-ray train-lora`: the LoRA baselines (task-specific "oracle" LoRAs and one multi-task LoRA)."""

from __future__ import annotations

from typing import List, Optional

import typer

from t2l_ray.cli.console import VerboseOption, capture

def train_lora(
    config: Optional[str] = typer.Option(None, "--config", help="Recipe YAML (see jobs/); its `baseline` section, if any, applies."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe field: --set baseline.lr=3e-3 (repeatable)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Where the LoRAs go (path or URI); default {run.output_dir}/baselines."),
    mode: Optional[str] = typer.Option(None, "--mode", help="oracle (one LoRA per training task), multitask (one over all), or both."),
    verbose: bool = VerboseOption,
):
    """Train baseline LoRAs through the same DeepSpeed engine; writes OUT/oracle/TASK/ and OUT/multitask/.

    OUT/oracle/ is a LoRA library for `t2l-ray train` with objective=reconstruction. Re-running skips
    oracle LoRAs that are already written. Ray's and DeepSpeed's logs go to OUT/logs/t2l-ray.log.
    """
    from t2l_ray import storage
    from t2l_ray.cli.core import load_checked
    from t2l_ray.cli.train import run_or_fail
    from t2l_ray.train.baselines import BaselineRecipe, default_output_dir, run_baselines

    if output_dir:
        overrides = [*overrides, f"baseline.output_dir={output_dir}"]
    if mode:
        overrides = [*overrides, f"baseline.mode={mode}"]
    cfg = load_checked(BaselineRecipe, config, overrides)
    with capture(storage.join(default_output_dir(cfg), "logs"), verbose) as console:
        bar = console.progress("train-lora", "LoRA")

        def on_plan(plan: dict) -> None:
            bar.reset(plan["oracle"] + plan["multitask"])
            h = cfg.hypernet
            bar.write(f"data: {plan['tasks']} tasks, {plan['instances']} instances, {plan['skipped']} skipped; LoRA "
                      f"r={h.rank} alpha={h.lora_alpha} rslora={h.use_rslora} on {', '.join(h.target_modules)} "
                      f"(scale {h.scale:.3f} folded into B)")
            if plan["oracle_written"]:
                bar.write(f"oracle: {plan['oracle_written']} of {plan['tasks']} LoRAs already written, skipped")

        def on_lora(result: dict) -> None:
            bar.update(1)
            bar.write(f"{'multitask' if result['task'] == 'multitask' else 'oracle ' + result['task']}: loss "
                      f"{result['first_loss']:.3f} -> {result['final_loss']:.3f} ({result['seconds']:.0f} s)")

        try:
            out = run_or_fail(lambda c: run_baselines(c, on_plan=on_plan, on_lora=on_lora), cfg)
        finally:
            bar.close()
        if console.log:
            console.echo(f"logs: {console.log}")
        console.echo(f"output_dir: {out}")
