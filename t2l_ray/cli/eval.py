"""`t2l-ray eval`: score the base model and adapter sets on tasks, on Ray; markdown + JSON tables and a bar chart."""

from __future__ import annotations

from typing import List, Optional

import typer

from t2l_ray.cli.core import fail, load_checked


def eval_command(
    config: Optional[str] = typer.Option(None, "--config", help="Eval YAML (see jobs/eval.yaml)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a field: --set run.limit=20 (repeatable)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Output folder (path or URI); overrides run.output_dir."),
):
    """Score 'base' (no adapter) and each adapter set on SNI-style tasks and benchmarks; exit 1 if a cell failed."""
    from tqdm import tqdm

    from t2l_ray.data.sni import NoUsableTasks
    from t2l_ray.eval.config import EvalConfig
    from t2l_ray.eval.runner import run_eval

    if output_dir:
        overrides = [*overrides, f"run.output_dir={output_dir}"]
    cfg = load_checked(EvalConfig, config, overrides)
    bar = tqdm(unit="cell", desc="eval", disable=None)

    def on_item(cell: dict) -> None:
        bar.update(1)
        if "error" in cell:
            tqdm.write(f"failed {cell['set']}/{cell['task']}: {cell['error']}")

    try:
        result = run_eval(cfg, on_item=on_item, on_plan=lambda total: bar.reset(total=total))
    except (FileNotFoundError, ValueError, NoUsableTasks) as error:
        fail(str(error))
    finally:
        bar.close()
    from t2l_ray import storage

    typer.echo(storage.read_text(result.files["markdown"]))
    for kind, uri in result.files.items():
        typer.echo(f"{kind:<12}{uri}")
    typer.echo(f"{len(result.cells)} cells in {result.seconds:.0f} s")
    if result.errors:
        raise typer.Exit(1)
