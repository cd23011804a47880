"""Descriptions files in every accepted format, held-out texts kept apart, and the Definition fallback."""

import json

import pytest
import yaml
from sni_paths import sni_descriptions_file, sni_dir

from t2l_ray.data.descriptions import DescriptionsError, TaskDescriptions, descriptions_for, load_descriptions
from t2l_ray.data.sni import SNITask, load_sni

SEEN_EVAL_TASKS = {
    "task1198_atomic_classification_owant",
    "task1448_disease_entity_extraction_ncbi_dataset",
    "task636_extract_and_sort_unique_alphabets_in_a_list",
}


def task(name, definition="Do the thing."):
    return SNITask(name=name, definition=definition, instances=[], categories=[], source_file=f"{name}.json")


def test_shared_descriptions_file_train_and_held_out_apart():
    path = sni_descriptions_file()
    raw = json.loads(path.read_text(encoding="utf-8"))["tasks"]
    loaded = load_descriptions(path)
    assert sorted(loaded.train) == sorted(raw)
    for name, entry in raw.items():
        assert loaded.train[name] == entry["descriptions"]
    assert set(loaded.held_out) == SEEN_EVAL_TASKS
    for name in SEEN_EVAL_TASKS:
        assert loaded.held_out[name] == raw[name]["eval_descriptions"] and len(loaded.held_out[name]) == 3
        assert not set(loaded.held_out[name]) & set(loaded.train[name])


def test_shared_descriptions_cover_the_shared_tasks():
    tasks, _ = load_sni(sni_dir())
    loaded = load_descriptions(sni_descriptions_file())
    chosen = descriptions_for(tasks, loaded)
    assert all(len(chosen[t.name]) == 200 for t in tasks)
    assert all(t.definition not in chosen[t.name] for t in tasks)


def test_plain_yaml_and_json_mappings(tmp_path):
    mapping = {"_comment": {"ignored": True}, "task1_a": ["first", "second"], "task2_b": ["only"]}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(mapping))
    (tmp_path / "d.json").write_text(json.dumps(mapping))
    for name in ("d.yaml", "d.json"):
        loaded = load_descriptions(tmp_path / name)
        assert loaded == TaskDescriptions(train={"task1_a": ["first", "second"], "task2_b": ["only"]}, held_out={})


def test_plain_mapping_entries_may_carry_eval_descriptions(tmp_path):
    path = tmp_path / "d.yml"
    path.write_text(yaml.safe_dump({"task1_a": {"descriptions": ["train me"], "eval_descriptions": ["test me"]}}))
    assert load_descriptions(path) == TaskDescriptions(train={"task1_a": ["train me"]}, held_out={"task1_a": ["test me"]})


def test_jsonl_both_line_forms_add_up(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [
        {"task": "task1_a", "description": "one"},
        {"task": "task1_a", "descriptions": ["two", "three"], "eval_descriptions": ["held"]},
        {"task": "task2_b", "descriptions": ["bee"]},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    loaded = load_descriptions(path)
    assert loaded.train == {"task1_a": ["one", "two", "three"], "task2_b": ["bee"]}
    assert loaded.held_out == {"task1_a": ["held"]}


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"task": "task1_a", "description": ', "invalid JSON"),
        ('{"task": "task1_a"}', "needs 'description' or 'descriptions'"),
        ('{"description": "no task"}', "string 'task'"),
        ('{"task": "task1_a", "descriptions": ["ok", 5]}', "non-empty strings"),
        ('["task1_a", "x"]', "string 'task'"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, bad_line, reason):
    path = tmp_path / "d.jsonl"
    path.write_text('{"task": "task1_a", "description": "fine"}\n\n' + bad_line + "\n")
    with pytest.raises(DescriptionsError) as error:
        load_descriptions(path)
    assert f"{path}:3:" in str(error.value) and reason in str(error.value)


def test_bad_entries_and_formats_name_the_file(tmp_path):
    wrong_entry = tmp_path / "d.json"
    wrong_entry.write_text(json.dumps({"tasks": {"task1_a": "not a list"}}))
    with pytest.raises(DescriptionsError, match=r"d\.json: task task1_a"):
        load_descriptions(wrong_entry)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(DescriptionsError, match=r"broken\.json: cannot parse"):
        load_descriptions(broken)
    csv = tmp_path / "d.csv"
    csv.write_text("task,description\n")
    with pytest.raises(DescriptionsError, match="unknown descriptions format"):
        load_descriptions(csv)


def test_tasks_without_descriptions_fall_back_to_their_definition():
    tasks = [task("task1_a", "Definition A."), task("task2_b", "Definition B.")]
    loaded = TaskDescriptions(train={"task1_a": ["desc a"]}, held_out={"task2_b": ["held b"]})
    assert descriptions_for(tasks, loaded) == {"task1_a": ["desc a"], "task2_b": ["Definition B."]}
    assert descriptions_for(tasks, loaded, held_out=True) == {"task1_a": ["Definition A."], "task2_b": ["held b"]}
    assert descriptions_for(tasks, None) == {"task1_a": ["Definition A."], "task2_b": ["Definition B."]}


def test_real_task_without_held_out_descriptions_falls_back_to_its_definition():
    tasks, _ = load_sni(sni_dir(), task_list=["task1146_country_capital", "task1198_atomic_classification_owant"])
    held_out = descriptions_for(tasks, load_descriptions(sni_descriptions_file()), held_out=True)
    capital = next(t for t in tasks if t.name == "task1146_country_capital")
    assert held_out["task1146_country_capital"] == [capital.definition]
    assert len(held_out["task1198_atomic_classification_owant"]) == 3
