"""The adapter contract: what we hand to LoRA servers, how it is written, and how it is checked.

One folder per adapter:
- `adapter_model.safetensors`: keys `base_model.model.model.layers.{i}.self_attn.{q_proj|v_proj}.lora_{A|B}.weight`
  (no adapter name inside), A [r, in], B [out, r], contiguous, bf16 by default.
- `t2l_meta.json`: description, hypernet checkpoint hash, encoder, folded scale, creation time, version.
- `adapter_config.json`, written LAST (the commit marker): PEFT LoRA config with `lora_alpha = r` and
  `use_rslora: false`. T2L trains with rsLoRA scale alpha/sqrt(r); servers that ignore `use_rslora`
  (older vLLM, SGLang, S-LoRA) would apply it ~2.8x too weakly, so the training scale is folded into B in
  float32 before casting and every consumer applies scale 1.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors

from t2l_ray import __version__, storage
from t2l_ray.hypernet import LoraWeights
from t2l_ray.packing import DTYPES, AdapterLayout, pack, packed_bytes
from t2l_ray.shapes import BaseShapes, ModuleShape, base_shapes

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
META_FILE = "t2l_meta.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, META_FILE)
KEY_PATTERN = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)\.weight$")
PEFT_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_(A|B)(?:\.[\w-]+)?\.weight$")
"""Any PEFT LoRA's keys, with or without the adapter name (`lora_A.weight` as saved, `lora_A.default.weight` live)."""


def peft_scale(config: dict) -> float:
    """The factor PEFT applies to B @ A for a LoRA folder's `adapter_config.json` (1 for this project's adapters)."""
    rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    return alpha / (rank ** 0.5 if config.get("use_rslora") else rank)


def adapter_config(shapes: BaseShapes, rank: int, target_modules: list[str]) -> dict:
    """PEFT's LoRA config with the scale folded: lora_alpha = r and no rsLoRA, so scale = 1 everywhere."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": shapes.base_model,
        "r": rank,
        "lora_alpha": rank,
        "use_rslora": False,
        "use_dora": False,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(target_modules),
        "modules_to_save": None,
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def config_bytes(shapes: BaseShapes, rank: int, target_modules: list[str]) -> bytes:
    return json.dumps(adapter_config(shapes, rank, target_modules), indent=2).encode()


def meta_bytes(*, adapter_id: str | None, description: str, checkpoint_sha256: str, encoder: str, scale: float,
               dtype: str, extra_meta: dict | None = None) -> bytes:
    """`t2l_meta.json`: where the adapter came from (`extra_meta` adds keys, e.g. a factory line's metadata)."""
    meta = {
        "adapter_id": adapter_id,
        "description": description,
        "checkpoint_sha256": checkpoint_sha256,
        "encoder": encoder,
        "folded_scale": scale,
        "dtype": dtype,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "t2l_ray_version": __version__,
        **(extra_meta or {}),
    }
    return json.dumps(meta, indent=2).encode()


@dataclass
class AdapterFiles:
    """The bytes of one adapter folder, ready to be committed by `write_adapter`."""

    files: dict[str, bytes]

    @property
    def weights_bytes(self) -> int:
        return len(self.files[WEIGHTS_FILE])

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for b in self.files.values())


