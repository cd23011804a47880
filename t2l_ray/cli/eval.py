"""`t2l-ray eval`: score the base model and adapter sets on tasks, on Ray; markdown + JSON tables and a bar chart."""

from __future__ import annotations

from typing import List, Optional

import typer

from t2l_ray.cli.console import VerboseOption, capture
from t2l_ray.cli.core import fail, load_checked


def eval_command(
    config: Optional[str] = typer.Option(None, "--config", help="Eval YAML (see jobs/eval.yaml)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a field: --set run.limit=20 (repeatable)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Output folder (path or URI); overrides run.output_dir."),
    verbose: bool = VerboseOption,
):
    """Score 'base' (no adapter) and each adapter set on SNI-style tasks and benchmarks; exit 1 if a cell failed.

    Ray's and transformers' logs go to OUT/logs/t2l-ray.log (named at the end)."""
    from t2l_ray import storage
    from t2l_ray.data.sni import NoUsableTasks
    from t2l_ray.eval.config import EvalConfig
    from t2l_ray.eval.runner import run_eval

    if output_dir:
        overrides = [*overrides, f"run.output_dir={output_dir}"]
    cfg = load_checked(EvalConfig, config, overrides)
    with capture(storage.join(cfg.run.output_dir, "logs"), verbose) as console:
        bar = console.progress("eval", "cell")

        def on_plan(plan: dict) -> None:
            bar.reset(plan["items"])
            missing = f" ({plan['missing']} cells have no adapter)" if plan["missing"] else ""
            bar.write(f"eval: {plan['rows']} rows x {plan['tasks']} tasks = {plan['items']} cells{missing}; "
                      f"{plan['examples']} examples per row")

        def on_item(cell: dict) -> None:
            bar.update(1)
            if "error" in cell:
                bar.write(f"failed {cell['set']}/{cell['task']}: {cell['error']}")

        try:
            result = run_eval(cfg, on_item=on_item, on_plan=on_plan)
        except (FileNotFoundError, ValueError, NoUsableTasks) as error:
            fail(str(error))
        finally:
            bar.close()
        console.echo(storage.read_text(result.files["markdown"]))
        for kind, uri in [*result.files.items(), *([("logs", console.log)] if console.log else [])]:
            console.echo(f"{kind:<12}{uri}")
        console.echo(f"{len(result.cells)} cells in {result.seconds:.0f} s")
    if result.errors:
        raise typer.Exit(1)
