"""What a data source holds (t2l_ray/data/inspect.py): per-task counts of the tokens training sees, the totals,
where descriptions and the tokenizer came from (fast, no Ray; `t2l-ray data inspect` itself: tests/cli/test_data.py)."""

import json
import tempfile

import pytest

from t2l_ray.data import inspect
from t2l_ray.data.descriptions import descriptions_for
from t2l_ray.data.prompts import tokenize_batch
from t2l_ray.data.sni import Skipped, instance_rows
from t2l_ray.data.suite import build_suite, write_suite
from t2l_ray.data.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Six suite tasks of 5 instances each, their descriptions and a BPE trained on them."""
    suite = build_suite(seed=2, instances_per_task=5)
    tasks = suite.tasks[:6]
    texts = [f"{r['definition']}\n\n{r['input']}\n{', '.join(r['outputs'])}" for r in instance_rows(tasks)]
    tokenizer = train_tokenizer(texts, tmp_path_factory.mktemp("tokenizer"), vocab_size=512)
    return tasks, descriptions_for(tasks, suite.descriptions), tokenizer


def direct_counts(task, tokenizer, max_prompt: int, max_response: int) -> tuple[int, int]:
    rows = instance_rows([task])
    tokens = tokenize_batch({c: [r[c] for r in rows] for c in ("definition", "input", "outputs")}, tokenizer,
                            max_prompt, max_response)
    return int(tokens["prompt_tokens"].sum()), int(tokens["response_tokens"].sum())


def test_counts_are_the_tokens_a_training_step_sees(small, monkeypatch):
    tasks, descriptions, tokenizer = small
    monkeypatch.setattr(inspect, "SUMMARY_BATCH", 2)  # 5 instances: chunks of 2, 2 and 1 add up
    summary = inspect.summarize(tasks, [], descriptions, tokenizer)
    assert [t.name for t in summary.tasks] == [t.name for t in tasks]
    for task, counted in zip(tasks, summary.tasks):
        assert (counted.prompt_tokens, counted.response_tokens) == direct_counts(task, tokenizer, 10**9, 10**9)
        assert counted.instances == 5 and counted.descriptions == len(descriptions[task.name]) > 1
    assert summary.total_tokens == sum(t.prompt_tokens + t.response_tokens for t in summary.tasks)


def test_training_limits_cut_the_counts(small):
    tasks, descriptions, tokenizer = small
    full = inspect.summarize(tasks, [], descriptions, tokenizer)
    cut = inspect.summarize(tasks, [], descriptions, tokenizer, max_prompt_tokens=8, max_response_tokens=2)
    for task, whole, limited in zip(tasks, full.tasks, cut.tasks):
        assert (limited.prompt_tokens, limited.response_tokens) == direct_counts(task, tokenizer, 8, 2)
        assert limited.prompt_tokens == 8 * 5 < whole.prompt_tokens
        assert limited.response_tokens <= 2 * 5
    assert cut.total_tokens < full.total_tokens


def test_the_table_and_the_json_agree_on_means_totals_sources_and_skips():
    summary = inspect.DataSummary(
        [inspect.TaskSummary("task1_a", 4, 2, 10, 6), inspect.TaskSummary("task22_longer_name", 2, 1, 9, 4)],
        [Skipped("/data/task3_bad.json", "invalid JSON")], {"descriptions_file": "d.json", "tokenizer": "tok"})
    table = summary.table().splitlines()
    assert table[1].split() == ["task1_a", "4", "2", "2.5", "1.5"]
    assert table[2].split() == ["task22_longer_name", "2", "1", "4.5", "2.0"]
    assert table[3] == "2 tasks, 6 instances, 29 tokens (19 prompt + 10 response); token columns are means"
    assert table[4:] == ["descriptions_file: d.json", "tokenizer: tok", "skipped 1 file(s):",
                         "  /data/task3_bad.json: invalid JSON"]
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["tasks"][1]["mean_prompt_tokens"] == 4.5 and data["total_tasks"] == 2
    assert (data["total_instances"], data["total_tokens"]) == (6, 29)
    assert data["skipped"] == [{"file": "/data/task3_bad.json", "reason": "invalid JSON"}]
    assert data["descriptions_file"] == "d.json"


def test_given_descriptions_replace_the_folders_own(tmp_path):
    write_suite(tmp_path / "suite", seed=1, instances_per_task=2)
    names = sorted(p.stem for p in (tmp_path / "suite").glob("task*.json"))
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({name: ["one text", "another text"] for name in names[:3]}))
    summary = inspect.inspect_source(str(tmp_path / "suite"), descriptions_path=str(mine))
    counts = {t.name: t.descriptions for t in summary.tasks}
    assert {counts[name] for name in names[:3]} == {2}
    assert {counts[name] for name in names[3:]} == {1}  # not in the given file: the task's Definition
    assert summary.sources["descriptions_file"] == str(mine)


def test_the_trained_tokenizer_leaves_no_folder_behind(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    summary = inspect.inspect_source("suite", seed=4)
    assert summary.sources == {"descriptions_file": "generated suite (seed 4)", "tokenizer": inspect.TRAINED_TOKENIZER}
    assert summary.total_instances == len(build_suite(seed=4).tasks) * 40
    assert list(scratch.iterdir()) == []
