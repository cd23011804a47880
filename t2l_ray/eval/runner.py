"""`t2l-ray eval` on Ray: actors that hold the base model score (adapter set, task) items.

The driver loads every task once (SNI files, the generated suite, benchmarks through `datasets`), resolves
which adapter folder each (set, task) cell uses, and puts each task's examples in the object store. A pool of
`run.num_workers` `EvalWorker` actors (fractional `run.cpus_per_worker`, optional GPUs) each builds the base
model once; per item it loads the adapter with `PeftModel.from_pretrained`, scores the task, and takes the
adapter off again with `unload()`, so the next item starts from the untouched base. The "base" row uses no
adapter. Greedy decoding and fixed inputs make every score deterministic for a given model and batch size.

Results come back to the driver, which writes `predictions/{set}/{task}.jsonl` and the report (`report.py`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass, field

import torch

from t2l_ray import adapters, storage
from t2l_ray.base_model import build_base_model, tokenizer_overrides
from t2l_ray.config import to_dict
from t2l_ray.data.tokenizer import open_tokenizer
from t2l_ray.eval import metrics
from t2l_ray.eval.config import BASE_ROW, EvalConfig, EvalModelConfig, EvalRunConfig
from t2l_ray.eval.report import write_report
from t2l_ray.eval.tasks import EvalTask, benchmark_task, sni_tasks


# ------------------------------------------------------------------------------------------------ scoring


def _context_limit(model, run: EvalRunConfig, new_tokens: int) -> int:
    """Prompt tokens kept: run.max_prompt_tokens, and never more than the context leaves after generating."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    limit = run.max_prompt_tokens
    if positions:
        limit = min(limit, max(1, int(positions) - new_tokens))
    return limit


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], run: EvalRunConfig, new_tokens: int) -> list[str]:
    """Greedy completions of user prompts rendered as in training (chat template when the tokenizer has one)."""
    from t2l_ray.data.prompts import render_prompt, uses_chat_template

    device = next(model.parameters()).device
    keep = _context_limit(model, run, new_tokens)
    special = not uses_chat_template(tokenizer)
    outputs = []
    for start in range(0, len(prompts), run.batch_size):
        texts = [render_prompt(tokenizer, p) for p in prompts[start : start + run.batch_size]]
        rows = [ids[-keep:] for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: every row's last prompt token sits at the end
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        generated = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens, do_sample=False,
            num_beams=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        for row in generated[:, width:]:
            outputs.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return outputs


def choice_requests(tokenizer, pairs: list[list[str]], max_context: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(context ids with the tokenizer's BOS, continuation ids); a context's trailing spaces move to the
    continuation, and a context longer than `max_context` tokens keeps its last ones."""
    requests = []
    for context, continuation in pairs:
        moved = len(context) - len(context.rstrip(" "))
        if moved:
            context, continuation = context[:-moved], " " * moved + continuation
        ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
        if not ctx:
            ctx = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
        if max_context is not None:
            ctx = ctx[-max_context:]
        requests.append((ctx, tokenizer(continuation, add_special_tokens=False)["input_ids"]))
    return requests


def score_task(model, tokenizer, task: EvalTask, run: EvalRunConfig) -> dict:
    """{"score", "metrics": {name: mean}, "n", "predictions": [...]} of one task on one model (adapter on or off)."""
    if task.kind == "choice":
        flat, owners = [], []
        for index, example in enumerate(task.examples):
            requests = choice_requests(tokenizer, example["pairs"], run.max_prompt_tokens)
            flat.extend(requests)
            owners.extend([index] * len(requests))
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        scored = metrics.continuation_logprobs(model, flat, tokenizer.pad_token_id, batch_size=run.batch_size,
                                               max_length=int(positions) if positions else None)
        predictions, correct = [], 0.0
        for index, example in enumerate(task.examples):
            scores = [s for s, owner in zip(scored, owners) if owner == index]
            pick = metrics.pick_choice(scores, run.mc_score)
            correct += float(pick == example["label"])
            predictions.append({"id": example["id"], "pick": pick, "label": example["label"],
                                "logprobs": [round(s, 4) for s, _ in scores], "tokens": [c for _, c in scores]})
        accuracy = correct / len(task.examples) if task.examples else 0.0
        return {"score": accuracy, "metrics": {"accuracy": accuracy}, "n": len(task.examples), "predictions": predictions}

    new_tokens = run.gsm8k_max_new_tokens if task.metric == "number_match" else run.max_new_tokens
    texts = generate(model, tokenizer, [e["prompt"] for e in task.examples], run, new_tokens)
    predictions, sums = [], {}
    for example, text in zip(task.examples, texts):
        if task.metric == "number_match":
            values = {"number_match": metrics.number_match(text, example["references"][0])}
        else:
            values = {"rouge_l": metrics.rouge_l(text, example["references"]),
                      "exact_match": metrics.exact_match(text, example["references"])}
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        predictions.append({"id": example["id"], "prediction": text, "references": example["references"], **values})
    n = len(task.examples)
    means = {key: value / n for key, value in sums.items()} if n else {task.metric: 0.0}
    return {"score": means[task.metric], "metrics": means, "n": n, "predictions": predictions}


class EvalWorker:
    """Holds the base model and tokenizer; scores (adapter, task) items one after another.

    Used as a Ray actor by `run_eval`, and directly (in-process) by tests.
    """

    def __init__(self, model: dict, run: dict):
        from t2l_ray.config import from_dict

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        model_cfg = from_dict(EvalModelConfig, model, "model")
        self.run = from_dict(EvalRunConfig, run, "run")
        self.scratch = tempfile.mkdtemp(prefix="t2l-eval-")
        self.tokenizer = open_tokenizer(model_cfg.tokenizer or model_cfg.name_or_path, self.scratch)
        self.tokenizer.padding_side = "left"
        self.model_cfg = dataclasses.replace(
            model_cfg, config_overrides=tokenizer_overrides(model_cfg, len(self.tokenizer)))
        self.device = "cuda" if self.run.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu"
        self.base = build_base_model(self.model_cfg, self.model_cfg.dtype, self.device)

    def score(self, item: dict, task: EvalTask) -> dict:
        """Score one (adapter set, task) item; a failure is returned as the item's `error`, never raised."""
        started = time.time()
        result = {"set": item["set"], "task": task.name, "adapter": item.get("adapter"), "metric": task.metric}
        peft_model = None
        try:
            model = self.base
            if item.get("adapter"):
                from peft import PeftModel

                local = storage.local_copy(item["adapter"], self.scratch)
                peft_model = PeftModel.from_pretrained(self.base, local, is_trainable=False)
                model = peft_model.eval()
            result.update(score_task(model, self.tokenizer, task, self.run))
        except Exception as error:  # noqa: BLE001 - one bad adapter or task is one failed cell, not a failed run
            result["error"] = f"{type(error).__name__}: {error}"
        finally:
            if peft_model is not None:
                self.base = peft_model.unload()  # the LoRA layers go; the base modules come back untouched
            elif any("lora_" in name for name, _ in self.base.named_modules()):
                # PEFT failed halfway through injecting layers: start again from a clean base
                self.base = build_base_model(self.model_cfg, self.model_cfg.dtype, self.device)
        result["seconds"] = round(time.time() - started, 3)
        return result


# ------------------------------------------------------------------------------------------------ driver


@dataclass
class EvalResult:
    config: EvalConfig
    tasks: list[EvalTask]
    rows: list[str]
    cells: dict[tuple[str, str], dict] = field(default_factory=dict)  # (set, task) -> worker result
    missing: list[dict] = field(default_factory=list)  # cells with no adapter: {"set", "task", "reason"}
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[dict]:
        return [c for c in self.cells.values() if "error" in c]


def load_tasks(cfg: EvalConfig, scratch: str) -> list[EvalTask]:
    tasks: list[EvalTask] = []
    if cfg.tasks.sni:
        tasks += sni_tasks(cfg.tasks.sni, list(cfg.tasks.sni_tasks), cfg.tasks.suite_split, cfg.run.limit, scratch,
                           cfg.tasks.suite_seed)
    for name in cfg.tasks.benchmarks:
        tasks.append(benchmark_task(name, cfg.tasks.benchmark_files, cfg.tasks.benchmark_hub, cfg.run.limit, scratch))
    names = [t.name for t in tasks]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"two tasks share a name: {clash}")
    empty = [t.name for t in tasks if not t.examples]
    if empty:
        raise ValueError(f"tasks without examples: {empty}")
    return tasks


def resolve_adapters(cfg: EvalConfig, task_names: list[str]) -> tuple[dict[str, dict[str, str]], list[dict]]:
    """set -> {task: adapter folder}, and the (set, task) cells without one.

    A set whose path is itself an adapter (its `adapter_config.json` exists) is used for every task; otherwise
    `{path}/{task}/` must be a complete adapter folder. A path that does not exist is an error.
    """
    chosen: dict[str, dict[str, str]] = {}
    missing: list[dict] = []
    for adapter_set in cfg.adapters:
        if adapters.is_complete(adapter_set.path):
            chosen[adapter_set.name] = {task: adapter_set.path for task in task_names}
            continue
        if not storage.exists(adapter_set.path):
            raise FileNotFoundError(f"adapter set {adapter_set.name!r}: {adapter_set.path} does not exist")
        chosen[adapter_set.name] = {}
        for task in task_names:
            folder = storage.join(adapter_set.path, task)
            if adapters.is_complete(folder):
                chosen[adapter_set.name][task] = folder
            else:
                missing.append({"set": adapter_set.name, "task": task,
                                "reason": f"no adapter at {folder} ({adapters.CONFIG_FILE} missing)"})
        if not chosen[adapter_set.name]:
            raise FileNotFoundError(
                f"adapter set {adapter_set.name!r}: {adapter_set.path} is not an adapter folder and has no adapter "
                f"for any of the tasks {task_names} (expected {adapter_set.path}/<task>/{adapters.CONFIG_FILE})"
            )
    return chosen, missing


def preflight(cfg: EvalConfig, scratch: str) -> None:
    """Fail on the driver, with a clear message, for what every worker would fail on: tokenizer and model config."""
    from t2l_ray.data.tokenizer import TokenizerNotFound
    from t2l_ray.shapes import load_base_config

    try:
        open_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, scratch)
    except TokenizerNotFound as error:
        raise ValueError(f"model.tokenizer: {error}") from None
    if cfg.model.init == "random":
        load_base_config(cfg.model.name_or_path)  # raises ValueError naming the model
    else:
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(cfg.model.name_or_path)
        except (OSError, ValueError) as error:
            raise ValueError(f"model.name_or_path: cannot load {cfg.model.name_or_path!r}: {error}") from None


def run_eval(cfg: EvalConfig, on_item=None, on_plan=None) -> EvalResult:
    """Score every (row, task) cell on Ray and write the report.

    `on_plan({"rows", "tasks", "items", "missing", "examples"})` is called once the work is known (counts: table
    rows, tasks, cells to score, cells without an adapter, examples per row), `on_item(result)` for each
    finished cell.
    Raises FileNotFoundError / ValueError for missing adapter sets, tasks or benchmark files.
    """
    from ray.util import ActorPool

    from t2l_ray.raycluster import ensure_ray

    cfg.check()
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        preflight(cfg, scratch)
        tasks = load_tasks(cfg, scratch)
        chosen, missing = resolve_adapters(cfg, [t.name for t in tasks])
    rows = ([BASE_ROW] if cfg.run.include_base else []) + [s.name for s in cfg.adapters]
    items = []
    for task in tasks:  # task-major: every worker starts with different tasks, so no worker waits on one file
        for row in rows:
            if row == BASE_ROW:
                items.append({"set": row, "task": task.name, "adapter": None})
            elif task.name in chosen[row]:
                items.append({"set": row, "task": task.name, "adapter": chosen[row][task.name]})
    result = EvalResult(cfg, tasks, rows, missing=missing)
    if on_plan is not None:
        on_plan({"rows": len(rows), "tasks": len(tasks), "items": len(items), "missing": len(missing),
                 "examples": sum(len(t.examples) for t in tasks)})

    ray = ensure_ray()
    refs = {t.name: ray.put(t) for t in tasks}
    worker_class = ray.remote(EvalWorker).options(
        num_cpus=cfg.run.cpus_per_worker, num_gpus=cfg.run.gpus_per_worker or None, max_restarts=1,
    )
    count = max(1, min(cfg.run.num_workers, len(items)))
    workers = [worker_class.remote(to_dict(cfg.model), to_dict(cfg.run)) for _ in range(count)]
    try:
        pool = ActorPool(workers)
        for cell in pool.map_unordered(lambda worker, item: worker.score.remote(item, refs[item["task"]]), items):
            result.cells[(cell["set"], cell["task"])] = cell
            if on_item is not None:
                on_item(cell)
    finally:
        for worker in workers:
            ray.kill(worker)
    result.seconds = time.time() - started
    result.files = write_report(result)
    return result


__all__ = ["EvalResult", "EvalWorker", "run_eval", "score_task", "resolve_adapters", "load_tasks"]
