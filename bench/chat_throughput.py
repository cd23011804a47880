"""Chat throughput: the OpenAI-compatible routes with 1, 8 and 32 distinct adapters at 32 concurrent clients,
against the base alone and against what a user would do instead (PEFT in one process, one request at a time).

    .venv/bin/python bench/chat_throughput.py [--clients 32] [--requests 4] [--adapters 1,8,32] [--max-tokens 16]
        [--replicas 2] [--per-replica 8] [--base-model RUN/base --checkpoint RUN/hypernet]

Default world: the demo's base (jobs/demo_cpu.yaml's shrunk random Llama, saved by `base_model.save_base`
with a tokenizer trained on the generated suite) and an untrained hypernet for it (`checkpoint.init_checkpoint`;
its adapters are delta-W = 0, which costs what any adapter costs). `--base-model/--checkpoint` bench a trained run
instead (for example `demo_out/run/base` and `demo_out/run/hypernet` after `make demo`).

One app on a private local Ray cluster, as `t2l-ray serve --base-model` runs it: `--replicas` ChatModel replicas
of one CPU each, `--per-replica` adapters kept per replica (K). The adapters are made through `POST /v1/adapters`
first. Each row: one warm-up request per distinct model (so with more adapters than replicas x K, loads and
evictions happen during the row, as they would), then `--clients` concurrent streaming clients (the `openai`
package's AsyncOpenAI) sending `--requests` requests each, spread round-robin over the row's models.

Columns: `req/s` = requests / wall time of the row; `first token` = from sending a request to its first
non-empty text chunk (p50, p90), queueing included; `tokens/s` = completion tokens (from the usage chunks) / wall
time; `errors` = requests that raised. The in-process row loads the base once, then per request
`PeftModel.from_pretrained` + streaming `generate` + `unload()` in one process, one request at a time (no
queueing: its first token is the service time alone). The line above the table gives the load average at the
start and the end: other work on the machine moves every figure, and nothing asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPT = "Reverse the order of the words in the sentence.\n\nthe quick brown fox jumps over the lazy dog"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_world(scratch: str) -> tuple[str, str]:
    """(base folder, checkpoint) of the demo's shape: jobs/demo_cpu.yaml's base, an untrained hypernet for it."""
    from t2l_ray.checkpoint import init_checkpoint
    from t2l_ray.config import load_config
    from t2l_ray.data.sni import instance_rows
    from t2l_ray.data.suite import build_suite
    from t2l_ray.data.tokenizer import train_tokenizer
    from t2l_ray.shapes import base_shapes
    from t2l_ray.train.config import TrainConfig
    from t2l_ray.base_model import save_base, tokenizer_overrides

    cfg = load_config(TrainConfig, os.path.join(ROOT, "jobs", "demo_cpu.yaml"))
    rows = instance_rows(build_suite(seed=cfg.data.suite_seed).tasks)
    tokenizer = train_tokenizer([f"{r['definition']}\n\n{r['input']}" for r in rows], os.path.join(scratch, "tok"))
    cfg.model.config_overrides = tokenizer_overrides(cfg.model, len(tokenizer))  # demo_cpu.yaml: tokenizer: train
    base = save_base(cfg.model, "float32", os.path.join(scratch, "tok"), os.path.join(scratch, "run", "base"))
    checkpoint = os.path.join(scratch, "run", "hypernet")
    init_checkpoint(cfg.hypernet, base_shapes(base, cfg.hypernet.target_modules), cfg.encoder, checkpoint)
    return base, checkpoint


async def run_row(url: str, models: list[str], clients: int, per_client: int, max_tokens: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    messages = [{"role": "user", "content": PROMPT}]
    for model in models:  # warm-up: every adapter made known to the ingress and loaded once
        await client.chat.completions.create(model=model, messages=messages, max_tokens=1)
    first_tokens, tokens, errors = [], [0], [0]

    async def one(model: str) -> None:
        sent = time.perf_counter()
        try:
            stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                          stream=True, stream_options={"include_usage": True})
            seen = False
            async for chunk in stream:
                if not seen and chunk.choices and chunk.choices[0].delta.content:
                    first_tokens.append(time.perf_counter() - sent)
                    seen = True
                if chunk.usage is not None:
                    tokens[0] += chunk.usage.completion_tokens
        except Exception:  # noqa: BLE001 - counted, the row goes on
            errors[0] += 1

    async def worker(index: int) -> None:
        for i in range(per_client):
            await one(models[(index * per_client + i) % len(models)])

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(clients)))
    seconds = time.perf_counter() - started
    await client.close()
    return summary(clients * per_client, seconds, first_tokens, tokens[0], errors[0])


def in_process_row(base: str, folders: list[str], requests: int, max_tokens: int) -> dict:
    """What a user would do without a server: PEFT in one process, load + generate + unload per request."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, TextIteratorStreamer

    from t2l_ray.data.prompts import encode_prompts, render_messages
    from t2l_ray.data.tokenizer import load_tokenizer

    torch.set_num_threads(1)  # what one ChatModel replica gets
    tokenizer = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    ids = torch.tensor(encode_prompts(tokenizer, [render_messages(tokenizer, [{"role": "user", "content": PROMPT}])]))
    first_tokens, tokens = [], 0
    started = time.perf_counter()
    for i in range(requests):
        sent = time.perf_counter()
        adapted = PeftModel.from_pretrained(model, folders[i % len(folders)])
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        out = {}
        thread = threading.Thread(target=lambda: out.update(ids=adapted.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
            streamer=streamer, pad_token_id=tokenizer.pad_token_id)))
        thread.start()
        seen = False
        for piece in streamer:
            if piece and not seen:
                first_tokens.append(time.perf_counter() - sent)
                seen = True
        thread.join()
        tokens += out["ids"].shape[1] - ids.shape[1]
        model = adapted.unload()
    return summary(requests, time.perf_counter() - started, first_tokens, tokens, 0)


