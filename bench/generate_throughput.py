"""Generation throughput at Mistral-7B shapes: the factory against a one-description-per-call loop, the
hypernet forward alone and plain writes of the same bytes to the same store, from one run.

    .venv/bin/python bench/generate_throughput.py [--device cpu|cuda] [--n 192] [--batch-size 32]
        [--store PATH|URI|s3] [--keep]

Every row generates (or writes) adapters for the Mistral-7B preset with T2L-L (rank 8, q_proj and v_proj,
32 layers: 6.8 MB of bf16 weights per adapter) from an untrained checkpoint (`checkpoint.init_checkpoint`
on `shapes.base_shapes("mistral-7b-instruct-v0.2")`, encoder `all-minilm-l6-v2`, 384 dims) whose heads are
perturbed so adapters differ. No base weights are loaded. The checkpoint (~220 MB, fp32) lives in a local
scratch folder; adapters go to `--store`: a local folder (default: a fresh temp folder), any path or
s3:// URI, or `s3` for a fresh SeaweedFS server started like the tests' (tests/fixtures_s3.py).

Rows, each measured in its own subprocess so timings and peak RSS never mix:
- one per call: the T2L reference's way (`gen_lora` + `save_lora`): an fp32 hypernet, and for each
  description one encoder call, one forward, a dict of PEFT tensors (scale folded in fp32, cast to bf16),
  `safetensors.torch.save` and the folder written through the storage layer;
- forward alone, fp32 and bf16 (bf16 only where the device has it): batches of B through the hypernet,
  nothing else; render: the factory's device side (forward, fold, cast, one copy into the host buffer);
- factory in this process / on Ray: `run_factory` with batch B (`local`, or `in_process_max=0` on a private
  cluster); `wall/s` counts from the subprocess's start (imports, Ray's start-up, actors, first batch);
- store writes: the factory's folders written again with `adapters.write_adapter`, on as many threads as
  the factory's writer uses (`factory.writer.default_threads`: CPUs + 4).

Columns: `wall/s` = adapters over the row's whole time; `steady/s` = adapters after the first batch over the
time they took (`factory.steady_rate`; n/a below 3 batches); `MB/s` = weights MB at the steady rate where
there is one, else the wall rate; `peak RSS` = the subprocess's ru_maxrss, and for the Ray row the largest RSS
the generation actor reached (sampled), next to the batch buffer it holds. Ratios below the table compare the
steady rates. The figures move with the machine's load (printed); nothing asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRESET = "mistral-7b-instruct-v0.2"
ENCODER = "all-minilm-l6-v2"
TESTS = Path(__file__).resolve().parent.parent / "tests"


def descriptions(n: int) -> list[str]:
    """n distinct, realistic task descriptions (the generated suite's, numbered when more are needed)."""
    from t2l_ray.data.suite import build_suite

    suite = build_suite(seed=0, instances_per_task=1)
    pool = [d for t in suite.tasks for d in suite.descriptions.train[t.name] + suite.descriptions.held_out[t.name]]
    return [pool[i % len(pool)] + ("" if i < len(pool) else f" (variant {i // len(pool)})") for i in range(n)]


def adapter_ids(n: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(n)]


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def since_start() -> float:
    """Seconds since this process started: what a user running the command waits through."""
    import psutil

    return time.time() - psutil.Process().create_time()


# ------------------------------------------------------------------------------------------------ measurements


def measure_one_per_call(spec: dict) -> dict:
    import torch
    from safetensors.torch import save

    from t2l_ray import adapters, storage
    from t2l_ray.checkpoint import load_checkpoint
    from t2l_ray.encoders import load_encoder
    from t2l_ray.factory import steady_rate
    from t2l_ray.packing import lora_key

    loaded = load_checkpoint(spec["checkpoint"], device=spec["device"])
    model, encoder = loaded.model, load_encoder(loaded.encoder, device=spec["device"])
    scale, shapes = model.config.scale, model.shapes
    config = adapters.config_bytes(shapes, model.config.rank, [m.name for m in model.modules_])
    times, weights = [], 0
    start = time.perf_counter()
    for text, adapter_id in zip(descriptions(spec["n"]), adapter_ids(spec["n"])):
        with torch.inference_mode():
            lora = model(encoder.encode([text]).to(spec["device"]))
            tensors = {}
            for name, (a, b) in lora.items():
                module = shapes.module(name)
                for layer in range(shapes.num_layers):
                    tensors[lora_key(layer, module, "A")] = a[0, layer].to(torch.bfloat16).contiguous().cpu()
                    tensors[lora_key(layer, module, "B")] = (b[0, layer].float() * scale).to(torch.bfloat16).contiguous().cpu()
        data = save(tensors, metadata={"format": "pt"})
        meta = adapters.meta_bytes(adapter_id=adapter_id, description=text, checkpoint_sha256=loaded.sha256,
                                   encoder=loaded.encoder, scale=scale, dtype="bfloat16")
        adapters.write_adapter(storage.join(spec["out"], adapter_id),
                               {adapters.WEIGHTS_FILE: data, adapters.META_FILE: meta, adapters.CONFIG_FILE: config})
        weights += len(data)
        times.append(time.perf_counter() - start)
    return {"adapters": len(times), "seconds": times[-1], "steady": steady_rate(times, 1), "weights_bytes": weights,
            "peak_rss_mb": peak_rss_mb()}


def measure_forward(spec: dict) -> dict:
    """Batches of B through the hypernet (`render`: also fold, cast and the copy into the host buffer)."""
    import torch

    from t2l_ray.checkpoint import load_checkpoint
    from t2l_ray.render import Renderer

    model = load_checkpoint(spec["checkpoint"], device=spec["device"]).model.eval()
    embeddings = torch.randn(spec["batch"], model.encoder_dim)
    renderer = Renderer(model, "bfloat16", spec["forward"])
    if spec["render"]:
        step = lambda: renderer.render(embeddings)  # noqa: E731
    else:
        def step():
            with torch.inference_mode():
                model(embeddings.to(spec["device"]))
            if spec["device"] == "cuda":
                torch.cuda.synchronize()
    step()  # warm-up: allocator, kernels
    batches = max(1, spec["n"] // spec["batch"])
    start = time.perf_counter()
    for _ in range(batches):
        step()
    seconds = time.perf_counter() - start
    return {"adapters": batches * spec["batch"], "seconds": seconds, "steady": None,
            "weights_bytes": batches * spec["batch"] * renderer.layout.file_bytes, "peak_rss_mb": peak_rss_mb(),
            "forward_dtype": str(renderer.forward_dtype).removeprefix("torch.")}


class ActorRSS:
    """Largest RSS of the descendant Ray worker whose command line names `marker`, sampled every 0.1 s."""

    def __init__(self, marker: str):
        import psutil

        self.me, self.marker, self.peak = psutil.Process(), marker, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        import psutil

        while not self.stop.wait(0.1):
            for child in self.me.children(recursive=True):
                try:
                    if self.marker in " ".join(child.cmdline()):
                        self.peak = max(self.peak, child.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def measure_factory(spec: dict) -> dict:
    from t2l_ray.factory import FactoryConfig, run_factory

    config = FactoryConfig(batch_size=spec["batch"], num_gpus=0.5 if spec["device"] == "cuda" else 0.0,
                           **({"local": True} if spec["local"] else {"in_process_max": 0}))
    with ActorRSS("GenerateStage") as actor:
        summary = run_factory(spec["input"], spec["checkpoint"], spec["out"], config,
                              started_at=time.time() - since_start())
    if summary.failed or summary.written != spec["n"]:
        raise RuntimeError(f"factory wrote {summary.written} of {spec['n']} adapters: {summary.failures[:3]}")
    own_cluster = not os.environ.get("RAY_ADDRESS")
    rss = peak_rss_mb() if spec["local"] else (actor.peak / 2**20 if own_cluster and actor.peak else None)
    return {"adapters": summary.written, "seconds": summary.wall_seconds, "steady": summary.steady_rate,
            "weights_bytes": summary.written_bytes, "peak_rss_mb": rss}


def measure_store_writes(spec: dict) -> dict:
    """The folders at `source` written again to `out` on as many threads as the factory's writer uses; only the
    writes are timed."""
    from concurrent.futures import ThreadPoolExecutor

    from t2l_ray import adapters, storage
    from t2l_ray.factory.writer import default_threads

    ids, timed, weights, chunk = adapter_ids(spec["n"]), 0.0, 0, 32
    with ThreadPoolExecutor(default_threads()) as pool:
        for first in range(0, len(ids), chunk):  # read a chunk (untimed), then time its writes: bounded memory
            folders = {
                adapter_id: adapters.AdapterFiles({name: storage.read_bytes(storage.join(spec["source"], adapter_id, name))
                                                   for name in adapters.REQUIRED_FILES})
                for adapter_id in ids[first:first + chunk]
            }
            start = time.perf_counter()
            list(pool.map(lambda item: adapters.write_adapter(storage.join(spec["out"], item[0]), item[1]),
                          folders.items()))
            timed += time.perf_counter() - start
            weights += sum(files.weights_bytes for files in folders.values())
    return {"adapters": len(ids), "seconds": timed, "steady": None, "weights_bytes": weights, "peak_rss_mb": None}


MEASUREMENTS = {"one_per_call": measure_one_per_call, "forward": measure_forward, "factory": measure_factory,
                "store": measure_store_writes}


def run_measurement(kind: str, spec: dict, log: Path) -> dict:
    """One measurement in a fresh Python process; its JSON result is the last line of its stdout."""
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", kind, "--spec", json.dumps(spec)],
                              stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-6000:])
        raise SystemExit(f"measurement {kind} failed (exit {proc.returncode}); log: {log}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ driver


def fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def rate(result: dict) -> float:
    return result["steady"] or result["adapters"] / result["seconds"]


def table(rows: list[tuple[str, dict]], buffer_mb: float) -> str:
    lines = ["| path | adapters | s | wall/s | steady/s | MB/s | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        mbs = rate(r) * r["weights_bytes"] / r["adapters"] / 1e6
        rss = fmt(r["peak_rss_mb"], 0)
        if label.startswith("factory on Ray") and r["peak_rss_mb"]:
            rss += f" (generation actor; {buffer_mb:.0f} MB of it the batch buffer)"
        elif label.startswith("factory in this process"):
            rss += f" (encoder + generation; {buffer_mb:.0f} MB batch buffer)"
        lines.append(f"| {label} | {r['adapters']} | {r['seconds']:.1f} | {r['adapters'] / r['seconds']:.2f} "
                     f"| {fmt(r['steady'], 2)} | {mbs:.1f} | {rss} |")
    return "\n".join(lines)


def ratios(results: dict[str, dict]) -> list[str]:
    loop, store = rate(results["one per call"]), rate(results["store writes"])
    out = []
    for label in ("factory in this process", "factory on Ray"):
        if label in results:
            r = rate(results[label])
            out.append(f"{label}: {r / loop:.2f}x the one-per-call loop, {r / store:.2f}x the store's plain writes")
    forward = next((results[k] for k in ("forward alone (bfloat16)", "forward alone (float32)") if k in results), None)
    if forward and "factory on Ray" in results:
        out.append(f"factory on Ray: {rate(results['factory on Ray']) / rate(forward):.2f}x the forward alone")
    return out


def perturbed_checkpoint(uri: str) -> None:
    """An untrained T2L-L for the preset whose heads are perturbed, so every description gets its own adapter."""
    import torch

    from t2l_ray import checkpoint
    from t2l_ray.checkpoint import known_encoder_dim
    from t2l_ray.hypernet import HypernetConfig, TextToLoRA
    from t2l_ray.shapes import base_shapes

    torch.manual_seed(0)
    model = TextToLoRA(HypernetConfig(variant="L"), base_shapes(PRESET), known_encoder_dim(ENCODER))
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(0, 0.002)
    checkpoint.save_checkpoint(model, ENCODER, uri)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the hypernet runs (default cpu).")
    parser.add_argument("--n", type=int, default=192, help="Adapters per row (default 192; >= 3 x batch for a steady rate).")
    parser.add_argument("--batch-size", type=int, default=32, help="Factory and forward batch size (default 32).")
    parser.add_argument("--store", default="", help="Where adapters go: a local folder, a path or s3:// URI, or `s3` for "
                                                    "a fresh SeaweedFS server (default: a fresh temp folder).")
    parser.add_argument("--keep", action="store_true", help="Keep the adapters, the checkpoint and the logs.")
    parser.add_argument("--measure", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASUREMENTS[args.measure](json.loads(args.spec))))
        return
    if args.n < 1 or args.batch_size < 1:
        parser.error("--n and --batch-size must be at least 1")

    from t2l_ray import storage
    from t2l_ray.render import device_has_bf16

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    scratch = Path(tempfile.mkdtemp(prefix="t2l-bench-"))
    with ExitStack() as stack:
        store_root = args.store or str(scratch / "store")
        if args.store == "s3":
            sys.path.insert(0, str(TESTS))
            from fixtures_s3 import SPOILERS, running_s3_server

            (scratch / "s3").mkdir()
            server = stack.enter_context(running_s3_server(scratch / "s3"))
            os.environ.update(server.env())  # the measurement subprocesses (and their Ray workers) inherit these
            for name in SPOILERS:
                os.environ.pop(name, None)
            store_root = server.uri("bench")
        store = storage.join(store_root, f"run-{uuid.uuid4().hex[:8]}")
        started, load = time.time(), os.getloadavg()
        ckpt = str(scratch / "hypernet")
        print(f"checkpoint: T2L-L for {PRESET}, encoder {ENCODER} -> {ckpt}; store {store}", flush=True)
        perturbed_checkpoint(ckpt)
        source = scratch / "descriptions.jsonl"
        source.write_text("".join(json.dumps({"description": d, "id": i}) + "\n"
                                  for d, i in zip(descriptions(args.n), adapter_ids(args.n))))
        common = {"n": args.n, "checkpoint": ckpt, "device": args.device, "batch": args.batch_size}
        results: dict[str, dict] = {}

        def measure(label: str, kind: str, **spec) -> None:
            print(f"measuring {label} ...", end=" ", flush=True)
            log = scratch / f"{label.replace(' ', '_').replace('(', '').replace(')', '')}.log"
            results[label] = run_measurement(kind, {**common, **spec}, log)
            print(f"{results[label]['seconds']:.1f} s", flush=True)

        try:
            measure("one per call", "one_per_call", out=storage.join(store, "one_per_call"))
            storage.delete(storage.join(store, "one_per_call"))
            forwards = ["float32"] + (["bfloat16"] if device_has_bf16(torch.device(args.device)) else [])
            for forward in forwards:
                measure(f"forward alone ({forward})", "forward", forward=forward, render=False)
            measure("render (forward, fold, cast, host copy)", "forward", forward="auto", render=True)
            for label, local in (("factory in this process", True), ("factory on Ray", False)):
                name = "factory_local" if local else "factory_ray"
                measure(label, "factory", input=str(source), out=storage.join(store, name), local=local)
                if local:
                    storage.delete(storage.join(store, name))  # ~1.3 GB at n=192; the Ray row's folders are rewritten next
            measure("store writes", "store", source=storage.join(store, "factory_ray"), out=storage.join(store, "store"))
        finally:
            if not args.keep:
                storage.delete(store)
        bf16 = " (bf16 heads)" if "forward alone (bfloat16)" in results else ""
        results[f"render (forward, fold, cast, host copy){bf16}"] = results.pop("render (forward, fold, cast, host copy)")
    weights = results["one per call"]["weights_bytes"] / results["one per call"]["adapters"]
    order = ["one per call", "forward alone (float32)", "forward alone (bfloat16)",
             f"render (forward, fold, cast, host copy){bf16}", "factory in this process", "factory on Ray", "store writes"]
    print()
    print(f"{args.n} adapters per row, batch {args.batch_size}, {weights / 1e6:.2f} MB of weights each, device "
          f"{args.device}, store {'SeaweedFS S3' if args.store == 's3' else store_root}; {os.cpu_count()} CPUs, load "
          f"average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
          f"{time.time() - started:.0f} s in all")
    print(table([(label, results[label]) for label in order if label in results],
                args.batch_size * weights / 2**20))
    for line in ratios(results):
        print(f"- {line}")
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
