"""Reconstruction training: teach the hypernet to reproduce a library of existing LoRAs from their descriptions.

The library (`reconstruction.library`, a path or URI; `data/library.py`) holds one PEFT LoRA folder per
task. Its descriptions are embedded once on the driver (cached in `{run}/embeddings/`); every worker loads
the (small) library itself, and each micro-batch samples `data.tasks_per_batch` distinct tasks and one
description of each, seeded by (run seed, rank, step, micro-batch), so a resumed run sees the very batches
it would have seen. The loss is `objectives.reconstruction_loss`: L1 on delta-W (default) or on A and B
(`reconstruction.target=ab`, which needs the library's rank to equal the hypernet's). No base model is
loaded: reconstruction never runs the LM. On a random base (`model.init: random`) the hypernet, so every
adapter it makes, names the base the library's LoRAs name (train-lora's saved `base/`), not the preset.

The run folder is the one every hypernet run writes (`common.py`); its metrics rows add `delta_w_l1` and
`delta_w_rel`, measured without dropout over the first `EVAL_TASKS` library tasks at every log step.
"""

from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Callable, Generator

import torch

from t2l_ray import storage
from t2l_ray.base_model import target_shapes
from t2l_ray.data.library import LibraryEntry, check_library, library_base, library_descriptions, load_targets, scan_library, select_library
from t2l_ray.hypernet import LoraWeights
from t2l_ray.shapes import BaseShapes
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.engine import compute_dtype
from t2l_ray.train.loop import Plan
from t2l_ray.train.objectives import reconstruction_loss
from t2l_ray.train.steps import keyed_batches


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


def stacked(targets: dict[str, LoraWeights], tasks: list[str], modules: list[str], device) -> LoraWeights:
    """The targets of `tasks` as one batch on `device`: module -> (A [n, layers, r, in], B [n, layers, out, r])."""
    return {m: (torch.stack([targets[t][m][0] for t in tasks]).to(device),
                torch.stack([targets[t][m][1] for t in tasks]).to(device)) for m in modules}


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
            chunk_l1, chunk_diff, chunk_total = delta_w_sums(generated, stacked(targets, chunk, modules, device), scale)
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


class Reconstruction:
    """The `reconstruction` objective (see the module docstring)."""

    fresh_state: dict = {}

    @staticmethod
    def prepare(cfg: TrainConfig, run_dir: str, scratch: str, on_data: Callable[[dict], None]) -> Plan:
        from t2l_ray.data.pipeline import cache_uri, embed_descriptions

        shapes = target_shapes(cfg.model, cfg.hypernet.target_modules)
        entries = select_library(cfg, scan_library(cfg.reconstruction.library), scratch)
        check_library(cfg, entries, shapes)
        if cfg.model.init == "random" and (base := library_base(entries)):  # the base the targets were made for
            shapes = dataclasses.replace(shapes, base_model=base)
        descriptions = library_descriptions(cfg, entries, scratch)
        texts = sorted({t for values in descriptions.values() for t in values})
        embeddings_uri = cache_uri(run_dir, cfg.encoder)
        table, stats = embed_descriptions(texts, cfg.encoder, embeddings_uri)
        on_data({"library": cfg.reconstruction.library, "loras": len(entries), "descriptions": len(texts),
                 "ranks": sorted({e.rank for e in entries.values()}), "embeddings": stats})
        return Plan(shapes, len(table["embedding"][0]), loop_config={
            "embeddings_uri": embeddings_uri, "descriptions": descriptions,
            "library": {t: {"uri": e.uri, "config": e.config, "meta": e.meta} for t, e in entries.items()},
        })

    def __init__(self, cfg: TrainConfig, config: dict, rank: int, device: torch.device):
        self.cfg, self.rank, self.device, self.dtype = cfg, rank, device, compute_dtype(cfg)
        shapes = BaseShapes.from_dict(config["shapes"])
        self.modules = list(cfg.hypernet.target_modules)
        descriptions: dict[str, list[str]] = config["descriptions"]
        entries = {task: LibraryEntry(task, **entry) for task, entry in config["library"].items()}
        self.tasks = sorted(descriptions)
        self.targets = {task: load_targets(entries[task], shapes, self.modules) for task in self.tasks}  # on the CPU
        self.embeddings = load_embeddings(config["embeddings_uri"], config["encoder"], descriptions)

    def micro_batches(self, state: dict) -> Generator[dict, None, None]:
        def batch(step: int, micro: int) -> dict:
            chosen, rng = sample_batch(self.tasks, self.cfg.data.tasks_per_batch, self.cfg.run.seed, self.rank, step, micro)
            embedding = torch.stack([self.embeddings[t][rng.randrange(len(self.embeddings[t]))] for t in chosen])
            return {"tasks": chosen, "embedding": embedding, "wanted": stacked(self.targets, chosen, self.modules, self.device)}

        return keyed_batches(batch, state["step"], self.cfg.optim.grad_accum)

    def loss(self, engine, batch: dict) -> tuple[torch.Tensor, dict]:
        generated = engine(batch["embedding"].to(device=self.device, dtype=self.dtype))
        generated = {m: (a.float(), b.float()) for m, (a, b) in generated.items()}
        loss = reconstruction_loss(generated, batch["wanted"], self.cfg.hypernet.scale, self.cfg.reconstruction.target)
        return loss, {"samples": len(batch["tasks"])}

    def log_values(self, engine, state: dict) -> dict:
        l1, rel = evaluate(engine, self.tasks[:EVAL_TASKS], self.embeddings, self.targets, self.modules,
                           self.cfg.data.tasks_per_batch, self.cfg.hypernet.scale, self.device, self.dtype)
        return {"delta_w_l1": l1, "delta_w_rel": rel}
