"""The OpenAI-compatible chat routes (t2l_ray/serve/chat_*.py): the pieces first (fast; real PEFT on a tiny base),
then one real Serve app over HTTP on 127.0.0.1 (slow), talked to by the `openai` client, unchanged.

The app serves a saved tiny Llama (tests/fixtures_models.tiny_base_folder) with two ChatModel replicas of at most
two adapters each, auth on. The base has random weights, so answers are not meaningful text: the tests check
statuses, ids, shapes, usage, routing, and that greedy answers repeat exactly and differ by adapter.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from pathlib import Path

import pytest
import torch
from fixtures_models import tiny_base_folder, tiny_checkpoint
from ports import free_port

from t2l_ray import adapters
from t2l_ray.config import ConfigError
from t2l_ray.request_rule import content_id
from t2l_ray.serve import build_app
from t2l_ray.serve.adapter_slots import AdapterMismatch, AdapterSlots, read_adapter
from t2l_ray.serve.chat_front import ChatStream, default_base_name, parse_model
from t2l_ray.serve.chat_model import StopText, _last_item, _Stop
from t2l_ray.serve.config import ServeConfig, config_from_args
from t2l_ray.serve.gate import ApiError
from t2l_ray.serve.openai_schema import ChatCompletionRequest, CompletionRequest

TOKEN = "t2l-chat-" + secrets.token_hex(8)
BASE_NAME = "tiny-base"
USER = [{"role": "user", "content": "Reverse the order of the words.\n\nthe cat sat on the mat"}]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved tiny base and a tiny checkpoint whose adapters fit it."""
    root = tmp_path_factory.mktemp("chat")
    base = tiny_base_folder(root / BASE_NAME)
    checkpoint = str(root / "ckpt")
    sha = tiny_checkpoint(checkpoint)
    return {"root": root, "base": base, "checkpoint": checkpoint, "sha": sha}


# ---------------------------------------------------------------------------------------------- fast


def test_model_names_resolve_in_order():
    assert parse_model("tiny-base", "tiny-base") == (None, None)
    assert parse_model("t2l:Sort the letters.", "tiny-base") == (None, "Sort the letters.")
    assert parse_model("tiny-base:reverse", "tiny-base") == ("reverse", None)
    assert parse_model("reverse", "tiny-base") == ("reverse", None)
    for bad in ("other:reverse", "Bad/ID", "", "a..b"):
        with pytest.raises(ApiError) as error:
            parse_model(bad, "tiny-base")
        assert error.value.status == 404 and error.value.code == "model_not_found" and error.value.param == "model"
    assert default_base_name("mistralai/Mistral-7B-Instruct-v0.2") == "mistralai/Mistral-7B-Instruct-v0.2"
    assert default_base_name("s3://bucket/runs/demo/base/") == "base"


def test_chat_settings_are_checked(world):
    config = config_from_args(None, {"chat_replicas": "2", "chat_num_cpus": "0.5", "env_vars": {"A": "b"}})
    assert config.chat_deployment_options() == {"num_replicas": 2, "max_ongoing_requests": 8, "ray_actor_options": {
        "num_cpus": 0.5, "runtime_env": {"env_vars": {"A": "b"}}}}
    for bad, phrase in (({"base_name": "a:b"}, "must not contain ':'"), ({"default_max_tokens": 600}, "above max_tokens_limit"),
                        ({"chat_timeout_s": 0}, "must be > 0"), ({"max_adapters_per_replica": 0}, "at least 1")):
        with pytest.raises(ConfigError, match=phrase):
            config_from_args(None, bad)
    other = tiny_base_folder(world["root"] / "other-base")
    config = json.loads(Path(other, "config.json").read_text())
    Path(other, "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ConfigError, match="does not fit the adapters"):
        build_app({"checkpoint": world["checkpoint"], "out": str(world["root"] / "x"), "base_model": other})
    from typer.testing import CliRunner

    from t2l_ray.cli import app

    result = CliRunner().invoke(app, ["serve", "--checkpoint", world["checkpoint"], "--out", str(world["root"] / "x"),
                                      "--base-model", other])
    assert result.exit_code == 2 and "3 layers" in result.output and "does not fit" in result.output


def test_openai_bodies_take_what_clients_send_and_refuse_what_cannot_be_honoured():
    body = ChatCompletionRequest.model_validate({
        "model": "m", "messages": [{"role": "developer", "content": "Be brief."},
                                   {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 9, "max_tokens": 3, "stop": "END", "user": "someone", "presence_penalty": 0.5})
    assert [m.as_turn() for m in body.messages] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a b"}]
    assert body.token_limit() == 9 and body.stop_strings() == ["END"]
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["one"]}).prompt == "one"
    refused = [({"n": 2}, "n=2"), ({"tools": [{"type": "function"}]}, "tool calling"), ({"logprobs": True}, "logprobs"),
               ({"messages": []}, "at least 1"), ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
               ({"temperature": 3}, "less than or equal to 2"), ({"stop": ["a"] * 5}, "at most 4")]
    for change, phrase in refused:
        with pytest.raises(ValueError, match=phrase):
            ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **change})
    for change, phrase in (({"prompt": ["a", "b"]}, "give one prompt"), ({"echo": True}, "echo"), ({"suffix": "x"}, "suffix")):
        with pytest.raises(ValueError, match=phrase):
            CompletionRequest.model_validate({"model": "m", "prompt": "p", **change})


