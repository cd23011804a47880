"""Training throughput: the Ray Train + DeepSpeed path at 1 and 2 workers vs a plain single-process torch loop.

    .venv/bin/python bench/train_throughput.py [--steps 40] [--set key=value ...]

All three train the same recipe (jobs/demo_cpu.yaml unless --config says otherwise) on the same task-grouped
batches. The plain loop materialises those batches first, then times AdamW steps of the same objective in
one process; the Ray runs report samples/s in metrics.jsonl (averaged over logged steps after the first, so
start-up is excluded). Prints one table with the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ray_samples_per_s(cfg, workers: int, out: str) -> float:
    import dataclasses

    from t2l_ray.train.driver import run_training
    from t2l_ray.train.plot import read_metrics

    run = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, num_workers=workers, output_dir=out,
                                                           checkpoint_every=10**9))
    run_training(run)
    rows = read_metrics(out)[1:]
    return statistics.mean(r["samples_per_s"] for r in rows)


def plain_samples_per_s(cfg, scratch: str) -> float:
    """The same objective and batches in one process with torch's AdamW: the no-framework baseline."""
    import torch

    from t2l_ray.base_model import build_base_model, target_shapes, tokenizer_overrides
    from t2l_ray.data.pipeline import build_sft_dataset
    from t2l_ray.data.prepare import prepare_data
    from t2l_ray.hypernet import TextToLoRA
    from t2l_ray.train.engine import compute_dtype
    from t2l_ray.train.objectives import sft_loss

    data = prepare_data(cfg, scratch, scratch)
    cfg.model.config_overrides = tokenizer_overrides(cfg.model, data.vocab_size)
    shapes = target_shapes(cfg.model, cfg.hypernet.target_modules)
    batches = build_sft_dataset(
        data.task_uris, data.descriptions, data.embeddings, encoder=cfg.encoder,
        tokenizer_dir=data.tokenizer_dir, tasks_per_batch=cfg.data.tasks_per_batch,
        max_prompt_tokens=cfg.data.max_prompt_tokens, max_response_tokens=cfg.data.max_response_tokens, seed=cfg.run.seed,
    ).take(cfg.optim.max_steps)
    torch.manual_seed(cfg.run.seed)
    base = build_base_model(cfg.model, compute_dtype(cfg))
    hypernet = TextToLoRA(cfg.hypernet, shapes, data.encoder_dim).train()
    optimizer = torch.optim.AdamW(hypernet.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    timed, samples = 0.0, 0
    for index, row in enumerate(batches):
        batch = {k: torch.as_tensor(v) for k, v in row.items()}
        start = time.perf_counter()
        weights = hypernet(batch["embedding"])
        loss, _ = sft_loss(base, weights, cfg.hypernet.scale, batch, label_smoothing=cfg.optim.label_smoothing,
                           l2=cfg.optim.l2_generated, neftune_alpha=cfg.optim.neftune_alpha, training=True)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hypernet.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        if index > 0:  # the first step pays one-off allocation costs
            timed += time.perf_counter() - start
            samples += batch["input_ids"].shape[0]
    return samples / timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="jobs/demo_cpu.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from t2l_ray.config import load_config
    from t2l_ray.raycluster import ensure_ray
    from t2l_ray.train.config import TrainConfig

    cfg = load_config(TrainConfig, args.config, [*args.overrides, f"optim.max_steps={args.steps}", "run.log_every=5"])
    ensure_ray()
    with tempfile.TemporaryDirectory() as scratch:
        plain = plain_samples_per_s(load_config(TrainConfig, args.config, [*args.overrides, f"optim.max_steps={args.steps}"]),
                                    os.path.join(scratch, "plain"))
        one = ray_samples_per_s(cfg, 1, os.path.join(scratch, "w1"))
        two = ray_samples_per_s(cfg, 2, os.path.join(scratch, "w2"))
    print()
    print(f"recipe {args.config}, {args.steps} steps, {cfg.data.tasks_per_batch} tasks per batch, ZeRO-{cfg.deepspeed.zero_stage}, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'path':<40}{'samples/s':>12}{'vs plain':>10}")
    for name, value in (("plain torch loop, 1 process", plain), ("Ray Train + DeepSpeed, 1 worker", one),
                        ("Ray Train + DeepSpeed, 2 workers", two)):
        print(f"{name:<40}{value:>12.1f}{value / plain:>9.2f}x")
    print(f"{'2 workers / 1 worker':<40}{'':>12}{two / one:>9.2f}x")


if __name__ == "__main__":
    main()
