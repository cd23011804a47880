"""The adapter endpoint: a Ray Serve application that turns task descriptions into LoRA adapters over HTTP.

    serve run t2l_ray.serve:build_app checkpoint=URI out=URI [max_replicas=4 ...]   # or jobs/serve.yaml
    t2l-ray serve --checkpoint URI --out URI [--host 127.0.0.1] [--port 8000] [--config YAML] [--set k=v]

One deployment, `AdapterService`, with a FastAPI ingress:
- `POST /v1/adapters`  `{"description": ..., "id": optional}` or `{"items": [{"description", "id"?}, ...]}`,
  plus `"return": "uri"` (default: written to `{out}/{id}/`, ids and URIs returned) or `"inline"` (the
  files, base64, in the response; nothing written). Every description of every request waiting in the
  replica goes through one `@serve.batch` method, so concurrent requests share one encoder pass and one
  hypernet forward (`Generator.render`, the path `generate` and the factory use); each result reports
  the `batch_size` of the forward it came from.
- `GET /v1/adapters/{id}`  the adapter's `t2l_meta.json` and a summary of its `adapter_config.json`.
- `GET /v1/info`  checkpoint, encoder, shapes and the request limits.
- `GET /healthz`, and FastAPI's `/openapi.json` and `/docs` (these three need no token).

Requests are checked before any work: body bytes (413), JSON (400), the schema, the number and length of
descriptions and the id rule (422). When `T2L_API_TOKEN` is set, every `/v1/` route needs
`Authorization: Bearer <token>` (401 otherwise). The builder passes only the token's sha256 to replicas;
a replica without one reads `T2L_API_TOKEN` from its own environment (a KubeRay secret, or `env_vars`).
Failures inside a batch fail only the requests whose descriptions failed (the batch is retried one by one).

Ids follow the factory: a given id must match `[a-z0-9][a-z0-9_-]{0,127}`, else it is `t2l-` + a hash of
(description, checkpoint). A complete adapter already at `{out}/{id}/` from the same description and
checkpoint is returned as `exists` without generating it again; one from another description or checkpoint
is a 409 conflict, never overwritten. Per-id locks keep concurrent requests in one replica from writing
the same folder at once (replicas do not coordinate with each other).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from fastapi import APIRouter, Security
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator
from ray import serve
from starlette.datastructures import Headers

from t2l_ray import adapters, storage
from t2l_ray.config import ConfigError, apply_overrides, doc, from_dict, load_config, to_dict
from t2l_ray.generator import check_adapter_id, content_id

logger = logging.getLogger("ray.serve")

TOKEN_ENV = "T2L_API_TOKEN"
API_PREFIX = "/v1"


# ---------------------------------------------------------------------------------------------- config


@dataclass
class ServeConfig:
    """Settings of the adapter endpoint (YAML via --config, `--set key=value`, or build_app args)."""

    name: str = doc("Serve application name.", "t2l")
    route_prefix: str = doc("URL prefix the application answers under.", "/")
    min_replicas: int = doc("Fewest replicas (0 lets an autoscaled app scale to zero).", 1)
    max_replicas: int = doc("Most replicas; above min_replicas turns autoscaling on.", 1)
    initial_replicas: Optional[int] = doc("Replicas at start when autoscaling (default: min_replicas).", None)
    target_ongoing_requests: float = doc("Autoscaling target: ongoing requests per replica.", 16.0)
    max_ongoing_requests: int = doc("Requests one replica works on at once; must be >= max_batch_size.", 64)
    max_queued_requests: int = doc("Requests queued per caller before 503s (-1: no limit).", -1)
    num_cpus: float = doc("CPUs reserved per replica.", 1.0)
    num_gpus: float = doc("GPUs per replica (0: CPU; fractions share a GPU). The hypernet and encoder use it.", 0.0)
    resources: dict[str, float] = doc("Custom Ray resources per replica, e.g. {serve_gpu: 1}.", default_factory=dict)
    env_vars: dict[str, str] = doc("Environment variables for replicas (runtime_env), e.g. storage endpoints. "
                                   "Visible in the dashboard: prefer node environment for secrets.", default_factory=dict)
    max_batch_size: int = doc("Most descriptions in one batched hypernet forward (across requests).", 32)
    batch_wait_timeout_s: float = doc("How long a batch waits to fill before it runs.", 0.01)
    max_chars: int = doc("Longest description accepted, in characters.", 4000)
    max_descriptions: int = doc("Most descriptions in one request.", 64)
    max_inline_descriptions: int = doc("Most descriptions in one `return: inline` request (0: inline off).", 8)
    max_body_bytes: int = doc("Largest request body accepted, in bytes.", 1_048_576)
    dtype: Literal["bfloat16", "float32", "float16"] = doc("Dtype of the generated LoRA weights.", "bfloat16")

    def check(self) -> None:
        for name in ("max_replicas", "max_ongoing_requests", "max_batch_size", "max_chars", "max_descriptions",
                     "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("min_replicas", "max_inline_descriptions", "num_cpus", "num_gpus", "batch_wait_timeout_s"):
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

    def deployment_options(self) -> dict[str, Any]:
        """Options for `AdapterService.options(...)`: replicas or autoscaling, resources, queue limits."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor["num_gpus"] = self.num_gpus
        if self.resources:
            actor["resources"] = dict(self.resources)
        if self.env_vars:
            actor["runtime_env"] = {"env_vars": {k: str(v) for k, v in self.env_vars.items()}}
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": actor,
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


