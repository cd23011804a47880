"""Evaluation tasks: SNI-style tasks, multiple-choice benchmarks and GSM8K, as plain examples.

Every task becomes an `EvalTask` of one of three kinds, ready to ship to Ray workers:

- `generate` + `rouge_l` (SNI-style tasks, a folder of `task*.json` files or the generated suite): the
  prompt is T2L's training prompt (`prompts.user_prompt`, rendered with the tokenizer's chat template), the
  greedy generation is scored by ROUGE-L F1 (the task's score) and exact match against every acceptable output
  (and, for several, their comma-joined list, which is the training target).
- `choice` + `accuracy` (ARC-e, ARC-c, BoolQ, HellaSwag, OpenBookQA, PIQA, Winogrande): zero-shot,
  lm-evaluation-harness prompts without a chat template; every choice is a (context, continuation) pair
  scored by log-likelihood, and the most likely choice is the answer. Nothing is generated.
- `generate` + `number_match` (GSM8K): the question as a chat user turn asking for "The answer is N"; the
  last number of the greedy generation must equal the number after `####` in the reference.

Benchmarks are read through `datasets`: from the hub (`BENCHMARKS` names the repo, config and split) when no
local folder is given, else from `{folder}/{name}.jsonl` (or `.json`, `.parquet`), rows in the hub's schema:

| benchmark | hub repo (config), split | fields per row |
|---|---|---|
| arc_easy, arc_challenge | allenai/ai2_arc (ARC-Easy / ARC-Challenge), test | question, choices {text: [..], label: [..]}, answerKey |
| boolq | google/boolq, validation | passage, question, answer (bool; or label 0/1) |
| hellaswag | Rowan/hellaswag, validation | activity_label, ctx_a, ctx_b, endings [4], label ("0".."3") |
| openbookqa | allenai/openbookqa (main), test | question_stem, choices {text, label}, answerKey |
| piqa | ybisk/piqa, validation | goal, sol1, sol2, label (0/1) |
| winogrande | allenai/winogrande (winogrande_xl), validation | sentence (one `_`), option1, option2, answer ("1"/"2") |
| gsm8k | openai/gsm8k (main), test | question, answer (reasoning, then `#### N`) |
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from t2l_ray import storage

Kind = Literal["generate", "choice"]
GSM8K_INSTRUCTION = "Solve the problem step by step, then end with \"The answer is N\" where N is a number."


@dataclass
class EvalTask:
    name: str
    kind: Kind
    metric: Literal["rouge_l", "accuracy", "number_match"]
    examples: list[dict]
    source: str = ""
    secondary: list[str] = field(default_factory=list)  # other metrics reported (SNI: exact_match)


# ------------------------------------------------------------------------------------------------ SNI


def sni_example(definition: str, instance) -> dict:
    """One SNI instance: T2L's user prompt and the acceptable answers (plus their joined list when several)."""
    from t2l_ray.data.prompts import target_text, user_prompt

    references = list(instance.outputs)
    if len(references) > 1:
        references.append(target_text(references))
    return {"id": instance.id, "prompt": user_prompt(definition, instance.input, len(instance.outputs)),
            "references": references}


def sni_tasks(source: str, names: list[str], split: str, limit: int, scratch: str, suite_seed: int = 0) -> list[EvalTask]:
    """SNI-style tasks from `suite` (the generated suite: its `split`) or a folder (path or URI) of task files."""
    from t2l_ray.data.sni import load_sni
    from t2l_ray.data.suite import write_suite

    if source == "suite":
        suite = write_suite(Path(scratch, "suite"), seed=suite_seed)
        pool = {"held_out": suite.held_out, "train": suite.train, "all": suite.tasks}[split]
        by_name = {t.name: t for t in suite.tasks}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"tasks.sni_tasks: {unknown} are not suite tasks; suite tasks: {sorted(by_name)}")
        chosen = [by_name[n] for n in names] if names else pool
    else:
        folder = storage.local_copy(source, scratch, suffix=".json")
        tasks, skipped = load_sni(folder, task_list=names or None)
        for item in skipped:  # logger t2l_ray: commands show its warnings on the console
            logging.getLogger("t2l_ray").warning(f"eval: skipped {item.file}: {item.reason}")
        chosen = tasks
    return [
        EvalTask(t.name, "generate", "rouge_l", [sni_example(t.definition, i) for i in _first(t.instances, limit)],
                 source=source, secondary=["exact_match"])
        for t in chosen
    ]


# ------------------------------------------------------------------------------------------------ benchmarks


def _choice_pairs(context: str, continuations: list[str]) -> list[list[str]]:
    return [[context, " " + c.strip()] for c in continuations]


def _keyed_label(row: dict) -> int:
    labels = [str(label) for label in row["choices"]["label"]]
    key = str(row["answerKey"]).strip()
    if key not in labels:
        raise ValueError(f"answerKey {key!r} is not among the choice labels {labels}")
    return labels.index(key)


def _arc(row: dict) -> dict:
    return {"pairs": _choice_pairs(f"Question: {row['question']}\nAnswer:", list(row["choices"]["text"])),
            "label": _keyed_label(row)}


