"""Serve batching at Mistral-7B shapes: `POST /v1/adapters` from concurrent clients, batched (the replica's
`max_batch_size`) against unbatched (`max_batch_size=1`, one forward per description), from one run.

    .venv/bin/python bench/serve_batching.py [--clients 32] [--requests 256] [--per-request 1]
        [--max-batch-size 32] [--num-cpus 1] [--keep]

World: the checkpoint of bench/generate_throughput.py (T2L-L for the Mistral-7B preset, untrained, heads
perturbed so adapters differ: 6.83 MB of bf16 weights per adapter; encoder all-minilm-l6-v2, the offline
package), in a scratch folder. One private local Ray cluster; each row deploys the app as `t2l-ray serve` does
(`t2l_ray.serve:build_app`: one AdapterService replica with `--num-cpus` CPUs, default settings otherwise)
writing to a scratch store, sends 4 warm-up requests, then `--clients` concurrent HTTP clients (aiohttp) send
`--requests` requests in all, each with `--per-request` descriptions and new ids, so every adapter is
generated, hashed and written. The app is deleted and its adapters removed before the next row.

Columns: `req/s` and `adapters/s` over the row's wall time; `mean batch` = descriptions per batch over the row's
requests and `largest`, from `GET /v1/info` (`stats`, warm-up left out); `p50`/`p95 ms` = request latency as a
client sees it (queueing included); `errors` = answers other than 200. The line under the table gives the
ratios. The figures move with the machine's load (printed); nothing asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # generate_throughput: the same checkpoint and descriptions
from generate_throughput import ENCODER, PRESET, TESTS, descriptions, perturbed_checkpoint  # noqa: E402

WARMUP = 4
QUIET = {"log_level": "WARNING"}  # no access log line per request; warnings and errors still show


async def drive(url: str, clients: int, requests: int, per_request: int, texts: list[str], prefix: str) -> dict:
    """`clients` concurrent clients sending `requests` requests in all; latencies in seconds."""
    import aiohttp

    latencies, statuses, counter = [], [], itertools.count()

    async def client(http: aiohttp.ClientSession) -> None:
        while (index := next(counter)) < requests:
            items = [{"description": texts[index * per_request + k], "id": f"{prefix}-{index * per_request + k:05d}"}
                     for k in range(per_request)]
            sent = time.perf_counter()
            async with http.post(url + "/v1/adapters", json={"items": items}) as response:
                await response.read()
            latencies.append(time.perf_counter() - sent)
            statuses.append(response.status)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "latencies": sorted(latencies), "errors": sum(s != 200 for s in statuses)}


def measure_row(args, max_batch_size: int, checkpoint: str, out: str, port: int, prefix: str) -> dict:
    import requests
    from ray import serve

    from t2l_ray.serve import build_app

    settings = {"checkpoint": checkpoint, "out": out, "num_cpus": args.num_cpus, "max_batch_size": max_batch_size,
                "max_ongoing_requests": max(64, 2 * max_batch_size)}
    serve.run(build_app(settings), name="bench", route_prefix="/", logging_config=QUIET)
    url = f"http://127.0.0.1:{port}"
    try:
        for i in range(WARMUP):  # the encoder, the forward and the store once, outside the timed part
            requests.post(url + "/v1/adapters", json={"description": f"Warm-up task {i}.", "id": f"{prefix}-warm-{i}"},
                       timeout=600).raise_for_status()
        before = requests.get(url + "/v1/info", timeout=60).json()["stats"]
        texts = descriptions(args.requests * args.per_request)
        result = asyncio.run(drive(url, args.clients, args.requests, args.per_request, texts, prefix))
        after = requests.get(url + "/v1/info", timeout=60).json()["stats"]
    finally:
        serve.delete("bench")
        shutil.rmtree(out, ignore_errors=True)
    batches = after["batches"] - before["batches"]
    result["mean_batch"] = (after["descriptions"] - before["descriptions"]) / batches if batches else 0.0
    result["largest"] = after["largest_batch"]
    return result


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def table(rows: list[tuple[str, int, dict]], args) -> str:
    lines = ["| path | max_batch_size | clients | requests | s | req/s | adapters/s | mean batch | largest "
             "| p50 ms | p95 ms | errors |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, size, r in rows:
        rate = args.requests / r["seconds"]
        lines.append(f"| {label} | {size} | {args.clients} | {args.requests} | {r['seconds']:.1f} | {rate:.2f} "
                     f"| {rate * args.per_request:.2f} | {r['mean_batch']:.1f} | {r['largest']} "
                     f"| {1000 * statistics.median(r['latencies']):.0f} | {1000 * percentile(r['latencies'], 0.95):.0f} "
                     f"| {r['errors']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="Concurrent clients (default 32).")
    parser.add_argument("--requests", type=int, default=256, help="Requests per row, all clients together (default 256).")
    parser.add_argument("--per-request", type=int, default=1, help="Descriptions per request (default 1).")
    parser.add_argument("--max-batch-size", type=int, default=32, help="The batched row's max_batch_size (default 32).")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs of the replica (default 1, ServeConfig's).")
    args = parser.parse_args()
    if min(args.clients, args.requests, args.per_request, args.max_batch_size) < 1:
        parser.error("--clients, --requests, --per-request and --max-batch-size must be at least 1")

    import ray
    from ray import serve

    sys.path.insert(0, str(TESTS))
    from ports import free_port

    from t2l_ray.raycluster import private_cluster_options

    started, load = time.time(), os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="t2l-serve-bench-"))
    checkpoint = str(scratch / "hypernet")
    print(f"checkpoint: T2L-L for {PRESET}, encoder {ENCODER} -> {checkpoint}", flush=True)
    perturbed_checkpoint(checkpoint)
    port = free_port()
    rows = []
    ray.init(**{**private_cluster_options(), "_temp_dir": str(scratch / "ray")})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=QUIET)
        for label, size in (("batched", args.max_batch_size), ("unbatched", 1)):
            print(f"measuring {label} (max_batch_size={size}) ...", end=" ", flush=True)
            result = measure_row(args, size, checkpoint, str(scratch / "store"), port, label)
            print(f"{result['seconds']:.1f} s, mean batch {result['mean_batch']:.1f}", flush=True)
            rows.append((label, size, result))
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    (_, _, batched), (_, _, unbatched) = rows
    print()
    print(f"{args.per_request} description(s) per request, 6.83 MB of weights per adapter, replica num_cpus "
          f"{args.num_cpus:g}; {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the "
          f"start, {os.getloadavg()[0]:.1f} at the end; {time.time() - started:.0f} s in all")
    print(table(rows, args))
    print(f"- batched: {unbatched['seconds'] / batched['seconds']:.2f}x the unbatched throughput; p50 latency "
          f"{statistics.median(batched['latencies']) / statistics.median(unbatched['latencies']):.2f}x, p95 "
          f"{percentile(batched['latencies'], 0.95) / percentile(unbatched['latencies'], 0.95):.2f}x the unbatched")


if __name__ == "__main__":
    main()