# Settings a running replica can take from a Serve `user_config` (`serve deploy` updates them in place).
RECONFIGURABLE = ("max_batch_size", "batch_wait_timeout_s", "max_chars", "max_descriptions",
                  "max_inline_descriptions", "max_body_bytes")


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


# ---------------------------------------------------------------------------------------------- API schema


class AdapterItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: StrictStr = Field(..., description="Plain-text task description (non-empty; length limit in /v1/info).")
    id: Optional[StrictStr] = Field(None, description="Adapter id matching [a-z0-9][a-z0-9_-]{0,127}; default: a content hash.")


class CreateAdaptersRequest(BaseModel):
    """One adapter (`description`, optional `id`) or many (`items`); `return` picks store or inline."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [
            {"description": "Classify the sentiment of product reviews as positive or negative.", "id": "sentiment"},
            {"items": [{"description": "Summarise news articles in one sentence."},
                       {"description": "Translate English questions into SQL.", "id": "text-to-sql"}]},
            {"description": "Answer trivia questions briefly.", "return": "inline"},
        ]},
    )

    description: Optional[StrictStr] = Field(None, description="One description (use `items` for several).")
    id: Optional[StrictStr] = Field(None, description="Id for the single `description`.")
    items: Optional[list[AdapterItem]] = Field(None, description="Several descriptions, each with an optional id.")
    return_: Literal["uri", "inline"] = Field(
        "uri", alias="return",
        description="`uri`: write each adapter to the store and return its URI; `inline`: return the files "
                    "(base64) and write nothing.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> "CreateAdaptersRequest":
        if (self.description is None) == (self.items is None):
            raise ValueError("give either 'description' (one adapter) or 'items' (a list of {description, id}), not both or neither")
        if self.items is not None and self.id is not None:
            raise ValueError("with 'items', put each 'id' inside its item")
        return self


class AdapterResult(BaseModel):
    id: str
    status: Literal["written", "exists", "inline"] = Field(
        ..., description="`written`: generated and committed now; `exists`: already in the store from the same "
                         "description and checkpoint (not regenerated); `inline`: returned in `files`, not written.")
    uri: Optional[str] = Field(None, description="The adapter folder (`written` and `exists`).")
    description: str
    weights_bytes: Optional[int] = Field(None, description="Size of adapter_model.safetensors (generated now).")
    sha256: Optional[str] = Field(None, description="sha256 of adapter_model.safetensors (generated now).")
    batch_size: Optional[int] = Field(None, description="Descriptions in the hypernet forward that made it.")
    files: Optional[dict[str, str]] = Field(None, description="`inline`: file name -> base64 bytes.")


class CreateAdaptersResponse(BaseModel):
    adapters: list[AdapterResult] = Field(..., description="One per requested description, in request order.")
    checkpoint_sha256: str


class AdapterInfo(BaseModel):
    id: str
    uri: str
    meta: dict[str, Any] = Field(..., description="t2l_meta.json: description, checkpoint, encoder, scale, dtype, time.")
    config: dict[str, Any] = Field(..., description="The main fields of adapter_config.json.")


class ServiceInfo(BaseModel):
    checkpoint: str
    checkpoint_sha256: str
    encoder: str
    base_model: str
    rank: int
    target_modules: list[str]
    device: str
    out: str
    limits: dict[str, int | float]
    stats: dict[str, int | float]


class Health(BaseModel):
    status: Literal["ok"]


class ErrorBody(BaseModel):
    detail: str
    errors: Optional[list[dict[str, Any]]] = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON or an invalid id in the path."},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token (when T2L_API_TOKEN is set)."},
    413: {"model": ErrorBody, "description": "Body larger than max_body_bytes."},
    422: {"model": ErrorBody, "description": "The body does not fit the schema or the limits."},
}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"detail": self.detail}
        if self.errors is not None:
            body["errors"] = self.errors
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# ---------------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Job:
    description: str
    adapter_id: str


@dataclass
class Outcome:
    files: adapters.AdapterFiles | None
    error: str | None
    batch_size: int


def render_isolated(generator, jobs: list[Job]) -> list[Outcome]:
    """One batched `generator.render` for all jobs; if it fails, each job alone, so one bad job fails alone."""
    try:
        rendered = generator.render([j.description for j in jobs], [j.adapter_id for j in jobs])
        return [Outcome(files, None, len(jobs)) for files in rendered]
    except Exception as error:  # noqa: BLE001 - reported per request, never raised into the batch loop
        if len(jobs) == 1:
            return [Outcome(None, f"{type(error).__name__}: {error}", 1)]
        logger.warning("batch of %d failed (%s: %s); retrying one by one", len(jobs), type(error).__name__, error)
    outcomes = []
    for job in jobs:
        try:
            (files,) = generator.render([job.description], [job.adapter_id])
            outcomes.append(Outcome(files, None, 1))
        except Exception as error:  # noqa: BLE001
            outcomes.append(Outcome(None, f"{type(error).__name__}: {error}", 1))
    return outcomes


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyedLocks:
    """asyncio locks by key, created on demand and dropped when unused; several keys are taken in sorted order."""

    def __init__(self):
        self._locks: dict[str, list] = {}  # key -> [lock, users]

    @contextlib.asynccontextmanager
    async def hold(self, keys: list[str]):
        keys = sorted(set(keys))
        entries = []
        for key in keys:
            entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
            entry[1] += 1
            entries.append((key, entry))
        acquired = []
        try:
            for _, entry in entries:
                await entry[0].acquire()
                acquired.append(entry[0])
            yield
        finally:
            for lock in acquired:
                lock.release()
            for key, entry in entries:
                entry[1] -= 1
                if entry[1] == 0:
                    self._locks.pop(key, None)


def _device() -> str:
    """cuda when Ray gave this replica a GPU (num_gpus, from the config or a Serve config override)."""
    import ray

    try:
        gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU") or []
    except Exception:  # noqa: BLE001 - outside a Ray worker
        gpus = []
    if not gpus:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"Ray assigned GPU(s) {gpus} to this replica but torch sees no CUDA device")
    return "cuda"


# ---------------------------------------------------------------------------------------------- HTTP


def _route_path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


class _Gate:
    """ASGI middleware run before FastAPI reads anything: bearer auth on /v1/, then the body byte cap."""

    def __init__(self, app, service: "AdapterService"):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        path = _route_path(scope)
        if (path == API_PREFIX or path.startswith(API_PREFIX + "/")) and not self.service.authorized(headers.get("authorization")):
            error = ApiError(401, "missing or invalid bearer token: send 'Authorization: Bearer <token>'",
                             headers={"WWW-Authenticate": "Bearer"})
            return await error.response()(scope, receive, send)
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            limit = self.service.config.max_body_bytes
            declared = headers.get("content-length")
            if declared is not None:
                if not declared.strip().isdigit():
                    return await ApiError(400, f"invalid Content-Length {declared!r}").response()(scope, receive, send)
                if int(declared) > limit:
                    return await self._too_large(int(declared), limit, scope, receive, send)
            body, more = bytearray(), True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                body += message.get("body", b"")
                if len(body) > limit:
                    return await self._too_large(len(body), limit, scope, receive, send, at_least=True)
                more = message.get("more_body", False)
            receive = _replay(bytes(body), receive)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _too_large(size, limit, scope, receive, send, at_least=False):
        size_text = f"more than {limit}" if at_least else str(size)
        error = ApiError(413, f"request body is {size_text} bytes; the limit is {limit} (max_body_bytes)")
        return await error.response()(scope, receive, send)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _location(loc) -> str:
    parts = [str(p) for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if broken is not None:
        reason = (broken.get("ctx") or {}).get("error", broken.get("msg"))
        position = broken["loc"][-1] if broken.get("loc") else "?"
        return ApiError(400, f"malformed JSON: {reason} (at character {position})").response()
    simple = [{"loc": _location(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in simple)
    return ApiError(422, f"invalid request: {detail}", simple).response()


async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}").response()


def build_api(service: "AdapterService") -> FastAPI:
    """The FastAPI app of one replica; routes close over the replica (its config, generator and store)."""
    from t2l_ray import __version__

    api = FastAPI(
        title="t2l-ray adapter endpoint",
        version=__version__,
        description=(
            "Text-to-LoRA as a service: task descriptions in, PEFT LoRA adapter folders out.\n\n"
            "When the server has T2L_API_TOKEN set, every /v1 route needs `Authorization: Bearer <token>`; "
            "/healthz, /openapi.json and /docs are open."
        ),
    )
    api.add_middleware(_Gate, service=service)
    api.add_exception_handler(RequestValidationError, _on_validation_error)
    api.add_exception_handler(ApiError, _on_api_error)
    api.add_exception_handler(Exception, _on_unexpected)
    bearer = HTTPBearer(auto_error=False, description="The server's T2L_API_TOKEN (only when it is set).")
    v1 = APIRouter(prefix=API_PREFIX, dependencies=[Security(bearer)], responses={401: ERROR_RESPONSES[401]})

    @api.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the replica is up and its hypernet is loaded (no token needed)."""
        return Health(status="ok")

    @v1.post(
        "/adapters", response_model=CreateAdaptersResponse, response_model_exclude_none=True, tags=["adapters"],
        responses={**ERROR_RESPONSES, 409: {"model": ErrorBody, "description": "An id is taken by another adapter."},
                   500: {"model": ErrorBody, "description": "Generation or the store failed."}},
    )
    async def create_adapters(body: CreateAdaptersRequest) -> CreateAdaptersResponse:
        """Generate adapters: each description goes through the replica's batched hypernet forward."""
        return await service.create(body)

    @v1.get("/adapters/{adapter_id}", response_model=AdapterInfo, tags=["adapters"],
            responses={400: ERROR_RESPONSES[400], 404: {"model": ErrorBody, "description": "No complete adapter."}})
    async def get_adapter(adapter_id: str) -> AdapterInfo:
        """An adapter's t2l_meta.json and a summary of its adapter_config.json."""
        return await service.describe(adapter_id)

    @v1.get("/info", response_model=ServiceInfo, tags=["health"])
    async def info() -> ServiceInfo:
        """What this replica serves: checkpoint, encoder, shapes, limits and batching counters."""
        return service.info()

    api.include_router(v1)
    return api


