"""`t2l-ray eval` settings: one dataclass tree, loaded from `jobs/eval.yaml`, overridden with `--set key=value`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from t2l_ray.config import NAME_OR_PATH, PATH, doc

BASE_ROW = "base"
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class EvalModelConfig:
    """The base model every adapter is applied to (with PEFT)."""

    name_or_path: str = doc("Preset, local folder or hub name of the base causal LM.", "mistralai/Mistral-7B-Instruct-v0.2",
                            path=NAME_OR_PATH)
    init: Literal["pretrained", "random"] = doc(
        "pretrained: load the weights; random: build from the config with random weights, exactly as "
        "`t2l-ray train` does for the same name, overrides and seed (tests, CPU demo).", "pretrained"
    )
    config_overrides: dict[str, Any] = doc(
        "Config fields to override (init=random). vocab_size defaults to the tokenizer's size, as in training.",
        default_factory=dict,
    )
    tokenizer: str = doc("Tokenizer folder (path or URI) or hub name; empty = the base model's own "
                         "(a training run with model.tokenizer=train saved its BPE in {run}/tokenizer).", "",
                         path=NAME_OR_PATH)
    seed: int = doc("Seed for random init (the training run's model.seed).", 0)
    dtype: Literal["float32", "bfloat16", "float16"] = doc("Weights dtype on the workers (bfloat16 on GPUs).", "float32")


@dataclass
class AdapterSet:
    """One row of the tables: `{path}/{task}/` per task, or one adapter folder used for every task."""

    name: str = doc("Row label (e.g. t2l, oracle, multitask, t2l-random); 'base' is the implicit no-adapter row.")
    path: str = doc("A folder of adapter folders named by task (train-lora's oracle/, batch-generate with "
                    "id = task name), or one adapter folder (a multi-task LoRA) used for every task.", path=PATH)


@dataclass
class TaskSelection:
    """What is scored."""

    sni: str = doc("SNI-style tasks: 'suite' (the generated suite), a folder (path or URI) of task*.json files, "
                   "or '' for none.", "suite", path=PATH, names=("suite",))
    sni_tasks: list[str] = doc("SNI task names to score; empty = all (for the suite: its `suite_split`).",
                               default_factory=list)
    suite_split: Literal["held_out", "train", "all"] = doc("Which suite tasks when sni_tasks is empty.", "held_out")
    suite_seed: int = doc("Seed of the generated suite (the training run's data.suite_seed).", 0)
    benchmarks: list[str] = doc("Any of arc_easy, arc_challenge, boolq, hellaswag, openbookqa, piqa, winogrande, "
                                "gsm8k.", default_factory=list)
    benchmark_files: str = doc("Folder (path or URI) of local benchmark files {name}.jsonl/.json/.parquet in the "
                               "hub's schema; empty = read from the hub through datasets.", "", path=PATH)
    benchmark_hub: dict[str, str] = doc("Per-benchmark hub source override: name -> 'repo[:config][@split]'.",
                                        default_factory=dict)


@dataclass
class EvalRunConfig:
    output_dir: str = doc("Where results.md, results.json, results.png and predictions/ go (path or URI).", "runs/eval",
                          path=PATH)
    limit: int = doc("At most this many examples per task, the first ones (0 = all).", 100)
    max_new_tokens: int = doc("Greedy generation length for SNI tasks.", 64)
    gsm8k_max_new_tokens: int = doc("Greedy generation length for GSM8K (it reasons before the answer).", 256)
    max_prompt_tokens: int = doc("Prompts keep their last this-many tokens (capped by the model's context).", 1024)
    batch_size: int = doc("Prompts per generate call / choices per forward.", 8)
    mc_score: Literal["sum", "mean"] = doc("Multiple choice: summed log-probability of a choice, or per token.", "sum")
    num_workers: int = doc("Ray actors, each holding one copy of the base model; work is spread by "
                           "(adapter set, task).", 2)
    cpus_per_worker: float = doc("CPUs each actor reserves (fractions let small machines run several).", 0.5)
    gpus_per_worker: float = doc("GPUs each actor reserves (0 = CPU; 0.5 puts two on one GPU).", 0.0)
    include_base: bool = doc("Score the base model without an adapter as the first row ('base').", True)


@dataclass
class EvalConfig:
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    adapters: list[AdapterSet] = doc("Adapter sets, one table row each, in this order after 'base'.",
                                     default_factory=list)
    tasks: TaskSelection = field(default_factory=TaskSelection)
    run: EvalRunConfig = field(default_factory=EvalRunConfig)

    def check(self) -> None:
        from t2l_ray.eval.tasks import BENCHMARKS

        names = [s.name for s in self.adapters]
        for name in names:
            if not _SET_NAME.match(name):
                raise ValueError(f"adapter set name {name!r} must match {_SET_NAME.pattern} (it names files)")
        if BASE_ROW in names:
            raise ValueError(f"adapter set name {BASE_ROW!r} is reserved for the model without an adapter")
        if len(set(names)) != len(names):
            raise ValueError(f"adapter set names must be unique: {names}")
        if any(not s.path for s in self.adapters):
            raise ValueError("every adapter set needs a path")
        if not self.adapters and not self.run.include_base:
            raise ValueError("nothing to score: no adapter sets and run.include_base is false")
        unknown = [b for b in self.tasks.benchmarks if b not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
        unknown = [b for b in self.tasks.benchmark_hub if b not in BENCHMARKS]
        if unknown:
            raise ValueError(f"tasks.benchmark_hub names unknown benchmark(s) {unknown}")
        if len(set(self.tasks.benchmarks)) != len(self.tasks.benchmarks):
            raise ValueError(f"tasks.benchmarks lists a benchmark twice: {self.tasks.benchmarks}")
        if not self.tasks.sni and not self.tasks.benchmarks:
            raise ValueError("nothing to score: tasks.sni is empty and tasks.benchmarks lists none")
        if self.tasks.sni_tasks and not self.tasks.sni:
            raise ValueError("tasks.sni_tasks needs tasks.sni (a folder or 'suite')")
        run = self.run
        for key in ("max_new_tokens", "gsm8k_max_new_tokens", "max_prompt_tokens", "batch_size", "num_workers"):
            if getattr(run, key) < 1:
                raise ValueError(f"run.{key} must be at least 1, not {getattr(run, key)}")
        if run.limit < 0:
            raise ValueError(f"run.limit must be 0 (all) or more, not {run.limit}")
        if run.cpus_per_worker <= 0 or run.gpus_per_worker < 0:
            raise ValueError("run.cpus_per_worker must be > 0 and run.gpus_per_worker >= 0")
        if self.model.init == "pretrained" and self.model.config_overrides:
            raise ValueError("model.config_overrides only applies to init=random (pretrained weights fix the config)")
