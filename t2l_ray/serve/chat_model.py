"""`ChatModel`: the deployment that generates text for the chat routes, on one shared base per replica.

Requests name their adapter through Serve's model multiplexing (`serve.get_multiplexed_model_id()`; the
ingress sets it), so Serve routes a request to a replica that already holds its adapter, and each replica
keeps up to `max_adapters_per_replica` adapters loaded (LRU) beside the base. None means the base alone.
One generation runs at a time per replica (PEFT's active adapter is model-wide); concurrency comes from
replicas. Generation runs in a thread; its text streams back token by token.

`generate(request)` is an async generator of plain dicts, so nothing but data crosses the handle:
- first `{"ready": True, "replica", "prompt_tokens", "max_tokens"}`, or `{"error": {status, detail, code,
  param}}` for what must be refused before any text (unknown adapter 404, one that does not fit 422, a
  template or context error 422, no turn before the timeout 504);
- then `{"text": piece}` items;
- last `{"finish_reason", "completion_tokens"}`, or an `{"error"}` (timeout, a failure in generation).
Timeouts (`timeout_s`, from the request: queueing plus generation), a client that goes away and stop
strings all end the generation thread through its stopping criteria.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time

import torch
from ray import serve

from t2l_ray import storage
from t2l_ray.config import from_dict
from t2l_ray.serve.adapter_slots import AdapterMismatch, AdapterSlots, LoadedAdapter, read_adapter
from t2l_ray.serve.config import ServeConfig
from t2l_ray.serve.deployment import replica_device


class Refused(Exception):
    """A request the replica refuses, reported as an `{"error"}` item (the fields of `gate.ApiError`)."""

    def __init__(self, status: int, detail: str, code: str | None = None, param: str | None = None):
        super().__init__(detail)
        self.item = {"error": {"status": status, "detail": detail, "code": code, "param": param}}


class StopText:
    """Cuts streamed text at the first stop string; holds back a tail that could be the start of one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text, self.sent, self.hit = "", 0, False

    def feed(self, piece: str) -> str:
        """The text that can be sent now."""
        self.text += piece
        cuts = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        end = min(cuts) if cuts else max(self.sent, len(self.text) - self.hold)
        self.hit = bool(cuts)
        out, self.sent = self.text[self.sent:end], end
        return out

    def flush(self) -> str:
        out = "" if self.hit else self.text[self.sent:]
        self.sent = len(self.text)
        return out


class _Stop:
    """Generation's stopping criterion: the request ended (stop string, client gone) or its time ran out."""

    def __init__(self, event: threading.Event, deadline: float, outcome: dict):
        self.event, self.deadline, self.outcome = event, deadline, outcome

    def __call__(self, input_ids, scores, **kwargs):
        if time.monotonic() > self.deadline:
            self.outcome["timed_out"] = True
        stop = self.event.is_set() or self.outcome.get("timed_out", False)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