def test_errors_take_openais_shape_on_its_routes_only():
    error = ApiError(404, "no such model", code="model_not_found", param="model")
    scope = {"type": "http", "path": "/v1/chat/completions", "root_path": ""}
    assert json.loads(error.response(scope).body) == {"error": {"message": "no such model", "type": "invalid_request_error",
                                                                "param": "model", "code": "model_not_found"}}
    assert json.loads(error.response({**scope, "path": "/v1/adapters/x"}).body) == {"detail": "no such model"}
    assert ApiError(401, "who?").openai_error()["type"] == "authentication_error"
    assert ApiError(413, "big").openai_error()["code"] == "request_too_large"


def test_stop_strings_cut_the_stream_even_across_pieces():
    stops = StopText(["END", "##"])
    sent = [stops.feed(piece) for piece in ["one tw", "o E", "N", "D three"]]
    assert "".join(sent) == "one two " and stops.hit
    assert stops.flush() == ""
    plain = StopText([])
    assert plain.feed("abc") == "abc" and plain.flush() == "" and not plain.hit
    held = StopText(["xyz"])
    assert held.feed("abcx") == "ab" and held.flush() == "cx"  # a tail that never became a stop is sent at the end


def test_timeouts_end_generation_and_are_not_retried():
    outcome = {}
    stop = _Stop(threading.Event(), time.monotonic() - 1, outcome)
    assert stop(torch.zeros(1, 3, dtype=torch.long), None).tolist() == [True] and outcome["timed_out"]
    item = _last_item(outcome, False, 8, 2.0, None)
    assert item["error"]["status"] == 504 and "2.0 s" in item["error"]["detail"]

    class Silent:
        cancelled = False

        async def __anext__(self):
            await asyncio.sleep(60)

        def cancel(self):
            self.cancelled = True

    async def wait():
        silent = Silent()
        with pytest.raises(ApiError) as error:
            await ChatStream(silent, asyncio.get_running_loop().time() + 0.05).next()
        return silent, error.value

    silent, error = asyncio.run(wait())
    assert error.status == 504 and silent.cancelled
    response = error.response({"type": "http", "path": "/v1/chat/completions", "root_path": ""})
    assert response.status_code == 504 and response.headers["x-should-retry"] == "false"  # clients retry 5xx otherwise


def test_list_adapters_finds_complete_ones_in_one_pass(tmp_path):
    for name, files in (("b-one", adapters.REQUIRED_FILES), ("a-two", adapters.REQUIRED_FILES),
                        ("half", (adapters.WEIGHTS_FILE,)), ("Not_An_Id", adapters.REQUIRED_FILES)):
        for file in files:
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / file).write_text("{}")
    listed = adapters.list_adapters(str(tmp_path), limit=10)
    assert [i for i, _ in listed] == ["a-two", "b-one"] and all(t > 1_700_000_000 for _, t in listed)
    assert adapters.list_adapters(str(tmp_path), limit=1) == listed[:1]
    assert adapters.list_adapters(str(tmp_path / "missing"), limit=5) == []


