"""The deployment: `AdapterService`, one replica holding the checkpoint's hypernet and encoder (the
`Generator`), a batching queue in front of it (`batcher.Batcher`), and the store at `out`.

Every description waiting in the replica, across requests, goes into the next batch: one encoder pass and
one hypernet forward (`Generator.render`, the path `generate` and the factory use); each result reports the
`batch_size` of the forward it came from. The batch path does only that; hashing and writing each adapter
run afterwards on threads, per request, while the next batch is generated. A complete adapter already at
`{out}/{id}/` from the same description and checkpoint is returned as `exists` without generating it again;
one from another description or checkpoint is a 409 conflict, never overwritten. Per-id locks keep
concurrent requests in one replica from writing the same folder at once (replicas do not coordinate).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os

from fastapi import FastAPI
from ray import serve

from t2l_ray import adapters, storage
from t2l_ray.config import ConfigError, from_dict, to_dict
from t2l_ray.request_rule import check_adapter_id, weights_digest
from t2l_ray.serve.api import ROUTERS, build_api
from t2l_ray.serve.batcher import Batcher
from t2l_ray.serve.chat_front import ChatFront
from t2l_ray.serve.chat_routes import openai_router
from t2l_ray.serve.config import RECONFIGURABLE, ServeConfig
from t2l_ray.serve.gate import TOKEN_ENV, ApiError, bearer_matches, token_digest
from t2l_ray.serve.jobs import Job, Outcome, jobs_for, render_isolated
from t2l_ray.serve.locks import KeyedLocks
from t2l_ray.serve.schema import (
    AdapterInfo,
    AdapterResult,
    CreateAdaptersRequest,
    CreateAdaptersResponse,
    ServiceInfo,
    ServiceStats,
)


def replica_device() -> str:
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


@serve.deployment(name="AdapterService")
@serve.ingress()
class AdapterService:
    """One replica: the checkpoint's hypernet and encoder, a batching queue, the store at `out`."""

    def __init__(self, checkpoint: str, out: str, config: dict, token_sha256: str | None = None, chat=None,
                 shown_out: str | None = None):
        """`chat`: the ChatModel deployment's handle when the app serves a base model (the chat routes), else None.
        `shown_out`: `out` as the operator gave it, which responses use to name folders (default `out`)."""
        from transformers.utils import logging as hf_logging

        from t2l_ray.checkpoint import load_checkpoint
        from t2l_ray.encoders import load_encoder
        from t2l_ray.generator import Generator

        hf_logging.disable_progress_bar()
        self.config = from_dict(ServeConfig, config, "ServeConfig")
        self.checkpoint_uri, self.out = checkpoint, out
        self.shown_out = shown_out or out  # responses name folders as the operator gave --out, never by server path
        self.device = replica_device()
        loaded = load_checkpoint(checkpoint, device=self.device)
        self.generator = Generator(loaded, encoder=load_encoder(loaded.encoder, device=self.device), dtype=self.config.dtype)
        own = os.environ.get(TOKEN_ENV) or None
        self._token_sha256 = token_sha256 or (token_digest(own) if own else None)
        self._locks = KeyedLocks()
        self.batcher: Batcher[Job, Outcome] = Batcher(self._render, self.config.max_batch_size,
                                                      self.config.batch_wait_timeout_s)
        self.written = 0
        self.chat = ChatFront(self, chat) if chat is not None else None

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self, ROUTERS + ((openai_router,) if self.chat else ()))

    def reconfigure(self, user_config: dict) -> None:
        """A Serve `user_config` updates the batching and limit settings in place."""
        unknown = sorted(set(user_config or {}) - set(RECONFIGURABLE))
        if unknown:
            raise ConfigError(f"user_config: unknown key(s) {unknown}; settable in place: {list(RECONFIGURABLE)}")
        data = {**to_dict(self.config), **(user_config or {})}
        config = from_dict(ServeConfig, data, "user_config")
        config.check()
        self.config = config
        self.batcher.max_batch_size, self.batcher.wait_s = config.max_batch_size, config.batch_wait_timeout_s

    def check_health(self) -> None:
        if self.generator is None:
            raise RuntimeError("the hypernet is not loaded")

    def authorized(self, header: str | None) -> bool:
        return bearer_matches(header, self._token_sha256)

    async def _render(self, jobs: list[Job]) -> list[Outcome]:
        """One batch: the descriptions waiting in this replica, across requests: one encoder pass, one forward."""
        return await asyncio.to_thread(render_isolated, self.generator, jobs)

    # -- requests

    async def _generate_all(self, jobs: list[Job]) -> dict[str, Outcome]:
        outcomes = await asyncio.gather(*(self.batcher.submit(job) for job in jobs))
        failed = [(job, o) for job, o in zip(jobs, outcomes) if o.error is not None]
        if failed:
            job, outcome = failed[0]
            raise ApiError(500, f"generation failed for {len(failed)} of {len(jobs)} description(s); "
                                f"first: id {job.adapter_id!r}: {outcome.error}")
        return {job.adapter_id: outcome for job, outcome in zip(jobs, outcomes)}

    async def create(self, body: CreateAdaptersRequest) -> CreateAdaptersResponse:
        jobs = jobs_for(body, self.config, self.generator.checkpoint.sha256)
        unique = list({job.adapter_id: job for job in jobs}.values())
        sha = self.generator.checkpoint.sha256
        results: dict[str, AdapterResult] = {}
        if body.return_ == "inline":
            outcomes = await self._generate_all(unique)
            encoded = await asyncio.gather(*(asyncio.to_thread(_encoded, outcomes[job.adapter_id]) for job in unique))
            for job, (digest, files) in zip(unique, encoded):
                results[job.adapter_id] = self._result(job, "inline", None, outcomes[job.adapter_id], digest, files)
            return CreateAdaptersResponse(adapters=[results[j.adapter_id] for j in jobs], checkpoint_sha256=sha)

        folders = {job.adapter_id: storage.join(self.out, job.adapter_id) for job in unique}
        shown = {job.adapter_id: storage.join(self.shown_out, job.adapter_id) for job in unique}
        async with self._locks.hold(list(folders)):
            states = await asyncio.gather(*(
                asyncio.to_thread(adapters.existing_adapter, folders[job.adapter_id], job.description, sha,
                                  shown[job.adapter_id])
                for job in unique
            ))
            conflicts = [(job, state) for job, state in zip(unique, states) if state not in (None, adapters.SAME_ADAPTER)]
            if conflicts:
                detail = "; ".join(f"id {job.adapter_id!r}: {state}" for job, state in conflicts)
                raise ApiError(409, f"conflict: {detail}")
            for job, state in zip(unique, states):
                if state == adapters.SAME_ADAPTER:
                    results[job.adapter_id] = AdapterResult(id=job.adapter_id, status="exists", uri=shown[job.adapter_id],
                                                            description=job.description)
            todo = [job for job, state in zip(unique, states) if state is None]
            outcomes = await self._generate_all(todo)
            writes = await asyncio.gather(
                *(asyncio.to_thread(_written, folders[job.adapter_id], outcomes[job.adapter_id]) for job in todo),
                return_exceptions=True,
            )
        failed = [(job, error) for job, error in zip(todo, writes) if isinstance(error, BaseException)]
        self.written += len(todo) - len(failed)
        if failed:
            job, error = failed[0]
            raise ApiError(500, f"writing {len(failed)} of {len(todo)} adapter(s) failed; first: "
                                f"{shown[job.adapter_id]}: {type(error).__name__}: {error}")
        for job, digest in zip(todo, writes):
            results[job.adapter_id] = self._result(job, "written", shown[job.adapter_id], outcomes[job.adapter_id], digest)
        return CreateAdaptersResponse(adapters=[results[j.adapter_id] for j in jobs], checkpoint_sha256=sha)

    @staticmethod
    def _result(job: Job, status: str, uri: str | None, outcome: Outcome, digest: tuple[int, str],
                files: dict | None = None) -> AdapterResult:
        size, sha = digest
        return AdapterResult(id=job.adapter_id, status=status, uri=uri, description=job.description,
                             weights_bytes=size, sha256=sha, batch_size=outcome.batch_size, files=files)

    async def describe(self, adapter_id: str) -> AdapterInfo:
        try:
            check_adapter_id(adapter_id)
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        folder, shown = storage.join(self.out, adapter_id), storage.join(self.shown_out, adapter_id)

        def read() -> AdapterInfo:
            if not adapters.is_complete(folder):
                raise ApiError(404, f"no adapter {adapter_id!r} (missing or not complete yet)")
            try:
                meta = json.loads(storage.read_bytes(storage.join(folder, adapters.META_FILE)))
                config = json.loads(storage.read_bytes(storage.join(folder, adapters.CONFIG_FILE)))
            except (FileNotFoundError, json.JSONDecodeError) as error:
                raise ApiError(500, f"{shown} is not a readable adapter: {type(error).__name__}") from None
            keys = ("peft_type", "task_type", "base_model_name_or_path", "r", "lora_alpha", "use_rslora", "target_modules")
            return AdapterInfo(id=adapter_id, uri=shown, meta=meta if isinstance(meta, dict) else {},
                               config={k: config.get(k) for k in keys} if isinstance(config, dict) else {})

        return await asyncio.to_thread(read)

    def info(self) -> ServiceInfo:
        model = self.generator.checkpoint.model
        cfg = self.config
        return ServiceInfo(
            checkpoint=self.checkpoint_uri, checkpoint_sha256=self.generator.checkpoint.sha256,
            encoder=self.generator.checkpoint.encoder, base_model=model.shapes.base_model, rank=model.config.rank,
            target_modules=[m.name for m in model.shapes.modules], device=self.device, out=self.shown_out,
            limits={k: getattr(cfg, k) for k in RECONFIGURABLE},
            stats=ServiceStats(batches=self.batcher.stats.batches, descriptions=self.batcher.stats.items,
                               mean_batch_size=round(self.batcher.stats.mean, 3),
                               largest_batch=self.batcher.stats.largest, written=self.written),
            chat={"base_model": cfg.base_model, "base_name": cfg.base_name, "replicas": cfg.chat_replicas,
                  "max_adapters_per_replica": cfg.max_adapters_per_replica} if self.chat else None,
        )


def _written(folder: str, outcome: Outcome) -> tuple[int, str]:
    """Write one adapter and hash its weights, on a worker thread (both release the GIL): (bytes, sha256)."""
    adapters.write_adapter(folder, outcome.files)
    return weights_digest(outcome.files.files[adapters.WEIGHTS_FILE])


def _encoded(outcome: Outcome) -> tuple[tuple[int, str], dict[str, str]]:
    """(bytes, sha256) of the weights and the files as base64, on a worker thread, for `return: inline`."""
    files = {name: base64.b64encode(data).decode() for name, data in outcome.files.files.items()}
    return weights_digest(outcome.files.files[adapters.WEIGHTS_FILE]), files
