"""LoRA baselines through the same DeepSpeed engine: task-specific ("oracle") LoRAs and one multi-task LoRA.

`t2l-ray train-lora` reads the same recipe as `t2l-ray train` (base model, data, DeepSpeed, LoRA shape from
`hypernet.rank/lora_alpha/use_rslora/target_modules`) plus the `baseline` section (`config.BaselineConfig`),
and writes

    {out}/oracle/{task}/      one LoRA per training task   (mode oracle)
    {out}/multitask/          one LoRA over all of them    (mode multitask)
    {out}/logs/oracle/{task}.jsonl, {out}/logs/multitask.jsonl   loss curves (step, loss, lr)
    {out}/summary.json        per adapter: steps, first and last logged loss, seconds
    {out}/tokenizer/          when `model.tokenizer=train` (the same deterministic BPE `train` would build)

`{out}/oracle/` is exactly the library `reconstruction.library` reads.

LoRAs are PEFT LoRAs (`get_peft_model`) trained in the parameterisation the hypernet generates (T2L: r=8,
alpha=2r=16, rsLoRA, q_proj/v_proj), on T2L's objective without the hypernet (response-only loss, label
smoothing, NEFTune from `optim`). They are written with `adapters.render_adapter`, so they pass the adapter
contract: the PEFT scale folded into B in float32, `lora_alpha = r`, `use_rslora: false`, keys without the
adapter name, and `t2l_meta.json` (with the task's training descriptions, which reconstruction reads).

Parallelism. Oracle LoRAs fan out as Ray tasks: each task trains `baseline.tasks_per_job` LoRAs one after
another in one single-process DeepSpeed engine (one process group per process, `engine.destroy()` between
engines), in a fresh worker process (`max_calls=1`: DeepSpeed cannot re-initialise after its process group
is destroyed). Ray runs as many at once as `baseline.cpus_per_job` (and one GPU each with `run.use_gpu`)
allow. Finished adapters are skipped when a job is retried or the command is re-run. The multi-task LoRA
is a Ray Train run over `run.num_workers` workers (DeepSpeed ZeRO across them), each sampling its own
examples (seeded by rank and step). Both run the optimizer-step loop hypernet training runs (`steps.run_steps`)
on the base model training builds (`base_model.py`); the hypernet's worker loop (`loop.py`: checkpoints,
resume, export) does not fit them: a LoRA trains in minutes and a rerun skips the finished ones instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import socket
import tempfile
import time
from collections.abc import Callable

import torch

from t2l_ray import adapters, storage
from t2l_ray.base_model import build_base_model, run_shapes, tokenizer_overrides
from t2l_ray.config import from_dict, to_dict
from t2l_ray.data.tokenizer import open_tokenizer
from t2l_ray.hypernet import LoraWeights
from t2l_ray.shapes import BaseShapes
from t2l_ray.train.config import BaselineConfig, BaselineRecipe, TrainConfig
from t2l_ray.train.engine import build_engine, compute_dtype, ray_train_worker, set_cpu_accelerator_env
from t2l_ray.train.objectives import neftune, response_loss
from t2l_ray.train.steps import keyed_batches, run_steps

LIVE_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_(A|B)\.[\w-]+\.weight$")


def lora_engine_config(cfg: BaselineRecipe, steps: int) -> BaselineRecipe:
    """The recipe as the engine sees it for one LoRA: the baseline's lr, steps, warmup and batch size."""
    b = cfg.baseline
    optim = dataclasses.replace(cfg.optim, lr=b.lr, max_steps=steps, warmup_steps=min(b.warmup_steps, steps))
    return dataclasses.replace(cfg, optim=optim, data=dataclasses.replace(cfg.data, tasks_per_batch=b.batch_size))


