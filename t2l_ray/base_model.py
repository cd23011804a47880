"""The frozen base model, built one way for training, evaluation and the chat deployment.

A base is named by a model config: `ModelConfig` here (training's `model` section) or `eval.config.EvalModelConfig`,
which both have `name_or_path`, `init`, `config_overrides`, `tokenizer` and `seed`:
- `init: pretrained` loads the weights (`from_pretrained`);
- `init: random` builds the config (a preset, folder or hub name, `config_overrides` applied by rebuilding it, so
  derived fields stay consistent) with random weights right after `torch.manual_seed(seed)`, so every process
  that builds it (each training worker, the driver saving `RUN/base`, eval actors) holds the very same weights.
Either way in the dtype asked for, frozen (no parameter requires grad), in eval mode.

A random base's vocabulary follows its tokenizer (`tokenizer_overrides`). Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from t2l_ray import storage
from t2l_ray.config import NAME_OR_PATH, doc

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    """The frozen base model."""

    name_or_path: str = doc("Preset, local folder or hub name of the base causal LM.", "mistralai/Mistral-7B-Instruct-v0.2",
                            path=NAME_OR_PATH)
    init: Literal["pretrained", "random"] = doc(
        "pretrained: load the weights; random: build from the config with random weights (tests, CPU demo).", "pretrained"
    )
    config_overrides: dict[str, Any] = doc(
        "Config fields to override (e.g. a tiny hidden_size for the demo). With init=random and a tokenizer named, "
        "vocab_size follows it: a trained one ('train') sets it, another is the default.", default_factory=dict)
    tokenizer: str = doc("Tokenizer folder or hub name; empty = the base model's own; 'train' = a BPE trained on the data.", "",
                         path=NAME_OR_PATH, names=("train",))
    seed: int = doc("Seed for random init.", 0)


def base_config(model):
    """The base's transformers config, `model.config_overrides` applied by rebuilding it."""
    from t2l_ray.shapes import config_from_dict, load_base_config

    config = load_base_config(model.name_or_path)
    if not model.config_overrides:
        return config
    return config_from_dict({**config.to_dict(), **model.config_overrides, "_name_or_path": model.name_or_path})


def target_shapes(model, target_modules):
    """The LoRA target shapes of the base (overrides applied), named as servers know it (`model.name_or_path`)."""
    from t2l_ray.shapes import base_shapes

    return dataclasses.replace(base_shapes(base_config(model), target_modules), base_model=model.name_or_path)


def tokenizer_overrides(model, vocab_size: int) -> dict:
    """`model.config_overrides` for a base used with a tokenizer of `vocab_size` tokens.

    A random base's embedding must fit its tokenizer: a BPE trained for the run (`tokenizer: train`) sets
    `vocab_size`; another named tokenizer sets it unless the overrides name one. The base's own tokenizer
    (`tokenizer: ""`) and pretrained weights change nothing.
    """
    overrides = dict(model.config_overrides)
    if model.init != "random" or not model.tokenizer:
        return overrides
    if model.tokenizer == "train":
        return {**overrides, "vocab_size": vocab_size}
    return {"vocab_size": vocab_size, **overrides}


def build_base_model(model, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu"):
    """The frozen base LM on `device`: pretrained weights, or seeded random ones from its config."""
    from transformers import AutoModelForCausalLM

    from t2l_ray.lora import freeze

    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if model.init == "random":
        config = base_config(model)
        torch.manual_seed(model.seed)
        base = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        base = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=dtype)
    return freeze(base).to(device).eval()


def save_base(model, dtype: str | torch.dtype, tokenizer_dir: str, uri: str) -> str:
    """Write the base (config, weights, and the tokenizer at `tokenizer_dir`) to `uri` as one model folder.

    Training saves a random base as `RUN/base`: adapters then name a base that exists, not the preset it was
    shrunk from (whose real weights they would load into silently and wrongly), and it can be served
    (`t2l-ray serve --base-model RUN/base`) and checked against (`validate-adapter --base-model`). The weights
    are those every worker builds from the same config, seed and dtype. Returns `uri`.
    """
    from t2l_ray.data.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        build_base_model(model, dtype).save_pretrained(folder)
        load_tokenizer(tokenizer_dir).save_pretrained(folder)
        files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
    storage.write_folder(uri, files, commit_file="config.json")
    return uri


def run_shapes(model, target_modules, dtype: str | torch.dtype, tokenizer_dir: str, base_uri: str):
    """The target shapes a run's adapters are written with: a random base is saved at `base_uri` (see
    `save_base`) and named there; a pretrained base keeps its name."""
    shapes = target_shapes(model, target_modules)
    if model.init != "random":
        return shapes
    return dataclasses.replace(shapes, base_model=save_base(model, dtype, tokenizer_dir, base_uri))