def summary(requests: int, seconds: float, first_tokens: list[float], tokens: int, errors: int) -> dict:
    ordered = sorted(first_tokens) or [float("nan")]
    return {"requests": requests, "rate": requests / seconds, "p50": 1000 * statistics.median(ordered),
            "p90": 1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], "tokens": tokens / seconds,
            "errors": errors}


def table(rows: list[tuple[str, str, int, dict]]) -> str:
    lines = ["| path | models | clients | requests | req/s | first token p50 ms | p90 ms | tokens/s | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, models, clients, r in rows:
        lines.append(f"| {label} | {models} | {clients} | {r['requests']} | {r['rate']:.1f} | {r['p50']:.0f} "
                     f"| {r['p90']:.0f} | {r['tokens']:.0f} | {r['errors']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="Concurrent clients (default 32).")
    parser.add_argument("--requests", type=int, default=4, help="Requests per client per row (default 4).")
    parser.add_argument("--adapters", default="1,8,32", help="Distinct adapters per row, comma-separated.")
    parser.add_argument("--max-tokens", type=int, default=16, help="Tokens per answer (default 16).")
    parser.add_argument("--replicas", type=int, default=2, help="ChatModel replicas, one CPU each (default 2).")
    parser.add_argument("--per-replica", type=int, default=8, help="Adapters kept per replica, K (default 8).")
    parser.add_argument("--base-model", default="", help="A base folder (default: the demo's shape, built here).")
    parser.add_argument("--checkpoint", default="", help="A hypernet for that base (with --base-model).")
    args = parser.parse_args()
    if bool(args.base_model) != bool(args.checkpoint):
        parser.error("give --base-model and --checkpoint together")
    counts = [int(n) for n in args.adapters.split(",") if n.strip()]

    import ray
    import requests
    from ray import serve

    from t2l_ray.raycluster import private_cluster_options
    from t2l_ray.serve import build_app

    started, load = time.time(), os.getloadavg()[0]
    scratch = tempfile.mkdtemp(prefix="t2l-chat-bench-")
    base, checkpoint = (args.base_model, args.checkpoint) if args.base_model else demo_world(scratch)
    out = os.path.join(scratch, "adapters")
    ray.init(**{**private_cluster_options(), "num_cpus": args.replicas + 4, "_temp_dir": os.path.join(scratch, "ray")})
    with socket.socket() as probe:  # a free port for the Serve proxy
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rows = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"checkpoint": checkpoint, "out": out, "base_model": base, "num_cpus": 1,
                             "chat_replicas": args.replicas, "chat_num_cpus": 1, "chat_max_ongoing_requests": 8,
                             "max_adapters_per_replica": args.per_replica, "max_tokens_limit": max(args.max_tokens, 64)}),
                  name="bench", route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        ids = [f"bench-{i:02d}" for i in range(max(counts))]
        made = requests.post(url + "/v1/adapters", timeout=600, json={"items": [
            {"description": f"Task {i}: reverse the order of the words, then answer in lower case.", "id": i} for i in ids]})
        made.raise_for_status()
        print(f"{len(ids)} adapters made; base {base}; {args.replicas} ChatModel replicas, K={args.per_replica}", flush=True)
        name = requests.get(url + "/v1/models", timeout=60).json()["data"][0]["id"]
        plan = [("Serve, base alone", [name], "base")] + [("Serve + adapters", ids[:n], str(n)) for n in counts]
        for label, models, shown in plan:
            print(f"measuring {label} ({shown}) ...", end=" ", flush=True)
            result = asyncio.run(run_row(url, models, args.clients, args.requests, args.max_tokens))
            print(f"{result['rate']:.1f} req/s", flush=True)
            rows.append((label, shown, args.clients, result))
    finally:
        serve.shutdown()
        ray.shutdown()
    print("measuring in-process PEFT ...", end=" ", flush=True)
    folders = [os.path.join(out, i) for i in ids[: min(8, len(ids))]]
    rows.append(("in-process PEFT, load + generate + unload", str(len(folders)), 1,
                 in_process_row(base, folders, args.clients, args.max_tokens)))
    print("done", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(f"{args.max_tokens} tokens per answer; {os.cpu_count()} CPUs, load average {load:.1f} at the start and "
          f"{os.getloadavg()[0]:.1f} at the end; {time.time() - started:.0f} s in all")
    print(table(rows))


if __name__ == "__main__":
    main()