def peft_lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    h = cfg.hypernet
    return LoraConfig(r=h.rank, lora_alpha=h.lora_alpha, use_rslora=h.use_rslora, target_modules=list(h.target_modules),
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")


# ---------------------------------------------------------------------------------------------- examples


class Examples:
    """Tokenized examples of one task (or many) and seeded sampling of batches from them."""

    def __init__(self, rows: list[dict], tokenizer, max_prompt_tokens: int, max_response_tokens: int):
        from t2l_ray.data.prompts import tokenize_batch

        if not rows:
            raise ValueError("no examples to train on")
        tokens = tokenize_batch({k: [r[k] for r in rows] for k in ("definition", "input", "outputs")},
                                tokenizer, max_prompt_tokens, max_response_tokens)
        self.input_ids = torch.from_numpy(tokens["input_ids"])
        self.labels = torch.from_numpy(tokens["labels"])
        self.attention_mask = torch.from_numpy(tokens["attention_mask"])

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, rng: random.Random, size: int, device) -> dict[str, torch.Tensor]:
        """`size` examples (distinct while there are enough), trimmed to the longest of them."""
        rows = rng.sample(range(len(self)), size) if size <= len(self) else [rng.randrange(len(self)) for _ in range(size)]
        index = torch.tensor(rows)
        mask = self.attention_mask[index]
        width = int(mask.sum(1).max())
        return {"input_ids": self.input_ids[index, :width].to(device), "labels": self.labels[index, :width].to(device),
                "attention_mask": mask[:, :width].to(device)}


def task_rows(task, limit: int = 0, seed: int = 0) -> list[dict]:
    """The columns `prompts.tokenize_batch` reads, for one SNI task (plain data, cheap to ship to workers);
    at most `limit` of them (0 = all), sampled with `seed`."""
    from t2l_ray.data.sni import instance_rows

    rows = [{k: r[k] for k in ("task", "definition", "input", "outputs")} for r in instance_rows([task])]
    if 0 < limit < len(rows):
        rows = random.Random(f"{seed}:{task.name}").sample(rows, limit)
    return rows


# ---------------------------------------------------------------------------------------------- one LoRA


def lora_weights(engine, shapes: BaseShapes, modules: list[str]) -> LoraWeights:
    """The engine's LoRA as `LoraWeights` of one sample: module -> (A [1, layers, r, in], B [1, layers, out, r]),
    unscaled (PEFT's scale is applied by the writer). Gathers ZeRO-3 partitions (all ranks must call it)."""
    import deepspeed

    named = [(n, p) for n, p in engine.module.named_parameters() if ".lora_" in n]
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            values = {n: p.detach().float().cpu().clone() for n, p in named}
    else:
        values = {n: p.detach().float().cpu().clone() for n, p in named}
    found = {}
    for name, value in values.items():
        match = LIVE_KEY.search(name)
        if match:
            found[(match.group(2), int(match.group(1)), match.group(3))] = value
    out = {}
    for module in modules:
        layers = range(shapes.num_layers)
        a = torch.stack([found[(module, layer, "A")] for layer in layers])
        b = torch.stack([found[(module, layer, "B")] for layer in layers])
        out[module] = (a[None], b[None])
    return out


