"""LoRA target shapes from a base model's config alone (never its weights).

A base model is named by a built-in preset (architecture numbers of real models, so shapes work offline),
a folder or `config.json` path, a transformers config object, or a hub name (needs a reachable hub).
Grouped-query attention is honoured: k_proj/v_proj produce `num_key_value_heads * head_dim` features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

# Preset file stem -> the hub name it describes. Either spelling selects the preset.
PRESETS = {
    "mistral-7b-instruct-v0.2": "mistralai/Mistral-7B-Instruct-v0.2",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "gemma-2-2b-it": "google/gemma-2-2b-it",
}

SUPPORTED_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}


@dataclass(frozen=True)
class ModuleShape:
    """One LoRA target: A is [rank, in_features], B is [out_features, rank]."""

    name: str
    in_features: int
    out_features: int

    @property
    def parent(self) -> str:
        return "self_attn" if self.name in _ATTENTION else "mlp"


@dataclass(frozen=True)
class BaseShapes:
    """Everything about a base model that the hypernet and the adapter writer need."""

    base_model: str
    model_type: str
    num_layers: int
    modules: tuple[ModuleShape, ...]

    def module(self, name: str) -> ModuleShape:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(f"{name} is not a target module here; targets: {[m.name for m in self.modules]}")

    def to_dict(self) -> dict:
        return {
            "base_model": self.base_model,
            "model_type": self.model_type,
            "num_layers": self.num_layers,
            "modules": [[m.name, m.in_features, m.out_features] for m in self.modules],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "BaseShapes":
        return cls(
            base_model=data["base_model"],
            model_type=data["model_type"],
            num_layers=int(data["num_layers"]),
            modules=tuple(ModuleShape(n, int(i), int(o)) for n, i, o in data["modules"]),
        )

    def adapter_params(self, rank: int) -> int:
        """Number of LoRA parameters in one adapter over all layers and modules."""
        return self.num_layers * sum(rank * (m.in_features + m.out_features) for m in self.modules)


def preset_names() -> list[str]:
    return sorted(PRESETS)


def _preset_key(name: str) -> str | None:
    lowered = name.lower()
    for key, hub_name in PRESETS.items():
        if lowered in (key, hub_name.lower()):
            return key
    return None


def load_base_config(name_or_path: str | Path | PretrainedConfig) -> PretrainedConfig:
    """A transformers config from a preset, a folder, a config.json, or (with a hub) a model name."""
    if isinstance(name_or_path, PretrainedConfig):
        return name_or_path
    text = str(name_or_path)
    preset = _preset_key(text)
    if preset is not None:
        data = json.loads(resources.files("t2l_ray.presets").joinpath(f"{preset}.json").read_text())
        return config_from_dict(data)
    path = Path(text)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a valid config.json ({error})") from None
        data.setdefault("_name_or_path", str(path.parent))
        return config_from_dict(data)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json")
        return config_from_dict(json.loads((path / "config.json").read_text()) | {"_name_or_path": str(path)})
    try:
        return AutoConfig.from_pretrained(text)
    except Exception as error:  # noqa: BLE001 - any hub/network failure becomes one clear message
        raise ValueError(
            f"cannot load a config for base model {text!r}: not a preset ({', '.join(preset_names())}), "
            f"not a local path, and the hub lookup failed ({type(error).__name__}: {error})"
        ) from None


def config_from_dict(data: dict) -> PretrainedConfig:
    data = dict(data)
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ValueError("config has no model_type")
    name = data.get("_name_or_path", "")
    config = AutoConfig.for_model(model_type, **data)
    config._name_or_path = name
    return config


def head_dim(config: PretrainedConfig) -> int:
    explicit = getattr(config, "head_dim", None)
    return int(explicit) if explicit else config.hidden_size // config.num_attention_heads


def module_shape(config: PretrainedConfig, name: str) -> ModuleShape:
    hidden = config.hidden_size
    dim = head_dim(config)
    q_width = config.num_attention_heads * dim
    kv_width = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * dim
    inter = getattr(config, "intermediate_size", None)
    table = {
        "q_proj": (hidden, q_width),
        "k_proj": (hidden, kv_width),
        "v_proj": (hidden, kv_width),
        "o_proj": (q_width, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    if name not in table:
        raise ValueError(f"unsupported target module {name!r}; supported: {list(SUPPORTED_MODULES)}")
    in_features, out_features = table[name]
    return ModuleShape(name, int(in_features), int(out_features))


def base_shapes(
    name_or_path: str | Path | PretrainedConfig, target_modules: tuple[str, ...] | list[str] = ("q_proj", "v_proj")
) -> BaseShapes:
    config = load_base_config(name_or_path)
    name = getattr(config, "_name_or_path", "") or (config.model_type if isinstance(name_or_path, PretrainedConfig) else str(name_or_path))
    preset = _preset_key(name)
    return BaseShapes(
        base_model=PRESETS[preset] if preset else name,
        model_type=config.model_type,
        num_layers=int(config.num_hidden_layers),
        modules=tuple(module_shape(config, m) for m in target_modules),
    )
