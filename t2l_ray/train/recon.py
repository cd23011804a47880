"""Reconstruction training: teach the hypernet to reproduce a library of existing LoRAs from their descriptions.

The library (`reconstruction.library`, a path or URI) holds one PEFT LoRA folder per task:
`{library}/{task}/adapter_config.json` + `adapter_model.safetensors` (+ `t2l_meta.json`). Any PEFT LoRA
folder works, whatever its `lora_alpha` and `use_rslora`: each is turned into targets in the hypernet's
layout, A [layers, r, in] and B [layers, out, r], with the folder's own scale folded into B, so that
`target delta-W = B_folded @ A = (lora_alpha / r, or / sqrt(r) with rsLoRA) * B @ A` exactly as PEFT applies
it. `t2l-ray train-lora` writes such a library (`{out}/oracle/`).

Descriptions per task come from `data.descriptions` when it names the task, else from the folder's
`t2l_meta.json` (`descriptions`, a list, or `description`). They are embedded once on the driver (cached in
`{run}/embeddings/`); every worker loads the (small) library itself, and each step samples
`data.tasks_per_batch` distinct tasks and one description of each, seeded by (run seed, rank, step), so a
resumed run sees the very batches it would have seen. The loss is `objectives.reconstruction_loss`: L1 on
delta-W (default) or on A and B (`reconstruction.target=ab`, which needs the library's rank to equal the
hypernet's). No base model is loaded: reconstruction never runs the LM.

The run folder follows `common.py`: `config.yaml`, `metrics.jsonl` (step, loss, lr, grad_norm, samples_per_s,
and delta_w_l1 / delta_w_rel measured without dropout over the first `EVAL_TASKS` library tasks at every log
step; the same scalars in `tensorboard/`), Ray Train checkpoints, and `hypernet/`, which `generate` and the
factory use.
"""

from __future__ import annotations

import io
import json
import random
import tempfile
import time
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_safetensors

from t2l_ray import storage
from t2l_ray.adapters import CONFIG_FILE, META_FILE, PEFT_KEY, WEIGHTS_FILE, peft_scale
from t2l_ray.config import from_dict
from t2l_ray.hypernet import LoraWeights
from t2l_ray.shapes import BaseShapes
from t2l_ray.train.config import TrainConfig

class LibraryError(ValueError):
    """A LoRA library that cannot be reconstructed; the message names the folder and the problem."""


@dataclass
class LibraryEntry:
    """One library LoRA: its PEFT config and meta (tensors are loaded separately, on the workers)."""

    task: str
    uri: str
    config: dict
    meta: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def scale(self) -> float:
        """The factor PEFT applies to B @ A for this folder."""
        return peft_scale(self.config)

    def meta_descriptions(self) -> list[str]:
        listed = self.meta.get("descriptions")
        if isinstance(listed, list) and listed and all(isinstance(t, str) and t.strip() for t in listed):
            return list(listed)
        text = self.meta.get("description")
        return [text] if isinstance(text, str) and text.strip() else []


def scan_library(uri: str) -> dict[str, LibraryEntry]:
    """Task -> entry for every complete LoRA folder under `uri` (folders without `adapter_config.json`,
    e.g. half-written ones, are skipped). Refuses LoRA flavours whose delta-W is not `scale * B @ A`."""
    entries = {}
    for name in storage.list_dir(uri):
        folder = storage.join(uri, name)
        if name.startswith((".", "_")) or not storage.exists(storage.join(folder, CONFIG_FILE)):
            continue
        try:
            config = json.loads(storage.read_text(storage.join(folder, CONFIG_FILE)))
        except json.JSONDecodeError as error:
            raise LibraryError(f"{folder}/{CONFIG_FILE}: not valid JSON ({error})") from None
        problems = []
        if config.get("peft_type", "LORA") != "LORA":
            problems.append(f"peft_type is {config.get('peft_type')!r}, not LORA")
        if config.get("use_dora"):
            problems.append("use_dora is true (DoRA's delta-W is not B @ A)")
        if config.get("fan_in_fan_out"):
            problems.append("fan_in_fan_out is true (Conv1D layouts are not supported)")
        if config.get("rank_pattern") or config.get("alpha_pattern"):
            problems.append("rank_pattern/alpha_pattern are set (per-module ranks or alphas are not supported)")
        if not isinstance(config.get("r"), int) or config["r"] <= 0:
            problems.append(f"r is {config.get('r')!r}")
        if problems:
            raise LibraryError(f"{folder}: " + "; ".join(problems))
        meta = {}
        if storage.exists(storage.join(folder, META_FILE)):
            meta = json.loads(storage.read_text(storage.join(folder, META_FILE)))
        entries[name] = LibraryEntry(name, folder, config, meta if isinstance(meta, dict) else {})
    if not entries:
        raise LibraryError(f"no LoRA folders ({{task}}/{CONFIG_FILE}) in {uri}")
    return entries


