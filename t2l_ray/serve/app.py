"""The Serve application builder: `t2l_ray.serve:build_app` for `serve run`, Serve configs, the RayService and
`t2l-ray serve`. It resolves the settings once, on the driver, and binds the deployments with them: AdapterService,
and ChatModel behind it when a base model is served (the chat routes)."""

from __future__ import annotations

import os
from pathlib import Path

from ray import serve

from t2l_ray import storage
from t2l_ray.config import ConfigError, local_path, resolve_paths, to_dict
from t2l_ray.serve.chat_front import default_base_name
from t2l_ray.serve.chat_model import ChatModel
from t2l_ray.serve.config import config_from_args
from t2l_ray.serve.deployment import AdapterService
from t2l_ray.serve.gate import TOKEN_ENV, token_digest


def build_app(args: dict) -> serve.Application:
    """The application for `serve run t2l_ray.serve:build_app checkpoint=URI out=URI`, Serve configs and the CLI.

    args: `checkpoint` and `out` (required); optional `config` (a ServeConfig YAML path, mapping or object),
    `api_token` (else this process's T2L_API_TOKEN; only its sha256 reaches the replicas) and any ServeConfig
    field (`max_replicas=4`, `env_vars: {...}`), which win over `config`.
    """
    args = dict(args or {})
    missing = [key for key in ("checkpoint", "out") if not args.get(key)]
    if missing:
        raise ConfigError(f"build_app needs args {missing}: serve run t2l_ray.serve:build_app checkpoint=URI out=URI")
    # replicas run in other folders: local paths cross to them absolute (t2l_ray/config.py: local_path); answers
    # name folders by `out` as given
    checkpoint, shown_out = local_path(str(args.pop("checkpoint"))), str(args.pop("out"))
    out = local_path(shown_out)
    storage.resolve(out)  # an unsupported scheme fails here, not in every replica
    token = args.pop("api_token", None) or os.environ.get(TOKEN_ENV) or None
    config = resolve_paths(config_from_args(args.pop("config", None), args))
    chat = None
    if config.base_model:
        config.base_name = config.base_name or default_base_name(config.base_model)
        config.check()
        check_base_fits(checkpoint, config.base_model)
        chat = ChatModel.options(**config.chat_deployment_options()).bind(config.base_model, out, to_dict(config))
    return AdapterService.options(**config.deployment_options()).bind(
        checkpoint, out, to_dict(config), token_digest(str(token)) if token else None, chat, shown_out
    )


def check_base_fits(checkpoint: str, base_model: str) -> None:
    """Refuse a local base whose LoRA shapes differ from those the checkpoint makes adapters for (every
    `t2l:` adapter would be refused); a hub name or URI is checked per adapter on the replicas."""
    from t2l_ray.checkpoint import read_checkpoint_config
    from t2l_ray.shapes import BaseShapes, base_shapes

    if "://" in base_model or not Path(base_model).is_dir():
        return
    made = BaseShapes.from_dict(read_checkpoint_config(checkpoint)["shapes"])
    served = base_shapes(base_model, [m.name for m in made.modules])
    if (served.num_layers, served.modules) != (made.num_layers, made.modules):
        raise ConfigError(f"the base model {base_model} ({served.num_layers} layers, {list(served.modules)}) does "
                          f"not fit the adapters {checkpoint} makes ({made.base_model}: {made.num_layers} layers, "
                          f"{list(made.modules)})")
