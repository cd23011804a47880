"""A recipe's training data, resolved once on the driver: tasks, descriptions, tokenizer, embeddings.

`t2l-ray train` (SFT) and `t2l-ray train-lora` read the same `data` and `model.tokenizer` sections through
`select_tasks` and `prepare_tokenizer`; SFT adds the data summary, the description embeddings and the task
files' locations for the workers (`prepare_data`). Remote descriptions, task lists, sources and tokenizers
are copied under a scratch folder first (`storage.local_copy`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from t2l_ray import storage
from t2l_ray.data.descriptions import descriptions_for, load_descriptions
from t2l_ray.data.inspect import DataSummary, summarize
from t2l_ray.data.lol import LOL_PREFIX, materialise_lol_source
from t2l_ray.data.pipeline import EmbeddingStats, cache_uri, embed_descriptions
from t2l_ray.data.sni import SNITask, Skipped, instance_rows, load_sni
from t2l_ray.data.suite import write_suite
from t2l_ray.data.tokenizer import load_tokenizer, train_tokenizer


def select_tasks(cfg, scratch: str) -> tuple[list[SNITask], list[Skipped], dict[str, list[str]]]:
    """The training tasks of a recipe and their descriptions: `(tasks, skipped, {task: [descriptions]})`.

    `data.source` is an SNI folder (path or URI), `suite` (the generated suite, written under `scratch`;
    its held-out split is dropped unless `data.task_list` is given) or `lol:NAME[,NAME...]`. Held-out and
    excluded tasks are dropped; at most `data.descriptions_per_task` descriptions per task, sampled with the
    run seed.
    """
    descriptions = None
    if cfg.data.descriptions:
        descriptions = load_descriptions(storage.local_copy(cfg.data.descriptions, scratch))
    source = cfg.data.source
    excluded = list(cfg.data.exclude) + list(cfg.data.heldout_tasks)
    if source.startswith(LOL_PREFIX):
        source = str(materialise_lol_source(source, Path(scratch, "lol")))
    elif source != "suite":
        source = storage.local_copy(source, scratch)
    else:
        source = str(Path(scratch, "suite"))
        suite = write_suite(source, seed=cfg.data.suite_seed)
        descriptions = descriptions or suite.descriptions
        if not cfg.data.task_list:
            excluded += [t.name for t in suite.held_out]
    task_list = storage.local_copy(cfg.data.task_list, scratch) if cfg.data.task_list else None
    tasks, skipped = load_sni(source, task_list=task_list, exclude=excluded or None)
    by_task = descriptions_for(tasks, descriptions)
    rng = random.Random(cfg.run.seed)
    by_task = {t: (d if len(d) <= cfg.data.descriptions_per_task else rng.sample(d, cfg.data.descriptions_per_task))
               for t, d in by_task.items()}
    return tasks, skipped, by_task


def prepare_tokenizer(cfg, tasks: list[SNITask], run_dir: str, scratch: str) -> tuple[str, int]:
    """`(local tokenizer folder or hub name, vocab size)`. `model.tokenizer=train` trains a BPE on the tasks'
    texts and saves it to `{run}/tokenizer/` (deterministic: the same tasks give the same tokenizer)."""
    tokenizer_uri = cfg.model.tokenizer or cfg.model.name_or_path
    if cfg.model.tokenizer == "train":
        tokenizer_uri = storage.join(run_dir, "tokenizer")
        local = str(Path(scratch, "tokenizer"))
        texts = [r["input"] for r in instance_rows(tasks)] + [t.definition for t in tasks]
        train_tokenizer(texts, local)
        for file in Path(local).iterdir():
            storage.write_bytes(storage.join(tokenizer_uri, file.name), file.read_bytes())
    tokenizer_dir = storage.local_copy(tokenizer_uri, scratch) if cfg.model.tokenizer == "train" else tokenizer_uri
    return tokenizer_dir, len(load_tokenizer(tokenizer_dir))


def task_uris(cfg, tasks: list[SNITask], run_dir: str) -> list[str]:
    """Where every worker node can read the task files: the source URI itself, or (for the generated suite
    and Lots-of-LoRAs sources) a copy in the run folder, which is shared storage on any multi-node cluster."""
    if cfg.data.source == "suite" or cfg.data.source.startswith(LOL_PREFIX):
        folder = storage.join(run_dir, "data", "tasks")
        for task in tasks:
            storage.write_bytes(storage.join(folder, Path(task.source_file).name), Path(task.source_file).read_bytes())
        return [storage.join(folder, Path(t.source_file).name) for t in tasks]
    fs, _ = storage.resolve(cfg.data.source)
    if fs.type_name == "local":
        return [t.source_file for t in tasks]
    return [storage.join(cfg.data.source, Path(t.source_file).name) for t in tasks]


@dataclass
class TrainingData:
    """What SFT training needs from the data, resolved on the driver (`prepare_data`)."""

    tasks: list[SNITask]
    skipped: list[Skipped]
    task_uris: list[str]
    descriptions: dict[str, list[str]]
    tokenizer_dir: str
    vocab_size: int
    embeddings: dict[str, list]
    """The embedding table: `key` (`encoders.text_key`) and `embedding` columns."""
    embedding_stats: EmbeddingStats
    summary: DataSummary

    @property
    def encoder_dim(self) -> int:
        return len(self.embeddings["embedding"][0])


def prepare_data(cfg, run_dir: str, scratch: str) -> TrainingData:
    """Tasks, descriptions, tokenizer and embeddings, resolved once on the driver; the data summary is written
    to `{run}/data_summary.json` and the embeddings are cached in `{run}/embeddings/`."""
    tasks, skipped, by_task = select_tasks(cfg, scratch)
    tokenizer_dir, vocab_size = prepare_tokenizer(cfg, tasks, run_dir, scratch)
    summary = summarize(tasks, skipped, by_task, load_tokenizer(tokenizer_dir), cfg.data.max_prompt_tokens,
                        cfg.data.max_response_tokens)
    storage.write_text(storage.join(run_dir, "data_summary.json"), json.dumps(summary.to_dict(), indent=2))
    texts = sorted({text for values in by_task.values() for text in values})
    table, stats = embed_descriptions(texts, cfg.encoder, cache_uri(run_dir, cfg.encoder))
    return TrainingData(tasks, skipped, task_uris(cfg, tasks, run_dir), by_task, tokenizer_dir, vocab_size, table,
                        stats, summary)
