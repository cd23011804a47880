"""bench/quality.py's own logic: its data split, the corpus its base learns, the adapters it asks for, the table
maths, results.json's shape and the docs update.

The experiment itself runs for about 20 minutes on 2 CPU cores and is a benchmark, not a test (docs/results.md).
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_data_split_keeps_evaluation_instances_out_of_training(quality, tmp_path):
    from t2l_ray.data.sni import load_sni

    settings = quality.DataSettings(instances_per_task=12, eval_per_task=4, eval_descriptions=3, seen_tasks=5)
    split = quality.write_data(settings, tmp_path)
    train, _ = load_sni(tmp_path / "train")
    evaluation, _ = load_sni(tmp_path / "eval")
    assert len(train) == len(evaluation) == 120 and len(split["held_out"]) == 20 and len(split["train"]) == 100
    for task in train:
        other = next(t for t in evaluation if t.name == task.name)
        assert len(task.instances) == 8 and len(other.instances) == 4
        assert not {i.input for i in task.instances} & {i.input for i in other.instances}
    descriptions = json.loads((tmp_path / "descriptions.json").read_text())["tasks"]
    trained_on = {text for entry in descriptions.values() for text in entry["descriptions"]}
    assert set(split["descriptions"]) == set(split["held_out"])
    for task, texts in split["descriptions"].items():  # the held-out task's own held-out wordings, none trained on
        assert texts == descriptions[task]["eval_descriptions"][:3] and not set(texts) & trained_on
    assert len(split["seen_task_descriptions"]) == 5 and set(split["seen_task_descriptions"]) <= set(split["train"])
    assert not set(split["seen_task_descriptions"].values()) & trained_on


def test_corpus_has_the_asked_number_of_facts(quality):
    facts = quality.corpus_lines(quality.BaseSettings(facts=1000, repeats=200), random.Random(0))
    assert len(facts) == 1200 and len(set(facts)) > 600
    assert sum(", again: " in f for f in facts) == 200
    assert any(re.fullmatch(r"\w+ is spelled [a-z ]+\.", f) for f in facts)


def test_one_answer_baseline_counts_instances_it_answers(quality, tmp_path):
    from t2l_ray.data.sni import load_sni

    split = quality.write_data(quality.DataSettings(instances_per_task=40, eval_per_task=30), tmp_path)
    majority = quality.majority_answers(tmp_path / "eval", split["held_out"])
    assert set(majority) == set(split["held_out"])
    tasks = {t.name: t for t in load_sni(tmp_path / "eval")[0]}
    for name, one in majority.items():
        hits = sum(one["answer"] in i.outputs for i in tasks[name].instances)
        assert one["exact_match"] == pytest.approx(100 * hits / 30)
        assert all(sum(answer in i.outputs for i in tasks[name].instances) <= hits
                   for i in tasks[name].instances for answer in i.outputs)


def test_adapter_lines_pair_every_held_out_wording_with_a_vague_line_and_a_random_string(quality):
    from t2l_ray.data.taskspace import VAGUE

    split = {"descriptions": {"task_a": ["Write the first word.", "Give word one, twice."],
                              "task_b": ["Output the animal.", "Reply with the last word."]},
             "seen_task_descriptions": {"task_c": "Write the third word."}}
    settings = quality.Settings(data=quality.DataSettings(eval_descriptions=2))
    lines = quality.adapter_lines(settings, split)
    sft, recon = lines["t2l"], lines["recon"]
    assert recon == {(f"recon-{i + 1}", task): texts[i] for task, texts in split["descriptions"].items() for i in range(2)}
    for task, texts in split["descriptions"].items():
        for i, text in enumerate(texts):
            assert sft[(f"t2l-{i + 1}", task)] == text and sft[(f"vague-{i + 1}", task)] == VAGUE[i]
            noise = sft[(f"random-{i + 1}", task)]
            assert len(noise) <= len(text) and noise not in texts  # strip() may drop edge spaces
    assert sft[(quality.SEEN, "task_c")] == "Write the third word."
    assert quality.adapter_lines(settings, split) == lines  # seeded: the same strings every run


def test_copy_example_is_a_chat_turn_that_repeats_its_input(quality, tmp_path):
    from t2l_ray.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["a tiny corpus for a tiny tokenizer", "12, 34"], tmp_path, vocab_size=300)
    example = quality.copy_example(random.Random(0), tokenizer)
    prompt, answer = example.split("<|assistant|>\n")
    assert answer.endswith(tokenizer.eos_token)
    assert prompt.rstrip().endswith(answer)  # the input, as the user turn ends


def _results(scores: dict[str, dict[str, float]], tasks: list[str]) -> dict:
    return {"columns": tasks + ["mean"], "rows": [
        {"name": name, "scores": dict(zip(tasks, values)), "exact_match": dict(zip(tasks, values)),
         "mean": sum(values) / len(values)} for name, values in scores.items()]}


def test_summary_averages_each_generated_row_and_computes_the_ratio(quality):
    held_out = _results({"base": [10, 50], "multitask": [20, 40], "oracle": [60, 40],
                         "t2l-1": [30, 0], "t2l-2": [40, 10], "recon-1": [20, 0], "recon-2": [10, 0],
                         "vague-1": [12, 0], "vague-2": [8, 0], "random-1": [5, 0], "random-2": [15, 0]}, ["a", "b"])
    seen = _results({"base": [1, 3], "multitask": [2, 4], quality.SEEN: [10, 20]}, ["c", "d"])
    summary = quality.summarise({"held_out": held_out, "seen": seen})
    a, b = summary["held_out"]["a"], summary["held_out"]["b"]
    assert a["scores"]["t2l"] == 35 and a["scores"]["t2l_recon"] == 15 and a["scores"]["t2l_vague"] == 10
    assert a["scores"]["t2l_random"] == 10 and a["t2l_per_description"] == [30, 40]
    assert a["ratio"] == pytest.approx((35 - 10) / (60 - 10))
    assert b["ratio"] is None  # the oracle did not beat the base: no gap to close
    assert summary["mean"]["scores"]["oracle"] == 50 and summary["mean"]["scores"]["t2l"] == 20
    assert summary["mean"]["ratio"] == pytest.approx((20 - 30) / (50 - 30))
    assert summary["seen"][quality.SEEN]["mean"] == 15 and summary["seen_tasks"] == 2


def test_results_json_has_the_issue_shape(quality):
    rows = {"base": [10, 50], "multitask": [20, 40], "oracle": [60, 40], "t2l-1": [30, 0], "recon-1": [20, 0],
            "vague-1": [12, 0], "random-1": [5, 0]}
    seen = _results({"base": [1], "multitask": [2], quality.SEEN: [10]}, ["c"])
    summary = quality.summarise({"held_out": _results(rows, ["a", "b"]), "seen": seen})
    table = json.loads(json.dumps(quality.results_json(summary, 100, 1234.4, "cmd")))
    assert set(table) == {"train_tasks", "heldout", "seconds", "command"}
    assert table["train_tasks"] == 100 and table["seconds"] == 1234 and table["command"] == "cmd"
    assert set(table["heldout"]) == {"tasks", "rougeL", "exact_match"} and table["heldout"]["tasks"] == 2
    methods = {"base", "multitask", "oracle", "t2l", "t2l_recon", "t2l_vague", "t2l_random"}
    assert set(table["heldout"]["rougeL"]) == set(table["heldout"]["exact_match"]) == methods
    assert table["heldout"]["rougeL"]["t2l"] == 15 and table["heldout"]["rougeL"]["oracle"] == 50


def test_targets_read_the_held_out_means(quality):
    means = {"base": 10.0, "multitask": 20.0, "oracle": 50.0, "t2l": 24.0, "t2l_random": 22.0}
    values = [value(means) for _, value, _ in quality.TARGETS]
    assert values == pytest.approx([4.0, 2.0, 0.35])


def test_write_docs_replaces_only_the_generated_section(quality, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\nintro\n{quality.BEGIN}\nold table\n{quality.END}\nanalysis stays\n")
    quality.write_docs(doc, "new table\n")
    assert doc.read_text() == f"# Results\nintro\n{quality.BEGIN}\nnew table\n{quality.END}\nanalysis stays\n"
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match="no generated-section markers"):
        quality.write_docs(tmp_path / "plain.md", "x")


def test_a_rerun_redoes_only_the_stages_whose_settings_changed(quality, tmp_path):
    from t2l_ray.config import load_config

    ran: list[str] = []

    def run_all(overrides: list[str], record: dict) -> None:
        settings = load_config(quality.Settings, None, overrides)
        for name in quality.STAGES:
            quality.stage(record, settings, quality.Hardware(), name, tmp_path, lambda n=name: ran.append(n) or n)

    record: dict = {}
    run_all([], record)
    assert ran == list(quality.STAGES)
    ran.clear()
    run_all([], json.loads((tmp_path / "record.json").read_text()))
    assert ran == []  # every stage kept
    run_all(["oracle.steps=0"], record)
    assert ran == ["oracle", "eval"]  # the oracle's budget touches neither hypernet nor the multi-task LoRA
    ran.clear()
    run_all(["oracle.steps=0", "t2l.lr=3e-3"], record)
    assert ran == ["t2l", "recon", "adapters", "eval"]
