"""What a data source holds: per-task instances, descriptions and token counts, plus the skipped files.

`summarize` is shared by `t2l-ray data inspect` and training (which prints and logs it on the driver before
it streams anything), so a user sees the same numbers before and during a run. Token counts come from
`prompts.tokenize_batch`, i.e. exactly the tokens a training step sees: the prompt includes the chat template
(or plain template) and BOS, the response includes its EOS. Without truncation limits they are the full,
untruncated lengths.

`inspect_source` resolves a source the way the CLI takes it:
- `suite`: the generated demo suite for a seed (training and held-out tasks), with its own descriptions
  unless `descriptions_path` is given;
- a folder of SNI task files; its descriptions come from `descriptions_path`, else from a
  `descriptions.json` inside the folder (as `write_suite` and the shared SNI slice have), else each task's
  Definition;
- the tokenizer is `tokenizer_path`, else a byte-level BPE trained on the source's own texts in a temporary
  folder (deleted afterwards): offline and real, but its counts are only indicative of a base model's.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from t2l_ray.data.descriptions import descriptions_for, load_descriptions
from t2l_ray.data.prompts import tokenize_batch
from t2l_ray.data.sni import SNITask, Skipped, instance_rows, load_sni
from t2l_ray.data.suite import build_suite
from t2l_ray.data.tokenizer import load_tokenizer, train_tokenizer

SUITE = "suite"
DESCRIPTIONS_FILE = "descriptions.json"
TRAINED_TOKENIZER = "bpe trained on the source (indicative counts)"
SUMMARY_BATCH = 256
"""Instances tokenized at once: bounds the padded arrays for tasks with thousands of instances."""


@dataclass(frozen=True)
class TaskSummary:
    name: str
    instances: int
    descriptions: int
    prompt_tokens: int
    response_tokens: int

    @property
    def mean_prompt_tokens(self) -> float:
        return self.prompt_tokens / self.instances

    @property
    def mean_response_tokens(self) -> float:
        return self.response_tokens / self.instances


@dataclass
class DataSummary:
    tasks: list[TaskSummary]
    skipped: list[Skipped]
    sources: dict[str, str] = field(default_factory=dict)
    """Where descriptions and the tokenizer came from, shown so a surprising count can be traced."""

    @property
    def total_instances(self) -> int:
        return sum(t.instances for t in self.tasks)

    @property
    def total_prompt_tokens(self) -> int:
        return sum(t.prompt_tokens for t in self.tasks)

    @property
    def total_response_tokens(self) -> int:
        return sum(t.response_tokens for t in self.tasks)

    @property
    def total_tokens(self) -> int:
        return self.total_prompt_tokens + self.total_response_tokens

    def to_dict(self) -> dict:
        return {
            "tasks": [
                {**asdict(t), "mean_prompt_tokens": round(t.mean_prompt_tokens, 2),
                 "mean_response_tokens": round(t.mean_response_tokens, 2)}
                for t in self.tasks
            ],
            "total_tasks": len(self.tasks),
            "total_instances": self.total_instances,
            "total_prompt_tokens": self.total_prompt_tokens,
            "total_response_tokens": self.total_response_tokens,
            "total_tokens": self.total_tokens,
            "skipped": [asdict(s) for s in self.skipped],
            **self.sources,
        }

    def totals(self) -> str:
        return (f"{len(self.tasks)} tasks, {self.total_instances:,} instances, {self.total_tokens:,} tokens "
                f"({self.total_prompt_tokens:,} prompt + {self.total_response_tokens:,} response)")

    def table(self) -> str:
        width = max([len("task"), *(len(t.name) for t in self.tasks)])
        lines = [f"{'task':<{width}}  {'instances':>9}  {'descriptions':>12}  {'prompt tok':>10}  {'response tok':>12}"]
        lines += [
            f"{t.name:<{width}}  {t.instances:>9,}  {t.descriptions:>12,}  {t.mean_prompt_tokens:>10.1f}  "
            f"{t.mean_response_tokens:>12.1f}"
            for t in self.tasks
        ]
        lines.append(f"{self.totals()}; token columns are means")
        lines += [f"{key}: {value}" for key, value in self.sources.items()]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines += [f"  {s.file}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def summarize(
    tasks: list[SNITask],
    skipped: list[Skipped],
    descriptions: dict[str, list[str]],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_tokens: int | None = None,
    max_response_tokens: int | None = None,
    sources: dict[str, str] | None = None,
) -> DataSummary:
    """Per-task counts; pass the training truncation limits to count the tokens training will see."""
    summaries = []
    for task in tasks:
        rows = instance_rows([task])
        prompt = response = 0
        for start in range(0, len(rows), SUMMARY_BATCH):
            chunk = rows[start : start + SUMMARY_BATCH]
            batch = {column: [row[column] for row in chunk] for column in ("definition", "input", "outputs")}
            tokens = tokenize_batch(batch, tokenizer, max_prompt_tokens or sys.maxsize, max_response_tokens or sys.maxsize)
            prompt += int(tokens["prompt_tokens"].sum())
            response += int(tokens["response_tokens"].sum())
        summaries.append(TaskSummary(task.name, len(rows), len(descriptions.get(task.name, [])), prompt, response))
    return DataSummary(summaries, list(skipped), dict(sources or {}))


def inspect_source(
    source: str,
    descriptions_path: str | None = None,
    tokenizer_path: str | None = None,
    seed: int = 0,
) -> DataSummary:
    """Load a source (see the module docstring) and summarize it; raises `NoUsableTasks` when nothing loads."""
    if source == SUITE:
        suite = build_suite(seed)
        tasks, skipped, loaded, origin = suite.tasks, [], suite.descriptions, f"generated suite (seed {seed})"
    else:
        tasks, skipped = load_sni(source)
        beside = Path(source) / DESCRIPTIONS_FILE
        loaded, origin = (load_descriptions(beside), str(beside)) if beside.is_file() else (None, "none (each task's Definition)")
    if descriptions_path:
        loaded, origin = load_descriptions(descriptions_path), descriptions_path
    sources = {"descriptions_file": origin}
    descriptions = descriptions_for(tasks, loaded)
    if tokenizer_path:
        sources["tokenizer"] = tokenizer_path
        return summarize(tasks, skipped, descriptions, load_tokenizer(tokenizer_path), sources=sources)
    sources["tokenizer"] = TRAINED_TOKENIZER
    with tempfile.TemporaryDirectory(prefix="t2l-tokenizer-") as folder:
        tokenizer = train_tokenizer(_texts(tasks), folder)
        return summarize(tasks, skipped, descriptions, tokenizer, sources=sources)


def _texts(tasks: list[SNITask]) -> list[str]:
    return [f"{r['definition']}\n\n{r['input']}\n{', '.join(r['outputs'])}" for r in instance_rows(tasks)]
