"""Settings of the adapter endpoint: `ServeConfig` (YAML, `--set`, or build_app args) and what a running
replica may change in place (`RECONFIGURABLE`, from a Serve `user_config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Optional

from t2l_ray.config import NAME_OR_PATH, ConfigError, apply_overrides, doc, from_dict, load_config, to_dict


@dataclass
class ServeConfig:
    """Settings of the adapter endpoint (YAML via --config, `--set key=value`, or build_app args)."""

    name: str = doc("Serve application name.", "t2l")
    route_prefix: str = doc("URL prefix the application answers under.", "/")
    min_replicas: int = doc("Fewest replicas (0 lets an autoscaled app scale to zero).", 1)
    max_replicas: int = doc("Most replicas; above min_replicas turns autoscaling on.", 1)
    initial_replicas: Optional[int] = doc("Replicas at start when autoscaling (default: min_replicas).", None)
    target_ongoing_requests: float = doc("Autoscaling target: ongoing requests per replica.", 16.0)
    max_ongoing_requests: int = doc("Requests one replica works on at once; must be >= max_batch_size (2x lets a "
                                    "full batch gather while one runs).", 64)
    max_queued_requests: int = doc("Requests queued per caller before 503s (-1: no limit).", -1)
    num_cpus: float = doc("CPUs reserved per replica.", 1.0)
    num_gpus: float = doc("GPUs per replica (0: CPU; fractions share a GPU). The hypernet and encoder use it.", 0.0)
    resources: dict[str, float] = doc("Custom Ray resources per replica, e.g. {serve_gpu: 1}.", default_factory=dict)
    env_vars: dict[str, str] = doc("Environment variables for replicas (runtime_env), e.g. storage endpoints. "
                                   "Visible in the dashboard: prefer node environment for secrets.", default_factory=dict)
    max_batch_size: int = doc("Most descriptions in one batched hypernet forward (across requests; 1: no batching).", 32)
    batch_wait_timeout_s: float = doc("How long the oldest waiting description waits for its batch to fill when the "
                                      "hypernet is idle (under load a batch takes what waited during the last one).", 0.01)
    max_chars: int = doc("Longest description accepted, in characters.", 4000)
    max_descriptions: int = doc("Most descriptions in one request.", 64)
    max_inline_descriptions: int = doc("Most descriptions in one `return: inline` request (0: inline off).", 8)
    max_body_bytes: int = doc("Largest request body accepted, in bytes.", 1_048_576)
    dtype: Literal["bfloat16", "float32", "float16"] = doc("Dtype of the generated LoRA weights.", "bfloat16")
    # The OpenAI-compatible chat routes (serve/chat_*.py), on only with a base model.
    base_model: str = doc("Base model (folder, URI or hub name) the chat routes answer with; empty: no chat routes.", "",
                          path=NAME_OR_PATH)
    base_name: str = doc("The base's name in `model` and /v1/models (no ':'); empty: the hub name, or the "
                         "folder's name.", "")
    chat_replicas: int = doc("ChatModel replicas, each holding one copy of the base.", 1)
    chat_num_cpus: float = doc("CPUs per ChatModel replica (its torch threads).", 1.0)
    chat_num_gpus: float = doc("GPUs per ChatModel replica (0: CPU).", 0.0)
    chat_max_ongoing_requests: int = doc("Requests one ChatModel replica takes at once (they generate one at a "
                                         "time; more queue there, the rest wait for another replica).", 8)
    chat_dtype: Literal["auto", "float32", "bfloat16", "float16"] = doc(
        "Base dtype on ChatModel replicas; auto: bfloat16 on a GPU, float32 on CPU.", "auto")
    max_adapters_per_replica: int = doc("Adapters kept loaded per ChatModel replica (Serve multiplexing, LRU).", 8)
    default_max_tokens: int = doc("Tokens generated when a request gives no max_tokens.", 64)
    max_tokens_limit: int = doc("Cap on max_tokens: larger requests are cut to it (finish_reason 'length').", 512)
    chat_timeout_s: float = doc("Per-request limit on queueing plus generation (504 after it).", 60.0)
    max_models_listed: int = doc("Most adapter ids GET /v1/models lists.", 1000)

    def check(self) -> None:
        for name in ("max_replicas", "max_ongoing_requests", "max_batch_size", "max_chars", "max_descriptions",
                     "max_body_bytes", "chat_replicas", "chat_max_ongoing_requests", "max_adapters_per_replica",
                     "default_max_tokens", "max_tokens_limit", "max_models_listed"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("min_replicas", "max_inline_descriptions", "num_cpus", "num_gpus", "batch_wait_timeout_s",
                     "chat_num_cpus", "chat_num_gpus"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.min_replicas > self.max_replicas:
            raise ConfigError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ConfigError(f"initial_replicas ({self.initial_replicas}) must lie in [min_replicas, max_replicas]")
        if self.target_ongoing_requests <= 0:
            raise ConfigError(f"target_ongoing_requests must be > 0, not {self.target_ongoing_requests}")
        if self.max_queued_requests != -1 and self.max_queued_requests < 1:
            raise ConfigError(f"max_queued_requests must be -1 (no limit) or >= 1, not {self.max_queued_requests}")
        if self.max_ongoing_requests < self.max_batch_size:
            # Serve caps a batch at the requests a replica accepts at once.
            raise ConfigError(f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
                              f"({self.max_batch_size}), or batches never fill")
        if not self.route_prefix.startswith("/"):
            raise ConfigError(f"route_prefix must start with '/', not {self.route_prefix!r}")
        if ":" in self.base_name:
            raise ConfigError(f"base_name must not contain ':' (requests name adapters as BASE:ID), not {self.base_name!r}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError(f"default_max_tokens ({self.default_max_tokens}) is above max_tokens_limit "
                              f"({self.max_tokens_limit})")
        if self.chat_timeout_s <= 0:
            raise ConfigError(f"chat_timeout_s must be > 0, not {self.chat_timeout_s}")

    def deployment_options(self) -> dict[str, Any]:
        """Options for `AdapterService.options(...)`: replicas or autoscaling, resources, queue limits."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": self._actor_options(self.num_cpus, self.num_gpus, self.resources),
        }
        if self.max_replicas > self.min_replicas:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "initial_replicas": self.initial_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = self.max_replicas
        return options

    def chat_deployment_options(self) -> dict[str, Any]:
        """Options for `ChatModel.options(...)`: a fixed number of replicas, each with the base loaded."""
        return {
            "num_replicas": self.chat_replicas,
            "max_ongoing_requests": self.chat_max_ongoing_requests,
            "ray_actor_options": self._actor_options(self.chat_num_cpus, self.chat_num_gpus, {}),
        }

    def _actor_options(self, num_cpus: float, num_gpus: float, resources: dict[str, float]) -> dict[str, Any]:
        actor: dict[str, Any] = {"num_cpus": num_cpus}
        if num_gpus:
            actor["num_gpus"] = num_gpus
        if resources:
            actor["resources"] = dict(resources)
        if self.env_vars:
            actor["runtime_env"] = {"env_vars": {k: str(v) for k, v in self.env_vars.items()}}
        return actor


