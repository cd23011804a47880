"""Ray Data pipelines that stream SNI-style examples into hypernet training.

    task files --read_binary_files--> flat_map: (task, instance) rows
      --map_batches--> a description sampled per example (seeded by the row id)
      --map_batches--> tokens (prompt and response truncated separately)
      --random_shuffle(seed)--> map_batches(TaskGrouper): rows of N distinct tasks, joined with embeddings
      --> Ray Train workers: get_dataset_shard("train").iter_torch_batches(batch_size=1)

How batches hold N *distinct* tasks while streaming: the shuffled example stream is fed to one stateful
`TaskGrouper` actor that keeps a small queue per task and emits a group as soon as N different tasks have a
queued example (taking the tasks whose queues are longest first, so no task starves). Each output row IS
one training batch: arrays [N, T] padded to the fixed width max_prompt + max_response, so Ray Train's split
across workers can never break a group apart. Examples left in the queues at the end of an epoch (fewer
than N distinct tasks) are dropped, as a sampler with drop_last would.

Description embeddings are computed once per unique text by encoder actors, cached by text hash as a
parquet table in the run's storage (`embeddings/<encoder>.parquet`), and joined by key inside the grouper;
a second run (or a resumed one) finds them there and encodes nothing.
"""

from __future__ import annotations

import io
import random
import re
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

from t2l_ray import storage
from t2l_ray.data.prompts import IGNORE_INDEX, TokenizeBatch
from t2l_ray.data.sni import instance_rows, parse_task
from t2l_ray.encoders import text_key

EMBEDDING_COLUMNS = ("key", "embedding")


class AttachDescription:
    """Adds `description` (sampled from the task's list, seeded by run seed + row id) and its cache `key`."""

    def __init__(self, descriptions: dict[str, list[str]], encoder: str, seed: int):
        self.descriptions, self.encoder, self.seed = descriptions, encoder, seed

    def __call__(self, batch: dict) -> dict:
        chosen = [random.Random(f"{self.seed}:{row_id}").choice(self.descriptions[task])
                  for task, row_id in zip(batch["task"], batch["id"])]
        return {**batch, "description": np.array(chosen, dtype=object),
                "key": np.array([text_key(self.encoder, text) for text in chosen], dtype=object)}


class TokenizeFixedWidth(TokenizeBatch):
    """Tokens padded to one fixed width, so every block of the stream has the same tensor shape."""

    def __init__(self, tokenizer: str, max_prompt_tokens: int, max_response_tokens: int):
        super().__init__(tokenizer, max_prompt_tokens, max_response_tokens)
        self.width = max_prompt_tokens + max_response_tokens
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    def __call__(self, batch: dict) -> dict:
        out = super().__call__(batch)
        for column, fill in (("input_ids", self.pad_id), ("labels", IGNORE_INDEX), ("attention_mask", 0)):
            values = out[column]
            padded = np.full((values.shape[0], self.width), fill, dtype=np.int64)
            padded[:, : values.shape[1]] = values
            out[column] = padded
        return out


class TaskGrouper:
    """Stateful: turns a stream of tokenized rows into rows of N distinct tasks (see the module docstring)."""

    def __init__(self, tasks_per_batch: int, embeddings_ref, task_names: list[str]):
        import ray

        self.n = tasks_per_batch
        table = ray.get(embeddings_ref) if isinstance(embeddings_ref, ray.ObjectRef) else embeddings_ref
        self.embeddings = dict(zip(table["key"], table["embedding"]))
        self.task_index = {name: i for i, name in enumerate(task_names)}
        self.queues: dict[str, deque] = defaultdict(deque)

    def __call__(self, batch: dict) -> dict:
        for i in range(len(batch["task"])):
            self.queues[batch["task"][i]].append({
                "task": batch["task"][i],
                "input_ids": batch["input_ids"][i],
                "labels": batch["labels"][i],
                "attention_mask": batch["attention_mask"][i],
                "response_tokens": int(batch["response_tokens"][i]),
                "embedding": np.asarray(self.embeddings[batch["key"][i]], dtype=np.float32),
            })
        groups = []
        while True:
            ready = sorted((t for t, q in self.queues.items() if q), key=lambda t: -len(self.queues[t]))
            if len(ready) < self.n:
                break
            groups.append([self.queues[t].popleft() for t in ready[: self.n]])
        columns = {"input_ids": np.int64, "labels": np.int64, "attention_mask": np.int64, "response_tokens": np.int64,
                   "embedding": np.float32}
        out = {c: np.array([[row[c] for row in g] for g in groups], dtype=t) for c, t in columns.items()}
        out["task_index"] = np.array([[self.task_index[row["task"]] for row in g] for g in groups], dtype=np.int64)
        return out


