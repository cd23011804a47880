"""The Ray Data pipeline: descriptions per row, N-distinct-task grouping, the embedding cache, Ray Train delivery."""

import json
import uuid
from collections import Counter

import numpy as np
import pytest
from sni_paths import sni_descriptions_file, sni_dir

from t2l_ray.data.descriptions import descriptions_for, load_descriptions
from t2l_ray.data.pipeline import AttachDescription, TaskGrouper, build_sft_dataset, embed_descriptions
from t2l_ray.data.prompts import IGNORE_INDEX
from t2l_ray.data.sni import instance_rows, load_sni
from t2l_ray.data.tokenizer import train_tokenizer
from t2l_ray.encoders import OFFLINE_DEFAULT, load_encoder, text_key

N = 8
MAX_PROMPT, MAX_RESPONSE = 64, 16
DESCRIPTIONS_PER_TASK = 3
"""The shared file has 200 a task; 3 keep the encoder's work small on a 2-core machine."""


# ------------------------------------------------------------------------------------------ no Ray


def test_attached_description_is_the_tasks_own_and_seeded():
    descriptions = {"a": [f"a{i}" for i in range(50)], "b": [f"b{i}" for i in range(50)]}
    batch = {"task": np.array(["a", "b"] * 20, dtype=object), "id": np.array([f"id{i}" for i in range(40)], dtype=object)}
    out = AttachDescription(descriptions, "enc", seed=1)(batch)
    assert all(d in descriptions[t] for t, d in zip(out["task"], out["description"]))
    assert list(out["key"]) == [text_key("enc", d) for d in out["description"]]
    again = AttachDescription(descriptions, "enc", seed=1)(dict(batch))
    assert list(again["description"]) == list(out["description"])
    other = AttachDescription(descriptions, "enc", seed=2)(dict(batch))
    assert list(other["description"]) != list(out["description"])
    reversed_batch = {c: v[::-1] for c, v in batch.items()}  # per-row, not per-position
    assert list(AttachDescription(descriptions, "enc", seed=1)(reversed_batch)["description"]) == list(out["description"])[::-1]


def grouper_rows(tasks, start=0):
    """Tokenized-looking rows whose input_ids encode their position, so groups can be traced back."""
    n = len(tasks)
    ids = np.arange(start, start + n)[:, None] * np.ones((1, 4), dtype=np.int64)
    return {"task": np.array(tasks, dtype=object), "key": np.array([f"k-{t}" for t in tasks], dtype=object),
            "input_ids": ids, "labels": ids, "attention_mask": np.ones_like(ids),
            "response_tokens": np.ones(n, dtype=np.int64)}


def test_grouper_waits_for_n_distinct_tasks_and_keeps_leftovers():
    names = ["a", "b", "c", "d"]
    table = {"key": [f"k-{t}" for t in names], "embedding": [np.full(2, i, dtype=np.float32) for i in range(4)]}
    grouper = TaskGrouper(3, table, names)

    assert len(grouper(grouper_rows(["a", "a", "a", "b"]))["input_ids"]) == 0  # 4 rows, 2 tasks: no group

    first = grouper(grouper_rows(["c"], start=4))
    assert first["input_ids"].shape == (1, 3, 4)
    assert first["task_index"].tolist() == [[0, 1, 2]]  # a's queue is longest, so a comes first
    assert first["input_ids"][0, :, 0].tolist() == [0, 3, 4]  # a's oldest row, then b, then c
    assert first["embedding"][0, :, 0].tolist() == [0, 1, 2]

    second = grouper(grouper_rows(["d", "d"], start=5))  # queues now a:2, d:2 -> still 2 tasks
    assert len(second["input_ids"]) == 0
    third = grouper(grouper_rows(["b"], start=7))
    assert third["task_index"].tolist() == [[0, 3, 1]]
    assert third["input_ids"][0, :, 0].tolist() == [1, 5, 7]
    # Left: a:1, d:1. Fewer than 3 tasks ever again -> those rows are never emitted (dropped at epoch end).
    assert len(grouper(grouper_rows(["a", "d"], start=8))["input_ids"]) == 0
    assert Counter({t: len(q) for t, q in grouper.queues.items() if q}) == Counter({"a": 2, "d": 2})


# ------------------------------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def sni_data(tmp_path_factory):
    tasks, _ = load_sni(sni_dir())
    loaded = descriptions_for(tasks, load_descriptions(sni_descriptions_file()))
    descriptions = {task: texts[:DESCRIPTIONS_PER_TASK] for task, texts in loaded.items()}
    tokenizer_dir = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([f"{r['definition']}\n\n{r['input']}\n{', '.join(r['outputs'])}" for r in instance_rows(tasks)],
                    tokenizer_dir, vocab_size=1024)
    return tasks, descriptions, tokenizer_dir


