"""T2L's SFT objective: each sample's generated LoRA, applied inside the frozen base, trained on its response.

Driver side (`SFT.prepare`): the data (`data/prepare.py`: tasks, descriptions, tokenizer, embeddings), the
Ray Data stream of task-grouped batches (`data/pipeline.py`), the random base's vocabulary
(`base_model.tokenizer_overrides`) and `RUN/base` for a random base. Worker side: the frozen base and this
worker's shard of the stream, one group of `data.tasks_per_batch` tasks per micro-batch, resumed at the
checkpoint's epoch and position (`resumable`); the loss is `objectives.sft_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable

import torch

from t2l_ray import storage
from t2l_ray.base_model import build_base_model, run_shapes, tokenizer_overrides
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.engine import compute_dtype
from t2l_ray.train.loop import Plan
from t2l_ray.train.objectives import sft_loss


def resumable(open_epoch: Callable[[], Iterable], state: dict) -> Generator:
    """The items of `open_epoch()`, epoch after epoch, from position `state["position"]` of the current epoch on.

    `state["epoch"]` and `state["position"]` (the items of that epoch taken so far) follow every item taken,
    so a checkpoint of `state` resumes right after the last one. An epoch without any item is an error: the
    steps would wait for a batch forever."""
    while True:
        skip, seen = state["position"], 0
        for position, item in enumerate(open_epoch()):
            seen += 1
            if position < skip:
                continue
            state["position"] = position + 1
            yield item
        if seen == 0:
            raise RuntimeError("the training stream yielded no batch: too few tasks or examples for one group")
        state["epoch"] += 1
        state["position"] = 0


class SFT:
    """The `sft` objective (see the module docstring)."""

    fresh_state = {"epoch": 0, "position": 0}

    @staticmethod
    def prepare(cfg: TrainConfig, run_dir: str, scratch: str, on_data: Callable[[dict], None]) -> Plan:
        from t2l_ray.data.pipeline import build_sft_dataset
        from t2l_ray.data.prepare import prepare_data

        data = prepare_data(cfg, run_dir, scratch)
        on_data({"summary": data.summary, "embeddings": data.embedding_stats})
        cfg.model.config_overrides = tokenizer_overrides(cfg.model, data.vocab_size)
        dataset = build_sft_dataset(
            data.task_uris, data.descriptions, data.embeddings,
            encoder=cfg.encoder, tokenizer_dir=data.tokenizer_dir, tasks_per_batch=cfg.data.tasks_per_batch,
            max_prompt_tokens=cfg.data.max_prompt_tokens, max_response_tokens=cfg.data.max_response_tokens,
            seed=cfg.run.seed,
        )
        shapes = run_shapes(cfg.model, cfg.hypernet.target_modules, compute_dtype(cfg), data.tokenizer_dir,
                            storage.join(run_dir, "base"))  # the hypernet, so every adapter, names a random base's copy
        return Plan(shapes, data.encoder_dim, datasets={"train": dataset})

    def __init__(self, cfg: TrainConfig, config: dict, rank: int, device: torch.device):
        import ray.train

        self.cfg, self.device, self.dtype = cfg, device, compute_dtype(cfg)
        self.base = build_base_model(cfg.model, self.dtype, device)
        self.shard = ray.train.get_dataset_shard("train")

    def micro_batches(self, state: dict) -> Generator[dict[str, torch.Tensor], None, None]:
        epoch = lambda: self.shard.iter_torch_batches(batch_size=1, device=self.device)  # noqa: E731
        for batch in resumable(epoch, state):
            yield {k: v[0] for k, v in batch.items()}  # each row of the stream is one whole batch

    def loss(self, engine, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        optim = self.cfg.optim
        weights = engine(batch["embedding"].to(self.dtype))
        loss, parts = sft_loss(
            self.base, weights, self.cfg.hypernet.scale, batch, label_smoothing=optim.label_smoothing,
            l2=optim.l2_generated, neftune_alpha=optim.neftune_alpha, training=True,
        )
        return loss, {"lm_loss": parts["lm_loss"], "tokens": batch["attention_mask"].sum(),
                      "samples": batch["input_ids"].shape[0]}

    def log_values(self, engine, state: dict) -> dict:
        return {"epoch": state["epoch"]}
