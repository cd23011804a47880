"""The GPU path end to end on one NVIDIA GPU with no network; `bench/gpu_check.sh` runs this (see docs/gpu.md).

Every stage runs a `t2l-ray` command as a user would, in WORK (default: a temporary folder):
1. an offline task encoder: a small random causal LM and a BPE tokenizer saved to WORK/encoder, used as
   `base-model:WORK/encoder` (the packaged MiniLM is too big to carry to a machine with no network);
2. `train` jobs/gpu_check.yaml with ZeRO-2, then with ZeRO-3 (bf16, nccl, one GPU worker, 40 steps each, a
   Mistral-architecture base shrunk to 2048 x 16 layers), each exporting WORK/zero{2,3}/hypernet/, and
   `generate` one adapter from the ZeRO-3 export;
3. `init-checkpoint` at Mistral-7B shapes (T2L-L) and `batch-generate` of 1,024 descriptions with the encoder
   and hypernet actors on the GPU (`--set num_gpus=0.5`: the two share it);
4. `serve` that checkpoint on the GPU: one POST /v1/adapters, one GET /v1/adapters/ID;
5. `validate-adapter` on a factory adapter against the Mistral-7B preset.
It prints one table: steps/s, tokens/s and peak GPU memory of each training run, the factory's adapters/s, the
serve round trip, and the seconds of every stage. Command output goes to WORK/logs/.

`--device cpu` runs the same stages at toy sizes on CPU workers (gloo, a tiny base, 10 steps, 64 adapters) to
check the script itself on a machine without a GPU; its figures say nothing about GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_BASE = ('{hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, '
             'num_key_value_heads: 2, head_dim: 16, max_position_embeddings: 256}')


def no_cuda_exit(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; this check needs one NVIDIA GPU (--device cpu checks the "
              "script itself at toy sizes)", file=sys.stderr)
        sys.exit(2)


class Stages:
    """Runs `t2l-ray` commands, each logged to WORK/logs/NAME.log and timed."""

    def __init__(self, work: Path):
        self.work, self.seconds = work, {}
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, *args: str) -> str:
        started = time.monotonic()
        log = self.work / "logs" / f"{name}.log"
        done = subprocess.run([sys.executable, "-m", "t2l_ray", *args], cwd=ROOT, capture_output=True, text=True)
        log.write_text(f"$ t2l-ray {' '.join(args)}\n{done.stdout}\n{done.stderr}")
        self.seconds[name] = time.monotonic() - started
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            sys.exit(f"gpu_check: stage {name} failed (exit {done.returncode}); the end of {log}:\n{tail}")
        return done.stdout


def build_encoder(folder: Path) -> str:
    """A small random Llama and a BPE trained on the suite's descriptions, saved as a `base-model:` encoder."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    from transformers.utils import logging as hf_logging

    from t2l_ray.data.suite import build_suite
    from t2l_ray.data.tokenizer import train_tokenizer

    suite = build_suite(0)
    texts = [t for task in suite.train + suite.held_out for t in suite.descriptions.train.get(task.name, [])]
    tokenizer = train_tokenizer(texts, folder, vocab_size=1024)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    hf_logging.disable_progress_bar()
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return f"base-model:{folder}"


