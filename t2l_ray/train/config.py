"""The training recipe: one dataclass tree, loaded from `jobs/*.yaml`, overridden with `--set key=value`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from t2l_ray.base_model import ModelConfig
from t2l_ray.config import NAME_OR_PATH, PATH, doc
from t2l_ray.encoders import OFFLINE_DEFAULT
from t2l_ray.hypernet import HypernetConfig


@dataclass
class DataConfig:
    """Where examples come from and how batches are formed."""

    source: str = doc(
        "SNI tasks folder (path or URI); 'suite' for the generated demo suite; 'lol:NAME[,NAME]' for Lots-of-LoRAs "
        "datasets (hub names or local .parquet/.jsonl exports).", "suite", path=PATH, names=("suite",))
    descriptions: str = doc("Descriptions file (JSON/YAML/JSONL); empty = each task's Definition.", "", path=PATH)
    task_list: str = doc("File of training task names, one per line; empty = every task in the source.", "", path=PATH)
    exclude: list[str] = doc("Task names to leave out (T2L drops benchmark-derived tasks).", default_factory=list)
    heldout_tasks: list[str] = doc("Tasks kept out of training for evaluation.", default_factory=list)
    tasks_per_batch: int = doc("Distinct tasks in one batch, one example each (T2L: 8).", 8)
    descriptions_per_task: int = doc("At most this many descriptions per task are used (T2L: 128).", 128)
    max_prompt_tokens: int = doc("Prompt truncation length.", 256)
    max_response_tokens: int = doc("Response truncation length.", 64)
    suite_seed: int = doc("Seed of the generated suite.", 0)


@dataclass
class OptimConfig:
    lr: float = doc("Peak learning rate (T2L: 2.5e-5).", 2.5e-5)
    weight_decay: float = doc("AdamW weight decay (T2L: 1e-2).", 1e-2)
    warmup_steps: int = doc("Linear warmup steps (at least 1), then linear decay to 0.", 10)
    max_steps: int = doc("Optimizer steps in the run.", 1000)
    grad_clip: float = doc("Gradient-norm clipping.", 1.0)
    grad_accum: int = doc("Micro-batches per optimizer step.", 1)
    label_smoothing: float = doc("Label smoothing of the SFT loss (T2L: 0.1).", 0.1)
    l2_generated: float = doc("L2 penalty on the generated A and B (T2L: 1e-3).", 1e-3)
    neftune_alpha: float = doc("NEFTune noise on input embeddings (T2L: 5); 0 turns it off.", 5.0)


@dataclass
class DeepSpeedConfig:
    zero_stage: int = doc("ZeRO stage: 2 (default) or 3.", 2)
    bf16: bool = doc("bf16 mixed precision (GPU workers).", False)
    offload_optimizer: bool = doc("Offload the optimizer state to CPU (needs DeepSpeed's CPU Adam build).", False)


@dataclass
class RunOptions:
    output_dir: str = doc("Run folder (path or URI): metrics.jsonl, checkpoints, hypernet/.", "runs/t2l", path=PATH)
    num_workers: int = doc("Ray Train workers.", 2)
    use_gpu: bool = doc("One GPU per worker.", False)
    cpus_per_worker: float = doc("CPUs per worker (fractional avoids the Ray Data starvation on small nodes).", 1.0)
    backend: Literal["gloo", "nccl"] = doc("torch.distributed backend; nccl needs GPUs.", "gloo")
    checkpoint_every: int = doc("Report a checkpoint every N steps.", 100)
    log_every: int = doc("Log metrics every N steps.", 10)
    seed: int = doc("Seed for the hypernet init and the data order.", 42)
    max_failures: int = doc("Restarts from the latest checkpoint after a lost worker, node or connection (Ray Train "
                            "FailureConfig); an error raised by the training code stops the run at once.", 3)
    resources_per_worker: dict[str, float] = doc("Extra custom resources per worker.", default_factory=dict)


@dataclass
class ReconstructionConfig:
    library: str = doc("Folder (path or URI) of PEFT LoRA folders to reconstruct, one per task.", "", path=PATH)
    target: Literal["delta_w", "ab"] = doc("L1 on delta-W = BA (default) or on A and B directly.", "delta_w")


@dataclass
class TrainConfig:
    objective: Literal["sft", "reconstruction"] = doc("sft (main T2L recipe) or reconstruction of existing LoRAs.", "sft")
    encoder: str = doc("Task encoder spec: a name, a local folder, or base-model:NAME.", OFFLINE_DEFAULT, path=NAME_OR_PATH)
    model: ModelConfig = field(default_factory=ModelConfig)
    hypernet: HypernetConfig = field(default_factory=HypernetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    run: RunOptions = field(default_factory=RunOptions)
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)

    def check(self) -> None:
        """Refuse settings that cannot run, with the reason; nothing is swapped silently."""
        self.hypernet.check()
        if self.deepspeed.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"deepspeed.zero_stage must be 0-3, not {self.deepspeed.zero_stage}")
        if self.run.backend == "nccl" and not self.run.use_gpu:
            raise ValueError("run.backend=nccl needs GPU workers (run.use_gpu=true); CPU workers use gloo")
        if self.deepspeed.offload_optimizer and not self.run.use_gpu:
            raise ValueError(
                "deepspeed.offload_optimizer offloads GPU optimizer state to the CPU; on CPU workers the state "
                "already lives on the CPU, so it is refused rather than silently ignored"
            )
        if self.data.tasks_per_batch < 1 or self.optim.max_steps < 1:
            raise ValueError("data.tasks_per_batch and optim.max_steps must be at least 1")
        if self.optim.warmup_steps < 1:
            raise ValueError(f"optim.warmup_steps must be at least 1 (DeepSpeed's WarmupDecayLR refuses 0), "
                             f"not {self.optim.warmup_steps}")
        if self.objective == "reconstruction" and not self.reconstruction.library:
            raise ValueError("objective=reconstruction needs reconstruction.library (a folder of LoRA folders)")


@dataclass
class BaselineConfig:
    """`t2l-ray train-lora`: how the oracle and multi-task LoRAs are trained."""

    mode: Literal["oracle", "multitask", "both"] = doc(
        "oracle: one LoRA per training task; multitask: one over all of them; both.", "oracle")
    output_dir: str = doc("Where the LoRAs go (path or URI); empty = {run.output_dir}/baselines.", "", path=PATH)
    lr: float = doc("Peak learning rate of a LoRA (warmup, then linear decay).", 1e-4)
    max_steps: int = doc("Optimizer steps per LoRA (oracle: each task's; multitask: the one LoRA's).", 200)
    multitask_steps: int = doc("Optimizer steps of the multi-task LoRA; 0 = max_steps.", 0)
    warmup_steps: int = doc("Linear warmup steps (at least 1).", 10)
    batch_size: int = doc("Examples per micro-batch (per worker for the multi-task run).", 8)
    max_examples_per_task: int = doc("Use at most this many examples of a task (sampled with the seed); 0 = all.", 0)
    tasks_per_job: int = doc("Oracle LoRAs trained one after another in one Ray task (one process).", 8)
    cpus_per_job: float = doc("CPUs each oracle Ray task asks for (GPU runs also take one GPU each).", 1.0)
    max_retries: int = doc(
        "Retries of an oracle Ray task whose worker died (finished adapters are kept); -1: no limit.", 2)
    log_every: int = doc("Log the loss every N steps.", 10)
    dtype: Literal["bfloat16", "float32"] = doc("Tensor dtype of the written adapters.", "bfloat16")
    seed: int = doc("Seed of the LoRA inits and the example sampling.", 0)

    def check(self) -> None:
        """Refuse values no run can use, naming the field."""
        for name in ("max_steps", "batch_size", "tasks_per_job", "log_every", "warmup_steps"):  # DeepSpeed needs a warmup
            if getattr(self, name) < 1:
                raise ValueError(f"baseline.{name} must be at least 1, not {getattr(self, name)}")
        for name in ("multitask_steps", "max_examples_per_task"):
            if getattr(self, name) < 0:
                raise ValueError(f"baseline.{name} must be 0 or more, not {getattr(self, name)}")
        for name in ("lr", "cpus_per_job"):
            if getattr(self, name) <= 0:
                raise ValueError(f"baseline.{name} must be > 0, not {getattr(self, name)}")
        if self.max_retries < -1:
            raise ValueError(f"baseline.max_retries must be -1 (no limit) or 0 or more, not {self.max_retries}")


@dataclass
class BaselineRecipe(TrainConfig):
    """A training recipe plus the `baseline` section (`t2l-ray train-lora` reads recipes with this class)."""

    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def check(self) -> None:
        super().check()
        self.baseline.check()
