"""The adapter routes: each router closes over the replica (`service`: its config, generator and store).

A router factory takes the replica and returns an `APIRouter`; `api.ROUTERS` lists the ones an app serves.
Routes under `/v1` come from `gate.v1_router()`, so the schema shows they need the bearer token.
"""

from __future__ import annotations

from fastapi import APIRouter

from t2l_ray.serve.gate import v1_router
from t2l_ray.serve.schema import (
    ERROR_RESPONSES,
    AdapterInfo,
    CreateAdaptersRequest,
    CreateAdaptersResponse,
    ErrorBody,
    Health,
    ServiceInfo,
)


def health_router(service) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the replica is up and its hypernet is loaded (no token needed)."""
        return Health(status="ok")

    return router


def adapters_router(service) -> APIRouter:
    v1 = v1_router()

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

    return v1