def render_adapter(
    weights: LoraWeights,
    index: int,
    *,
    shapes: BaseShapes,
    rank: int,
    scale: float,
    description: str,
    checkpoint_sha256: str,
    encoder: str,
    adapter_id: str | None = None,
    dtype: str = "bfloat16",
    extra_meta: dict | None = None,
) -> AdapterFiles:
    """Sample `index` of `weights` as an adapter folder, through the same packing as batched generation."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, not {dtype!r}")
    modules = [shapes.module(name) for name in weights]
    layout = AdapterLayout(modules, shapes.num_layers, rank, DTYPES[dtype])
    row = torch.empty(1, layout.numel, dtype=layout.dtype)
    pack({name: (a[index:index + 1].detach().cpu(), b[index:index + 1].detach().cpu()) for name, (a, b) in weights.items()},
         layout, scale, row)
    return AdapterFiles({
        WEIGHTS_FILE: layout.header + packed_bytes(row).tobytes(),
        META_FILE: meta_bytes(adapter_id=adapter_id, description=description, checkpoint_sha256=checkpoint_sha256,
                              encoder=encoder, scale=scale, dtype=dtype, extra_meta=extra_meta),
        CONFIG_FILE: config_bytes(shapes, rank, list(weights)),
    })


def write_adapter(uri: str, adapter: AdapterFiles | Mapping[str, storage.Data | Sequence[storage.Data]]) -> None:
    """Commit one adapter folder; the config goes last so no reader ever sees half an adapter. A file may be
    given as several buffers (the factory's weights: the layout's header and a row of its batch buffer)."""
    storage.write_folder(uri, adapter.files if isinstance(adapter, AdapterFiles) else adapter, commit_file=CONFIG_FILE)


def is_complete(uri: str) -> bool:
    """A folder is an adapter once its commit marker (the config) exists."""
    return storage.exists(storage.join(uri, CONFIG_FILE))


def list_adapters(out: str, limit: int) -> list[tuple[str, int]]:
    """(id, commit time in epoch seconds) of the complete adapters in a store, by id, at most `limit`.

    One recursive listing (a flat prefix listing on object stores), not a request per folder."""
    import pyarrow.fs as pafs

    from t2l_ray.request_rule import ID_PATTERN

    fs, root = storage.resolve(out)
    root = root.rstrip("/")
    found = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        folder, _, name = info.path[len(root) + 1:].partition("/")
        if name == CONFIG_FILE and ID_PATTERN.match(folder):
            found.append((folder, int(info.mtime.timestamp()) if info.mtime else 0))
    return sorted(found)[:limit]


SAME_ADAPTER = "exists"


def existing_adapter(folder: str, description: str, checkpoint_sha256: str, shown: str | None = None) -> str | None:
    """What a folder already holds: None (no complete adapter), SAME_ADAPTER (this description from this
    checkpoint, so nothing to do), or the reason it holds another adapter (which must never be overwritten),
    naming the folder as `shown` (default: `folder`)."""
    if not is_complete(folder):
        return None
    name = shown or folder
    try:
        meta = json.loads(storage.read_bytes(storage.join(folder, META_FILE)))
    except (FileNotFoundError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict):
        return f"{name} holds an adapter without a readable {META_FILE}"
    if meta.get("description") != description:
        return f"{name} already holds an adapter for a different description"
    if meta.get("checkpoint_sha256") != checkpoint_sha256:
        return f"{name} already holds an adapter from another checkpoint (sha256 {meta.get('checkpoint_sha256')})"
    return SAME_ADAPTER


# ---------------------------------------------------------------------------------------------- validation


@dataclass
class ValidationReport:
    uri: str
    errors: list[str] = field(default_factory=list)
    rank: int | None = None
    num_layers: int | None = None
    modules: dict[str, list[int]] = field(default_factory=dict)  # name -> [in, out]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"uri": self.uri, "valid": self.ok, "errors": self.errors, "rank": self.rank,
                "num_layers": self.num_layers, "modules": self.modules}


def _check_config(config: dict, errors: list[str], max_rank: int | None) -> None:
    expected = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "use_rslora": False, "use_dora": False,
                "bias": "none", "modules_to_save": None}
    for key, value in expected.items():
        if key not in config:
            errors.append(f"{CONFIG_FILE}: missing field {key!r}")
        elif config[key] != value:
            errors.append(f"{CONFIG_FILE}: {key} is {config[key]!r}, expected {value!r}")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        errors.append(f"{CONFIG_FILE}: r must be a positive integer, got {rank!r}")
    else:
        if config.get("lora_alpha") != rank:
            errors.append(f"{CONFIG_FILE}: lora_alpha is {config.get('lora_alpha')!r}; the folded scale needs lora_alpha = r = {rank}")
        if max_rank is not None and rank > max_rank:
            errors.append(f"{CONFIG_FILE}: rank {rank} exceeds --max-lora-rank {max_rank}")
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        errors.append(f"{CONFIG_FILE}: target_modules must be a non-empty list of names, got {targets!r}")
    if not isinstance(config.get("base_model_name_or_path"), str):
        errors.append(f"{CONFIG_FILE}: base_model_name_or_path must be a string")


def _check_tensors(tensors: dict[str, torch.Tensor], config: dict, expected: BaseShapes | None, report: ValidationReport) -> None:
    errors, rank = report.errors, config.get("r")
    targets = config.get("target_modules") or []
    seen: dict[tuple[int, str], dict[str, tuple]] = {}
    for key, tensor in tensors.items():
        match = KEY_PATTERN.match(key)
        if not match:
            errors.append(f"{WEIGHTS_FILE}: key {key!r} does not match base_model.model.model.layers.N.self_attn.MODULE.lora_(A|B).weight")
            continue
        layer, parent, module, which = int(match.group(1)), match.group(2), match.group(3), match.group(4)
        if module not in targets:
            errors.append(f"{WEIGHTS_FILE}: key {key!r} is for {module!r}, not in target_modules {targets}")
        elif parent != ModuleShape(module, 0, 0).parent:
            errors.append(f"{WEIGHTS_FILE}: key {key!r} puts {module} under {parent}; the base model has it under "
                          f"{ModuleShape(module, 0, 0).parent}")
        if not torch.isfinite(tensor.float()).all():
            errors.append(f"{WEIGHTS_FILE}: {key} has non-finite values (NaN or Inf)")
        if tensor.dim() != 2:
            errors.append(f"{WEIGHTS_FILE}: {key} has shape {list(tensor.shape)}, expected a matrix")
            continue
        seen.setdefault((layer, module), {})[which] = tuple(tensor.shape)

    layers = sorted({layer for layer, _ in seen})
    report.num_layers = (max(layers) + 1) if layers else 0
    report.rank = rank if isinstance(rank, int) else None
    for (layer, module), pair in sorted(seen.items()):
        if set(pair) != {"A", "B"}:
            errors.append(f"{WEIGHTS_FILE}: layer {layer} {module} has lora_{''.join(sorted(pair))} without its pair")
            continue
        (ar, a_in), (b_out, br) = pair["A"], pair["B"]
        if isinstance(rank, int) and (ar != rank or br != rank):
            errors.append(f"{WEIGHTS_FILE}: layer {layer} {module}: A {list(pair['A'])} and B {list(pair['B'])} do not have rank r={rank}")
        first = report.modules.setdefault(module, [a_in, b_out])
        if first != [a_in, b_out]:
            errors.append(f"{WEIGHTS_FILE}: layer {layer} {module} is {a_in}->{b_out}, other layers are {first[0]}->{first[1]}")
        if expected is not None:
            try:
                want = expected.module(module)
            except KeyError:
                continue
            if (a_in, b_out) != (want.in_features, want.out_features):
                errors.append(
                    f"{WEIGHTS_FILE}: layer {layer} {module}: A {list(pair['A'])}, B {list(pair['B'])} do not fit "
                    f"{expected.base_model} (A [{rank}, {want.in_features}], B [{want.out_features}, {rank}])"
                )
    if expected is not None:
        for layer in layers:
            if layer >= expected.num_layers:
                errors.append(f"{WEIGHTS_FILE}: layer {layer} does not exist in {expected.base_model} ({expected.num_layers} layers)")
        missing = [(layer, m) for layer in range(expected.num_layers) for m in targets if (layer, m) not in seen]
        if missing:
            errors.append(f"{WEIGHTS_FILE}: {len(missing)} (layer, module) pairs have no weights, e.g. {missing[:3]}")
    for module in targets:
        if module not in report.modules:
            errors.append(f"{WEIGHTS_FILE}: no weights for target module {module!r}")


def _check_peft_loads(folder_files: dict[str, bytes], report: ValidationReport) -> None:
    """Load the folder with PEFT onto a meta-device skeleton of the base model: no missing or unexpected keys."""
    from peft import LoraConfig, PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in folder_files.items():
            Path(tmp, name).write_bytes(data)
        config = LoraConfig.from_pretrained(tmp)
        with torch.device("meta"):
            skeleton = _skeleton(report.num_layers or 0, report.modules)
        model = PeftModel(skeleton, config, low_cpu_mem_usage=True)
        state = load_peft_weights(tmp, device="cpu")
        result = set_peft_model_state_dict(model, state, low_cpu_mem_usage=True)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if missing:
        report.errors.append(f"PEFT load: {len(missing)} missing LoRA keys, e.g. {missing[:2]}")
    if result.unexpected_keys:
        report.errors.append(f"PEFT load: unexpected keys, e.g. {list(result.unexpected_keys)[:2]}")


def _skeleton(num_layers: int, modules: dict[str, list[int]]):
    """The base model's module tree (model.layers.N.self_attn/mlp.*) with only the target Linears."""
    from torch import nn

    root, inner = nn.Module(), nn.Module()
    inner.layers = nn.ModuleList()
    for _ in range(num_layers):
        layer = nn.Module()
        for name, (in_features, out_features) in modules.items():
            parent_name = ModuleShape(name, in_features, out_features).parent
            if not hasattr(layer, parent_name):
                setattr(layer, parent_name, nn.Module())
            setattr(getattr(layer, parent_name), name, nn.Linear(in_features, out_features, bias=False))
        inner.layers.append(layer)
    root.model = inner
    return root


