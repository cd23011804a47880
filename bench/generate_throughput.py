"""Generation throughput: one description per call vs the batched factory on Ray, against raw store writes.

    .venv/bin/python bench/generate_throughput.py [--n 192] [--batch-sizes 8,64] [--store PATH_OR_S3_URI]

Everything generates adapters for the Mistral-7B preset with T2L-L (rank 8, q_proj and v_proj, 32 layers:
6.8 MB of bf16 weights per adapter) from an untrained checkpoint made by `checkpoint.init_checkpoint` on
`shapes.base_shapes("mistral-7b-instruct-v0.2")` with the `all-minilm-l6-v2` encoder (384 dims). No base
weights are ever loaded. The checkpoint (~220 MB, fp32) is written to a local scratch folder; the adapters
go to `--store` (a local folder, default a fresh temp folder, or an s3:// URI reached through the standard
AWS environment variables), under a per-run prefix; both are deleted afterwards unless `--keep`.

Rows, each measured in its own subprocess so timings and peak RSS never mix:
- one per call: how the T2L reference generates, one description at a time: encoder call, hypernet forward,
  write of the folder, in one process (`Generator.render([d])` + `adapters.write_adapter`);
- factory B=...: `t2l_ray.factory.run_factory` (encoder actors -> hypernet actors -> writes, on Ray Data)
  with that batch size and the factory's default actor settings, on a private local Ray cluster started in
  the subprocess (or the one in RAY_ADDRESS); the cluster's start-up is not timed, the actors' is;
- store writes: the very folders the one-per-call row wrote, read back and written again straight to the
  same store with `adapters.write_adapter` (no generation): the storage ceiling.

Columns: `total s` includes loading the encoder and the checkpoint (once per process or actor);
`adapters/s` = adapters / total s; `steady/s` leaves out start-up and the first batch: (n - B) / (time of the
last adapter - time the first batch finished), shown when n >= 3B (Ray Data hands rows over a block at a
time, so it is an arrival rate, coarse for large B); `MB/s` counts weights bytes over total s (store writes:
over write time only); `peak RSS` is getrusage's ru_maxrss of the measuring process, and for factory rows
the largest RSS any one of the private cluster's worker processes reached (psutil, sampled every 0.1 s;
n/a with RAY_ADDRESS).

Caveats: the one-per-call process uses torch's default threads (all cores); each factory actor reserves 0.5
CPU, so Ray gives its torch one thread, and the encoder and hypernet actors run side by side. The line above
the table prints the machine's load average at the start and the end: other work on the machine moves
every figure. The figures are machine-dependent; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRESET = "mistral-7b-instruct-v0.2"
ENCODER = "all-minilm-l6-v2"


# ------------------------------------------------------------------------------------------------ helpers


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def steady_rate(times: list[float], batch: int) -> float | None:
    """Adapters/s after the first batch: (n - B) / (last arrival - arrival of the first batch's last adapter).

    None unless at least two more batches follow the first: Ray Data hands rows over a block at a time, so
    one later batch would time a burst of arrivals, not generation.
    """
    times = sorted(times)
    if len(times) < 3 * batch:
        return None
    span = times[-1] - times[batch - 1]
    return (len(times) - batch) / span if span > 0 else None


def descriptions(n: int) -> list[str]:
    """n distinct, realistic task descriptions (the generated suite's, numbered when more are needed)."""
    from t2l_ray.data.suite import build_suite

    suite = build_suite(seed=0, instances_per_task=1)
    pool = [d for t in suite.tasks for d in suite.descriptions.train[t.name] + suite.descriptions.held_out[t.name]]
    return [pool[i % len(pool)] + ("" if i < len(pool) else f" (variant {i // len(pool)})") for i in range(n)]


def adapter_ids(n: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(n)]


# ------------------------------------------------------------------------------------------------ measurements (subprocesses)


def measure_one_per_call(spec: dict) -> dict:
    from t2l_ray import adapters, storage
    from t2l_ray.generator import Generator

    texts, ids = descriptions(spec["n"]), adapter_ids(spec["n"])
    start = time.perf_counter()
    generator = Generator.from_uri(spec["checkpoint"])
    times, weights = [], 0
    for text, adapter_id in zip(texts, ids):
        (files,) = generator.render([text], [adapter_id])  # one encoder call, one hypernet forward
        adapters.write_adapter(storage.join(spec["out"], adapter_id), files)
        weights += files.weights_bytes
        times.append(time.perf_counter() - start)
    return {"adapters": len(ids), "seconds": times[-1], "first": times[0], "steady": steady_rate(times, 1),
            "weights_bytes": weights, "peak_rss_mb": peak_rss_mb()}


class WorkerRSS:
    """Largest RSS of any descendant process whose name marks it as a Ray worker (`ray::...`), sampled."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.me, self.interval, self.peak = psutil.Process(), interval, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        import psutil

        while not self.stop.wait(self.interval):
            for child in self.me.children(recursive=True):
                try:
                    if child.name().startswith("ray::") or "ray::" in " ".join(child.cmdline()[:1]):
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
    from t2l_ray.raycluster import ensure_ray

    own_cluster = not os.environ.get("RAY_ADDRESS")
    ensure_ray()  # before the clock: run_factory does not time the cluster's start-up either
    times: list[float] = []
    start = time.perf_counter()
    with WorkerRSS() as rss:
        summary = run_factory(spec["input"], spec["checkpoint"], spec["out"], FactoryConfig(batch_size=spec["batch"]),
                              on_row=lambda row: times.append(time.perf_counter() - start))
    if summary.failed or summary.written != spec["n"]:
        raise RuntimeError(f"factory wrote {summary.written} of {spec['n']} adapters: {summary.failures[:3]}")
    return {"adapters": summary.written, "seconds": summary.seconds, "first": min(times),
            "steady": steady_rate(times, spec["batch"]), "weights_bytes": summary.written_bytes,
            "peak_rss_mb": rss.peak / 2**20 if own_cluster and rss.peak else None}


def measure_store_writes(spec: dict) -> dict:
    """Write the folders at `source` again to `out`, straight through the storage layer; only writes are timed."""
    from t2l_ray import adapters, storage

    timed, weights, count, chunk = 0.0, 0, 0, 16
    ids = adapter_ids(spec["n"])
    for first in range(0, len(ids), chunk):  # read a chunk (untimed), then time its writes: bounded memory
        folders = {
            adapter_id: adapters.AdapterFiles({
                name: storage.read_bytes(storage.join(spec["source"], adapter_id, name)) for name in adapters.REQUIRED_FILES
            })
            for adapter_id in ids[first:first + chunk]
        }
        start = time.perf_counter()
        for adapter_id, files in folders.items():
            adapters.write_adapter(storage.join(spec["out"], adapter_id), files)
        timed += time.perf_counter() - start
        weights += sum(files.weights_bytes for files in folders.values())
        count += len(folders)
    return {"adapters": count, "seconds": timed, "first": None, "steady": None, "weights_bytes": weights,
            "peak_rss_mb": None}


MEASUREMENTS = {"one_per_call": measure_one_per_call, "factory": measure_factory, "store": measure_store_writes}


def run_measurement(kind: str, spec: dict, log_dir: str) -> dict:
    """One measurement in a fresh Python process; its JSON result is the last line of its stdout."""
    log = os.path.join(log_dir, f"{kind}-{spec.get('batch', 1)}.log")
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", kind, "--spec", json.dumps(spec)],
                              stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0:
        with open(log) as f:
            sys.stderr.write(f.read()[-6000:])
        raise SystemExit(f"measurement {kind} failed (exit {proc.returncode}); log: {log}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ driver


def fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(rows: list[tuple[str, int, dict]]) -> str:
    base = rows[0][2]
    base_rate, base_steady = base["adapters"] / base["seconds"], base["steady"]
    store = next(r for label, _, r in rows if label == "store writes")
    store_mbs = store["weights_bytes"] / 1e6 / store["seconds"]
    header = ("| path | batch | adapters | total s | first adapter s | adapters/s | steady/s | MB/s "
              "| x one-per-call | % of store MB/s | peak RSS MB |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, batch, r in rows:
        rate = r["adapters"] / r["seconds"]
        mbs = r["weights_bytes"] / 1e6 / r["seconds"]
        generating = label != "store writes"
        ratio = f"{rate / base_rate:.2f}" if generating else "n/a"
        if generating and r["steady"] and base_steady:
            ratio += f" (steady {r['steady'] / base_steady:.2f})"
        lines.append(
            f"| {label} | {batch if generating else 'n/a'} | {r['adapters']} | {r['seconds']:.1f} | {fmt(r['first'])} "
            f"| {rate:.2f} | {fmt(r['steady'], 2)} | {mbs:.1f} | {ratio} "
            f"| {f'{100 * mbs / store_mbs:.1f}' if generating else '100.0'} | {fmt(r['peak_rss_mb'], 0)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=192, help="Adapters per row (default 192: n >= 3 x the largest batch).")
    parser.add_argument("--batch-sizes", default="8,64", help="Factory batch sizes, comma-separated (default 8,64).")
    parser.add_argument("--store", default="", help="Where adapters are written: a local folder or an s3:// URI "
                                                    "(default: a fresh temp folder).")
    parser.add_argument("--keep", action="store_true", help="Keep the written adapters, the checkpoint and the "
                                                             "measurement logs (default: delete them).")
    parser.add_argument("--measure", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASUREMENTS[args.measure](json.loads(args.spec))))
        return
    if args.n < 1:
        parser.error("--n must be at least 1")
    batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

    from t2l_ray import checkpoint, storage
    from t2l_ray.hypernet import HypernetConfig
    from t2l_ray.shapes import base_shapes

    scratch = tempfile.mkdtemp(prefix="t2l-bench-")
    store = storage.join(args.store or os.path.join(scratch, "store"), f"bench-{uuid.uuid4().hex[:8]}")
    shapes = base_shapes(PRESET)
    ckpt = os.path.join(scratch, "hypernet")
    started, load = time.time(), os.getloadavg()[0]
    print(f"init-checkpoint: T2L-L for {shapes.base_model} ({shapes.num_layers} layers, "
          f"{[m.name for m in shapes.modules]}), encoder {ENCODER} -> {ckpt}", flush=True)
    checkpoint.init_checkpoint(HypernetConfig(variant="L"), shapes, ENCODER, ckpt)
    input_file = os.path.join(scratch, "descriptions.jsonl")
    with open(input_file, "w") as f:
        for text, adapter_id in zip(descriptions(args.n), adapter_ids(args.n)):
            f.write(json.dumps({"description": text, "id": adapter_id}) + "\n")

    rows: list[tuple[str, int, dict]] = []

    def measure(label: str, kind: str, batch: int, **spec) -> dict:
        print(f"measuring {label} ...", end=" ", flush=True)
        result = run_measurement(kind, {"n": args.n, "checkpoint": ckpt, "batch": batch, **spec}, scratch)
        print(f"{result['seconds']:.1f} s", flush=True)
        rows.append((label, batch, result))
        return result

    try:
        measure("one per call", "one_per_call", 1, out=storage.join(store, "one_per_call"))
        for batch in batches:
            measure(f"factory B={batch}", "factory", batch, input=input_file, out=storage.join(store, f"factory_{batch}"))
            if not args.keep:
                storage.delete(storage.join(store, f"factory_{batch}"))
        measure("store writes", "store", 1, source=storage.join(store, "one_per_call"), out=storage.join(store, "store"))
    finally:
        if not args.keep:
            storage.delete(store)
            shutil.rmtree(scratch, ignore_errors=True)  # the ~220 MB checkpoint and the logs
    adapter_mb = rows[0][2]["weights_bytes"] / rows[0][2]["adapters"] / 1e6
    print()
    print(f"{args.n} adapters per row, {adapter_mb:.2f} MB of weights each, store {store}"
          f"{' (kept)' if args.keep else ' (deleted)'}; {os.cpu_count()} CPUs, load average {load:.1f} at the start and "
          f"{os.getloadavg()[0]:.1f} at the end; {time.time() - started:.0f} s in all")
    print(table(rows))


if __name__ == "__main__":
    main()
