"""The generated suite: enough describable tasks, correct answers, seeded determinism, SNI-shaped files."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from t2l_ray.data.descriptions import load_descriptions
from t2l_ray.data.sni import load_sni
from t2l_ray.data.suite import HELD_OUT_LIST, SUITE_SPECS, TRAIN_LIST, build_suite, write_suite

SNI_KEYS = [
    "Contributors", "Source", "URL", "Categories", "Reasoning", "Definition", "Input_language", "Output_language",
    "Instruction_language", "Domains", "Positive Examples", "Negative Examples", "Instances", "Instance License",
]

SUITE_DIGEST = """
import hashlib, json, sys
from t2l_ray.data.suite import build_suite
suite = build_suite(seed=int(sys.argv[1]), instances_per_task=10)
rows = [[t.name, [[i.id, i.input, i.outputs] for i in t.instances]] for t in suite.tasks]
print(hashlib.sha256(json.dumps(rows).encode()).hexdigest())
"""


@pytest.fixture(scope="module")
def suite():
    return build_suite(seed=0, instances_per_task=40)


def by_slug(suite, slug):
    return next(t for t in suite.tasks if t.name.endswith(f"_{slug}"))


def test_suite_has_enough_described_tasks(suite):
    assert len(suite.tasks) == len(SUITE_SPECS) >= 30
    assert len({t.name for t in suite.tasks}) == len(suite.tasks)
    assert all(re.fullmatch(r"task\d+_[a-z0-9_]+", t.name) for t in suite.tasks)
    for task in suite.tasks:
        train, held = suite.descriptions.train[task.name], suite.descriptions.held_out[task.name]
        assert len(train) >= 5 and len(held) >= 1 and not set(train) & set(held)
        assert len(set(train)) == len(train) and task.definition not in train
        assert len(task.instances) == 40
        assert len({i.input for i in task.instances}) == 40
        assert len({i.id for i in task.instances}) == 40


def test_train_and_held_out_are_disjoint_and_about_one_fifth(suite):
    train, held = {t.name for t in suite.train}, {t.name for t in suite.held_out}
    assert not train & held and len(train | held) == len(SUITE_SPECS)
    assert 0.15 <= len(held) / len(SUITE_SPECS) <= 0.25
    assert {t.categories[0] for t in suite.held_out} == {t.categories[0] for t in suite.train}


@pytest.mark.parametrize(
    ("slug", "rule"),
    [
        ("reverse_word", lambda text: text[::-1]),
        ("sort_letters", lambda text: "".join(sorted(text))),
        ("remove_vowels", lambda text: re.sub("[aeiouAEIOU]", "", text)),
        ("acronym", lambda text: "".join(w[0] for w in text.split()).upper()),
        ("even_or_odd", lambda text: "even" if int(text) % 2 == 0 else "odd"),
        ("is_palindrome", lambda text: "yes" if text == text[::-1] else "no"),
        ("extract_digits", lambda text: re.sub(r"\D", "", text)),
        ("add_two", lambda text: str(sum(int(n) for n in text.split(", ")))),
        ("subtract_two", lambda text: str(int(text.split(", ")[0]) - int(text.split(", ")[1]))),
        ("sort_numbers", lambda text: ", ".join(str(n) for n in sorted(int(n) for n in text.split(", ")))),
        ("count_words", lambda text: str(len(text.split()))),
    ],
)
def test_answers_follow_the_task_rule(suite, slug, rule):
    for instance in by_slug(suite, slug).instances:
        assert instance.outputs == [rule(instance.input)], instance


def test_classification_tasks_use_both_labels(suite):
    for task in suite.tasks:
        if task.categories == ["Classification"]:
            labels = {i.outputs[0] for i in task.instances}
            assert len(labels) == 2, (task.name, labels)


def test_multi_answer_task_lists_every_acceptable_answer(suite):
    for instance in by_slug(suite, "name_an_animal").instances:
        assert len(instance.outputs) == 2 and all(animal in instance.input.split() for animal in instance.outputs)


def test_same_seed_same_suite_other_seed_other_instances(suite):
    assert build_suite(seed=0, instances_per_task=40) == suite
    other = build_suite(seed=1, instances_per_task=40)
    assert [t.name for t in other.tasks] == [t.name for t in suite.tasks]
    assert other.descriptions == suite.descriptions
    changed = [a.name for a, b in zip(suite.tasks, other.tasks) if [i.input for i in a.instances] != [i.input for i in b.instances]]
    assert len(changed) == len(suite.tasks)


def test_seeded_suite_is_identical_in_another_process():
    digests = [
        subprocess.run(
            [sys.executable, "-c", SUITE_DIGEST, "3"],
            capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"},
            cwd=Path(__file__).resolve().parents[2],
        ).stdout.strip()
        for hash_seed in ("1", "2")
    ]
    assert digests[0] == digests[1] and len(digests[0]) == 64


def test_written_suite_reads_back_through_the_sni_and_descriptions_loaders(tmp_path):
    written = write_suite(tmp_path, seed=5, instances_per_task=12)
    tasks, skipped = load_sni(tmp_path)
    assert skipped == []
    assert sorted(tasks, key=lambda t: t.name) == sorted(written.tasks, key=lambda t: t.name)
    assert {t.source_file for t in tasks} == {str(tmp_path / f"{t.name}.json") for t in written.tasks}
    assert load_descriptions(tmp_path / "descriptions.json") == written.descriptions
    train, _ = load_sni(tmp_path, task_list=tmp_path / TRAIN_LIST)
    held, _ = load_sni(tmp_path, task_list=tmp_path / HELD_OUT_LIST)
    assert [t.name for t in train] == sorted(t.name for t in written.train)
    assert [t.name for t in held] == sorted(t.name for t in written.held_out)


def test_written_files_use_the_sni_schema_and_layout(tmp_path):
    write_suite(tmp_path, seed=0, instances_per_task=6)
    for path in sorted(tmp_path.glob("task*.json")):
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert list(data) == SNI_KEYS
        assert text == json.dumps(data, indent=4, ensure_ascii=False)
        assert isinstance(data["Definition"], list) and len(data["Positive Examples"]) == 2
        assert all(set(i) == {"id", "input", "output"} and isinstance(i["output"], list) for i in data["Instances"])
    shared_layout = json.loads((tmp_path / "descriptions.json").read_text())
    assert set(shared_layout) == {"_source", "tasks"} and shared_layout["_source"]["seed"] == 0
    entry = next(iter(shared_layout["tasks"].values()))
    assert {"descriptions", "eval_descriptions"} <= set(entry)