def _boolq(row: dict) -> dict:
    answer = row["answer"] if "answer" in row else row["label"]
    return {"pairs": _choice_pairs(f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", ["no", "yes"]),
            "label": int(bool(answer))}


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(row: dict) -> dict:
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    query = _hellaswag_clean(f"{row['activity_label']}: {context}")
    return {"pairs": _choice_pairs(query, [_hellaswag_clean(e) for e in row["endings"]]), "label": int(row["label"])}


def _openbookqa(row: dict) -> dict:
    return {"pairs": _choice_pairs(row["question_stem"], list(row["choices"]["text"])), "label": _keyed_label(row)}


def _piqa(row: dict) -> dict:
    return {"pairs": _choice_pairs(f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]]),
            "label": int(row["label"])}


def _winogrande(row: dict) -> dict:
    """Partial scoring (lm-evaluation-harness): the text after the blank, given the sentence up to it with each option."""
    sentence = row["sentence"]
    blank = sentence.index("_")
    continuation = " " + sentence[blank + 1 :].strip()
    pairs = [[sentence[:blank] + option, continuation] for option in (row["option1"], row["option2"])]
    return {"pairs": pairs, "label": {"1": 0, "2": 1}[str(row["answer"]).strip()]}


def _gsm8k(row: dict) -> dict:
    return {"prompt": f"{row['question'].strip()}\n\n{GSM8K_INSTRUCTION}", "references": [row["answer"]]}


@dataclass(frozen=True)
class Benchmark:
    repo: str
    config: str | None
    split: str
    convert: Callable[[dict], dict]
    kind: Kind = "choice"
    metric: str = "accuracy"


BENCHMARKS: dict[str, Benchmark] = {
    "arc_easy": Benchmark("allenai/ai2_arc", "ARC-Easy", "test", _arc),
    "arc_challenge": Benchmark("allenai/ai2_arc", "ARC-Challenge", "test", _arc),
    "boolq": Benchmark("google/boolq", None, "validation", _boolq),
    "hellaswag": Benchmark("Rowan/hellaswag", None, "validation", _hellaswag),
    "openbookqa": Benchmark("allenai/openbookqa", "main", "test", _openbookqa),
    "piqa": Benchmark("ybisk/piqa", None, "validation", _piqa),
    "winogrande": Benchmark("allenai/winogrande", "winogrande_xl", "validation", _winogrande),
    "gsm8k": Benchmark("openai/gsm8k", "main", "test", _gsm8k, kind="generate", metric="number_match"),
}
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`repo`, `repo:config`, `repo@split` or `repo:config@split` -> (repo, config, split)."""
    spec, _, split = spec.partition("@")
    repo, _, config = spec.partition(":")
    return repo, config or None, split or None


def benchmark_rows(name: str, files: str, hub: dict[str, str], limit: int, scratch: str) -> tuple[list[dict], str]:
    """The first `limit` rows of a benchmark (0 = all) and where they came from, read with `datasets`."""
    from datasets import load_dataset

    spec = BENCHMARKS[name]
    if files:
        for suffix, builder in LOCAL_SUFFIXES.items():
            uri = storage.join(files, name + suffix)
            if storage.exists(uri):
                local = storage.local_copy(uri, scratch)
                dataset = load_dataset(builder, data_files=local, split="train")
                break
        else:
            raise FileNotFoundError(
                f"benchmark {name}: no {name}.jsonl, {name}.json or {name}.parquet in {files} (tasks.benchmark_files)"
            )
        source = uri
    else:
        repo, config, split = spec.repo, spec.config, spec.split
        if name in hub:
            repo, config_override, split_override = parse_hub_spec(hub[name])
            config, split = config_override or config, split_override or split
        source = f"hub:{repo}" + (f":{config}" if config else "") + f"@{split}"
        try:
            dataset = load_dataset(repo, config, split=split)
        except Exception as error:  # noqa: BLE001 - offline, gated, renamed: one clear message
            raise ValueError(
                f"benchmark {name}: cannot read {source} through datasets ({type(error).__name__}: {error}). "
                f"Without a reachable hub, put {name}.jsonl or {name}.parquet (the hub's schema) in a folder "
                f"and set tasks.benchmark_files to it."
            ) from None
    count = len(dataset) if limit <= 0 else min(limit, len(dataset))
    return [dict(dataset[i]) for i in range(count)], source


def benchmark_task(name: str, files: str, hub: dict[str, str], limit: int, scratch: str) -> EvalTask:
    spec = BENCHMARKS[name]
    rows, source = benchmark_rows(name, files, hub, limit, scratch)
    examples = []
    for index, row in enumerate(rows):
        try:
            example = spec.convert(row)
        except (KeyError, ValueError, TypeError, IndexError) as error:
            raise ValueError(f"benchmark {name} ({source}) row {index}: does not fit the expected schema: "
                             f"{type(error).__name__}: {error}") from None
        examples.append({"id": str(row.get("id", row.get("ind", index))), **example})
    return EvalTask(name, spec.kind, spec.metric, examples, source=source)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ helpers


def _first(items: list, limit: int) -> list:
    return list(items) if limit <= 0 else list(items[:limit])
