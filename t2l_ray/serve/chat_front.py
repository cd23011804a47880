"""The ingress side of the chat routes: which adapter a request's `model` names, making `t2l:` adapters, and
opening a stream on the ChatModel deployment through a multiplexed handle.

`model` is, in this order: the base's name (no adapter); `t2l:<description>` (the adapter for that description
from this replica's checkpoint: made on first use through `POST /v1/adapters`'s path, under its content id,
and reused afterwards); `BASE_NAME:ID` (Ray Serve LLM's convention); or an adapter id in the store. Ids that
cannot be in the store (the request rule's pattern) and ids not there are 404 `model_not_found`.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path, PurePosixPath

from t2l_ray import adapters, storage
from t2l_ray.request_rule import RuleError, check_adapter_id, check_description, content_id
from t2l_ray.serve.gate import ApiError
from t2l_ray.serve.schema import CreateAdaptersRequest

T2L_PREFIX = "t2l:"
KNOWN_IDS = 4096  # adapter ids remembered as complete, so a chat request costs no store lookup
GRACE_S = 5.0  # the ingress waits this much past chat_timeout_s before it gives up on a replica


def default_base_name(base_model: str) -> str:
    """A hub name as it is; a folder or URI by its last part (`demo_out/run/base` -> `base`)."""
    if "://" in base_model or Path(base_model).exists():
        return PurePosixPath(base_model.rstrip("/")).name
    return base_model


def parse_model(model: str, base_name: str) -> tuple[str | None, str | None]:
    """(adapter id, t2l description) for a request's `model`; (None, None) is the base alone."""
    if model == base_name:
        return None, None
    if model.startswith(T2L_PREFIX):
        return None, model[len(T2L_PREFIX):]
    adapter_id = model[len(base_name) + 1:] if model.startswith(base_name + ":") else model
    try:
        return check_adapter_id(adapter_id), None
    except RuleError:
        raise not_found(model, base_name) from None


def not_found(model: str, base_name: str) -> ApiError:
    return ApiError(404, f"the model {model!r} does not exist: give the base's name {base_name!r}, an adapter id in "
                         f"the store, {base_name}:ID, or t2l:<task description>", code="model_not_found", param="model")


class ChatFront:
    """Held by the ingress replica (`AdapterService.chat`); `service` gives the config, the store and `create`."""

    def __init__(self, service, handle):
        self.service, self.handle = service, handle
        self.base_name = service.config.base_name
        self._known: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._handles: collections.OrderedDict[str, object] = collections.OrderedDict()

    async def resolve(self, model: str, create: bool = True) -> str | None:
        """The adapter id a request names (None: the base), checked in the store; a `t2l:` adapter is made
        first when it is not there yet (unless `create` is False: then it is a 404 like any missing id)."""
        adapter_id, description = parse_model(model, self.base_name)
        if description is not None:
            try:
                check_description(description, self.service.config.max_chars)
            except RuleError as error:
                raise ApiError(422, f"model: t2l: {error}", code=error.kind, param="model") from None
            adapter_id = content_id(description, self.service.generator.checkpoint.sha256)
            if create and adapter_id not in self._known:
                made = await self.service.create(CreateAdaptersRequest(description=description))
                adapter_id = made.adapters[0].id
                self._remember(adapter_id)
        if adapter_id is not None and adapter_id not in self._known:
            if not await asyncio.to_thread(adapters.is_complete, storage.join(self.service.out, adapter_id)):
                raise not_found(model, self.base_name)
            self._remember(adapter_id)
        return adapter_id

    def _remember(self, adapter_id: str) -> None:
        self._known[adapter_id] = None
        self._known.move_to_end(adapter_id)
        while len(self._known) > KNOWN_IDS:
            self._known.popitem(last=False)

    def forget(self, adapter_id: str | None) -> None:
        """A replica found no such adapter (deleted from the store): look it up again next time."""
        self._known.pop(adapter_id, None)

    def _handle(self, adapter_id: str | None):
        """Serve's handle for this adapter; few handles, reused (each one costs the controller work)."""
        key = adapter_id or ""
        if key not in self._handles:
            options = {"stream": True, **({"multiplexed_model_id": adapter_id} if adapter_id else {})}
            self._handles[key] = self.handle.options(**options)
            while len(self._handles) > 256:
                self._handles.popitem(last=False)
        self._handles.move_to_end(key)
        return self._handles[key]

    async def open(self, adapter_id: str | None, request: dict) -> tuple[dict, "ChatStream"]:
        """Start a generation: its first item (`ready`), and the stream of the rest. Refusals raise ApiError."""
        timeout_s = self.service.config.chat_timeout_s
        stream = ChatStream(self._handle(adapter_id).generate.remote({**request, "timeout_s": timeout_s}),
                            asyncio.get_running_loop().time() + timeout_s + GRACE_S)
        first = await stream.next()
        if "error" in first:
            if first["error"]["status"] == 404:
                self.forget(adapter_id)
            raise refusal(first["error"])
        return first, stream


def refusal(error: dict) -> ApiError:
    """A ChatModel's `{"error"}` item as an ApiError."""
    return ApiError(**error)


class ChatStream:
    """The items of one generation, each awaited within the request's deadline (504 after it)."""

    def __init__(self, generator, deadline: float):
        self.generator, self.deadline = generator, deadline

    async def next(self) -> dict:
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(self.generator.__anext__(), max(0.01, remaining))
        except TimeoutError:
            self.cancel()
            raise ApiError(504, "the chat replica did not answer in time (chat_timeout_s)", code="timeout") from None
        except StopAsyncIteration:
            raise ApiError(500, "the chat replica ended the stream early") from None

    async def items(self):
        """The remaining items, up to and including the last one (`finish_reason` or `error`)."""
        while True:
            item = await self.next()
            yield item
            if "text" not in item:
                return

    def cancel(self) -> None:
        self.generator.cancel()