# ---------------------------------------------------------------------------------------------- embeddings


class EncodeActor:
    """A frozen encoder per Ray Data actor: texts -> normalised embeddings."""

    def __init__(self, encoder: str):
        from t2l_ray.encoders import load_encoder

        self.encoder = load_encoder(encoder)

    def __call__(self, batch: dict) -> dict:
        embeddings = self.encoder.encode(list(batch["text"])).numpy()
        return {"key": batch["key"], "embedding": list(embeddings)}


def cache_uri(run_dir: str, encoder: str) -> str:
    return storage.join(run_dir, "embeddings", re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder) + ".parquet")


@dataclass
class EmbeddingStats:
    unique: int
    hits: int
    computed: int


def embed_descriptions(texts: list[str], encoder: str, uri: str, batch_size: int = 64) -> tuple[dict, EmbeddingStats]:
    """Embed every unique text once; reuse what the parquet cache at `uri` already holds, then save it back."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    wanted = {text_key(encoder, t): t for t in texts}
    table = {"key": [], "embedding": []}
    if storage.exists(uri):
        cached = pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pydict()
        table = {"key": list(cached["key"]), "embedding": [np.asarray(e, dtype=np.float32) for e in cached["embedding"]]}
    have = set(table["key"])
    missing = [{"key": k, "text": t} for k, t in wanted.items() if k not in have]
    if missing:
        fresh = (
            ray.data.from_items(missing)
            .map_batches(EncodeActor, fn_constructor_kwargs={"encoder": encoder}, batch_size=batch_size,
                         compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5, batch_format="numpy")
            .take_all()
        )
        table["key"] += [row["key"] for row in fresh]
        table["embedding"] += [np.asarray(row["embedding"], dtype=np.float32) for row in fresh]
        sink = io.BytesIO()
        pq.write_table(pa.table({"key": table["key"], "embedding": [e.tolist() for e in table["embedding"]]}), sink)
        storage.write_bytes(uri, sink.getvalue())
    stats = EmbeddingStats(unique=len(wanted), hits=len(wanted) - len(missing), computed=len(missing))
    return table, stats


# ---------------------------------------------------------------------------------------------- the stream


def build_sft_dataset(
    task_files: list[str],
    descriptions: dict[str, list[str]],
    embeddings: dict,
    *,
    encoder: str,
    tokenizer_dir: str,
    tasks_per_batch: int,
    max_prompt_tokens: int,
    max_response_tokens: int,
    seed: int,
):
    """The streaming dataset of task-grouped batches (see the module docstring)."""
    import ray

    if len(descriptions) < tasks_per_batch:
        raise ValueError(f"tasks_per_batch={tasks_per_batch} but only {len(descriptions)} tasks are available")
    embeddings_ref = ray.put(embeddings)
    filesystem, _ = storage.resolve(task_files[0])
    paths = [storage.resolve(uri)[1] for uri in task_files]
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the trainer's own progress bar is the one users read
    # A lambda, not a module-level function: Ray pickles it by value, so read workers import only sni.py and
    # not this module's torch and transformers (about 4 s of CPU per worker process on a 2-core machine).
    flatten = lambda row: instance_rows([parse_task(row["bytes"], row["path"])])  # noqa: E731
    return (
        ray.data.read_binary_files(paths, filesystem=filesystem, include_paths=True, num_cpus=0.25)
        .flat_map(flatten, num_cpus=0.25)
        .map_batches(AttachDescription, fn_constructor_kwargs={"descriptions": descriptions, "encoder": encoder, "seed": seed},
                     batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
        .map_batches(TokenizeFixedWidth, fn_constructor_kwargs={"tokenizer": tokenizer_dir, "max_prompt_tokens": max_prompt_tokens,
                                                            "max_response_tokens": max_response_tokens},
                     batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
        .random_shuffle(seed=seed)
        .map_batches(TaskGrouper, fn_constructor_kwargs={
            "tasks_per_batch": tasks_per_batch, "embeddings_ref": embeddings_ref, "task_names": sorted(descriptions)},
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25, batch_size=256)
    )
