"""`batch-generate`: the adapter factory from the command line, with a progress bar and a summary table."""

from __future__ import annotations

from typing import Optional

import typer

from t2l_ray.cli.console import VerboseOption, capture, echo
from t2l_ray.cli.core import fail, load_checked, local

_SHOWN_FAILURES = 20


def _overrides(batch_size, concurrency, max_chars, dtype, fail_fast, in_process) -> list[str]:
    """Flags given on the command line, as `--set` overrides (they win over the config file)."""
    given = {"batch_size": batch_size, "concurrency": concurrency, "max_chars": max_chars, "dtype": dtype,
             "fail_fast": True if fail_fast else None, "local": True if in_process else None}
    return [f"{key}={value}" for key, value in given.items() if value is not None]


def _print_summary(summary, out: str) -> None:
    where = f" (in {summary.where})" if summary.where else ""
    echo(f"batch-generate: {summary.lines} lines -> {out}{where}")
    for label, value in (("written", summary.written), ("skipped", summary.skipped), ("failed", summary.failed)):
        echo(f"  {label:<11}{value:>10}")
    echo(f"  wall rate  {summary.wall_rate:>10.1f} adapters/s, {summary.wall_mb_per_s:.1f} MB/s: {summary.written} "
         f"written in {summary.wall_seconds:.1f} s since the command started"
         f"{', Ray start-up included' if summary.where == 'Ray' else ''}")
    steady = summary.steady_rate
    echo(f"  steady rate{steady:>10.1f} adapters/s after the first batch" if steady is not None else
         f"  steady rate{'n/a':>10} (needs 3 batches of {summary.batch_size} written)")
    for uri in summary.manifest:
        echo(f"  manifest   {uri}")
    if summary.stopped_at is not None:
        echo(f"stopped at line {summary.stopped_at} (--fail-fast): later lines were not processed", err=True)
    for row in summary.failures[:_SHOWN_FAILURES]:
        echo(f"failed line {row['line']}: {row['error']}", err=True)
    if len(summary.failures) > _SHOWN_FAILURES:
        echo(f"... and {len(summary.failures) - _SHOWN_FAILURES} more failed lines (see the manifest)", err=True)


def _command_start() -> float:
    """When this process started (time.time() scale): the wall rate counts the imports and Ray's start-up too."""
    import psutil

    return psutil.Process().create_time()


def batch_generate(
    input_spec: str = typer.Argument(..., metavar="INPUT",
                                     help="JSONL file, folder of .jsonl, glob, or URI; one {description, id?, metadata?} per line.",
                                     callback=local()),
    checkpoint: str = typer.Option(..., "--checkpoint", help="Hypernet checkpoint folder (path or URI).", callback=local()),
    out: str = typer.Option(..., "--out", help="Parent folder: adapters go to OUT/ID/, the manifest to OUT/_manifest/."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Descriptions per hypernet forward (default 32)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Encoder and hypernet actors per stage (default 1)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first bad line; nothing after it is written."),
    max_chars: Optional[int] = typer.Option(None, "--max-chars", help="Longest description accepted (default 4000)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16, float16 or float32 (default bfloat16)."),
    in_process: bool = typer.Option(False, "--local", help="Run every stage in this process, without Ray (jobs of at "
                                    "most in_process_max adapters, 256, always do unless RAY_ADDRESS is set)."),
    config_path: Optional[str] = typer.Option(None, "--config", help="YAML file of factory settings (e.g. num_gpus)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting, e.g. --set num_gpus=1."),
    verbose: bool = VerboseOption,
):
    """Generate one adapter per line of a JSONL file (on Ray, or here for small jobs); exit 1 when any line failed.

    Ray's logs go to OUT/_logs/t2l-ray.log (named in the summary). OUT keeps the form you gave it in the manifest
    and the summary; the stages get its absolute form (`FactoryJob.work_out`)."""
    started = _command_start()
    from t2l_ray import storage
    from t2l_ray.factory import FactoryConfig, check_job, run_job

    config = load_checked(FactoryConfig, config_path,
                          [*overrides, *_overrides(batch_size, concurrency, max_chars, dtype, fail_fast, in_process)])
    try:
        job = check_job(input_spec, checkpoint, out, config)  # before the log exists: one line, nothing made
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    with capture(storage.join(job.out, "_logs"), verbose) as console:
        bar = console.progress("batch-generate", "line")

        def on_row(row: dict) -> None:  # the rate counts adapters made now, not lines settled by the plan
            bar.update(1) if row["status"] == "written" else bar.skip(1)

        try:
            summary = run_job(job, on_plan=lambda plan: bar.reset(plan.total), on_row=on_row, started_at=started)
        except (FileNotFoundError, ValueError) as error:
            fail(str(error))
        finally:
            bar.close()
        _print_summary(summary, out)
        if console.log:
            echo(f"  logs       {console.log}")
    if summary.failed:
        raise typer.Exit(1)