# Settings a running replica can take from a Serve `user_config` (`serve deploy` updates them in place).
RECONFIGURABLE = ("max_batch_size", "batch_wait_timeout_s", "max_chars", "max_descriptions",
                  "max_inline_descriptions", "max_body_bytes", "default_max_tokens", "max_tokens_limit",
                  "chat_timeout_s", "max_models_listed")


def config_from_args(base: Any, values: dict[str, Any]) -> ServeConfig:
    """A ServeConfig from a base (None, a YAML path, a mapping or a ServeConfig) and build_app arg values.

    String values (`serve run ... max_replicas=4`) are read as YAML scalars, like `--set`; others are used as given.
    """
    if base is None:
        config = ServeConfig()
    elif isinstance(base, ServeConfig):
        config = base
    elif isinstance(base, str):
        config = load_config(ServeConfig, base)
    elif isinstance(base, dict):
        config = from_dict(ServeConfig, base, "build_app args: config")
    else:
        raise ConfigError(f"build_app args: config must be a YAML path or a mapping, not {type(base).__name__}")
    names = [f.name for f in dataclasses.fields(ServeConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"build_app args: unknown key(s) {unknown}; valid: checkpoint, out, config, api_token, {names}")
    data = to_dict(config)
    data.update({k: v for k, v in values.items() if not isinstance(v, str)})
    data = apply_overrides(data, [f"{k}={v}" for k, v in values.items() if isinstance(v, str)])
    config = from_dict(ServeConfig, data, "build_app args")
    config.check()
    return config