def training_figures(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    first, last = rows[0], rows[-1]
    steady = rows[1:] or rows
    return {
        "steps_per_s": (last["step"] - first["step"]) / max(last["time"] - first["time"], 1e-9),
        "tokens_per_s": sum(r["tokens_per_s"] for r in steady) / len(steady),
        "peak_gib": max((r["peak_mem_gib"] for r in rows if "peak_mem_gib" in r), default=None),
        "loss": f"{first['loss']:.2f} -> {last['loss']:.2f}",
    }


def serve_round_trip(stages: Stages, checkpoint: Path, out: Path, num_gpus: str) -> float:
    """Start `serve`, POST one description, GET the adapter back, stop it; returns the POST's seconds."""
    port = _free_port()
    log = (stages.work / "logs" / "serve.log").open("w")
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "t2l_ray", "serve", "--checkpoint", str(checkpoint),
                               "--out", str(out), "--port", str(port), "--set", f"num_gpus={num_gpus}"],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"gpu_check: serve did not come up (see {log.name})")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        body = json.dumps({"description": "Answer with the capital city of the country named.", "id": "gpu-check"})
        request = urllib.request.Request(f"{base}/v1/adapters", data=body.encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        posted = time.monotonic()
        with urllib.request.urlopen(request, timeout=120) as response:
            created = json.loads(response.read())
        post_seconds = time.monotonic() - posted
        with urllib.request.urlopen(f"{base}/v1/adapters/gpu-check", timeout=30) as response:
            fetched = json.loads(response.read())
        if created["adapters"][0]["id"] != "gpu-check" or fetched["id"] != "gpu-check":
            sys.exit(f"gpu_check: serve answered {created} / {fetched}")
        return post_seconds
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        stages.seconds["serve"] = time.monotonic() - started


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--work", help="Working folder (default: a new temporary one).")
    parser.add_argument("--adapters", type=int, help="Descriptions for batch-generate (default 1024; 64 on cpu).")
    args = parser.parse_args()
    no_cuda_exit(args.device)
    gpu = args.device == "cuda"
    os.environ["DS_ACCELERATOR"] = args.device
    work = Path(args.work or tempfile.mkdtemp(prefix="t2l-gpu-check-")).resolve()
    stages = Stages(work)
    started = time.monotonic()

    encoder = build_encoder(work / "encoder")
    toy = [] if gpu else ["--set", f"model.config_overrides={TINY_BASE}", "--set", "run.use_gpu=false",
                          "--set", "run.backend=gloo", "--set", "run.cpus_per_worker=0.5", "--set", "optim.max_steps=10"]
    trained = {}
    for stage in (2, 3):
        run_dir = work / f"zero{stage}"
        stages.run(f"train-zero{stage}", "train", "--config", "jobs/gpu_check.yaml", "--output-dir", str(run_dir),
                   "--set", f"encoder={encoder}", "--set", f"deepspeed.zero_stage={stage}", *toy)
        trained[stage] = training_figures(run_dir)
    stages.run("generate", "generate", "--checkpoint", str(work / "zero3" / "hypernet"), "--out", str(work / "one"),
               "--description", "Reverse the order of the words.", "--id", "from-zero3")

    mistral = work / "mistral7b-t2l-l"
    stages.run("init-checkpoint", "init-checkpoint", "--base-model", "mistral-7b-instruct-v0.2", "--variant", "L",
               "--encoder", encoder, "--out", str(mistral))
    count = args.adapters or (1024 if gpu else 64)
    lines = work / "descriptions.jsonl"
    lines.write_text("".join(json.dumps({"id": f"task-{i:04d}", "description": f"Task {i}: answer questions about "
                                         f"topic number {i} with one short sentence."}) + "\n" for i in range(count)))
    share = "0.5" if gpu else "0"
    printed = stages.run("batch-generate", "batch-generate", str(lines), "--checkpoint", str(mistral),
                         "--out", str(work / "adapters"), "--batch-size", "128", "--set", f"num_gpus={share}")
    rate = re.search(r"adapters/s\s+([\d.]+)", printed)
    post_seconds = serve_round_trip(stages, mistral, work / "served", "1" if gpu else "0")
    stages.run("validate", "validate-adapter", str(work / "adapters" / "task-0000"), "--base-model",
               "mistral-7b-instruct-v0.2", "--max-lora-rank", "8")

    import torch

    name = torch.cuda.get_device_name(0) if gpu else "CPU (script check at toy sizes, not a GPU figure)"
    print(f"\ngpu_check on {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'measure':<44}{'value':>16}")
    for stage, figures in trained.items():
        print(f"{f'train ZeRO-{stage}: steps/s':<44}{figures['steps_per_s']:>16.2f}")
        print(f"{f'train ZeRO-{stage}: tokens/s':<44}{figures['tokens_per_s']:>16,.0f}")
        peak = "n/a" if figures["peak_gib"] is None else f"{figures['peak_gib']:.1f}"
        print(f"{f'train ZeRO-{stage}: peak GPU memory (GiB)':<44}{peak:>16}")
        print(f"{f'train ZeRO-{stage}: loss first -> last log':<44}{figures['loss']:>16}")
    print(f"{f'batch-generate {count} at Mistral-7B: adapters/s':<44}{rate.group(1) if rate else 'n/a':>16}")
    print(f"{'serve: one POST /v1/adapters (s)':<44}{post_seconds:>16.2f}")
    for stage, seconds in stages.seconds.items():
        print(f"{f'{stage} (s, wall)':<44}{seconds:>16.0f}")
    print(f"{'total (s, wall)':<44}{time.monotonic() - started:>16.0f}")
    print(f"work folder {work} (command logs in {work / 'logs'})")


if __name__ == "__main__":
    main()
