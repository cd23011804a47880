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

Descriptions and ids follow the factory's rule (`t2l_ray.request_rule`): a given id must match
`[a-z0-9][a-z0-9_-]{0,127}`, else it is `t2l-` + a hash of (description, checkpoint). A complete adapter
already at `{out}/{id}/` from the same description and checkpoint is returned as `exists` without generating
it again; one from another description or checkpoint is a 409 conflict, never overwritten. Per-id locks keep
concurrent requests in one replica from writing the same folder at once (replicas do not coordinate).

The package, one job per module:
- `config`      ServeConfig (YAML, `--set`, build_app args) and the settings a `user_config` changes in place;
- `schema`      request and response bodies (pydantic), as `/openapi.json` shows them;
- `gate`        ASGI gate (bearer token, body cap) and the error handlers; `v1_router()` for token routes;
- `jobs`        a request -> one Job per description (limits, `request_rule`), batches rendered in isolation;
- `routes`      the health and adapter routers; `api` composes the gate and `api.ROUTERS` into one FastAPI app;
- `deployment`  AdapterService: holds the Generator, the `@serve.batch` queue and the store;
- `app`         `build_app`, the Serve application builder.
"""

from t2l_ray.serve.app import build_app
from t2l_ray.serve.config import ServeConfig
from t2l_ray.serve.deployment import AdapterService

__all__ = ["AdapterService", "ServeConfig", "build_app"]
