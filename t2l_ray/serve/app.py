"""The Serve application builder: `t2l_ray.serve:build_app` for `serve run`, Serve configs, the RayService and
`t2l-ray serve`. It resolves the settings once, on the driver, and binds the deployment with them."""

from __future__ import annotations

import os

from ray import serve

from t2l_ray import storage
from t2l_ray.config import ConfigError, to_dict
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
    checkpoint, out = str(args.pop("checkpoint")), str(args.pop("out"))
    storage.resolve(out)  # an unsupported scheme fails here, not in every replica
    token = args.pop("api_token", None) or os.environ.get(TOKEN_ENV) or None
    config = config_from_args(args.pop("config", None), args)
    return AdapterService.options(**config.deployment_options()).bind(
        checkpoint, out, to_dict(config), token_digest(str(token)) if token else None
    )