def test_slots_apply_adapters_exactly_as_peft_loads_them(world, minilm, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from t2l_ray.checkpoint import load_checkpoint
    from t2l_ray.generator import Generator

    generator = Generator(load_checkpoint(world["checkpoint"]), encoder=minilm, dtype="float32")
    for i, files in enumerate(generator.render(["Reverse the words.", "Count the letters."], ["one", "two"])):
        adapters.write_adapter(str(tmp_path / ["one", "two"][i]), files)
    ids = torch.tensor([[1, 20, 30, 40, 50]])

    def logits(model):
        with torch.inference_mode():
            return model(input_ids=ids).logits

    def fresh():
        return AutoModelForCausalLM.from_pretrained(world["base"], dtype=torch.float32).eval()

    base_logits = logits(fresh())
    expected = {name: logits(PeftModel.from_pretrained(fresh(), str(tmp_path / name))) for name in ("one", "two")}
    slots = AdapterSlots(fresh())
    loaded = {name: read_adapter(name, str(tmp_path / name), "cpu") for name in ("one", "two")}
    for name in ("one", "two", "one"):  # swapping back and forth
        model, context = slots.activate(loaded[name])
        with context:
            assert torch.allclose(logits(model), expected[name], atol=1e-5)
    assert not torch.allclose(expected["one"], expected["two"])
    model, context = slots.activate(None)
    with context:
        assert torch.allclose(logits(model), base_logits, atol=1e-6)

    from safetensors.torch import save as save_safetensors

    wrong = tmp_path / "wrong"  # the same files, but A made for a base twice as wide
    tensors = {key: torch.zeros(value.shape[0], value.shape[1] * 2) if "lora_A" in key else value
               for key, value in loaded["one"].tensors.items()}
    made = generator.render(["Reverse the words."], ["wrong"])[0].files
    adapters.write_adapter(str(wrong), adapters.AdapterFiles({**made, adapters.WEIGHTS_FILE: save_safetensors(tensors)}))
    with pytest.raises(AdapterMismatch, match=r"does not fit the served base .*lora_A.weight is \[4, 128\], the served base needs \[4, 64\]"):
        slots.activate(read_adapter("wrong", str(wrong), "cpu"))
    with pytest.raises(FileNotFoundError):
        read_adapter("gone", str(tmp_path / "gone"), "cpu")


def test_jobs_serve_llm_yaml_serves_the_factorys_store_with_vllm():
    """The GPU twin (Ray Serve LLM + vLLM dynamic LoRA), checked against Ray's own schemas (no vLLM here)."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from t2l_ray.config import load_config
    from t2l_ray.train.config import TrainConfig

    llm_config = pytest.importorskip("ray.llm._internal.serve.core.configs.llm_config")  # a private path of Ray 2.60
    jobs = Path(__file__).resolve().parents[2] / "jobs"
    config = yaml.safe_load((jobs / "serve_llm.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    (serve_app,) = yaml.safe_load((jobs / "serve.yaml").read_text())["applications"]
    recipe = load_config(TrainConfig, str(jobs / "mistral7b_sft.yaml"))
    (cfg,) = app["args"]["llm_configs"]
    llm = llm_config.LLMConfig.model_validate(cfg)
    assert ":" not in llm.model_loading_config.model_id  # requests send BASE_ID:ADAPTER_ID
    assert llm.model_loading_config.model_source == recipe.model.name_or_path
    assert llm.lora_config.dynamic_lora_loading_path == serve_app["args"]["out"].rstrip("/")  # the factory's store
    engine = cfg["engine_kwargs"]
    assert engine["enable_lora"] is True  # Ray Serve LLM does not set it
    assert engine["max_lora_rank"] in (1, 8, 16, 32, 64, 128, 256, 320, 512) and engine["max_lora_rank"] >= recipe.hypernet.rank
    assert engine["max_cpu_loras"] >= engine["max_loras"]
    launcher = yaml.safe_load((jobs.parent / "cluster" / "aws-gpu.yaml").read_text())
    steering = set(cfg["placement_group_config"]["bundle_per_worker"]) - {"CPU", "GPU"}
    assert steering == {"serve_gpu"} and "serve_gpu" in launcher["available_node_types"]["serve_l4"]["resources"]
    with pytest.raises(ValueError, match="s3://"):  # the schema check can fail: local stores are refused
        llm_config.LoraConfig.model_validate({**cfg["lora_config"], "dynamic_lora_loading_path": "/tmp/adapters"})


# ---------------------------------------------------------------------------------------------- Serve over HTTP

LIMITS = {"max_body_bytes": 16384, "max_tokens_limit": 48, "default_max_tokens": 12, "max_chars": 300}


@pytest.fixture(scope="module")
def chat(world, ray_cluster):
    """The app with the chat routes: 2 ChatModel replicas of <= 2 adapters each, auth on; three adapters made."""
    import requests
    from openai import OpenAI
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"checkpoint": world["checkpoint"], "out": str(world["root"] / "adapters"), "api_token": TOKEN,
                     "base_model": world["base"], "num_cpus": 0.25, "chat_num_cpus": 0.25, "chat_replicas": 2,
                     "max_adapters_per_replica": 2, **LIMITS})
    url = f"http://127.0.0.1:{port}"
    try:
        serve.run(app, name="t2l-chat", route_prefix="/", blocking=False)
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/healthz", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the Serve proxy never answered /healthz"
            time.sleep(0.5)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        made = requests.post(url + "/v1/adapters", headers=auth, timeout=120, json={"items": [
            {"description": "Reverse the order of the words.", "id": "reverse"},
            {"description": "Sort the letters of the word.", "id": "sort"},
            {"description": "Answer yes or no.", "id": "yes-no"}]})
        assert made.status_code == 200, made.text
        client = OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0, timeout=120)
        yield {"url": url, "auth": auth, "client": client, "out": world["root"] / "adapters", "sha": world["sha"]}
    finally:
        serve.shutdown()


def ask(client, model: str, **extra):
    return client.chat.completions.create(model=model, messages=extra.pop("messages", USER), **extra)


@pytest.mark.slow
def test_chat_by_id_base_and_base_colon_id(chat):
    client = chat["client"]
    answer = ask(client, "reverse")
    assert answer.object == "chat.completion" and answer.model == "reverse"
    (choice,) = answer.choices
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage.completion_tokens >= 1 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens <= LIMITS["default_max_tokens"]
    again = ask(client, f"{BASE_NAME}:reverse")
    assert again.model == "reverse" and again.choices[0].message.content == choice.message.content  # greedy
    base = ask(client, BASE_NAME)
    assert base.model == BASE_NAME and base.choices[0].message.content != choice.message.content
    assert ask(client, "sort").choices[0].message.content != choice.message.content
    text = client.completions.create(model="reverse", prompt="the cat sat", max_tokens=5)
    assert text.object == "text_completion" and text.model == "reverse" and text.usage.completion_tokens <= 5
    assert text.choices[0].finish_reason in ("stop", "length") and isinstance(text.choices[0].text, str)


@pytest.mark.slow
def test_a_description_is_made_once_then_reused(chat):
    import requests

    description = "Extract every digit that appears in the text, in order."
    expected = content_id(description, chat["sha"])
    first = ask(chat["client"], f"t2l:{description}")
    assert first.model == expected
    meta = (chat["out"] / expected / adapters.META_FILE).read_text()
    assert json.loads(meta)["description"] == description
    written = requests.get(chat["url"] + "/v1/info", headers=chat["auth"], timeout=30).json()["stats"]["written"]
    second = ask(chat["client"], f"t2l:{description}")
    assert second.model == expected and second.choices[0].message.content == first.choices[0].message.content
    assert (chat["out"] / expected / adapters.META_FILE).read_text() == meta  # not made again
    assert requests.get(chat["url"] + "/v1/info", headers=chat["auth"], timeout=30).json()["stats"]["written"] == written
    assert ask(chat["client"], expected).choices[0].message.content == first.choices[0].message.content


@pytest.mark.slow
def test_streaming_gives_the_same_answer_in_chunks(chat):
    import requests

    client = chat["client"]
    whole = ask(client, "reverse", max_tokens=20)
    chunks = list(ask(client, "reverse", max_tokens=20, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.model == "reverse" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # a stop string taken from the answer ends it right before
    answer = whole.choices[0].message.content
    stop = next(answer[i:i + 2] for i in range(len(answer) // 2, len(answer) - 1) if answer[i:i + 2].strip())
    cut = ask(client, "reverse", max_tokens=20, stop=[stop])
    assert cut.choices[0].message.content == answer[:answer.index(stop)] and cut.choices[0].finish_reason == "stop"
    raw = requests.post(chat["url"] + "/v1/completions", headers=chat["auth"], stream=True, timeout=60,
                        json={"model": "sort", "prompt": "abc", "max_tokens": 4, "stream": True})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert json.loads(events[0][6:])["object"] == "text_completion"


@pytest.mark.slow
def test_models_are_listed_and_retrieved(chat):
    client = chat["client"]
    ids = [m.id for m in client.models.list()]
    assert ids[0] == BASE_NAME and {"reverse", "sort", "yes-no"} <= set(ids)
    assert client.models.retrieve("reverse").id == "reverse"
    assert client.models.retrieve(f"{BASE_NAME}:sort").id == "sort"
    assert client.models.retrieve(BASE_NAME).id == BASE_NAME


@pytest.mark.slow
def test_unknown_models_are_404_in_openais_shape(chat):
    import openai

    client = chat["client"]
    for model in ("nothing-here", "Bad/ID", "other-base:reverse"):
        with pytest.raises(openai.NotFoundError) as error:
            ask(client, model)
        assert error.value.code == "model_not_found" and repr(model) in error.value.message
    with pytest.raises(openai.NotFoundError):
        ask(client, "nothing-here", stream=True)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("t2l:A description nobody asked for yet.")


@pytest.mark.slow
def test_auth_is_the_adapter_routes(chat):
    import openai
    import requests
    from openai import OpenAI

    for key in ("wrong", "none"):
        stranger = OpenAI(base_url=chat["url"] + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as error:
            ask(stranger, "reverse")
        assert "bearer token" in error.value.message
    bare = requests.get(chat["url"] + "/v1/models", timeout=30)
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"


@pytest.mark.slow
def test_limits_and_bad_requests(chat):
    import openai
    import requests

    client = chat["client"]
    with pytest.raises(openai.APIStatusError) as error:
        ask(client, "reverse", messages=[{"role": "user", "content": "x" * 20000}])
    assert error.value.status_code == 413 and error.value.code == "request_too_large"
    broken = requests.post(chat["url"] + "/v1/chat/completions", headers=chat["auth"], timeout=30,
                           json={"model": "reverse", "messages": "not a list"})
    assert broken.status_code == 422 and broken.json()["error"]["param"] == "messages"
    for extra, phrase in (({"n": 2}, "n=2"), ({"model": "t2l:" + "d" * 301}, "the limit is 300"),
                          ({"model": "t2l:   "}, "description is empty")):
        with pytest.raises(openai.UnprocessableEntityError, match=phrase):
            ask(client, **{"model": "reverse", **extra})
    capped = ask(client, "reverse", max_tokens=10_000)
    assert capped.usage.completion_tokens <= LIMITS["max_tokens_limit"]
    long = [{"role": "user", "content": "the cat sat on the mat " * 60}]
    with pytest.raises(openai.UnprocessableEntityError) as error:
        ask(client, "reverse", messages=long, max_tokens=40)
    assert error.value.code == "context_length_exceeded"


@pytest.mark.slow
def test_an_adapter_stays_on_its_replica_and_eviction_keeps_answers(chat):
    client = chat["client"]
    first = {name: ask(client, name).choices[0].message.content for name in ("reverse", "sort", "yes-no")}
    # A fresh adapter, loaded by one replica. Replicas report what they hold every 0.1 s and the ingress's router
    # hears it through the controller (seconds on a loaded machine); from then on it sends that adapter there.
    fresh = ask(client, "t2l:Count the vowels in the word.")
    time.sleep(3)
    replicas = {ask(client, fresh.model).system_fingerprint for _ in range(4)}
    assert replicas == {fresh.system_fingerprint}, replicas
    for _ in range(2):  # three adapters over replicas of two slots each: loads and evictions, same answers
        for name in ("reverse", "sort", "yes-no"):
            assert ask(client, name).choices[0].message.content == first[name]
