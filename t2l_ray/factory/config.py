"""Settings of one `batch-generate` run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from t2l_ray.config import doc


@dataclass
class FactoryConfig:
    """Settings of one `batch-generate` run (YAML via --config, `--set key=value`, or the flags)."""

    batch_size: int = doc("Descriptions per encoder batch and per hypernet forward.", 32)
    concurrency: int = doc("Actors in each of the encoder and hypernet stages.", 1)
    num_cpus: float = doc("CPUs reserved per actor; fractions keep small clusters from starving Ray Data.", 0.5)
    num_gpus: float = doc("GPUs per encoder and per hypernet actor (0: CPU; fractions share a GPU).", 0.0)
    resources: dict[str, float] = doc(
        "Custom Ray resources per encoder and per hypernet actor, e.g. {gen_gpu: 0.5}: the actors run only on "
        "nodes that advertise them (the cluster configs' generation node type).", default_factory=dict)
    max_chars: int = doc("Longest description accepted, in characters; longer lines are bad lines.", 4000)
    dtype: Literal["bfloat16", "float32", "float16"] = doc("Dtype of the written LoRA weights.", "bfloat16")
    forward_dtype: Literal["auto", "bfloat16", "float32"] = doc(
        "Dtype of the hypernet's heads in the forward. auto: bf16 when the weights are written in bf16 and the "
        "device computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX), else fp32.", "auto")
    write_threads: int = doc("Threads per hypernet actor that hash and write adapters (0: its node's CPUs + 4, at "
                             "most 32: writes mostly wait for fsync or an upload).", 0)
    in_process_max: int = doc(
        "Jobs with at most this many adapters to make run every stage in this process, without starting a Ray "
        "cluster (on 2 CPU cores, 192 adapters finished in 18 s in-process and 33 s on a private cluster); 0: "
        "never. A cluster named by RAY_ADDRESS is always used.", 256)
    local: bool = doc("Run every stage in this process whatever the job's size (not with RAY_ADDRESS set).", False)
    fail_fast: bool = doc("Stop at the first bad line: nothing after it is written.", False)

    def check(self) -> None:
        for name in ("batch_size", "concurrency", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("write_threads", "in_process_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ValueError(f"num_cpus must be > 0 and num_gpus >= 0 (got {self.num_cpus}, {self.num_gpus})")
        bad = {k: v for k, v in self.resources.items() if v <= 0}
        if bad:
            raise ValueError(f"resources must map resource names to amounts > 0, not {bad}")
