"""The adapter endpoint: a Ray Serve application that turns task descriptions into LoRA adapters over HTTP.

    serve run t2l_ray.serve:build_app checkpoint=URI out=URI [max_replicas=4 ...]   # or jobs/serve.yaml
    t2l-ray serve --checkpoint URI --out URI [--base-model BASE] [--host 127.0.0.1] [--port 8000] [--config YAML] [--set k=v]

The ingress deployment, `AdapterService`, with a FastAPI app:
- `POST /v1/adapters`  `{"description": ..., "id": optional}` or `{"items": [{"description", "id"?}, ...]}`,
  plus `"return": "uri"` (default: written to `{out}/{id}/`, ids and URIs returned) or `"inline"` (the
  files, base64, in the response; nothing written). Every description of every request waiting in the
  replica goes into the next batch (`batcher.Batcher`), so concurrent requests share one encoder pass and one
  hypernet forward (`Generator.render`, the path `generate` and the factory use); each result reports
  the `batch_size` of the forward it came from. Hashing and writes run on threads, off the batch path.
- `GET /v1/adapters/{id}`  the adapter's `t2l_meta.json` and a summary of its `adapter_config.json`.
- `GET /v1/info`  checkpoint, encoder, shapes, the request limits and `stats` (batches, `mean_batch_size`, ...).
- `GET /healthz`, and FastAPI's `/openapi.json` and `/docs` (these three need no token).
- With a base model (`--base-model` / `base_model`), OpenAI-compatible routes (`chat_routes`):
  `POST /v1/chat/completions` (`stream: true` as server-sent events), `POST /v1/completions`, `GET /v1/models`.
  `model` is an adapter id in the store, `BASE_NAME:ID`, `t2l:<description>` (made on first use through the
  `POST /v1/adapters` path and stored under its content id, reused afterwards) or the base's name. A second
  deployment, `ChatModel`, holds the base; Serve's model multiplexing routes each request to a replica that
  holds its adapter and keeps up to `max_adapters_per_replica` loaded per replica.

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
- `batcher`     the batching queue: a batch forms when the forward is free, from everything that waited;
- `deployment`  AdapterService: holds the Generator, the batching queue and the store;
- `app`         `build_app`, the Serve application builder;
- `openai_schema`, `chat_routes`  the OpenAI-compatible bodies and routes (JSON and server-sent events);
- `chat_front`  the ingress side of chat: `model` -> adapter id (404, or made for `t2l:`), multiplexed handles;
- `chat_model`  ChatModel, the deployment that generates (one base, K adapters, one generation at a time);
- `adapter_slots`  adapters as tensors, copied into PEFT LoRA slots of the base, checked against its shapes.
"""

from t2l_ray.serve.app import build_app
from t2l_ray.serve.config import ServeConfig
from t2l_ray.serve.deployment import AdapterService

__all__ = ["AdapterService", "ServeConfig", "build_app"]
