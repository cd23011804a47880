"""How far apart LoRA adapters are: the delta-W each applies to the base model, compared pairwise.

An adapter changes each target weight by delta-W = scale * B @ A. Two adapters are compared over every
(layer, module) at once, as if all their delta-Ws were one long vector: the norm of each, and for each pair the
relative distance |dW1 - dW2| / mean(|dW1|, |dW2|) (0: the same change; 2: opposite changes of equal size)
and the cosine similarity. Nothing is materialised at full size: with rank r, <B1 A1, B2 A2> =
trace((B1^T B2) (A2 A1^T)) takes r x r products, so Mistral-7B adapters compare in milliseconds.

Works on any PEFT LoRA folders with the same targets and shapes (the scale is read from each
`adapter_config.json`), so trained, generated and oracle LoRAs can be compared with each other.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors

from t2l_ray import adapters, storage


@dataclass
class Comparison:
    names: list[str]
    norms: list[float]
    distance: list[list[float]]  # relative |dW_i - dW_j| / mean(|dW_i|, |dW_j|)
    cosine: list[list[float]]

    def table(self) -> str:
        width = max(len(n) for n in [*self.names, "adapter"])
        cells = max(8, *(len(n) for n in self.names))
        lines = [f"{'adapter':<{width}}  {'|delta-W|':>10}  " + "  ".join(f"{n:>{cells}}" for n in self.names)]
        for name, norm, row in zip(self.names, self.norms, self.distance):
            lines.append(f"{name:<{width}}  {norm:>10.4g}  " + "  ".join(f"{d:>{cells}.3f}" for d in row))
        lines.append("relative distance |dW1 - dW2| / mean(|dW1|, |dW2|) over every layer and module "
                     "(0: the same adapter, 2: opposite ones)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"adapters": self.names, "norms": self.norms, "distance": self.distance, "cosine": self.cosine}


def adapter_folders(paths: list[str]) -> list[str]:
    """Each path as given when it is an adapter folder, else its complete adapter sub-folders (a factory's
    output: `_manifest/`, `_logs/` and half-written folders are left out)."""
    folders = []
    for path in paths:
        if adapters.is_complete(path):
            folders.append(path)
            continue
        children = [storage.join(path, name) for name in storage.list_dir(path) if not name.startswith(("_", "."))]
        found = [child for child in children if adapters.is_complete(child)]
        if not found:
            raise ValueError(f"{path} is neither an adapter folder nor a folder of adapters "
                             f"({adapters.CONFIG_FILE} not found)")
        folders += found
    return folders


def load_factors(folder: str) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
    """(module, layer) -> (A [r, in], scale * B [out, r]) in float64."""
    config = json.loads(storage.read_text(storage.join(folder, adapters.CONFIG_FILE)))
    tensors = load_safetensors(storage.read_bytes(storage.join(folder, adapters.WEIGHTS_FILE)))
    scale, parts = adapters.peft_scale(config), {}
    for key, tensor in tensors.items():
        match = adapters.PEFT_KEY.search(key)
        if match:
            parts.setdefault((match.group(2), int(match.group(1))), {})[match.group(3)] = tensor.double()
    factors = {}
    for where, pair in parts.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"{folder}: layer {where[1]} {where[0]} has lora_{'A' if 'A' in pair else 'B'} only")
        factors[where] = (pair["A"], pair["B"] * scale)
    if not factors:
        raise ValueError(f"{folder}: no LoRA weights in {adapters.WEIGHTS_FILE}")
    return factors


def inner(x: dict, y: dict) -> float:
    """<dW_x, dW_y> summed over every (module, layer), from the low-rank factors."""
    return float(sum(torch.trace((bx.T @ y[where][1]) @ (y[where][0] @ ax.T)) for where, (ax, bx) in x.items()))


def compare(folders: list[str], names: list[str] | None = None) -> Comparison:
    """Pairwise distances of the adapters in `folders` (see the module docstring); they must share targets
    and shapes."""
    loaded = [load_factors(folder) for folder in folders]
    for folder, factors in zip(folders[1:], loaded[1:]):
        shapes = {w: (a.shape[1], b.shape[0]) for w, (a, b) in factors.items()}
        first = {w: (a.shape[1], b.shape[0]) for w, (a, b) in loaded[0].items()}
        if shapes != first:
            raise ValueError(f"{folder} targets other modules or shapes than {folders[0]}: they cannot be compared")
    gram = [[inner(x, y) for y in loaded] for x in loaded]
    norms = [math.sqrt(max(gram[i][i], 0.0)) for i in range(len(loaded))]
    distance, cosine = [], []
    for i in range(len(loaded)):
        distance.append([])
        cosine.append([])
        for j in range(len(loaded)):
            mean = (norms[i] + norms[j]) / 2
            apart = math.sqrt(max(gram[i][i] + gram[j][j] - 2 * gram[i][j], 0.0))
            distance[i].append(apart / mean if mean > 0 else 0.0)
            cosine[i].append(gram[i][j] / (norms[i] * norms[j]) if norms[i] * norms[j] > 0 else 0.0)
    return Comparison(names or [f.rstrip("/").rsplit("/", 1)[-1] for f in folders], norms, distance, cosine)
