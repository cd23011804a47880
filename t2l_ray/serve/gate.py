"""The HTTP gate of a replica: bearer auth and the body cap before FastAPI reads a byte, and the error handlers
that turn every failure into `{"detail": ..., "errors"?: [...]}` with the right status; on the OpenAI-compatible
routes (`OPENAI_PATHS`) into OpenAI's `{"error": {"message", "type", "param", "code"}}`, which its clients read.

When `T2L_API_TOKEN` is set, every `/v1/` route needs `Authorization: Bearer <token>` (401 otherwise). The
builder passes only the token's sha256 to replicas; a replica without one reads `T2L_API_TOKEN` from its own
environment (a KubeRay secret, or `env_vars`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.datastructures import Headers

from t2l_ray.serve.schema import ERROR_RESPONSES

logger = logging.getLogger("ray.serve")

TOKEN_ENV = "T2L_API_TOKEN"
API_PREFIX = "/v1"
OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models")
OPENAI_TYPES = {401: "authentication_error", 500: "server_error", 503: "server_error", 504: "timeout"}
OPENAI_CODES = {401: "invalid_api_key", 413: "request_too_large", 504: "timeout"}
NOT_RETRIED = (409, 504)  # OpenAI clients retry 409 and 5xx unless told not to; these would fail the same way again


class ApiError(Exception):
    """An HTTP error with a message (and, for 422, one entry per bad field); raised anywhere, answered as JSON.

    `code` and `param` fill OpenAI's error fields on the OpenAI-compatible routes."""

    def __init__(self, status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None,
                 code: str | None = None, param: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers
        self.code, self.param = code or OPENAI_CODES.get(status), param

    def response(self, scope=None) -> JSONResponse:
        """The JSON answer; OpenAI's shape when `scope` (the ASGI request) is on an OpenAI-compatible route."""
        if scope is not None and is_openai_path(_route_path(scope)):
            headers = {**(self.headers or {}), **({"x-should-retry": "false"} if self.status in NOT_RETRIED else {})}
            return JSONResponse({"error": self.openai_error()}, status_code=self.status, headers=headers)
        body: dict[str, Any] = {"detail": self.detail}
        if self.errors is not None:
            body["errors"] = self.errors
        return JSONResponse(body, status_code=self.status, headers=self.headers)

    def openai_error(self) -> dict[str, Any]:
        kind = OPENAI_TYPES.get(self.status, "invalid_request_error")
        return {"message": self.detail, "type": kind, "param": self.param, "code": self.code}


def is_openai_path(path: str) -> bool:
    return path in OPENAI_PATHS or path.startswith("/v1/models/")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_matches(header: str | None, token_sha256: str | None) -> bool:
    """True when no token is required, or `header` is `Bearer <token>` for the token with this sha256."""
    if token_sha256 is None:
        return True
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(token_digest(token.strip()), token_sha256)


def _route_path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


class Gate:
    """ASGI middleware run before FastAPI reads anything: bearer auth on /v1/, then the body byte cap.

    `service` is the replica: `service.authorized(header)` and `service.config.max_body_bytes` are read per request,
    so a `user_config` change applies at once."""

    def __init__(self, app, service):
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
            return await error.response(scope)(scope, receive, send)
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            limit = self.service.config.max_body_bytes
            declared = headers.get("content-length")
            if declared is not None:
                if not declared.strip().isdigit():
                    return await ApiError(400, f"invalid Content-Length {declared!r}").response(scope)(scope, receive, send)
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
        return await error.response(scope)(scope, receive, send)


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
        return ApiError(400, f"malformed JSON: {reason} (at character {position})").response(request.scope)
    simple = [{"loc": _location(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in simple)
    param = simple[0]["loc"] if simple else None
    return ApiError(422, f"invalid request: {detail}", simple, param=param).response(request.scope)


async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response(request.scope)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}").response(request.scope)


def install(api: FastAPI, service) -> None:
    """Put the gate in front of `api` and answer every error as JSON (see `ApiError`)."""
    api.add_middleware(Gate, service=service)
    api.add_exception_handler(RequestValidationError, _on_validation_error)
    api.add_exception_handler(ApiError, _on_api_error)
    api.add_exception_handler(Exception, _on_unexpected)


def v1_router() -> APIRouter:
    """An `APIRouter` under `/v1`, marked in the OpenAPI schema as needing the bearer token (the gate enforces it)."""
    bearer = HTTPBearer(auto_error=False, description="The server's T2L_API_TOKEN (only when it is set).")
    return APIRouter(prefix=API_PREFIX, dependencies=[Security(bearer)], responses={401: ERROR_RESPONSES[401]})
