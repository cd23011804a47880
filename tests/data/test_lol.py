"""Lots-of-LoRAs style rows (SNI instances rendered into prompts), read back into SNITask objects."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sni_paths import sni_dir

from t2l_ray.data.lol import load_lol_task, parse_row
from t2l_ray.data.sni import MalformedTask, read_task


def render(task, instance):
    """A row as Lots-of-LoRAs renders it: definition, examples, then the instance to complete."""
    example = "Positive Example 1 -\nInput: some input.\nOutput: some output.\n\n"
    text = f"Definition: {task.definition}\n\n{example}Now complete the following example -\nInput: {instance.input}\nOutput: "
    return {"input": text, "output": list(instance.outputs), "id": instance.id}


@pytest.fixture
def real_task():
    return read_task(sni_dir() / "task1146_country_capital.json")


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_local_export_round_trips_a_real_sni_task(tmp_path, real_task, suffix):
    rows = [render(real_task, inst) for inst in real_task.instances]
    path = tmp_path / f"task1146_country_capital.{suffix}"
    if suffix == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_lol_task(str(path))
    assert task.name == "task1146_country_capital"
    assert task.definition == real_task.definition
    assert [i.id for i in task.instances] == [i.id for i in real_task.instances]
    assert [i.input for i in task.instances] == [i.input.strip() for i in real_task.instances]
    assert [i.outputs for i in task.instances] == [i.outputs for i in real_task.instances]


def test_bad_rows_name_the_row(real_task):
    good = render(real_task, real_task.instances[0])
    with pytest.raises(MalformedTask, match="x.parquet row 2: 'output'"):
        parse_row({**good, "output": []}, "x.parquet row 2")
    with pytest.raises(MalformedTask, match="no 'Definition:'"):
        parse_row({**good, "input": "Input: hi\nOutput: "}, "row 1")


def test_rows_that_disagree_on_the_definition_are_refused(tmp_path, real_task):
    rows = [render(real_task, inst) for inst in real_task.instances[:2]]
    rows[1]["input"] = rows[1]["input"].replace("Definition: ", "Definition: Not the same. ")
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(MalformedTask, match="disagree"):
        load_lol_task(str(path))


def test_hub_name_offline_fails_clearly():
    with pytest.raises(ValueError, match="local .parquet or .jsonl export"):
        load_lol_task("Lots-of-LoRAs/task1146_country_capital")


def test_lol_source_becomes_sni_files_the_pipeline_reads(tmp_path, real_task):
    from t2l_ray.data.lol import materialise_lol_source
    from t2l_ray.data.sni import load_sni

    path = tmp_path / "task1146_country_capital.jsonl"
    path.write_text("".join(json.dumps(render(real_task, inst)) + "\n" for inst in real_task.instances))
    folder = materialise_lol_source(f"lol:{path}", tmp_path / "tasks")
    (task,), skipped = load_sni(folder)
    assert not skipped and task.name == "task1146_country_capital"
    assert len(task.instances) == len(real_task.instances) and task.definition == real_task.definition
