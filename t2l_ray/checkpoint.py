"""Self-describing hypernet checkpoints: `hypernet.safetensors` + `hypernet.json`.

The JSON holds the variant and hyperparameters, the base model's name and LoRA shapes, and the encoder's
name and width: enough to rebuild the hypernet with no base-model weights. It is written last (the commit
marker), and it records the weights' sha256, which every generated adapter carries as its provenance.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from t2l_ray import __version__, storage
from t2l_ray.config import from_dict
from t2l_ray.hypernet import HypernetConfig, TextToLoRA
from t2l_ray.shapes import BaseShapes

FORMAT = "t2l-ray-hypernet/1"
WEIGHTS_FILE = "hypernet.safetensors"
CONFIG_FILE = "hypernet.json"


@dataclass
class HypernetCheckpoint:
    model: TextToLoRA
    encoder: str
    sha256: str
    uri: str | None = None


def save_checkpoint(model: TextToLoRA, encoder: str, uri: str, extra: dict | None = None) -> str:
    """Write the checkpoint folder; returns the weights' sha256."""
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    weights = save_safetensors(state, metadata={"format": FORMAT})
    sha = hashlib.sha256(weights).hexdigest()
    config = {
        "format": FORMAT,
        **model.dict_config(),
        "encoder": encoder,
        "weights_sha256": sha,
        "t2l_ray_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    storage.write_folder(uri, {WEIGHTS_FILE: weights, CONFIG_FILE: json.dumps(config, indent=2).encode()}, CONFIG_FILE)
    return sha


def read_checkpoint_config(uri: str) -> dict:
    try:
        config = json.loads(storage.read_bytes(storage.join(uri, CONFIG_FILE)))
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri} is not a hypernet checkpoint: {CONFIG_FILE} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{uri}: {CONFIG_FILE} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{uri}: unknown checkpoint format {found!r} (expected {FORMAT})")
    return config


def _check_sha(uri: str, config: dict, sha: str) -> None:
    if sha != config.get("weights_sha256"):
        raise ValueError(f"{uri}: {WEIGHTS_FILE} does not match the sha256 recorded in {CONFIG_FILE} (corrupt or partial copy)")


def verify_checkpoint(uri: str) -> dict:
    """The checkpoint's config, once its weights' sha256 matches the recorded one (read in chunks, nothing
    built): drivers call this before starting workers, so a damaged copy fails at once with one line."""
    config = read_checkpoint_config(uri)
    try:
        sha = storage.sha256(storage.join(uri, WEIGHTS_FILE))
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri} is not a complete hypernet checkpoint: {WEIGHTS_FILE} is missing") from None
    _check_sha(uri, config, sha)
    return config


def build_from_config(config: dict) -> TextToLoRA:
    hyper = from_dict(HypernetConfig, config["hypernet"], "hypernet.json:hypernet")
    return TextToLoRA(hyper, BaseShapes.from_dict(config["shapes"]), int(config["encoder_dim"]))


def load_checkpoint(uri: str, device: str = "cpu") -> HypernetCheckpoint:
    config = read_checkpoint_config(uri)
    weights = storage.read_bytes(storage.join(uri, WEIGHTS_FILE))
    sha = hashlib.sha256(weights).hexdigest()
    _check_sha(uri, config, sha)
    with torch.device("meta"):  # no random init of ~55M parameters that the weights replace at once
        model = build_from_config(config)
    model.load_state_dict(load_safetensors(weights), assign=True)
    return HypernetCheckpoint(model.to(device).eval(), config["encoder"], sha, uri)


def known_encoder_dim(encoder: str) -> int:
    """Width of an encoder; well-known ones without loading them."""
    from t2l_ray import encoders

    known = {encoders.OFFLINE_DEFAULT: 384, encoders.CLUSTER_DEFAULT.lower(): 1024}
    if encoder.lower() in known:
        return known[encoder.lower()]
    return encoders.load_encoder(encoder).dim


def init_checkpoint(hypernet: HypernetConfig, shapes: BaseShapes, encoder: str, uri: str, seed: int = 0) -> str:
    """An untrained checkpoint (delta-W = 0 for every description): for demos, tests and the factory."""
    torch.manual_seed(seed)
    model = TextToLoRA(hypernet, shapes, known_encoder_dim(encoder))
    return save_checkpoint(model, encoder, uri)