@pytest.fixture(scope="module")
def first_embedding(ray_cluster, sni_data, tmp_path_factory):
    """The first embed_descriptions call on an empty cache (texts listed twice: unique ones count once)."""
    _, descriptions, _ = sni_data
    texts = [t for texts in descriptions.values() for t in texts]
    uri = str(tmp_path_factory.mktemp("run") / "embeddings" / "minilm.parquet")
    table, stats = embed_descriptions(texts + texts[:5], OFFLINE_DEFAULT, uri)
    return texts, uri, table, stats


@pytest.mark.slow
def test_embeddings_are_computed_once_and_cached(first_embedding):
    texts, uri, table, stats = first_embedding
    unique = len(set(texts))
    assert (stats.unique, stats.hits, stats.computed) == (unique, 0, unique)
    assert len(table["key"]) == unique

    _, again = embed_descriptions(texts, OFFLINE_DEFAULT, uri)
    assert (again.unique, again.hits, again.computed) == (unique, unique, 0)

    new = ["Reverse the order of the words.", "Count the vowels in the sentence."]
    grown, third = embed_descriptions(texts + new, OFFLINE_DEFAULT, uri)
    assert (third.unique, third.hits, third.computed) == (unique + 2, unique, 2)

    cached = dict(zip(grown["key"], grown["embedding"]))
    sample = texts[:6] + new
    direct = load_encoder(OFFLINE_DEFAULT).encode(sample).numpy()
    stored = np.stack([cached[text_key(OFFLINE_DEFAULT, t)] for t in sample])
    np.testing.assert_allclose(stored, direct, atol=1e-4)


@pytest.mark.slow
def test_task_grouped_batches_reach_two_train_workers(ray_cluster, sni_data, first_embedding, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tasks, descriptions, tokenizer_dir = sni_data
    _, _, table, _ = first_embedding
    dataset = build_sft_dataset(
        [task.source_file for task in tasks], descriptions, table, encoder=OFFLINE_DEFAULT,
        tokenizer_dir=str(tokenizer_dir), tasks_per_batch=N, max_prompt_tokens=MAX_PROMPT,
        max_response_tokens=MAX_RESPONSE, seed=0,
    )

    def train_loop(config):
        """Checks every group it receives and writes what it saw to reports/<rank>.json.

        Files, not `ray.train.report`: on ray 2.60 (Train V2) `result.metrics` came back None for reports
        without a checkpoint, and it would hold one rank's metrics at most.
        """
        import hashlib
        import json
        from pathlib import Path

        import ray.train

        seen = []
        for batch in ray.train.get_dataset_shard("train").iter_torch_batches(batch_size=1):
            ids, labels, mask = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]
            labelled = labels != config["ignore"]
            ends = mask.sum(-1)
            contiguous = all(
                labelled[r].nonzero().flatten().tolist() == list(range(int(ends[r]) - int(labelled[r].sum()), int(ends[r])))
                for r in range(len(ids))
            )
            seen.append({
                "hash": hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
                "task_index": batch["task_index"][0].tolist(),
                "shapes": {k: list(v.shape[1:]) for k, v in batch.items()},
                "labels_match_inputs": bool((labels[labelled] == ids[labelled]).all()),
                "labelled_is_response": bool((labelled.sum(-1) == batch["response_tokens"][0]).all()) and contiguous,
                "embedding_norms": batch["embedding"][0].norm(dim=-1).tolist(),
            })
        rank = ray.train.get_context().get_world_rank()
        Path(config["out"], f"{rank}.json").write_text(json.dumps(seen))

    (tmp_path / "reports").mkdir()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"out": str(tmp_path / "reports"), "ignore": IGNORE_INDEX},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path / "ray"), name=f"pipeline-{uuid.uuid4().hex[:8]}"),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    assert result.error is None

    reports = [json.loads((tmp_path / "reports" / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert all(reports), "each worker got groups"
    width = MAX_PROMPT + MAX_RESPONSE
    for group in reports[0] + reports[1]:
        assert len(set(group["task_index"])) == N
        assert group["shapes"] == {"input_ids": [N, width], "labels": [N, width], "attention_mask": [N, width],
                                   "response_tokens": [N], "task_index": [N], "embedding": [N, 384]}
        assert group["labels_match_inputs"] and group["labelled_is_response"]
        assert np.allclose(group["embedding_norms"], 384 ** 0.5, rtol=1e-4)
    hashes = [{g["hash"] for g in report} for report in reports]
    assert not hashes[0] & hashes[1], "no group went to both workers"
    assert sum(map(len, hashes)) == len(reports[0]) + len(reports[1])
    instances = sum(len(task.instances) for task in tasks)
    assert len(reports[0]) + len(reports[1]) >= 0.95 * instances // N  # only a remainder is dropped
