"""A library of existing LoRAs to reconstruct (`reconstruction.library`): one PEFT LoRA folder per task.

`{library}/{task}/adapter_config.json` + `adapter_model.safetensors` (+ `t2l_meta.json`). Any PEFT LoRA folder
works, whatever its `lora_alpha` and `use_rslora`: each is turned into targets in the hypernet's layout,
A [layers, r, in] and B [layers, out, r], with the folder's own scale folded into B, so that
`target delta-W = B_folded @ A = (lora_alpha / r, or / sqrt(r) with rsLoRA) * B @ A` exactly as PEFT applies
it. `t2l-ray train-lora` writes such a library (`{out}/oracle/`).

Descriptions per task come from `data.descriptions` when it names the task, else from the folder's
`t2l_meta.json` (`descriptions`, a list, or `description`). The driver scans the library and checks it
against the recipe (configs only); each training worker loads the tensors itself (`load_targets`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_safetensors

from t2l_ray import storage
from t2l_ray.adapters import CONFIG_FILE, META_FILE, PEFT_KEY, WEIGHTS_FILE, peft_scale
from t2l_ray.data.descriptions import load_descriptions
from t2l_ray.data.sni import read_task_names
from t2l_ray.shapes import BaseShapes


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


def select_library(cfg, entries: dict[str, LibraryEntry], scratch: str) -> dict[str, LibraryEntry]:
    """The library tasks to train on: `data.task_list` if set (copied under `scratch` when remote), minus
    `data.exclude` and `data.heldout_tasks`."""
    names = sorted(entries)
    if cfg.data.task_list:
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


def library_descriptions(cfg, entries: dict[str, LibraryEntry], scratch: str) -> dict[str, list[str]]:
    """Task -> training descriptions: `data.descriptions` first, else the folder's meta; at most
    `data.descriptions_per_task`, sampled with the run seed."""
    mapping = {}
    if cfg.data.descriptions:
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


def check_library(cfg, entries: dict[str, LibraryEntry], shapes: BaseShapes) -> None:
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


def library_base(entries: dict[str, LibraryEntry]) -> str | None:
    """The base every LoRA of the library names (`base_model_name_or_path`), or None when they differ."""
    bases = {entry.config.get("base_model_name_or_path") for entry in entries.values()}
    return bases.pop() if len(bases) == 1 else None