@serve.deployment(name="ChatModel")
class ChatModel:
    """One replica: the base model and tokenizer, up to K adapters, one generation at a time."""

    def __init__(self, base_model: str, out: str, config: dict):
        from transformers.utils import logging as hf_logging

        from t2l_ray.base_model import ModelConfig, build_base_model
        from t2l_ray.data.tokenizer import open_tokenizer

        hf_logging.disable_progress_bar()
        cfg = from_dict(ServeConfig, config, "ServeConfig")
        self.device = replica_device()
        torch.set_num_threads(max(1, int(cfg.chat_num_cpus)))
        dtype = cfg.chat_dtype if cfg.chat_dtype != "auto" else ("bfloat16" if self.device == "cuda" else "float32")
        scratch = tempfile.mkdtemp(prefix="t2l-chat-")
        source = storage.local_copy(base_model, scratch) if "://" in base_model else base_model  # a folder or hub name
        self.tokenizer = open_tokenizer(source, scratch)
        self.slots = AdapterSlots(build_base_model(ModelConfig(name_or_path=source), dtype, self.device))
        self.context = getattr(self.slots.base.config, "max_position_embeddings", None)
        self.lock = asyncio.Lock()
        self.replica = serve.get_replica_context().replica_id.unique_id

        async def load(adapter_id: str) -> LoadedAdapter:  # a closure: Serve's multiplex wrapper needs a function
            return await asyncio.to_thread(read_adapter, adapter_id, storage.join(out, adapter_id), self.device)

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=cfg.max_adapters_per_replica)(load)

    async def generate(self, request: dict):
        deadline = time.monotonic() + float(request["timeout_s"])
        adapter_id = serve.get_multiplexed_model_id() or None
        try:
            adapter = await self._adapter(adapter_id)
            ids, max_tokens = self._encode(request)
        except Refused as refused:
            yield refused.item
            return
        async for item in self._run(adapter, ids, max_tokens, request, deadline):
            yield item

    async def _adapter(self, adapter_id: str | None) -> LoadedAdapter | None:
        if adapter_id is None:
            return None
        try:
            return await self.get_adapter(adapter_id)
        except FileNotFoundError:
            raise Refused(404, f"no adapter {adapter_id!r} in the store", "model_not_found", "model") from None
        except AdapterMismatch as error:
            raise Refused(422, str(error), "adapter_mismatch", "model") from None

    def _encode(self, request: dict) -> tuple[torch.Tensor, int]:
        """The prompt's token ids (chat: rendered as training renders prompts) and the tokens to generate."""
        from t2l_ray.data.prompts import encode_prompts, render_messages

        if request.get("messages") is not None:
            try:
                text = render_messages(self.tokenizer, request["messages"])
            except Exception as error:  # noqa: BLE001 - jinja2 TemplateError or ValueError from the template
                raise Refused(422, f"the base's chat template refuses these messages: {error}", None, "messages") from None
            ids = encode_prompts(self.tokenizer, [text])[0]
        else:
            ids = self.tokenizer(request["prompt"], add_special_tokens=True)["input_ids"]
        if not ids:
            raise Refused(422, "the prompt is empty", None, "prompt")
        max_tokens = int(request["max_tokens"])
        if self.context and len(ids) + max_tokens > self.context:
            room = self.context - len(ids)
            if request.get("max_tokens_given") or room < 1:
                raise Refused(422, f"the base's context is {self.context} tokens; the prompt has {len(ids)} and "
                                   f"max_tokens asks for {max_tokens}", "context_length_exceeded", "messages")
            max_tokens = room
        return torch.tensor([ids], device=self.device), max_tokens

    async def _run(self, adapter: LoadedAdapter | None, ids: torch.Tensor, max_tokens: int, request: dict, deadline: float):
        """Wait for the replica's turn, then stream from a generation thread whose end releases the turn (also
        when this consumer is cancelled: the thread must finish before another one uses the model)."""
        from transformers import AsyncTextIteratorStreamer, StoppingCriteriaList

        loop = asyncio.get_running_loop()
        streamer = AsyncTextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        event, outcome, ready = threading.Event(), {}, loop.create_future()
        criteria = StoppingCriteriaList([_Stop(event, deadline, outcome)])
        options = _sampling(request, max_tokens, self.tokenizer)

        def settle(error: Exception | None) -> None:
            if ready.done():
                return
            if error is None:
                ready.set_result(None)
            else:
                ready.set_exception(error)

        def work() -> None:
            try:
                model, context = self.slots.activate(adapter)
            except Exception as error:  # noqa: BLE001 - reported by the consumer
                loop.call_soon_threadsafe(settle, error)
                return
            loop.call_soon_threadsafe(settle, None)
            try:
                if request.get("seed") is not None:
                    torch.manual_seed(int(request["seed"]))
                with context, torch.inference_mode():
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                         stopping_criteria=criteria, **options)
                outcome["ids"] = out[0, ids.shape[1]:].tolist()
            except Exception as error:  # noqa: BLE001 - reported as an error item
                outcome["error"] = error
                streamer.end()

        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self.lock.acquire()
        except TimeoutError:
            yield Refused(504, f"no turn on a chat replica within {request['timeout_s']} s (chat_timeout_s)", "timeout").item
            return
        try:
            worker = asyncio.ensure_future(asyncio.to_thread(work))
        except BaseException:
            self.lock.release()
            raise
        worker.add_done_callback(lambda _: self.lock.release())
        try:
            try:
                await ready
            except AdapterMismatch as error:
                yield Refused(422, str(error), "adapter_mismatch", "model").item
                return
            except Exception as error:  # noqa: BLE001
                yield Refused(500, f"applying the adapter failed: {type(error).__name__}: {error}").item
                return
            yield {"ready": True, "replica": self.replica, "prompt_tokens": int(ids.shape[1]), "max_tokens": max_tokens}
            stops = StopText(request.get("stop") or [])
            async for piece in streamer:
                text = stops.feed(piece)
                if text:
                    yield {"text": text}
                if stops.hit:
                    event.set()
                    break
            tail = stops.flush()
            if tail:
                yield {"text": tail}
            await worker
            yield _last_item(outcome, stops.hit, max_tokens, request["timeout_s"], self.tokenizer)
        finally:
            event.set()  # a client that went away, a timeout at the ingress, or the normal end


def _sampling(request: dict, max_tokens: int, tokenizer) -> dict:
    """generate() options: greedy unless a temperature above 0 is given, as OpenAI's 0 means."""
    options = {"max_new_tokens": max_tokens, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    temperature = request.get("temperature")
    if temperature:
        options.update(do_sample=True, temperature=float(temperature), top_p=float(request.get("top_p") or 1.0))
    else:
        options.update(do_sample=False)
    return options


def _last_item(outcome: dict, stopped: bool, max_tokens: int, timeout_s: float, tokenizer) -> dict:
    if outcome.get("error") is not None:
        error = outcome["error"]
        return Refused(500, f"generation failed: {type(error).__name__}: {error}").item
    if outcome.get("timed_out"):
        return Refused(504, f"generation ran past the {timeout_s} s limit (chat_timeout_s)", "timeout").item
    generated = outcome.get("ids", [])
    ended = bool(generated) and generated[-1] == tokenizer.eos_token_id
    finish = "length" if not (stopped or ended) and len(generated) >= max_tokens else "stop"
    return {"finish_reason": finish, "completion_tokens": len(generated)}
