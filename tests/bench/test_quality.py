"""bench/quality.py's own logic: its data split, the facts its base learns, the table maths and the docs update.

The experiment itself runs for about 13 minutes and is a benchmark, not a test (docs/results.md).
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

    split = quality.write_data(quality.DataSettings(instances_per_task=12, eval_per_task=4), tmp_path)
    train, _ = load_sni(tmp_path / "train")
    evaluation, _ = load_sni(tmp_path / "eval")
    assert len(train) == len(evaluation) == 36 and len(split["held_out"]) == 7 and len(split["train"]) == 29
    for task in train:
        other = next(t for t in evaluation if t.name == task.name)
        assert len(task.instances) == 8 and len(other.instances) == 4
        assert not {i.input for i in task.instances} & {i.input for i in other.instances}
    assert all(len(texts) == 6 for texts in split["descriptions"].values())  # 5 training-style + the held-out one
    assert set(split["seen_task_descriptions"]) == set(split["train"])
    with_definitions = json.loads((tmp_path / "descriptions_with_definitions.json").read_text())["tasks"]
    plain = json.loads((tmp_path / "descriptions.json").read_text())["tasks"]
    task = train[0]
    assert with_definitions[task.name]["descriptions"] == plain[task.name]["descriptions"] + [task.definition]


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
    assert majority["task9015_greater_than_500"]["answer"] in ("yes", "no")


def test_facts_are_true(quality):
    rng = random.Random(3)
    lines = [line for _ in range(200) for line in quality.fact_lines(rng)]
    checked = 0
    for line in lines:
        if m := re.fullmatch(r"(\d+) (plus|minus|times) (\d+) is (-?\d+)\.", line):
            a, op, b, result = int(m[1]), m[2], int(m[3]), int(m[4])
            assert result == {"plus": a + b, "minus": a - b, "times": a * b}[op], line
            checked += 1
        elif m := re.fullmatch(r"(\w+) has (\d+) letters\.", line):
            assert len(m[1]) == int(m[2]), line
            checked += 1
        elif m := re.fullmatch(r"(\d+) is (even|odd)\.", line):
            assert (int(m[1]) % 2 == 0) == (m[2] == "even"), line
            checked += 1
        elif m := re.fullmatch(r"(\w+) is spelled ([a-z ]+)\.", line):
            assert m[2].replace(" ", "") == m[1], line
            checked += 1
    assert checked == 6 * 200  # six checkable facts in every draw


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


def test_summary_averages_descriptions_and_computes_the_ratio(quality):
    held_out = _results({"base": [10, 50], "multitask": [20, 40], "oracle": [60, 40],
                         "t2l-1": [30, 0], "t2l-2": [40, 10], "random-1": [5, 0], "random-2": [15, 0]}, ["a", "b"])
    seen = _results({"base": [1, 3], "multitask": [2, 4], quality.SEEN: [10, 20]}, ["c", "d"])
    summary = quality.summarise({"held_out": held_out, "seen": seen})
    a, b = summary["held_out"]["a"], summary["held_out"]["b"]
    assert a["scores"]["t2l"] == 35 and a["scores"]["t2l-random"] == 10 and a["t2l_per_description"] == [30, 40]
    assert a["ratio"] == pytest.approx((35 - 10) / (60 - 10))
    assert b["ratio"] is None  # the oracle did not beat the base: no gap to close
    assert summary["mean"]["scores"]["oracle"] == 50 and summary["mean"]["scores"]["t2l"] == 20
    assert summary["mean"]["ratio"] == pytest.approx((20 - 30) / (50 - 30))
    assert summary["seen"][quality.SEEN]["mean"] == 15 and summary["seen_tasks"] == 2


def test_write_docs_replaces_only_the_generated_section(quality, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\nintro\n{quality.BEGIN}\nold table\n{quality.END}\nanalysis stays\n")
    quality.write_docs(doc, "new table\n")
    assert doc.read_text() == f"# Results\nintro\n{quality.BEGIN}\nnew table\n{quality.END}\nanalysis stays\n"
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match="no generated-section markers"):
        quality.write_docs(tmp_path / "plain.md", "x")
