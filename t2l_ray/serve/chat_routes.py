"""The OpenAI-compatible routes, served when the app has a base model (`ServeConfig.base_model`):

- `POST /v1/chat/completions`: messages rendered with the base's chat template, as training renders prompts;
  `stream: true` answers with server-sent events (`data: {chunk}` ... `data: [DONE]`), and
  `stream_options.include_usage` adds a usage chunk;
- `POST /v1/completions`: one prompt, used as is;
- `GET /v1/models` (the base, then the store's adapters) and `GET /v1/models/{model}`.

`model` picks the adapter (`chat_front`); the answer's `model` is the adapter id (for `t2l:` requests, the id it
was stored under) or the base's name, and `system_fingerprint` the ChatModel replica that answered. Errors use
OpenAI's shape (`gate.ApiError.openai_error`); one that happens after a stream started is a `data: {"error"}`
event before `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from t2l_ray import adapters
from t2l_ray.serve.chat_front import ChatStream, refusal
from t2l_ray.serve.gate import ApiError, v1_router
from t2l_ray.serve.openai_schema import ChatCompletionRequest, CompletionRequest, Sampling

OWNER = "t2l-ray"
ERRORS = {404: {"description": "No such model (adapter id, BASE:ID or base name)."},
          413: {"description": "Body larger than max_body_bytes."},
          422: {"description": "The body, the prompt's length or the adapter does not fit."},
          504: {"description": "No answer within chat_timeout_s."}}


def openai_router(service) -> APIRouter:
    """`service.chat` is the ingress's `chat_front.ChatFront`; `service.config` holds the limits."""
    v1 = v1_router()
    front = service.chat

    @v1.post("/chat/completions", tags=["openai"], responses=ERRORS)
    async def chat_completions(body: ChatCompletionRequest):
        """OpenAI's chat completion with the adapter `model` names (see the module docs)."""
        return await answer(service, body, {"messages": [m.as_turn() for m in body.messages]}, chat=True)

    @v1.post("/completions", tags=["openai"], responses=ERRORS)
    async def completions(body: CompletionRequest):
        """OpenAI's (legacy) text completion: the prompt as is, no chat template."""
        return await answer(service, body, {"prompt": body.prompt}, chat=False)

    @v1.get("/models", tags=["openai"])
    async def list_models() -> dict:
        """The base, then up to max_models_listed adapter ids of the store (each usable as `model`)."""
        listed = await asyncio.to_thread(adapters.list_adapters, service.out, service.config.max_models_listed)
        return {"object": "list", "data": [model_card(front.base_name, 0)] + [model_card(i, t) for i, t in listed]}

    @v1.get("/models/{model:path}", tags=["openai"], responses={404: ERRORS[404]})
    async def get_model(model: str) -> dict:
        """One model: the base, an adapter id, BASE:ID, or `t2l:<description>` once it has been made."""
        adapter_id = await front.resolve(model, create=False)
        return model_card(adapter_id or front.base_name, 0)

    return v1


def model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


async def answer(service, body: Sampling, request: dict, chat: bool):
    """Resolve the adapter, start the generation (refusals raise before any byte is sent), then reply."""
    config, front = service.config, service.chat
    adapter_id = await front.resolve(body.model)
    asked = body.token_limit()
    request.update(max_tokens=min(asked or config.default_max_tokens, config.max_tokens_limit),
                   max_tokens_given=asked is not None, temperature=body.temperature, top_p=body.top_p,
                   seed=body.seed, stop=body.stop_strings())
    first, stream = await front.open(adapter_id, request)
    reply = Reply(chat, adapter_id or front.base_name, first)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(reply.events(stream, include_usage), media_type="text/event-stream")
    return await reply.collect(stream)


class Reply:
    """One answer's envelope (id, created, model, replica) and its JSON or SSE form."""

    def __init__(self, chat: bool, model: str, first: dict):
        self.chat, self.model = chat, model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.object = "chat.completion" if chat else "text_completion"
        self.created = int(time.time())
        self.replica, self.prompt_tokens = first["replica"], first["prompt_tokens"]

    def envelope(self, choices: list[dict], usage: dict | None = None, chunk: bool = False) -> dict:
        body = {"id": self.id, "object": self.object + (".chunk" if chunk and self.chat else ""),
                "created": self.created, "model": self.model, "system_fingerprint": self.replica, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return body

    def usage(self, completion_tokens: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}

    def choice(self, text: str | None, finish_reason: str | None, delta: dict | None = None) -> dict:
        choice = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
        if not self.chat:
            choice["text"] = text or ""
        elif delta is not None:
            choice["delta"] = delta
        else:
            choice["message"] = {"role": "assistant", "content": text}
        return choice

    async def collect(self, stream: ChatStream) -> dict:
        pieces = []
        async for item in stream.items():
            if "error" in item:
                raise refusal(item["error"])
            if "text" in item:
                pieces.append(item["text"])
            else:
                choice = self.choice("".join(pieces), item["finish_reason"])
                return self.envelope([choice], self.usage(item["completion_tokens"]))
        raise ApiError(500, "the chat replica ended the stream without a finish")

    async def events(self, stream: ChatStream, include_usage: bool):
        """Server-sent events; a client that goes away cancels the generation on its replica."""
        finished = False
        try:
            if self.chat:
                yield sse(self.envelope([self.choice(None, None, {"role": "assistant", "content": ""})], chunk=True))
            async for item in stream.items():
                if "error" in item:
                    yield sse({"error": refusal(item["error"]).openai_error()})
                elif "text" in item:
                    yield sse(self.envelope([self.choice(item["text"], None, {"content": item["text"]})], chunk=True))
                else:
                    yield sse(self.envelope([self.choice("", item["finish_reason"], {})], chunk=True))
                    if include_usage:
                        yield sse(self.envelope([], self.usage(item["completion_tokens"]), chunk=True))
            finished = True
        except ApiError as error:  # the ingress's own deadline
            finished = True
            yield sse({"error": error.openai_error()})
        finally:
            if not finished:
                stream.cancel()
        yield "data: [DONE]\n\n"


def sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"