def load_targets(entry: LibraryEntry, shapes: BaseShapes, target_modules: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (A [layers, r, in], B [layers, out, r]) in float32, the folder's PEFT scale folded into B.

    Every layer of every target module must be present with the base model's shapes."""
    tensors = load_safetensors(storage.read_bytes(storage.join(entry.uri, WEIGHTS_FILE)))
    found: dict[tuple[str, int, str], torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = PEFT_KEY.search(key)
        if match and match.group(2) in target_modules:
            found[(match.group(2), int(match.group(1)), match.group(3))] = tensor.float()
    out, scale, rank = {}, entry.scale, entry.rank
    for name in target_modules:
        module = shapes.module(name)
        a_layers, b_layers = [], []
        for layer in range(shapes.num_layers):
            a, b = found.get((name, layer, "A")), found.get((name, layer, "B"))
            if a is None or b is None:
                raise LibraryError(f"{entry.uri}: no lora_A/lora_B for layer {layer} {name}")
            if tuple(a.shape) != (rank, module.in_features) or tuple(b.shape) != (module.out_features, rank):
                raise LibraryError(
                    f"{entry.uri}: layer {layer} {name} has A {list(a.shape)}, B {list(b.shape)}; the base model "
                    f"{shapes.base_model} needs A [{rank}, {module.in_features}], B [{module.out_features}, {rank}]"
                )
            a_layers.append(a)
            b_layers.append(b * scale)
        out[name] = (torch.stack(a_layers), torch.stack(b_layers))
    return out


def select_library(cfg: TrainConfig, entries: dict[str, LibraryEntry]) -> dict[str, LibraryEntry]:
    """The library tasks to train on: `data.task_list` if set, minus `data.exclude` and `data.heldout_tasks`."""
    from t2l_ray.data.sni import read_task_names

    names = sorted(entries)
    if cfg.data.task_list:
        with tempfile.TemporaryDirectory() as scratch:
            wanted = read_task_names(storage.local_copy(cfg.data.task_list, scratch))
        missing = [n for n in wanted if n not in entries]
        if missing:
            raise LibraryError(f"tasks {missing[:5]} of {cfg.data.task_list} have no LoRA in {cfg.reconstruction.library}")
        names = wanted
    dropped = set(cfg.data.exclude) | set(cfg.data.heldout_tasks)
    chosen = {n: entries[n] for n in names if n not in dropped}
    if not chosen:
        raise LibraryError(f"no library task left to train on in {cfg.reconstruction.library}")
    return chosen


def library_descriptions(cfg: TrainConfig, entries: dict[str, LibraryEntry]) -> dict[str, list[str]]:
    """Task -> training descriptions: `data.descriptions` first, else the folder's meta; at most
    `data.descriptions_per_task`, sampled with the run seed."""
    from t2l_ray.data.descriptions import load_descriptions

    mapping = {}
    if cfg.data.descriptions:
        with tempfile.TemporaryDirectory() as scratch:
            mapping = load_descriptions(storage.local_copy(cfg.data.descriptions, scratch)).train
    rng = random.Random(cfg.run.seed)
    out, missing = {}, []
    for task, entry in sorted(entries.items()):
        texts = list(mapping.get(task) or entry.meta_descriptions())
        if not texts:
            missing.append(task)
            continue
        out[task] = texts if len(texts) <= cfg.data.descriptions_per_task else rng.sample(texts, cfg.data.descriptions_per_task)
    if missing:
        raise LibraryError(
            f"no descriptions for {len(missing)} library tasks, e.g. {missing[:3]}: name them in data.descriptions "
            f"or give each folder a {META_FILE} with 'description'"
        )
    return out


def check_library(cfg: TrainConfig, entries: dict[str, LibraryEntry], shapes: BaseShapes) -> None:
    """Cheap driver-side checks (configs only) so a bad library fails before any worker starts."""
    problems = []
    for task, entry in sorted(entries.items()):
        listed = entry.config.get("target_modules") or []
        missing = [m for m in cfg.hypernet.target_modules if m not in listed] if isinstance(listed, list) else []
        if missing:  # (a regex string of targets is checked when the tensors load)
            problems.append(f"{task}: target_modules {entry.config.get('target_modules')} lack {missing}")
        if cfg.reconstruction.target == "ab" and entry.rank != cfg.hypernet.rank:
            problems.append(f"{task}: rank {entry.rank} != hypernet.rank {cfg.hypernet.rank} (reconstruction.target=ab "
                            "compares A and B directly; use target=delta_w for other ranks)")
    if problems:
        raise LibraryError(f"library {cfg.reconstruction.library} does not fit this recipe:\n  " + "\n  ".join(problems[:10]))


# ---------------------------------------------------------------------------------------------- worker


EVAL_TASKS = 64
"""Library tasks (the first ones by name) whose delta-W error is measured at every log step."""


def delta_w_sums(weights: LoraWeights, targets: LoraWeights, scale: float) -> tuple[list[float], float, float]:
    """Per module the mean |generated - target| delta-W entry, then sum |generated - target| and sum |target|."""
    l1, diff, total = [], 0.0, 0.0
    with torch.no_grad():
        for name, (a, b) in weights.items():
            ta, tb = targets[name]
            generated = scale * torch.einsum("nlor,nlri->nloi", b.float(), a.float())
            wanted = torch.einsum("nlor,nlri->nloi", tb.float(), ta.float())
            error = (generated - wanted).abs()
            l1.append(float(error.mean()))
            diff += float(error.sum())
            total += float(wanted.abs().sum())
    return l1, diff, total


def evaluate(engine, tasks: list[str], embeddings, targets, modules: list[str], per_batch: int, scale: float,
             device, dtype) -> tuple[float, float]:
    """(delta-W L1, relative delta-W error) over `tasks`, each from its first description, no dropout.

    The relative error is sum |generated - target| / sum |target|: 1.0 for the all-zero adapters the hypernet
    starts from, 0 for perfect ones. Every rank runs the same forwards (ZeRO-3 gathers are collective)."""
    was_training = engine.module.training
    engine.eval()
    l1, diff, total = [], 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(tasks), per_batch):
            chunk = tasks[start:start + per_batch]
            generated = engine(torch.stack([embeddings[t][0] for t in chunk]).to(device=device, dtype=dtype))
            wanted = {m: (torch.stack([targets[t][m][0] for t in chunk]).to(device),
                          torch.stack([targets[t][m][1] for t in chunk]).to(device)) for m in modules}
            chunk_l1, chunk_diff, chunk_total = delta_w_sums(generated, wanted, scale)
            l1 += [v * len(chunk) for v in chunk_l1]
            diff, total = diff + chunk_diff, total + chunk_total
    if was_training:
        engine.train()
    return sum(l1) / (len(tasks) * len(modules)), diff / max(total, 1e-30)


def sample_batch(tasks: list[str], per_batch: int, seed: int, rank: int, step: int, micro: int) -> tuple[list[str], random.Random]:
    """The tasks of one micro-batch: distinct, a pure function of (seed, rank, step, micro)."""
    rng = random.Random(f"{seed}:{rank}:{step}:{micro}")
    return rng.sample(tasks, min(per_batch, len(tasks))), rng


def load_embeddings(uri: str, encoder: str, descriptions: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Task -> [descriptions, dim] from the run's embedding cache (parquet keyed by `encoders.text_key`)."""
    import pyarrow.parquet as pq

    from t2l_ray.encoders import text_key

    table = pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pydict()
    by_key = dict(zip(table["key"], table["embedding"]))
    return {task: torch.tensor([by_key[text_key(encoder, t)] for t in texts], dtype=torch.float32)
            for task, texts in descriptions.items()}


def recon_loop_per_worker(config: dict) -> None:
    """Ray Train worker: the hypernet in a DeepSpeed engine, L1 against library LoRAs, checkpoints as SFT."""
    cfg = from_dict(TrainConfig, config["train"])
    from t2l_ray.train.engine import set_cpu_accelerator_env

    set_cpu_accelerator_env(cfg.run.use_gpu)
    import ray.train
    import ray.train.torch

    from t2l_ray.hypernet import TextToLoRA
    from t2l_ray.train.common import (LogWindow, MetricsLog, device_memory, export_hypernet, record_worker,
                                      restore_checkpoint, save_and_report)
    from t2l_ray.train.engine import build_engine
    from t2l_ray.train.loop import TensorBoard
    from t2l_ray.train.objectives import reconstruction_loss

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    run_dir, encoder = config["run_dir"], config["encoder"]
    device = ray.train.torch.get_device()
    dtype = torch.bfloat16 if cfg.deepspeed.bf16 else torch.float32
    shapes = BaseShapes.from_dict(config["shapes"])
    modules = list(cfg.hypernet.target_modules)

    descriptions: dict[str, list[str]] = config["descriptions"]
    entries = {task: LibraryEntry(task, **entry) for task, entry in config["library"].items()}
    targets = {task: load_targets(entries[task], shapes, modules) for task in sorted(descriptions)}  # on the CPU
    embeddings = load_embeddings(config["embeddings_uri"], encoder, descriptions)
    tasks = sorted(descriptions)

    torch.manual_seed(cfg.run.seed)  # the same hypernet init on every worker
    hypernet = TextToLoRA(cfg.hypernet, shapes, config["encoder_dim"])
    engine, _, scheduler = build_engine(hypernet, cfg)
    scale = cfg.hypernet.scale
    state = restore_checkpoint(engine, rank, {"step": 0}, cfg.run.seed)
    metrics = MetricsLog(run_dir, state["step"]) if rank == 0 else None
    board = TensorBoard(run_dir) if rank == 0 else None
    record_worker(run_dir, rank)

    def export() -> None:
        export_hypernet(engine, cfg, hypernet, encoder, run_dir, rank, state["step"])
        if board:
            board.sync()

    def save(final: bool) -> None:
        save_and_report(engine, state, rank, final=final, before_report=export)

    eval_tasks = tasks[:EVAL_TASKS]
    window = LogWindow()
    while state["step"] < cfg.optim.max_steps:
        step = state["step"]
        for micro in range(cfg.optim.grad_accum):
            chosen, rng = sample_batch(tasks, cfg.data.tasks_per_batch, cfg.run.seed, rank, step, micro)
            embedding = torch.stack([embeddings[t][rng.randrange(len(embeddings[t]))] for t in chosen])
            wanted = {m: (torch.stack([targets[t][m][0] for t in chosen]).to(device),
                          torch.stack([targets[t][m][1] for t in chosen]).to(device)) for m in modules}
            engine.train()
            generated = engine(embedding.to(device=device, dtype=dtype))
            generated = {m: (a.float(), b.float()) for m, (a, b) in generated.items()}
            loss = reconstruction_loss(generated, wanted, scale, cfg.reconstruction.target)
            engine.backward(loss)
            engine.step()
            window.add(loss=loss, samples=len(chosen))
        state["step"] += 1
        step = state["step"]
        if step == 1 or step % cfg.run.log_every == 0 or step == cfg.optim.max_steps:
            sums, elapsed = window.mean_sums(), window.seconds
            l1, rel = evaluate(engine, eval_tasks, embeddings, targets, modules, cfg.data.tasks_per_batch, scale,
                               device, dtype)
            grad_norm = engine.get_global_grad_norm()
            row = {
                "step": step, "loss": sums["loss"] / window.steps, "delta_w_l1": l1, "delta_w_rel": rel,
                "lr": float(scheduler.get_last_lr()[0]),
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "samples_per_s": sums["samples"] * world / elapsed, "time": time.time(), **device_memory(device),
            }
            if metrics:
                metrics.log(row)
                board.log(row)
            window = LogWindow()
        if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.max_steps:
            save(final=step == cfg.optim.max_steps)
    engine.destroy()


# ---------------------------------------------------------------------------------------------- driver


def run_reconstruction(cfg: TrainConfig, on_data=None, on_row=None) -> str:
    """Train the hypernet to reconstruct `reconstruction.library`; returns the run folder URI.

    Runs on the current Ray cluster (RAY_ADDRESS, or the job's), else a private local one; the same
    `run.output_dir` again resumes from its latest checkpoint. `on_data` gets `{"library": URI, "loras": N,
    "ranks": [...], "descriptions": N, "embeddings": EmbeddingStats}`, `on_row` each metrics row."""
    from t2l_ray.data.pipeline import cache_uri, embed_descriptions
    from t2l_ray.raycluster import ensure_ray
    from t2l_ray.base_model import target_shapes
    from t2l_ray.train.common import fit_reporting, make_trainer, write_run_config

    cfg.check()
    if cfg.objective != "reconstruction":
        raise ValueError(f"run_reconstruction needs objective=reconstruction, not {cfg.objective!r}")
    ensure_ray()
    run_dir = cfg.run.output_dir
    write_run_config(cfg, run_dir)
    shapes = target_shapes(cfg.model, cfg.hypernet.target_modules)
    entries = select_library(cfg, scan_library(cfg.reconstruction.library))
    check_library(cfg, entries, shapes)
    descriptions = library_descriptions(cfg, entries)
    texts = sorted({t for values in descriptions.values() for t in values})
    embeddings_uri = cache_uri(run_dir, cfg.encoder)
    table, stats = embed_descriptions(texts, cfg.encoder, embeddings_uri)
    if on_data is not None:
        on_data({"library": cfg.reconstruction.library, "loras": len(entries), "descriptions": len(texts),
                 "ranks": sorted({e.rank for e in entries.values()}), "embeddings": stats})
    trainer = make_trainer(cfg, recon_loop_per_worker, {
        "train": _plain(cfg), "run_dir": run_dir, "shapes": shapes.to_dict(), "encoder": cfg.encoder,
        "encoder_dim": len(table["embedding"][0]), "embeddings_uri": embeddings_uri, "descriptions": descriptions,
        "library": {t: {"uri": e.uri, "config": e.config, "meta": e.meta} for t, e in entries.items()},
    }, run_dir)
    fit_reporting(trainer, run_dir, on_row)
    return run_dir


def _plain(cfg: TrainConfig) -> dict:
    from t2l_ray.config import to_dict

    return to_dict(cfg)