def validate_adapter(uri: str, max_rank: int | None = None, base_model: str | None = None) -> ValidationReport:
    """Check a folder against the contract; every problem is reported, not just the first."""
    report = ValidationReport(uri)
    for name in storage.list_dir(uri):
        if name not in REQUIRED_FILES:
            kind = "a temp file a killed write left behind" if storage.is_temp_name(name) else "not part of an adapter"
            report.errors.append(f"unexpected file {name} ({kind})")
    files: dict[str, bytes] = {}
    for name in REQUIRED_FILES:
        try:
            files[name] = storage.read_bytes(storage.join(uri, name))
        except FileNotFoundError:
            report.errors.append(f"missing file {name}")
    if CONFIG_FILE in files:
        try:
            config = json.loads(files[CONFIG_FILE])
        except json.JSONDecodeError as error:
            report.errors.append(f"{CONFIG_FILE}: not valid JSON ({error})")
            config = None
        if config is not None and not isinstance(config, dict):
            report.errors.append(f"{CONFIG_FILE}: must be a JSON object")
            config = None
        if config is not None:
            _check_config(config, report.errors, max_rank)
    else:
        config = None
    if META_FILE in files:
        try:
            if not isinstance(json.loads(files[META_FILE]), dict):
                report.errors.append(f"{META_FILE}: must be a JSON object")
        except json.JSONDecodeError as error:
            report.errors.append(f"{META_FILE}: not valid JSON ({error})")
    tensors = None
    if WEIGHTS_FILE in files:
        try:
            tensors = load_safetensors(files[WEIGHTS_FILE])
        except Exception as error:  # noqa: BLE001 - any parse failure is a contract violation
            report.errors.append(f"{WEIGHTS_FILE}: not a readable safetensors file ({error})")
    if tensors is not None and config is not None:
        expected = None
        if base_model is not None:
            expected = base_shapes(base_model, [m for m in config.get("target_modules") or [] if isinstance(m, str)])
        _check_tensors(tensors, config, expected, report)
        if report.ok:
            _check_peft_loads(files, report)
    return report
