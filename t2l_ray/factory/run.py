"""`check_job` checks everything on the driver and plans; `run_job` runs the stages here or on Ray and records
rows; `run_factory` is both.

Before any work starts, the driver checks what it can, and each problem raises ValueError or
FileNotFoundError with one line naming the thing and the reason: the settings, the checkpoint (its
recorded sha256, when there is anything to make), the input (an empty one is an error), and `out` (a
writable folder, not a file). Then small jobs run in this process (starting a Ray cluster costs more than a
few adapters) and the rest on Ray Data; a cluster named by RAY_ADDRESS is always used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from t2l_ray import manifest, storage
from t2l_ray.checkpoint import read_checkpoint_config, verify_checkpoint
from t2l_ray.config import local_path
from t2l_ray.factory.config import FactoryConfig
from t2l_ray.factory.plan import Plan, follower_row, input_files, plan_run
from t2l_ray.factory.stages import in_process_stages, ray_pipeline, stage_items
from t2l_ray.factory.summary import FactorySummary
from t2l_ray.raycluster import ensure_ray, warn_unadvertised


def runs_in_process(config: FactoryConfig, adapters_to_make: int) -> bool:
    """Whether the stages run in this process: `local`, or a small job that needs nothing Ray would place."""
    address = os.environ.get("RAY_ADDRESS")
    gpu_here = config.num_gpus == 0 or torch.cuda.is_available()
    if config.local:
        if address:
            raise ValueError(f"local (--local) runs without Ray, but RAY_ADDRESS names a cluster ({address}): "
                             "drop one of them")
        if not gpu_here:
            raise ValueError(f"local (--local) with num_gpus={config.num_gpus} needs a CUDA device in this process")
        return True
    return not address and adapters_to_make <= config.in_process_max and not config.resources and gpu_here


@dataclass
class FactoryJob:
    """A run checked and planned on the driver, with nothing made yet (`check_job`); `run_job` makes it."""

    checkpoint: str  # absolute when local: stages may run in other processes
    checkpoint_config: dict
    out: str  # as the user gave it: the manifest and the messages name folders by it
    work_out: str  # its absolute form, where the stages write
    config: FactoryConfig
    plan: Plan
    in_process: bool


def check_job(input_spec: str, checkpoint: str, out: str, config: FactoryConfig | None = None) -> FactoryJob:
    """Check everything that can be checked before any work and plan the run (see the module docstring).

    Raises FileNotFoundError / ValueError with one line for a missing or empty input, a damaged checkpoint,
    an unusable `out` or bad settings; bad lines never raise."""
    config = config or FactoryConfig()
    config.check()
    checkpoint_config = read_checkpoint_config(checkpoint)
    plan = plan_run(input_files(input_spec), out, checkpoint_config["weights_sha256"], config)
    in_process = runs_in_process(config, len(plan.todo))
    if plan.todo:
        verify_checkpoint(checkpoint)
    storage.check_writable_folder(out)
    return FactoryJob(local_path(checkpoint), checkpoint_config, out, local_path(out), config, plan, in_process)


def run_factory(input_spec: str, checkpoint: str, out: str, config: FactoryConfig | None = None,
                on_row: Callable[[dict], None] | None = None, on_plan: Callable[[Plan], None] | None = None,
                started_at: float | None = None) -> FactorySummary:
    """Make one adapter per good line of `input_spec` under `out`, recording every line in a new manifest file:
    `check_job`, then `run_job`."""
    started = time.time() if started_at is None else started_at
    return run_job(check_job(input_spec, checkpoint, out, config), on_row, on_plan, started)


def run_job(job: FactoryJob, on_row: Callable[[dict], None] | None = None,
            on_plan: Callable[[Plan], None] | None = None, started_at: float | None = None) -> FactorySummary:
    """Make the job's adapters, here or on Ray, and record every line of its plan in a new manifest file.

    `on_plan` sees the plan before any adapter is made, `on_row` every manifest row as it is recorded (the CLI
    draws its progress bar with them). `started_at` (time.time() when the command started; default now) is
    where the wall rate's clock starts."""
    started = time.time() if started_at is None else started_at
    config, plan, out = job.config, job.plan, job.out
    run_stages = None
    if plan.todo and job.in_process:
        run_stages = in_process_stages(job.checkpoint, job.checkpoint_config, config)
    if on_plan is not None:
        on_plan(plan)
    summary = FactorySummary(lines=plan.lines, stopped_at=plan.stopped_at, batch_size=config.batch_size)
    writer = manifest.ManifestWriter(out)

    def record(row: dict) -> None:
        writer.add(row)
        summary.count(row, time.time() - started)
        if on_row is not None:
            on_row(row)

    def record_with_followers(row: dict) -> None:
        record(row)
        for request in plan.followers.pop(row["line"], []):
            record(follower_row(row, request))

    try:
        for row in plan.rows:
            record_with_followers(row)
        if plan.todo:
            items = stage_items(plan.todo, job.work_out, out)
            if run_stages is not None:
                summary.where, results = "this process", run_stages(items)
            else:
                summary.where, results = "Ray", _on_ray(items, job.checkpoint, job.checkpoint_config, config)
            for result in results:
                failed = result["status"] == "failed"
                record_with_followers(manifest.manifest_row(
                    int(result["line"]), result["status"], id=result["id"], uri=storage.join(out, result["id"]),
                    error=result["error"] or None,
                    bytes=None if failed else int(result["bytes"]), sha256=None if failed else result["sha256"],
                ))
                if failed and config.fail_fast:
                    summary.stopped_at = int(result["line"])
                    break
    finally:
        writer.flush()
        summary.wall_seconds = time.time() - started
        summary.manifest = list(writer.uris)
    return summary


def _on_ray(items: list[dict], checkpoint: str, checkpoint_config: dict, config: FactoryConfig) -> Iterator[dict]:
    ensure_ray()
    warn_unadvertised(config.resources, "batch-generate", "resources")
    yield from ray_pipeline(items, checkpoint, checkpoint_config, config).iter_rows()