# ---------------------------------------------------------------------------------------------- deployment


@serve.deployment(name="AdapterService")
@serve.ingress()
class AdapterService:
    """One replica: the checkpoint's hypernet and encoder, a batching queue, the store at `out`."""

    def __init__(self, checkpoint: str, out: str, config: dict, token_sha256: str | None = None):
        from transformers.utils import logging as hf_logging

        from t2l_ray.checkpoint import load_checkpoint
        from t2l_ray.encoders import load_encoder
        from t2l_ray.generator import Generator

        hf_logging.disable_progress_bar()
        self.config = from_dict(ServeConfig, config, "ServeConfig")
        self.checkpoint_uri, self.out = checkpoint, out
        self.device = _device()
        loaded = load_checkpoint(checkpoint, device=self.device)
        self.generator = Generator(loaded, encoder=load_encoder(loaded.encoder, device=self.device), dtype=self.config.dtype)
        own = os.environ.get(TOKEN_ENV) or None
        self._token_sha256 = token_sha256 or (token_digest(own) if own else None)
        self._locks = KeyedLocks()
        self.stats = {"batches": 0, "descriptions": 0, "largest_batch": 0, "written": 0}
        self._apply_batching()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self)

    def reconfigure(self, user_config: dict) -> None:
        """A Serve `user_config` updates the batching and limit settings in place."""
        unknown = sorted(set(user_config or {}) - set(RECONFIGURABLE))
        if unknown:
            raise ConfigError(f"user_config: unknown key(s) {unknown}; settable in place: {list(RECONFIGURABLE)}")
        data = {**to_dict(self.config), **(user_config or {})}
        config = from_dict(ServeConfig, data, "user_config")
        config.check()
        self.config = config
        self._apply_batching()

    def _apply_batching(self) -> None:
        self.generate.set_max_batch_size(self.config.max_batch_size)
        self.generate.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    def check_health(self) -> None:
        if self.generator is None:
            raise RuntimeError("the hypernet is not loaded")

    def authorized(self, header: str | None) -> bool:
        if self._token_sha256 is None:
            return True
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return hmac.compare_digest(token_digest(token.strip()), self._token_sha256)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def generate(self, jobs: list[Job]) -> list[Outcome]:
        """All descriptions queued in this replica, across requests: one encoder pass, one hypernet forward."""
        outcomes = await asyncio.to_thread(render_isolated, self.generator, jobs)
        self.stats["batches"] += 1
        self.stats["descriptions"] += len(jobs)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        return outcomes

    # -- requests

    def _jobs(self, body: CreateAdaptersRequest) -> list[Job]:
        """Check the descriptions and ids against the limits; one Job per requested description."""
        cfg, sha = self.config, self.generator.checkpoint.sha256
        if body.items is not None:
            entries = [(f"items[{i}]", item.description, item.id) for i, item in enumerate(body.items)]
        else:
            entries = [("", body.description, body.id)]
        if not entries:
            raise ApiError(422, "invalid request: 'items' is empty; give at least one description")
        if len(entries) > cfg.max_descriptions:
            raise ApiError(422, f"invalid request: {len(entries)} descriptions; the limit is {cfg.max_descriptions} "
                                "per request (max_descriptions)")
        if body.return_ == "inline" and len(entries) > cfg.max_inline_descriptions:
            raise ApiError(422, f"invalid request: {len(entries)} descriptions with return=inline; the limit is "
                                f"{cfg.max_inline_descriptions} (max_inline_descriptions)")
        errors, jobs = [], []
        for where, text, given in entries:
            prefix = f"{where}." if where else ""
            if not text.strip():
                errors.append({"loc": prefix + "description", "msg": "description is empty", "type": "empty"})
            elif len(text) > cfg.max_chars:
                errors.append({"loc": prefix + "description", "type": "too_long",
                               "msg": f"description has {len(text)} characters; the limit is {cfg.max_chars} (max_chars)"})
            else:
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    errors.append({"loc": prefix + "description", "type": "unicode",
                                   "msg": "description is not valid Unicode (lone surrogate)"})
            if given is not None:
                try:
                    check_adapter_id(given)
                except ValueError as error:
                    errors.append({"loc": prefix + "id", "msg": str(error), "type": "adapter_id"})
            jobs.append(Job(text, given or (content_id(text, sha) if not errors else "")))
        if errors:
            detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
            raise ApiError(422, f"invalid request: {detail}", errors)
        first: dict[str, Job] = {}
        for (where, _, _), job in zip(entries, jobs):
            seen = first.setdefault(job.adapter_id, job)
            if seen.description != job.description:
                raise ApiError(422, f"invalid request: {where or 'id'}: id {job.adapter_id!r} is given twice with "
                                    "different descriptions")
        return jobs

    async def _generate_all(self, jobs: list[Job]) -> dict[str, Outcome]:
        outcomes = await asyncio.gather(*(self.generate(job) for job in jobs))
        failed = [(job, o) for job, o in zip(jobs, outcomes) if o.error is not None]
        if failed:
            job, outcome = failed[0]
            raise ApiError(500, f"generation failed for {len(failed)} of {len(jobs)} description(s); "
                                f"first: id {job.adapter_id!r}: {outcome.error}")
        return {job.adapter_id: outcome for job, outcome in zip(jobs, outcomes)}

    async def create(self, body: CreateAdaptersRequest) -> CreateAdaptersResponse:
        jobs = self._jobs(body)
        unique = list({job.adapter_id: job for job in jobs}.values())
        sha = self.generator.checkpoint.sha256
        results: dict[str, AdapterResult] = {}
        if body.return_ == "inline":
            outcomes = await self._generate_all(unique)
            encoded = await asyncio.to_thread(
                lambda: {i: {n: base64.b64encode(d).decode() for n, d in o.files.files.items()} for i, o in outcomes.items()}
            )
            for job in unique:
                outcome = outcomes[job.adapter_id]
                results[job.adapter_id] = self._result(job, "inline", None, outcome, files=encoded[job.adapter_id])
            return CreateAdaptersResponse(adapters=[results[j.adapter_id] for j in jobs], checkpoint_sha256=sha)

        folders = {job.adapter_id: storage.join(self.out, job.adapter_id) for job in unique}
        async with self._locks.hold(list(folders)):
            states = await asyncio.gather(*(
                asyncio.to_thread(adapters.existing_adapter, folders[job.adapter_id], job.description, sha) for job in unique
            ))
            conflicts = [(job, state) for job, state in zip(unique, states) if state not in (None, adapters.SAME_ADAPTER)]
            if conflicts:
                detail = "; ".join(f"id {job.adapter_id!r}: {state}" for job, state in conflicts)
                raise ApiError(409, f"conflict: {detail}")
            for job, state in zip(unique, states):
                if state == adapters.SAME_ADAPTER:
                    results[job.adapter_id] = AdapterResult(id=job.adapter_id, status="exists", uri=folders[job.adapter_id],
                                                            description=job.description)
            todo = [job for job, state in zip(unique, states) if state is None]
            outcomes = await self._generate_all(todo)
            writes = await asyncio.gather(
                *(asyncio.to_thread(adapters.write_adapter, folders[job.adapter_id], outcomes[job.adapter_id].files)
                  for job in todo),
                return_exceptions=True,
            )
        failed = [(job, error) for job, error in zip(todo, writes) if isinstance(error, BaseException)]
        self.stats["written"] += len(todo) - len(failed)
        if failed:
            job, error = failed[0]
            raise ApiError(500, f"writing {len(failed)} of {len(todo)} adapter(s) failed; first: "
                                f"{folders[job.adapter_id]}: {type(error).__name__}: {error}")
        for job in todo:
            results[job.adapter_id] = self._result(job, "written", folders[job.adapter_id], outcomes[job.adapter_id])
        return CreateAdaptersResponse(adapters=[results[j.adapter_id] for j in jobs], checkpoint_sha256=sha)

    @staticmethod
    def _result(job: Job, status: str, uri: str | None, outcome: Outcome, files: dict | None = None) -> AdapterResult:
        weights = outcome.files.files[adapters.WEIGHTS_FILE]
        return AdapterResult(id=job.adapter_id, status=status, uri=uri, description=job.description,
                             weights_bytes=len(weights), sha256=hashlib.sha256(weights).hexdigest(),
                             batch_size=outcome.batch_size, files=files)

    async def describe(self, adapter_id: str) -> AdapterInfo:
        try:
            check_adapter_id(adapter_id)
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        folder = storage.join(self.out, adapter_id)

        def read() -> AdapterInfo:
            if not adapters.is_complete(folder):
                raise ApiError(404, f"no adapter {adapter_id!r} at {folder} (missing or not complete yet)")
            try:
                meta = json.loads(storage.read_bytes(storage.join(folder, adapters.META_FILE)))
                config = json.loads(storage.read_bytes(storage.join(folder, adapters.CONFIG_FILE)))
            except (FileNotFoundError, json.JSONDecodeError) as error:
                raise ApiError(500, f"{folder} is not a readable adapter: {error}") from None
            keys = ("peft_type", "task_type", "base_model_name_or_path", "r", "lora_alpha", "use_rslora", "target_modules")
            return AdapterInfo(id=adapter_id, uri=folder, meta=meta if isinstance(meta, dict) else {},
                               config={k: config.get(k) for k in keys} if isinstance(config, dict) else {})

        return await asyncio.to_thread(read)

    def info(self) -> ServiceInfo:
        model = self.generator.checkpoint.model
        cfg = self.config
        return ServiceInfo(
            checkpoint=self.checkpoint_uri, checkpoint_sha256=self.generator.checkpoint.sha256,
            encoder=self.generator.checkpoint.encoder, base_model=model.shapes.base_model, rank=model.config.rank,
            target_modules=[m.name for m in model.shapes.modules], device=self.device, out=self.out,
            limits={k: getattr(cfg, k) for k in RECONFIGURABLE},
            stats=dict(self.stats),
        )


# ---------------------------------------------------------------------------------------------- builder


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