def train_lora(cfg: BaselineRecipe, base, examples: Examples, *, steps: int, seed_key: str, rank: int, log=None):
    """Train one PEFT LoRA on `base` in a DeepSpeed engine; returns (engine, history). The caller extracts the
    weights (`lora_weights`), then calls `engine.destroy()` and `engine.module.unload()` to get `base` back."""
    from peft import get_peft_model

    b = cfg.baseline
    torch.manual_seed(_seed(b.seed, seed_key))  # the same LoRA init on every rank
    model = get_peft_model(base, peft_lora_config(cfg))
    engine, _, scheduler = build_engine(model, lora_engine_config(cfg, steps))
    torch.manual_seed(_seed(b.seed, f"{seed_key}:noise:{rank}"))
    device = next(p for p in engine.module.parameters() if p.requires_grad).device
    history, started = [], time.perf_counter()

    def batch(step: int, micro: int) -> dict[str, torch.Tensor]:
        return examples.batch(random.Random(f"{b.seed}:{seed_key}:{rank}:{step}:{micro}"), b.batch_size, device)

    def loss_of(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        embeddings = engine.module.get_input_embeddings()(batch["input_ids"])
        embeddings = neftune(embeddings, batch["attention_mask"], cfg.optim.neftune_alpha)
        logits = engine(inputs_embeds=embeddings, attention_mask=batch["attention_mask"]).logits
        return response_loss(logits, batch["labels"], cfg.optim.label_smoothing), {}

    def record(step: int, window) -> None:
        row = {"step": step, "loss": window.mean_sums()["loss"] / window.steps, "lr": float(scheduler.get_last_lr()[0]),
               "seconds": time.perf_counter() - started}
        history.append(row)
        if log is not None:
            log(row)

    run_steps(engine, keyed_batches(batch, 0, cfg.optim.grad_accum), loss_of, start=0, stop=steps,
              grad_accum=cfg.optim.grad_accum, log_every=b.log_every, log=record, device=device)
    return engine, history


def render_lora(cfg: TrainConfig, weights: LoraWeights, shapes: BaseShapes, *, adapter_id: str, description: str,
                extra_meta: dict, dtype: str) -> adapters.AdapterFiles:
    """The adapter folder of a trained LoRA, in the contract (scale folded into B, lora_alpha = r)."""
    return adapters.render_adapter(
        weights, 0, shapes=shapes, rank=cfg.hypernet.rank, scale=cfg.hypernet.scale, description=description,
        checkpoint_sha256="", encoder="", adapter_id=adapter_id, dtype=dtype,
        extra_meta={"lora_alpha_trained": cfg.hypernet.lora_alpha, "use_rslora_trained": cfg.hypernet.use_rslora,
                    **extra_meta},
    )


def _seed(seed: int, key: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


# ---------------------------------------------------------------------------------------------- oracle jobs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def oracle_job(config: dict, jobs: list[dict]) -> list[dict]:
    """One Ray task: trains the LoRAs of `jobs` one after another in a single-process DeepSpeed engine."""
    cfg = from_dict(BaselineRecipe, config["recipe"])
    set_cpu_accelerator_env(cfg.run.use_gpu)
    import deepspeed
    import torch.distributed as dist

    torch.set_num_threads(max(1, int(cfg.baseline.cpus_per_job)))
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        os.environ[key] = value
    deepspeed.init_distributed(dist_backend=cfg.run.backend, auto_mpi_discovery=False)
    device = torch.device("cuda", 0) if cfg.run.use_gpu else torch.device("cpu")
    shapes = BaseShapes.from_dict(config["shapes"])
    out, results, base = config["out"], [], None
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = open_tokenizer(config["tokenizer"], scratch)
        for job in jobs:
            target = storage.join(out, "oracle", job["task"])
            if adapters.is_complete(target):
                results.append({"task": job["task"], "uri": target, "skipped": True})
                continue
            started = time.time()
            examples = Examples(job["rows"], tokenizer, cfg.data.max_prompt_tokens, cfg.data.max_response_tokens)
            if base is None:
                base = build_base_model(cfg.model, compute_dtype(cfg), device)
            steps = cfg.baseline.max_steps
            engine, history = train_lora(cfg, base, examples, steps=steps, seed_key=f"oracle:{job['task']}", rank=0)
            weights = lora_weights(engine, shapes, list(cfg.hypernet.target_modules))
            stage3 = engine.zero_optimization_stage() == 3
            engine.destroy()
            base = None if stage3 else engine.module.unload()  # ZeRO-3 partitioned the base: build it afresh
            del engine
            _write_log(storage.join(out, "logs", "oracle", f"{job['task']}.jsonl"), history)
            adapters.write_adapter(target, render_lora(
                cfg, weights, shapes, adapter_id=job["task"], description=job["descriptions"][0],
                dtype=cfg.baseline.dtype,
                extra_meta={"kind": "oracle", "task": job["task"], "descriptions": job["descriptions"],
                            "examples": len(examples), "steps": steps, "first_loss": history[0]["loss"],
                            "final_loss": history[-1]["loss"]},
            ))
            results.append({"task": job["task"], "uri": target, "steps": steps, "first_loss": history[0]["loss"],
                            "final_loss": history[-1]["loss"], "seconds": time.time() - started})
    dist.destroy_process_group()
    return results


def _write_log(uri: str, rows: list[dict]) -> None:
    storage.write_text(uri, "".join(json.dumps(r) + "\n" for r in rows))


def run_oracle(cfg: BaselineRecipe, out: str, todo, descriptions: dict[str, list[str]], shapes: BaseShapes,
               tokenizer: str, on_lora: Callable[[dict], None] | None = None) -> dict[str, dict]:
    """Fan the oracle LoRAs of `todo` out over Ray tasks; returns task -> result, passing each to `on_lora`
    as its job finishes."""
    import ray

    b = cfg.baseline
    done = {}
    config = {"recipe": to_dict(cfg), "out": out, "shapes": shapes.to_dict(), "tokenizer": tokenizer}
    config_ref = ray.put(config)
    remote = ray.remote(
        num_cpus=b.cpus_per_job, num_gpus=1 if cfg.run.use_gpu else 0, max_calls=1, max_retries=b.max_retries,
    )(oracle_job).options(name="t2l-oracle-lora")
    chunks = [todo[i:i + b.tasks_per_job] for i in range(0, len(todo), b.tasks_per_job)]
    pending = [remote.remote(config_ref, [{"task": t.name, "rows": task_rows(t, b.max_examples_per_task, b.seed),
                                            "descriptions": descriptions[t.name]}
                                          for t in chunk]) for chunk in chunks]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for result in ray.get(ready[0]):
            done[result["task"]] = result
            if on_lora is not None and not result.get("skipped"):
                on_lora(result)
    return done


# ---------------------------------------------------------------------------------------------- multitask


def multitask_loop_per_worker(config: dict) -> None:
    """Ray Train worker: one LoRA over every training task's examples, DeepSpeed across the workers."""
    cfg = from_dict(BaselineRecipe, config["recipe"])
    rank, world, device = ray_train_worker(cfg.run.use_gpu)
    import ray
    import ray.train

    shapes = BaseShapes.from_dict(config["shapes"])
    out = config["out"]
    rows = ray.get(config["rows"])
    steps = cfg.baseline.multitask_steps or cfg.baseline.max_steps
    log = None
    if rank == 0:
        log_uri, logged = storage.join(out, "logs", "multitask.jsonl"), []

        def log(row):
            logged.append(row)
            _write_log(log_uri, logged)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = open_tokenizer(config["tokenizer"], scratch)
        examples = Examples(rows[rank::world], tokenizer, cfg.data.max_prompt_tokens, cfg.data.max_response_tokens)
    base = build_base_model(cfg.model, compute_dtype(cfg), device)
    engine, history = train_lora(cfg, base, examples, steps=steps, seed_key="multitask", rank=rank, log=log)
    weights = lora_weights(engine, shapes, list(cfg.hypernet.target_modules))
    if rank == 0:
        tasks = sorted({r["task"] for r in rows})
        adapters.write_adapter(storage.join(out, "multitask"), render_lora(
            cfg, weights, shapes, adapter_id="multitask", description=config["description"], dtype=cfg.baseline.dtype,
            extra_meta={"kind": "multitask", "tasks": tasks, "examples": len(rows), "steps": steps,
                        "first_loss": history[0]["loss"], "final_loss": history[-1]["loss"]},
        ))
    ray.train.report({"step": steps, "loss": history[-1]["loss"]})
    engine.destroy()


def run_multitask(cfg: BaselineRecipe, out: str, tasks, shapes: BaseShapes, tokenizer: str) -> dict:
    import ray

    from t2l_ray.train.common import make_trainer
    from t2l_ray.train.failures import fit

    b = cfg.baseline
    rows = [row for task in tasks for row in task_rows(task, b.max_examples_per_task, b.seed)]
    steps = b.multitask_steps or b.max_steps
    started = time.time()
    run = storage.join(out, "_ray", f"multitask-{time.strftime('%Y%m%d-%H%M%S')}")  # fresh: never resumes old runs
    trainer = make_trainer(cfg, multitask_loop_per_worker, {
        "recipe": to_dict(cfg), "out": out, "shapes": shapes.to_dict(), "tokenizer": tokenizer, "rows": ray.put(rows),
        "description": f"Multi-task LoRA over {len(tasks)} training tasks.",
    }, run)
    fit(trainer)
    meta = json.loads(storage.read_text(storage.join(out, "multitask", adapters.META_FILE)))
    return {"task": "multitask", "uri": storage.join(out, "multitask"), "steps": steps, "first_loss": meta["first_loss"],
            "final_loss": meta["final_loss"], "seconds": time.time() - started}


# ---------------------------------------------------------------------------------------------- driver


def default_output_dir(cfg: BaselineRecipe) -> str:
    return cfg.baseline.output_dir or storage.join(cfg.run.output_dir, "baselines")


def run_baselines(cfg: BaselineRecipe, on_plan: Callable[[dict], None] | None = None,
                  on_lora: Callable[[dict], None] | None = None) -> str:
    """Train the baselines of `baseline.mode`; returns the output folder URI.

    `on_plan` gets `{"tasks", "instances", "skipped", "oracle" (LoRAs to train), "oracle_written" (already
    there), "multitask" (0 or 1)}` once the data is ready;
    `on_lora` each finished LoRA's result (`task`, `uri`, `steps`, `first_loss`, `final_loss`, `seconds`;
    `task` is "multitask" for the multi-task LoRA)."""
    from t2l_ray.data.prepare import prepare_tokenizer, select_tasks
    from t2l_ray.raycluster import ensure_ray

    cfg.check()
    b = cfg.baseline
    ensure_ray()
    out = default_output_dir(cfg)
    storage.makedirs(out)
    summary_uri = storage.join(out, "summary.json")
    summary = json.loads(storage.read_text(summary_uri)) if storage.exists(summary_uri) else {}
    with tempfile.TemporaryDirectory() as scratch:
        tasks, skipped, descriptions = select_tasks(cfg, scratch)
        tokenizer_dir, vocab_size = prepare_tokenizer(cfg, tasks, out, scratch)
        tokenizer = storage.join(out, "tokenizer") if cfg.model.tokenizer == "train" else tokenizer_dir
        cfg.model.config_overrides = tokenizer_overrides(cfg.model, vocab_size)
        shapes = run_shapes(cfg.model, cfg.hypernet.target_modules, compute_dtype(cfg), tokenizer_dir,
                            storage.join(out, "base"))  # LoRAs on a random base name its saved copy
        todo = [t for t in tasks if not adapters.is_complete(storage.join(out, "oracle", t.name))] \
            if b.mode in ("oracle", "both") else []  # re-runs skip the oracle LoRAs already written
        if on_plan is not None:
            on_plan({"tasks": len(tasks), "instances": sum(len(t.instances) for t in tasks), "skipped": len(skipped),
                     "oracle": len(todo), "oracle_written": len(tasks) - len(todo) if b.mode != "multitask" else 0,
                     "multitask": int(b.mode in ("multitask", "both"))})
        if todo:
            summary["oracle"] = {**summary.get("oracle", {}), **{
                task: result for task, result in run_oracle(cfg, out, todo, descriptions, shapes, tokenizer, on_lora).items()
                if not result.get("skipped")}}
            storage.write_text(summary_uri, json.dumps(summary, indent=2))
        if b.mode in ("multitask", "both"):
            summary["multitask"] = run_multitask(cfg, out, tasks, shapes, tokenizer)
            storage.write_text(summary_uri, json.dumps(summary, indent=2))
            if on_lora is not None:
                on_lora(summary["multitask"])
    return out


__all__ = ["BaselineConfig", "BaselineRecipe", "run_baselines", "oracle_job", "multitask_loop_per_worker"]
