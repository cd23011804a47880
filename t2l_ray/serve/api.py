"""The FastAPI app of one replica: the gate (auth, body cap, error handlers), then every router in `ROUTERS`.

New route groups are a module with a `router(service)` factory, added here; groups served only with some
settings are passed in by the deployment (the OpenAI-compatible routes, with a base model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import APIRouter, FastAPI

from t2l_ray.serve import gate
from t2l_ray.serve.routes import adapters_router, health_router

RouterFactory = Callable[[object], APIRouter]
ROUTERS: tuple[RouterFactory, ...] = (health_router, adapters_router)


def build_api(service, routers: Sequence[RouterFactory] = ROUTERS) -> FastAPI:
    """`service` is the replica the routes call into (`deployment.AdapterService`)."""
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
    gate.install(api, service)
    for make_router in routers:
        api.include_router(make_router(service))
    return api
