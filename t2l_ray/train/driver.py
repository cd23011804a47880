"""The driver side of `t2l-ray train`: prepare data on the driver, run a Ray Train TorchTrainer, report.

Runs on the current Ray cluster (RAY_ADDRESS, or the one this process runs in under `ray job submit`),
else starts a local one. The run folder (`run.output_dir`, a path or URI) holds `config.yaml`,
`metrics.jsonl`, `tokenizer/` (when trained offline), `embeddings/`, the Ray Train checkpoints
(`checkpoint_*`), and `hypernet/`, the latest exported hypernet. Running the same command again with the
same output folder resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import yaml

from t2l_ray import storage
from t2l_ray.config import to_dict
from t2l_ray.train.common import local_copy, watch_progress
from t2l_ray.train.config import TrainConfig


def prepare_data(cfg: TrainConfig, run_dir: str, scratch: str) -> dict:
    """Tasks, descriptions, tokenizer and embeddings, resolved once on the driver."""
    from t2l_ray.data.descriptions import descriptions_for, load_descriptions
    from t2l_ray.data.inspect import summarize
    from t2l_ray.data.lol import LOL_PREFIX, materialise_lol_source
    from t2l_ray.data.sni import instance_rows, load_sni
    from t2l_ray.data.suite import write_suite
    from t2l_ray.data.tokenizer import load_tokenizer, train_tokenizer
    from t2l_ray.data.pipeline import cache_uri, embed_descriptions

    descriptions = load_descriptions(local_copy(cfg.data.descriptions, scratch)) if cfg.data.descriptions else None
    source = cfg.data.source
    if source.startswith(LOL_PREFIX):
        source = str(materialise_lol_source(source, Path(scratch, "lol")))
    elif source != "suite":
        source = local_copy(source, scratch)
    else:
        source = str(Path(scratch, "suite"))
        suite = write_suite(source, seed=cfg.data.suite_seed)
        descriptions = descriptions or suite.descriptions
    excluded = list(cfg.data.exclude) + list(cfg.data.heldout_tasks)
    if cfg.data.source == "suite" and not cfg.data.task_list:
        excluded += [t.name for t in suite.held_out]
    task_list = local_copy(cfg.data.task_list, scratch) if cfg.data.task_list else None
    tasks, skipped = load_sni(source, task_list=task_list, exclude=excluded or None)
    by_task = descriptions_for(tasks, descriptions)
    rng = random.Random(cfg.run.seed)
    by_task = {t: (d if len(d) <= cfg.data.descriptions_per_task else rng.sample(d, cfg.data.descriptions_per_task))
               for t, d in by_task.items()}

    tokenizer_uri = cfg.model.tokenizer or cfg.model.name_or_path
    if cfg.model.tokenizer == "train":
        tokenizer_uri = storage.join(run_dir, "tokenizer")
        local = str(Path(scratch, "tokenizer"))
        texts = [r["input"] for r in instance_rows(tasks)] + [t.definition for t in tasks]
        train_tokenizer(texts, local)
        for file in Path(local).iterdir():
            storage.write_bytes(storage.join(tokenizer_uri, file.name), file.read_bytes())
    tokenizer_dir = local_copy(tokenizer_uri, scratch) if cfg.model.tokenizer == "train" else tokenizer_uri
    tokenizer = load_tokenizer(tokenizer_dir)

    summary = summarize(tasks, skipped, by_task, tokenizer, cfg.data.max_prompt_tokens, cfg.data.max_response_tokens)
    print(summary.table())
    storage.write_text(storage.join(run_dir, "data_summary.json"), json.dumps(summary.to_dict(), indent=2))
    texts = sorted({text for values in by_task.values() for text in values})
    table, stats = embed_descriptions(texts, cfg.encoder, cache_uri(run_dir, cfg.encoder))
    return {
        "tasks": tasks, "skipped": skipped, "task_uris": _task_uris(cfg, tasks, run_dir), "descriptions": by_task, "tokenizer_dir": tokenizer_dir,
        "vocab_size": len(tokenizer), "embeddings": table, "embedding_stats": stats,
        "encoder_dim": len(table["embedding"][0]),
    }


def _task_uris(cfg: TrainConfig, tasks, run_dir: str) -> list[str]:
    """Where every worker node can read the task files: the source URI itself, or (for the generated suite
    and Lots-of-LoRAs sources) a copy in the run folder, which is shared storage on any multi-node cluster."""
    if cfg.data.source == "suite" or cfg.data.source.startswith("lol:"):
        folder = storage.join(run_dir, "data", "tasks")
        for task in tasks:
            storage.write_bytes(storage.join(folder, Path(task.source_file).name), Path(task.source_file).read_bytes())
        return [storage.join(folder, Path(t.source_file).name) for t in tasks]
    fs, _ = storage.resolve(cfg.data.source)
    if fs.type_name == "local":
        return [t.source_file for t in tasks]
    return [storage.join(cfg.data.source, Path(t.source_file).name) for t in tasks]


def run_training(cfg: TrainConfig) -> str:
    """Train; returns the run folder URI."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from t2l_ray.data.pipeline import build_sft_dataset
    from t2l_ray.raycluster import ensure_ray
    from t2l_ray.shapes import base_shapes
    from t2l_ray.train.engine import base_config_with_overrides
    from t2l_ray.train.loop import train_loop_per_worker

    cfg.check()
    if cfg.objective == "reconstruction":
        from t2l_ray.train.recon import run_reconstruction

        return run_reconstruction(cfg)
    if cfg.objective != "sft":
        raise ValueError(f"objective {cfg.objective!r} is not handled by this driver")
    ensure_ray()
    run_dir = cfg.run.output_dir
    storage.makedirs(run_dir)
    storage.write_text(storage.join(run_dir, "config.yaml"), yaml.safe_dump(to_dict(cfg), sort_keys=False))
    with tempfile.TemporaryDirectory() as scratch:
        data = prepare_data(cfg, run_dir, scratch)
        print(f"embeddings: {data['embedding_stats'].computed} computed, {data['embedding_stats'].hits} cached")
        if cfg.model.tokenizer == "train" and cfg.model.init == "random":
            cfg.model.config_overrides = {**cfg.model.config_overrides, "vocab_size": data["vocab_size"]}
        shapes = base_shapes(base_config_with_overrides(cfg), cfg.hypernet.target_modules)
        shapes = dataclasses.replace(shapes, base_model=cfg.model.name_or_path)  # the name servers know it by
        dataset = build_sft_dataset(
            data["task_uris"], data["descriptions"], data["embeddings"],
            encoder=cfg.encoder, tokenizer_dir=data["tokenizer_dir"], tasks_per_batch=cfg.data.tasks_per_batch,
            max_prompt_tokens=cfg.data.max_prompt_tokens, max_response_tokens=cfg.data.max_response_tokens,
            seed=cfg.run.seed,
        )
        fs, path = storage.resolve(run_dir)
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"train": to_dict(cfg), "run_dir": run_dir, "shapes": shapes.to_dict(),
                               "encoder_dim": data["encoder_dim"], "encoder": cfg.encoder},
            scaling_config=ray.train.ScalingConfig(
                num_workers=cfg.run.num_workers, use_gpu=cfg.run.use_gpu,
                resources_per_worker={"CPU": cfg.run.cpus_per_worker, **cfg.run.resources_per_worker},
            ),
            torch_config=TorchConfig(backend=cfg.run.backend),
            run_config=ray.train.RunConfig(
                name=Path(path).name, storage_path=str(Path(path).parent), storage_filesystem=fs,
                failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            ),
            datasets={"train": dataset},
        )
        stop = threading.Event()
        watcher = threading.Thread(target=watch_progress, args=(run_dir, cfg.optim.max_steps, stop), daemon=True)
        watcher.start()
        started = time.time()
        try:
            trainer.fit()
        finally:
            stop.set()
            watcher.join(timeout=5)
    print(f"trained {cfg.optim.max_steps} steps in {time.time() - started:.0f}s; hypernet: {storage.join(run_dir, 'hypernet')}")
    return run_dir
